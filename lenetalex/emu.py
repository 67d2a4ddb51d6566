"""The CUDA emulator: lenetalex's CUDA kernels (csrc/cuda) compiled by the host
compiler into lenetalex._emu (runtime: csrc/cuda_emu), run on the CPU under
checkers that play the role of compute-sanitizer. Built by `make test-emu`.

`torch.ops.lenetalex_emu.<op>` (and `<op>_backward`) have the schemas of
`torch.ops.lenetalex.*`, take CPU tensors of every CUDA dtype and run the CUDA
entries and kernels. `routed()` makes `torch.ops.lenetalex.*` on CPU tensors
run them too, so the Python entry points, autograd included, exercise the
CUDA code; each call then runs under several schedules and must give the
same bits (a race shows as a difference).
"""
import contextlib
import glob
import importlib.machinery
import importlib.util
import itertools
import os
import sys
import warnings

import torch

OPS = (
    "conv2d_activation",
    "conv2d_activation_backward",
    "avg_subsample",
    "avg_subsample_backward",
    "local_response_norm",
    "local_response_norm_backward",
    "rbf_distance",
    "rbf_distance_backward",
    "lenet5",
    "lenet5_backward",
)
SCHEDULES = ("forward", "reverse", "random")
# What routed() runs each call under: forward and reverse put every pair of
# threads in both orders, which is what exposes a race between two of them;
# LENETALEX_EMU_SCHEDULES (comma-separated) adds random, at a third more time.
ROUTED_SCHEDULES = tuple(os.environ.get("LENETALEX_EMU_SCHEDULES", "forward,reverse").split(","))
_random_seeds = itertools.count(1)


def _module():
    """lenetalex._emu, from LENETALEX_EMU_LIB (a folder holding the module, e.g.
    the ASan build, which must not sit in the tree) or from the package."""
    if "lenetalex._emu" in sys.modules:
        return sys.modules["lenetalex._emu"]
    folder = os.environ.get("LENETALEX_EMU_LIB")
    if not folder:
        try:
            from . import _emu
        except ImportError:
            return None
        return _emu
    found = [p for s in importlib.machinery.EXTENSION_SUFFIXES for p in glob.glob(os.path.join(folder, "_emu" + s))]
    if not found:
        return None
    spec = importlib.util.spec_from_file_location("lenetalex._emu", found[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["lenetalex._emu"] = mod
    return mod


def available():
    """Whether the emulation module lenetalex._emu is built (`make test-emu`)."""
    return _module() is not None


def load():
    """lenetalex._emu, or an ImportError that says how to build it."""
    mod = _module()
    if mod is None:
        raise ImportError(
            "lenetalex._emu (the CUDA emulator) is not built: run `make test-emu`, or "
            "LENETALEX_EMU=1 python setup.py build_ext --inplace"
        )
    return mod


def asan():
    """Whether the emulator was built under AddressSanitizer (make test-emu-asan)."""
    return bool(load().asan())


@contextlib.contextmanager
def schedule(name, seed=0):
    """Runs the block's fibers in order `name` ('forward', 'reverse', 'random'
    with `seed`) inside the block; LENETALEX_EMU_SCHEDULE sets the default."""
    mod = load()
    old = mod.schedule()
    mod.set_schedule(name, seed)
    try:
        yield
    finally:
        mod.set_schedule(*old)


def _bits(t):
    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def _same_bits(a, b):
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))
    return all(_same_bits(x, y) for x, y in zip(a, b))


def run(op, *args, schedules=SCHEDULES):
    """torch.ops.lenetalex_emu.<op>(*args) under each schedule in turn; raises
    RuntimeError naming the op and the schedules if two results differ in any
    bit (a race between threads, or a read of memory no thread wrote)."""
    load()
    fn = getattr(torch.ops.lenetalex_emu, op)
    first = None
    for name in schedules:
        seed = next(_random_seeds) if name == "random" else 0
        with schedule(name, seed):
            out = fn(*args)
        if first is None:
            first = (name, seed, out)
        elif not _same_bits(first[2], out):
            raise RuntimeError(
                f"CUDA emulator: {op} gave different bits under schedule '{first[0]}' and "
                f"'{name}' (seed {seed}; LENETALEX_EMU_SCHEDULE=random:{seed} repeats it): "
                "a race between threads of a block, or a read of memory no thread wrote"
            )
    return first[2]


@contextlib.contextmanager
def routed(schedules=ROUTED_SCHEDULES):
    """While active, torch.ops.lenetalex.* on CPU tensors run the emulated CUDA
    kernels (through run(), so under each schedule in `schedules`)."""
    load()
    lib = torch.library.Library("lenetalex", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel": meant
        for op in OPS:
            lib.impl(op, lambda *args, op=op: run(op, *args, schedules=schedules), "CPU")
    try:
        yield
    finally:
        lib._destroy()  # the CPU kernels of lenetalex._C are back
