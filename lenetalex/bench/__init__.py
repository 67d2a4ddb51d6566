"""`lenetalex bench`: every fused op and both models against their plain-PyTorch
references (eager, and with --compile torch.compile of the reference), forward
and forward+backward, timed with torch.utils.benchmark.

    lenetalex bench [--device cpu|cuda|all] [--dtype float32|float16|bfloat16]
                    [--ops conv,subsample,lrn,rbf,models] [--batch N] [--compile]
                    [--isa [all|baseline,avx2,...]] [--quick] [--json PATH]
                    [--markdown PATH] [--plot PATH]

On the CPU the suite runs the kernel variant in use (build_info()["cpu_isa"]);
--isa runs it once per variant, in this one process, so their figures compare.

Speed is reported, never asserted: the exit code is 0 unless something crashed.
Cases: lenetalex/bench/cases.py; timing and limits: measure.py; output: report.py.
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import torch

from . import cases as _cases
from . import report as _report
from .cases import GROUPS

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
# What the bench runs per device (the ops' dtypes: docs/DESIGN.md; float64 on CUDA is
# left out): a device asked for another dtype is reported as not run.
DEVICE_DTYPES = {"cpu": (torch.float32, torch.float64),
                 "cuda": (torch.float32, torch.float16, torch.bfloat16)}


def _settings(quick, min_run_time, rounds):
    """Quick: two short rounds per case (the same shapes); full: three rounds of
    0.4 s. Rounds alternate the order of the implementations and keep each one's
    best, so a burst of load on a shared machine does not land on one side only
    (one round left single AlexNet layers 0.9x in one run and 1.1x in the next)."""
    return (min_run_time if min_run_time is not None else (0.05 if quick else 0.4),
            rounds if rounds is not None else (2 if quick else 3))


def git_commit():
    """(commit, dirty) of the checkout lenetalex runs from, or ("unknown", None)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        top = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        if top.returncode or os.path.realpath(os.path.join(top.stdout.strip(), "lenetalex")) != os.path.realpath(here):
            return "unknown", None
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() or "unknown", bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def environment():
    import lenetalex

    commit, dirty = git_commit()
    info = lenetalex.build_info()
    return {
        "lenetalex": getattr(lenetalex, "__version__", info["version"]),
        "git_commit": commit, "git_dirty": dirty,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "threads": torch.get_num_threads(), "build": info,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }


class _Progress:
    """tqdm on stderr if installed, else one line per step."""

    def __init__(self, total, enabled):
        self.total, self.n, self.bar = total, 0, None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, leave=False, dynamic_ncols=True)
            except ImportError:
                pass

    def describe(self, text):
        if self.bar is not None:
            self.bar.set_description_str(text[:60])
        elif self.enabled:
            print(f"[{self.n + 1}/{self.total}] {text}", file=sys.stderr, flush=True)

    def step(self):
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fused_impls(op, fused, device):
    fn = getattr(fused, op, None)
    if fn is None:
        return {"fused": None, "why": f"lenetalex.{op} is not in this build"}
    if device.type == "cuda" and fused is sys.modules.get("lenetalex"):
        if not fused.build_info()["cuda_compiled"]:
            return {"fused": None, "why": "lenetalex was built without CUDA kernels"}
    return {"fused": fn}


def _plan(device_type, ops, batch):
    plan = [(op, c) for op in ops if op != "models" for c in _cases.op_cases(op, device_type, batch)]
    if "models" in ops:
        plan += [("models", c) for c in _cases.model_cases(device_type, batch)]
    return plan


def _devices(choice):
    """[(device, reason not run or None)]."""
    cuda_ok = torch.cuda.is_available()
    if choice == "cpu":
        return [("cpu", None)]
    if choice == "cuda":
        return [("cuda", None if cuda_ok else "no CUDA device (torch.cuda.is_available() is False)")]
    return [("cpu", None), ("cuda", None if cuda_ok else "not available here (torch.cuda.is_available() is False)")]


def _cpu_isas(isa):
    """The CPU kernel variants to run: the one in use (None), or the names
    asked ("all": every variant this binary holds and this CPU runs)."""
    import lenetalex

    if isa is None:
        return [lenetalex.build_info()["cpu_isa"]]
    runnable = lenetalex.cpu_isas()
    if isa == "all" or isa == ["all"]:
        return runnable
    names = isa if isinstance(isa, (list, tuple)) else [isa]
    bad = [n for n in names if n not in runnable]
    if bad:
        raise ValueError(f"isa: {bad} not runnable here; this binary and CPU run {runnable}")
    return list(names)


def run(device="all", dtype="float32", ops=tuple(GROUPS), batch=None, compile=False, quick=False,
        min_run_time=None, rounds=None, progress=True, fused=None, tf32=False, isa=None):
    """Runs the suite; returns the report dict (what --json writes). fused: where
    the fused ops are looked up by name (default: the lenetalex module). tf32:
    let the reference's cuDNN convolutions and matmuls use TF32 on CUDA. isa:
    the CPU kernel variants, one CPU section each (None: the one in use; "all";
    or a list of names)."""
    import lenetalex
    from lenetalex import reference

    # Imported here, not at the top: torch.utils.benchmark imports
    # torch.utils.cpp_extension, whose CUDA_HOME guess warns on every
    # `lenetalex` command otherwise.
    from . import measure

    fused = lenetalex if fused is None else fused
    tdtype = DTYPES[dtype]
    mrt, rounds = _settings(quick, min_run_time, rounds)
    ops = [GROUPS.get(o, o) for o in ops]
    opts = argparse.Namespace(compile=compile, min_run_time=mrt, rounds=rounds)
    rep = {"environment": environment(),
           "settings": {"device": device, "dtype": dtype, "ops": ops, "batch": batch, "compile": compile,
                        "quick": quick, "min_run_time": mrt, "rounds": rounds, "cuda_tf32": tf32},
           "devices": []}
    devices = [(name, why, variant) for name, why in _devices(device)
               for variant in (_cpu_isas(isa) if name == "cpu" else [None])]
    rep["settings"]["cpu_isas"] = [v for _, _, v in devices if v]
    runnable = []
    for name, why, variant in devices:
        dev = {"device": name, "dtype": dtype, "results": [], "summary": {}, "targets": [], "skipped": why}
        if name == "cpu":
            dev.update(cpu_isa=variant, cores=os.cpu_count())
        if why is None and tdtype not in DEVICE_DTYPES[name]:
            runs = ", ".join(str(d).replace("torch.", "") for d in DEVICE_DTYPES[name])
            dev["skipped"] = f"the ops run {runs} on {name}, not {dtype}"
        cuda_ok = torch.cuda.is_available()
        dev["device_name"] = measure.device_name(torch.device(name)) if name == "cpu" or cuda_ok else "-"
        rep["devices"].append(dev)
        if dev["skipped"] is None:
            runnable.append(dev)
    total = sum(len(_plan(d["device"], ops, batch)) * 2 for d in runnable)
    bar = _Progress(total, progress)
    # float32 means float32 on both sides unless asked: no TF32 in cuDNN's
    # convolutions or the matmuls (the reference's, and the fused conv's cuDNN
    # paths, which follow the same flag). --tf32 measures both with the faster,
    # less exact cuDNN that PyTorch's allow_tf32 flags give.
    saved_tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    saved_isa = lenetalex.build_info()["cpu_isa"]
    try:
        for dev in runnable:
            device = torch.device(dev["device"])
            if dev.get("cpu_isa"):
                lenetalex.set_cpu_isa(dev["cpu_isa"])
            dev["threads"] = torch.get_num_threads()
            bar.describe(f"{dev['device']}: measuring limits")
            # The matmul limit stays a float32 one (the report says "TF32 off").
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            dev["limits"] = measure.measure_limits(device, tdtype, mrt, quick)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
            for op, case in _plan(dev["device"], ops, batch):
                bar.describe(f"{dev['device']} {op} {case.name}")
                if op == "models":
                    gen = measure.run_model_case(case, device, tdtype, opts)
                else:
                    impls = {"reference": getattr(reference, op), **_fused_impls(op, fused, device)}
                    if compile:
                        impls["compiled"] = getattr(reference, op)
                    gen = measure.run_op_case(case, impls, device, tdtype, opts)
                for res in gen:
                    dev["results"].append(_report.derive(res, dev["limits"], dev["device"]))
                    bar.step()
            dev["summary"] = _report.summarize(dev["results"])
            dev["targets"] = _report.targets(dev["results"], compile)
    finally:
        bar.close()
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_tf32
        lenetalex.set_cpu_isa(saved_isa)
    return rep


def crashed(rep):
    return any(r["status"] == "error" for d in rep["devices"] for r in d["results"])


def _positive(kind):
    def parse(text):
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return v
    return parse


def _ops_arg(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    full = {v: v for v in GROUPS.values()}
    bad = [n for n in names if n not in GROUPS and n not in full]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown op group(s) {bad}: choose from {', '.join(GROUPS)} (or the full op names)")
    return [GROUPS.get(n, n) for n in names]


def _isa_arg(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    known = {"all", "baseline", "avx2", "avx512"}
    if not names or set(names) - known:
        raise argparse.ArgumentTypeError(f"unknown CPU variant(s) in {text!r}: choose from "
                                         "baseline, avx2, avx512, or all")
    return "all" if "all" in names else names


def cmd_bench(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        print("lenetalex bench: --device cuda, but there is no CUDA device here "
              "(torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    plot_ok = True
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            plot_ok = False
            print(f"lenetalex bench: --plot needs matplotlib, which is not installed "
                  f"(pip install matplotlib); {args.plot} will not be written", file=sys.stderr)
    if args.isa is not None:
        try:
            _cpu_isas(args.isa)
        except ValueError as exc:
            print(f"lenetalex bench: --{exc}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    rep = run(device=args.device, dtype=args.dtype, ops=args.ops, batch=args.batch, compile=args.compile,
              quick=args.quick, min_run_time=args.min_run_time, rounds=args.rounds,
              progress=not args.no_progress, tf32=args.tf32, isa=args.isa)
    rep["wall_time_s"] = time.perf_counter() - t0
    print(_report.render(rep))
    print(f"wall time {rep['wall_time_s']:.1f} s")
    if args.json:
        _report.write_json(rep, args.json)
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(_report.render(rep, markdown=True))
        print(f"wrote {args.markdown}")
    if args.plot and plot_ok:
        if _report.write_plot(rep, args.plot):
            print(f"wrote {args.plot}")
        else:
            print(f"no speedups measured: {args.plot} not written")
    if crashed(rep):
        print("lenetalex bench: some measurements crashed (ERROR rows above)", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="time every fused op and model against its reference",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="where to run (default all: the CPU, and CUDA if present)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="float32 (default); float16 and bfloat16 run on CUDA only")
    p.add_argument("--ops", type=_ops_arg, default=list(GROUPS.values()),
                   help=f"comma-separated: {','.join(GROUPS)} (default all)")
    p.add_argument("--batch", type=_positive(int), help="override every batch size (N of rbf_distance too)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of the references (compile time reported apart)")
    p.add_argument("--tf32", action="store_true",
                   help="let cuDNN's convolutions (the reference's and the fused conv's cuDNN "
                        "paths) and the matmuls use TF32 on CUDA (default off: float32 on both "
                        "sides)")
    p.add_argument("--isa", nargs="?", const="all", type=_isa_arg, metavar="VARIANTS",
                   help="run the CPU suite once per CPU kernel variant: all those this machine "
                        "runs (no value), or a comma-separated list of baseline, avx2, avx512 "
                        "(default: the variant in use only)")
    p.add_argument("--quick", action="store_true", help="two short rounds per case, same shapes (under two minutes)")
    p.add_argument("--min-run-time", type=_positive(float), help="seconds per timing (default 0.05 quick, 0.4 full)")
    p.add_argument("--rounds", type=_positive(int), help="timing rounds per case (default 2 quick, 3 full)")
    p.add_argument("--json", metavar="PATH", help="write every figure and the environment as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the speedups (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_bench)
    return p
