"""`lenetalex check`: every op against its reference on every available device
and dtype, forward and backward, as a table of errors.

Each op module in lenetalex.ops provides `check_cases(device, dtype)`, yielding
(case name, fused callable, reference callable, inputs) (its LeNet-5/AlexNet
shapes from lenetalex.shapes); this file runs them and compares, within
lenetalex.tolerance's bounds (the tests' too). An op joins the check by being
listed in OP_MODULES.
"""
import contextlib
import importlib

import torch

from .tolerance import TOLERANCE, max_error

OP_MODULES = [
    "lenetalex.ops.conv2d_activation",
    "lenetalex.ops.avg_subsample",
    "lenetalex.ops.local_response_norm",
    "lenetalex.ops.rbf_distance",
    "lenetalex.ops.lenet5",
]


def tolerance(mod, dtype):
    """The bound on an op's normalized error: lenetalex.tolerance's, times the
    op module's TOLERANCE_FACTOR (a number, or one per dtype) if it has one."""
    factor = getattr(mod, "TOLERANCE_FACTOR", 1.0)
    if isinstance(factor, dict):
        factor = factor[dtype]
    return TOLERANCE[dtype] * factor


CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def devices_and_dtypes(device=None):
    """(device, dtype) pairs to check: every available device, or `device`.
    "emu" is the CUDA emulator: CUDA dtypes on CPU tensors (see _runner)."""
    if device == "emu":
        return [("emu", d) for d in CUDA_DTYPES + (torch.float64,)]
    out = []
    if device in (None, "cpu"):
        out += [("cpu", torch.float32), ("cpu", torch.float64)]
    if device == "cuda" or (device is None and torch.cuda.is_available()):
        out += [("cuda", d) for d in CUDA_DTYPES]
    return out


def _in_float64(ref, dtype):
    """The reference computed in float64, its output rounded to `dtype`: on
    the CPU, torch lacks some half-type kernels (avg_pool3d, cdist) that the
    references use, which the emulated CUDA ops' CPU tensors would need."""

    def run(*args):
        wide = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        return ref(*wide).to(dtype)

    return run


def _runner(device):
    """What runs the ops: on "emu", the CUDA kernels in the emulator, on CPU
    tensors (lenetalex.emu.routed)."""
    if device == "emu":
        from . import emu

        return emu.routed()
    return contextlib.nullcontext()


def _grads(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
              for t in inputs]
    out = fn(*leaves)
    wrt = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(out, wrt, grad_out, allow_unused=True)
    return out.detach(), [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, wrt)]


def run_case(fused, ref, inputs):
    """(forward error, backward error) of one case."""
    with torch.no_grad():
        ref_out = ref(*inputs)
        fused_out = fused(*inputs)
    fwd = max_error(fused_out, ref_out)
    g = torch.randn_like(ref_out)
    _, fg = _grads(fused, inputs, g)
    _, rg = _grads(ref, inputs, g)
    bwd = max((max_error(a, b) for a, b in zip(fg, rg)), default=0.0)
    return fwd, bwd


def run(verbose=True, op_filter=None, device=None):
    """Runs every case (on `device`, default every available one); prints a
    table; returns the number of failures."""
    rows, failures = [], 0
    for modname in OP_MODULES:
        mod = importlib.import_module(modname)
        op = modname.rsplit(".", 1)[1]
        if op_filter and op not in op_filter:
            continue
        for dev, dtype in devices_and_dtypes(device):
            tol = tolerance(mod, dtype)
            tensors_on = "cpu" if dev == "emu" else dev
            for name, fused, ref, inputs in mod.check_cases(tensors_on, dtype):
                if dev == "emu":
                    ref = _in_float64(ref, dtype)
                try:
                    with _runner(dev):
                        fwd, bwd = run_case(fused, ref, inputs)
                    ok = fwd <= tol and bwd <= tol
                    err = ""
                except Exception as exc:  # a crash is a failure, reported, not fatal
                    fwd = bwd = float("nan")
                    ok, err = False, f"{type(exc).__name__}: {exc}".splitlines()[0][:80]
                failures += not ok
                rows.append((op, name, dev, str(dtype).replace("torch.", ""), fwd, bwd, tol, ok, err))
    if verbose:
        header = f"{'op':<22} {'case':<28} {'device':<6} {'dtype':<9} {'fwd err':>9} {'bwd err':>9} {'tol':>8}  result"
        print(header)
        print("-" * len(header))
        for op, name, device, dtype, fwd, bwd, tol, ok, err in rows:
            print(f"{op:<22} {name:<28} {device:<6} {dtype:<9} {fwd:9.2e} {bwd:9.2e} {tol:8.0e}  "
                  f"{'ok' if ok else 'FAIL ' + err}")
        print(f"\n{len(rows) - failures}/{len(rows)} cases within tolerance")
    return failures
