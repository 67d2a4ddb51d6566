"""Loads the compiled library lenetalex._C, whose import registers the
torch.ops.lenetalex.* schemas and kernels. A failed load says what the binary was
built against and what is running, instead of a bare undefined-symbol error."""
import sys

import torch


def load_library():
    try:
        from . import _C  # noqa: F401  (registers the ops)
    except ImportError as exc:
        raise ImportError(_explain_failure(exc)) from exc
    # Chooses the CPU kernel variant now, so that a bad LENETALEX_CPU_ISA
    # raises here, naming the variable, rather than in the first op.
    _C.cpu_isa()
    return _C


def _explain_failure(exc):
    running = (
        f"running: torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"Python {sys.version.split()[0]}"
    )
    try:
        from . import _build_config as cfg

        built = (
            f"built against: torch {cfg.TORCH_VERSION} (CUDA {cfg.TORCH_CUDA_VERSION}), "
            f"Python {cfg.PYTHON_VERSION}, CUDA kernels {'on' if cfg.CUDA_COMPILED else 'off'}"
        )
    except ImportError:
        built = "built against: unknown (no build record; the extension was probably never built)"
    return (
        f"lenetalex: could not load the compiled extension lenetalex._C ({exc}).\n"
        f"  {built}\n  {running}\n"
        "Rebuild it against the torch you run: pip install --no-build-isolation -e ."
    )


def build_info():
    """What this installation of lenetalex was built with: a dict with `version`,
    `torch`, `cuda_compiled` (bool), `cuda_arch_list` (list of str), `openmp`
    (bool), `cpu_isa` (the CPU kernel variant in use: "baseline", "avx2" or
    "avx512") and `cpu_isa_compiled` (the variants this binary holds)."""
    from . import _C

    flags = _C.compiled_flags()
    archs = [a for a in flags["cuda_archs"].replace(",", ";").replace(" ", ";").split(";") if a]
    return {
        "version": flags["version"],
        "torch": torch.__version__,
        "cuda_compiled": bool(flags["cuda_compiled"]),
        "cuda_arch_list": archs,
        "openmp": bool(flags["openmp"]),
        "cpu_isa": _C.cpu_isa(),
        "cpu_isa_compiled": [name for name, compiled, _ in _C.cpu_isa_variants() if compiled],
    }


def cpu_isas():
    """The CPU kernel variants this binary holds and this CPU runs, best last:
    some of "baseline", "avx2", "avx512"."""
    from . import _C

    return [name for name, compiled, supported in _C.cpu_isa_variants() if compiled and supported]


def set_cpu_isa(isa):
    """Run the CPU kernels of variant `isa` ("baseline", "avx2", "avx512", or
    "auto" for the best this CPU runs) from now on, in every thread; returns
    the variant now in use. The LENETALEX_CPU_ISA environment variable sets the
    same at import. Raises ValueError for an unknown name and RuntimeError for
    a variant this binary lacks or this CPU cannot run."""
    from . import _C

    if not isinstance(isa, str):
        raise TypeError(f"set_cpu_isa: expected isa to be a str, got {type(isa).__name__}")
    return _C.set_cpu_isa(isa)
