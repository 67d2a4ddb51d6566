"""Timing: torch.utils.benchmark's Timer (blocked_autorange, which synchronizes
CUDA), the device's limits measured in the same run, and the bytes each op
saves for backward.

Every case is timed in rounds; each round times every implementation (the
order alternates between rounds, so a noisy neighbour hurts both sides alike)
and keeps the median of its blocks; the figure reported is the lowest median
over the rounds.
"""
import gc
import importlib
import math
import time

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from .cases import DIRECTIONS, MODES


class NotAvailable(Exception):
    """An op, model or backend this build does not have."""


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call_seconds(fn, device):
    """One call, synchronized: the warm-up, and for torch.compile the compile time."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_seconds(fn, min_run_time):
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def time_impls(runnables, device, min_run_time, rounds):
    """runnables: {impl: fn}. Returns ({impl: seconds}, {impl: first-call seconds},
    {impl: exception}). A fused op without a kernel for this device raises
    NotImplementedError on its first call: that becomes NotAvailable.

    Only the compiled reference gets a separate first call (its compile time);
    for the others blocked_autorange's block-size estimate is the warm-up."""
    best, first, errors = {}, {}, {}
    for r in range(rounds):
        names = list(runnables)
        for impl in names if r % 2 == 0 else names[::-1]:
            fn = runnables[impl]
            try:
                if r == 0 and impl == "compiled":
                    first[impl] = first_call_seconds(fn, device)
                best[impl] = min(best.get(impl, math.inf), median_seconds(fn, min_run_time))
            except Exception as exc:  # reported in the table, and the exit code says so
                if impl == "fused" and r == 0 and isinstance(exc, NotImplementedError):
                    raise NotAvailable(str(exc).splitlines()[0][:120]) from exc
                errors[impl] = exc
                best.pop(impl, None)
                del runnables[impl]
    return best, first, errors


def _error_text(exc):
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def _report_errors(res, errors):
    """An implementation that failed: the row's status and note. One that has no
    kernel for this input (NotImplementedError: e.g. torch.cdist's small-input
    CUDA kernel in float16) makes the row "not available", not an error."""
    if not errors:
        return
    missing = all(isinstance(exc, NotImplementedError) for exc in errors.values())
    res["status"] = "not available" if missing else "error"
    res["note"] = "; ".join(f"{k}: {_error_text(v)}" for k, v in errors.items())


# --- the device's limits ------------------------------------------------------

# Datasheet figures (dense), printed beside the measured limits on known devices.
_H100_COMPUTE = {torch.float32: 67e12, torch.float16: 989e12, torch.bfloat16: 989e12}
DATASHEETS = {
    "H100 SXM": {"bandwidth": 3.35e12, "compute": _H100_COMPUTE},
    "H200": {"bandwidth": 4.8e12, "compute": _H100_COMPUTE},
}


def datasheet_key(device_name):
    name = device_name.upper()
    if "H200" in name:
        return "H200"
    if "H100" in name and ("SXM" in name or "HBM3" in name):  # "NVIDIA H100 80GB HBM3" is the SXM part
        return "H100 SXM"
    return None


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def peak_fma_flops(dtype, quick=False):
    """FLOP/s of multiply-adds in the widest vectors of the CPU kernel variant in
    use, on every intra-op thread (csrc/cpu/peak_fma.cpp): the best of a few
    runs. Measured in float32; float64 vectors hold half the lanes."""
    from lenetalex import _C

    iters = 2_000_000 if quick else 10_000_000
    best = max(_C.peak_fma_flops(iters) for _ in range(3 if quick else 5))
    return best * (0.5 if dtype == torch.float64 else 1.0)


def measure_limits(device, dtype, min_run_time, quick=False):
    """Copy bandwidth (bytes read + written per second, device to device) and
    matmul FLOP/s in the benchmark's dtype, measured now, on this device; on the
    CPU also the peak-FMA rate of the kernel variant in use, which is then the
    compute limit (compute_flops_per_s; the matmul's elsewhere)."""
    cuda = device.type == "cuda"
    nbytes = (1 << 30) if cuda else (1 << 27)  # far beyond the caches
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    copy_t = median_seconds(lambda: dst.copy_(src), min_run_time)
    del src, dst
    m = 8192 if cuda else (1024 if quick else 2048)
    a = torch.randn(m, m, device=device, dtype=dtype)
    b = torch.randn(m, m, device=device, dtype=dtype)
    mm_t = median_seconds(lambda: torch.mm(a, b), min_run_time)
    del a, b
    limits = {
        "copy_bytes_per_s": 2 * nbytes / copy_t,
        "copy_size_bytes": nbytes,
        "matmul_flops_per_s": 2.0 * m ** 3 / mm_t,
        "matmul_size": m,
        "datasheet": None,
    }
    if cuda:
        limits.update(compute_flops_per_s=limits["matmul_flops_per_s"], compute_limit="matmul")
    else:
        limits["peak_fma_flops_per_s"] = peak_fma_flops(dtype, quick)
        limits.update(compute_flops_per_s=limits["peak_fma_flops_per_s"], compute_limit="peak FMA")
    key = datasheet_key(device_name(device)) if cuda else None
    if key:
        sheet = DATASHEETS[key]
        limits["datasheet"] = {
            "device": key,
            "bandwidth_bytes_per_s": sheet["bandwidth"],
            "compute_flops_per_s": sheet["compute"].get(dtype),
        }
    return limits


# --- bytes saved for backward ---------------------------------------------------

def saved_bytes(fn, leaves):
    """Bytes autograd keeps from fn(*leaves) for the backward: (all distinct
    storages saved, those that are not the inputs' own)."""
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*leaves)
    del out
    inputs = {x.untyped_storage().data_ptr() for x in leaves}
    total = sum(seen.values())
    return total, sum(n for p, n in seen.items() if p not in inputs)


# --- one op case ------------------------------------------------------------------

def _runnable(case, fn, inputs, direction, device, dtype):
    if direction == "fwd":
        def run():
            with torch.no_grad():
                case.call(fn, inputs)
        return run
    leaves = [x.detach().requires_grad_(t.grad) for x, t in zip(inputs, case.tensors)]
    wrt = [x for x in leaves if x.requires_grad]
    grad_out = torch.randn(case.out_shape, device=device, dtype=dtype)

    def run():
        torch.autograd.grad(case.call(fn, leaves), wrt, grad_out)
    return run


def _lenetalex():
    import lenetalex  # here: lenetalex imports this package

    return lenetalex


def kernel_path(case, device, dtype, direction):
    """The fused conv's kernel path for this row (torch.ops.lenetalex._conv2d_activation_path:
    the forward's, then the backward's parts where they differ from it), or None for other ops or
    a build without the debug op. On the CPU it is the active ISA variant's."""
    op = getattr(torch.ops.lenetalex, "_conv2d_activation_path", None)
    if case.op != "conv2d_activation" or op is None:
        return None
    x, w = (torch.empty(t.shape, device=device, dtype=dtype) for t in case.tensors[:2])
    k = case.kwargs
    pair = lambda v: [v, v] if isinstance(v, int) else list(v)
    path = lambda part: op(x, w, pair(k["stride"]), pair(k["padding"]), k["groups"], part)
    fwd = path("forward")
    if direction == "fwd":
        return fwd
    bwd = "/".join(dict.fromkeys(path(p) for p in ("grad_input", "grad_weight", "grad_bias")))
    return fwd if bwd == fwd else f"{fwd} + {bwd}"  # the CPU's backward runs on the forward's path


def run_op_case(case, impls, device, dtype, opts):
    """Times one case in both directions. impls: {impl: callable or None};
    None means not available. Yields one result dict per direction."""
    elem = torch.empty((), dtype=dtype).element_size()
    inputs = case.make_inputs(device, dtype) if impls.get("fused") is not None else None
    for direction in DIRECTIONS:
        res = {"op": case.op, "case": case.name, "shape": case.shape, "direction": direction,
               "bound": case.bound, "flops": case.flops(direction), "bytes": case.bytes(direction, elem),
               "status": "ok", "note": "", "reference_s": None, "fused_s": None, "compiled_s": None}
        if impls.get("fused") is not None and impls["fused"] is getattr(_lenetalex(), case.op, None):
            res["path"] = kernel_path(case, device, dtype, direction)
        if impls.get("fused") is None:  # nothing to compare: don't spend time on the reference
            res.update(status="not available", note=impls.get("why", f"lenetalex.{case.op} is not in this build"))
            yield res
            continue
        runnables = {}
        for impl in ("reference", "fused", "compiled"):
            fn = impls.get(impl)
            if fn is None:
                continue
            if impl == "compiled":
                torch._dynamo.reset()  # a fresh cache per case: no recompile limit, no dynamic shapes
                fn = torch.compile(fn, dynamic=False)
            runnables[impl] = _runnable(case, fn, inputs, direction, device, dtype)
        try:
            best, first, errors = time_impls(runnables, device, opts.min_run_time, opts.rounds)
        except NotAvailable as exc:
            impls["fused"], impls["why"] = None, str(exc)  # no kernel for this device: skip the other direction too
            res.update(status="not available", note=str(exc))
            yield res
            continue
        for impl in ("reference", "fused", "compiled"):
            res[f"{impl}_s"] = best.get(impl)
        if "compiled" in first:
            res["compile_time_s"] = first["compiled"]
        _report_errors(res, errors)
        if direction == "fwd+bwd" and not errors:
            leaves = [x.detach().requires_grad_(t.grad) for x, t in zip(inputs, case.tensors)]
            n = case.tensors[0].numel
            for impl in ("reference", "fused"):
                if impls.get(impl) is not None:
                    total, extra = saved_bytes(lambda *a, f=impls[impl]: case.call(f, a), leaves)
                    res[f"saved_bytes_per_elem_{impl}"] = extra / n
                    res[f"saved_bytes_per_elem_with_inputs_{impl}"] = total / n
            del leaves
        yield res
    del inputs
    _release(device)


def _release(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- whole models -------------------------------------------------------------------

def _build_model(case, impl, device, dtype):
    try:
        models = importlib.import_module("lenetalex.models")
    except ImportError as exc:
        raise NotAvailable(f"lenetalex.models is not in this build ({exc})") from exc
    cls = getattr(models, case.name, None)
    if cls is None:
        raise NotAvailable(f"lenetalex.models.{case.name} is not in this build")
    try:
        model = cls(impl=impl, **case.kwargs)
    except (AttributeError, ImportError, NotImplementedError) as exc:  # a fused op it needs is missing
        raise NotAvailable(f"{case.name}(impl={impl!r}): {exc}") from exc
    return model.to(device=device, dtype=dtype)


def _loss_fn(case):
    if case.loss == "lenet_map":
        import lenetalex

        return getattr(lenetalex, "lenet_map_loss", None) or lenetalex.reference.lenet_map_loss
    return F.cross_entropy


def _model_runnable(model, mode, x, target, loss_fn):
    if mode == "inference":
        def run():
            with torch.no_grad():
                model(x)
        return run
    # The parameters of a compiled model are the eager model's: one optimizer serves both.
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def run():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        opt.step()
    return run


def run_model_case(case, device, dtype, opts):
    """Inference and one training step (forward, loss, backward, SGD step) of the
    reference and the fused model (and the compiled reference). Yields one
    result dict per mode; figures in images per second."""
    built, notes = {}, {}
    for impl in ("reference", "fused"):
        try:
            built[impl] = _build_model(case, impl, device, dtype)
        except NotAvailable as exc:
            notes[impl] = str(exc)
    if "reference" in built and "fused" in built:
        try:  # identical parameters by contract; load them anyway so both compute the same numbers
            built["fused"].load_state_dict(built["reference"].state_dict())
        except Exception:
            pass
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((case.batch,) + case.input_shape, generator=gen).to(device=device, dtype=dtype)
    target = torch.randint(0, case.classes, (case.batch,), generator=gen).to(device)
    loss_fn = _loss_fn(case)
    for mode in MODES:
        res = {"op": "models", "case": case.row, "shape": case.shape, "direction": mode,
               "batch": case.batch, "status": "ok", "note": ""}
        runnables = {}
        for impl, model in built.items():
            model.train(mode != "inference")
            runnables[impl] = _model_runnable(model, mode, x, target, loss_fn)
        if opts.compile and "reference" in built and "fused" in built:
            torch._dynamo.reset()
            compiled = torch.compile(built["reference"], dynamic=False)
            runnables["compiled"] = _model_runnable(compiled, mode, x, target, loss_fn)
        best, first, errors = {}, {}, {}
        if "reference" in built and "fused" in built:
            try:
                best, first, errors = time_impls(runnables, device, opts.min_run_time, opts.rounds)
            except NotAvailable as exc:  # no kernel for this device
                notes["fused"] = str(exc)
                built.pop("fused")
        for impl in ("reference", "fused", "compiled"):
            res[f"{impl}_s"] = best.get(impl)
            res[f"{impl}_images_per_s"] = case.batch / best[impl] if best.get(impl) else None
        if "compiled" in first:
            res["compile_time_s"] = first["compiled"]
        if notes:
            res["status"] = "not available"
            res["note"] = "; ".join(dict.fromkeys(notes.values()))  # once each
        _report_errors(res, errors)
        yield res
    del built, x, target
    _release(device)
