"""Build lenetalex._C: CPU kernels always, CUDA kernels when a CUDA toolchain and
a CUDA build of torch are both present.

Overrides (environment):
  LENETALEX_CUDA=1    force the CUDA build (fails loudly without nvcc / CUDA torch)
  LENETALEX_CUDA=0    force a CPU-only build
  TORCH_CUDA_ARCH_LIST  architectures to compile for (default "8.0;9.0")
  LENETALEX_NATIVE=1  tune the CPU kernels for this machine (-mtune=native; each
                      ISA variant keeps its own instruction set)
  LENETALEX_CPU_ISAS  CPU kernel variants to build, e.g. "baseline,avx2" for a
                      quicker development build (default: all; see below)
  MAX_JOBS            parallel compile jobs (torch's own variable)
  LENETALEX_NO_EXTENSION=1  install the Python package only, for an editable
                      install over an extension already built with
                      `setup.py build_ext --inplace` (the Makefile does this)
  LENETALEX_EMU=1     build lenetalex._emu instead: the CUDA kernels compiled by
                      the host compiler into the CUDA emulator (csrc/cuda_emu),
                      as CPU kernels of torch.ops.lenetalex_emu.*; needs no CUDA
  LENETALEX_EMU_ASAN=1  the same under AddressSanitizer (make test-emu-asan)

Compiling CUDA needs nvcc, not a GPU.
"""
import glob
import os
import platform
import shutil
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
# Sources and build folders are relative to this file, whatever the caller's cwd.
os.chdir(HERE)
DEFAULT_ARCHS = "8.0;9.0"


def _say(msg):
    print(f"[lenetalex build] {msg}", file=sys.stderr, flush=True)


def _locate_cuda_home():
    """torch guesses CUDA_HOME from the nvcc on PATH; follow symlinks so an nvcc
    linked into /usr/local/bin still resolves to the real toolkit."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        # A real toolkit has its runtime headers beside nvcc (an nvcc in
        # /usr/local/bin alone doesn't make /usr/local a CUDA home).
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and os.path.exists(
            os.path.join(home, "include", "cuda_runtime.h")
        ):
            os.environ["CUDA_HOME"] = home
            return


_locate_cuda_home()

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def _want_cuda():
    flag = os.environ.get("LENETALEX_CUDA", "").strip().lower()
    have_nvcc = cpp_extension.CUDA_HOME is not None and os.path.exists(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
    )
    cuda_torch = torch.version.cuda is not None
    if flag in ("0", "false", "off", "no"):
        return False, "LENETALEX_CUDA=0"
    if flag in ("1", "true", "on", "yes"):
        if not have_nvcc:
            raise RuntimeError(
                "LENETALEX_CUDA=1 but no nvcc was found: set CUDA_HOME to the CUDA toolkit"
            )
        if not cuda_torch:
            raise RuntimeError(
                f"LENETALEX_CUDA=1 but the installed torch {torch.__version__} is a CPU-only build"
            )
        return True, "LENETALEX_CUDA=1"
    if not cuda_torch:
        return False, f"torch {torch.__version__} is a CPU-only build"
    if not have_nvcc:
        return False, "no nvcc found (set CUDA_HOME to build the CUDA kernels)"
    return True, f"nvcc at {cpp_extension.CUDA_HOME}, torch built with CUDA {torch.version.cuda}"


def _extension():
    use_cuda, why = _want_cuda()
    sources = sorted(glob.glob(os.path.join(HERE, "csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join(HERE, "csrc", "ops", "*.cpp")))
    sources += sorted(glob.glob(os.path.join(HERE, "csrc", "autograd", "*.cpp")))
    sources = [os.path.relpath(s, HERE) for s in sources]

    cxx = ["-O3", "-fopenmp", "-DLENETALEX_OPENMP=1"]
    define_macros = [("LENETALEX_VERSION", '"0.1.0"')]
    kwargs = dict(
        name="lenetalex._C",
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_link_args=["-fopenmp"],
    )
    if use_cuda:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        cu = sorted(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")))
        sources += [os.path.relpath(s, HERE) for s in cu]
        define_macros += [
            ("LENETALEX_WITH_CUDA", "1"),
            ("LENETALEX_CUDA_ARCHS", '"' + archs.replace('"', "") + '"'),
        ]
        nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        _say(f"building CUDA + CPU kernels ({why}); architectures: {archs}")
        ext = cpp_extension.CUDAExtension(
            sources=sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            **kwargs,
        )
    else:
        _say(f"building CPU-only kernels ({why})")
        ext = cpp_extension.CppExtension(
            sources=sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx},
            **kwargs,
        )
    _add_cpu_variants(ext)
    _say(f"torch {torch.__version__}, {len(sources)} source files")
    _write_build_config(use_cuda)
    return ext


def _emu_extension():
    """lenetalex._emu: csrc/cuda/*.cu compiled as C++ (each through a one-line
    wrapper that includes it, so the sources stay as they are) with the
    emulator runtime and the schemas of csrc/ops, in namespace lenetalex_emu."""
    asan = os.environ.get("LENETALEX_EMU_ASAN") == "1"
    wrap_dir = os.path.join("build", "emu-asan-src" if asan else "emu-src")
    os.makedirs(wrap_dir, exist_ok=True)
    sources = []
    for cu in sorted(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu"))):
        name = os.path.splitext(os.path.basename(cu))[0]
        wrapper = os.path.join(wrap_dir, name + ".cpp")
        text = f'#include "cuda/{name}.cu"\n'
        if not os.path.exists(wrapper) or open(wrapper).read() != text:
            with open(wrapper, "w") as f:
                f.write(text)
        sources.append(wrapper)
    for folder in ("cuda_emu", "ops"):
        sources += [os.path.relpath(s, HERE) for s in sorted(glob.glob(os.path.join(HERE, "csrc", folder, "*.cpp")))]
    # Hidden symbols: the emulated kernels share names (and inline functions,
    # whose device branch differs) with lenetalex._C in the same process.
    cxx = ["-O2", "-g0", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-Wno-unknown-pragmas"]
    link = []
    if asan:
        cxx = ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-fvisibility=hidden",
               "-Wno-unknown-pragmas"]
        link = ["-fsanitize=address"]
    _say(f"building the CUDA emulator module lenetalex._emu{' under AddressSanitizer' if asan else ''}"
         f" ({len(sources)} source files, torch {torch.__version__})")
    return cpp_extension.CppExtension(
        name="lenetalex._emu",
        sources=sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=[("LENETALEX_CUDA_EMU", "1")],
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )


def _write_build_config(use_cuda):
    """Record what the binary is built against, so that a failed load of _C can
    say so (the binary itself can't be asked then)."""
    with open(os.path.join(HERE, "lenetalex", "_build_config.py"), "w") as f:
        f.write("# Written by setup.py at build time; do not edit.\n")
        f.write(f"TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"TORCH_CUDA_VERSION = {torch.version.cuda!r}\n")
        f.write(f"CUDA_COMPILED = {use_cuda!r}\n")
        f.write(f"PYTHON_VERSION = {sys.version.split()[0]!r}\n")


# ---- CPU ISA variants ---------------------------------------------------------
# csrc/cpu/*.cpp is compiled once per instruction set and linked into _C; the
# variant in use is picked at run time (csrc/cpu/isa.h, csrc/cpu_isa.cpp), as
# ATen does with CPU_CAPABILITY. The flags here and the CPU features
# cpu_isa.cpp checks before running a variant must agree. Index = cpu_isa.h's.
CPU_VARIANTS = [
    ("baseline", ["-msse4.2", "-mpopcnt"]),  # x86-64-v2's vector part
    ("avx2", ["-mavx2", "-mfma", "-mf16c"]),
    ("avx512", ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"]),
]

# The first two change no result (no reassociation, no approximations; the
# kernels never read errno or FP exception flags). -fno-trapping-math lets gcc
# vectorize loops with selects (tanh_vec's, LRN's s^-0.75) without AVX-512's
# masks: with the default, gcc 12 if-converts no select while a division might
# trap ("control flow in loop" in -fopt-info-vec), so the AVX2 and SSE builds
# left the activation epilogues and LRN's rows scalar, and lenet5_cpu.cpp's
# squash loop (tanh over 8-image vectors; 72% of its forward's perf samples
# when scalar) stays scalar in every variant (-fopt-info-vec, avx2 variant: the
# loop at its squash_values vectorizes with the flag, not without). -fno-math-errno
# lets std::sqrt vectorize.
# -Wno-unknown-pragmas: ATen's vector headers (at::vec) carry "#pragma unroll"
# for other compilers, and gcc 12 cannot silence that around an #include
# (the diagnostic pragma is ignored for preprocessor warnings).
CPU_VARIANT_COMMON = ["-fno-trapping-math", "-fno-math-errno", "-Wno-unknown-pragmas"]


def _cpu_variants():
    """[(index, name, flags)] to build: all three on x86-64, the baseline alone
    (the compiler's defaults) elsewhere. The baseline is always built: its
    compile registers the ops' CPU kernels."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return [(0, "baseline", [])]
    wanted = os.environ.get("LENETALEX_CPU_ISAS", "").replace(" ", "")
    names = [n for n in wanted.split(",") if n] or [n for n, _ in CPU_VARIANTS]
    unknown = set(names) - {n for n, _ in CPU_VARIANTS}
    if unknown:
        raise RuntimeError(f"LENETALEX_CPU_ISAS: unknown variants {sorted(unknown)}; "
                           f"expected some of {[n for n, _ in CPU_VARIANTS]}")
    tune = ["-mtune=native"] if os.environ.get("LENETALEX_NATIVE", "0") == "1" else []
    return [(i, n, f + CPU_VARIANT_COMMON + tune) for i, (n, f) in enumerate(CPU_VARIANTS)
            if n in names or n == "baseline"]


def _add_cpu_variants(ext):
    ext.cpu_variant_sources = sorted(
        os.path.relpath(s, HERE) for s in glob.glob(os.path.join(HERE, "csrc", "cpu", "**", "*.cpp"), recursive=True))
    ext.cpu_variants = _cpu_variants()
    # A changed kernel source or header relinks _C (the objects are ninja's business).
    ext.depends = list(ext.depends) + sorted(
        os.path.relpath(s, HERE) for s in glob.glob(os.path.join(HERE, "csrc", "**", "*.h"),
                                                      recursive=True)) + ext.cpu_variant_sources
    for _, name, flags in ext.cpu_variants:
        _say(f"CPU kernels, {name} variant: {' '.join(flags) or 'compiler defaults'}")


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension, plus the CPU kernels once per ISA variant: each
    variant's objects (own flags, own LENETALEX_ISA_NS) in their own folder of
    build_temp, through the same ninja compile, then linked into _C after the
    objects compiled once (the linker keeps the first copy of an inline
    function, so any copy shared with code outside the variants is the
    portable one)."""

    def build_extension(self, ext):
        variants = getattr(ext, "cpu_variants", [])
        if variants:
            cxx = ext.extra_compile_args
            cxx = list(cxx["cxx"] if isinstance(cxx, dict) else cxx)
            objects = []
            for index, name, flags in variants:
                # ATen's own names too: at::vec::Vectorized then takes this
                # variant's vectors, in its own namespace (at::vec::AVX2, ...).
                cap = {"baseline": "DEFAULT", "avx2": "AVX2", "avx512": "AVX512"}[name]
                macros = list(ext.define_macros) + [
                    ("LENETALEX_ISA_NS", f"isa_{name}"), ("LENETALEX_ISA_ID", str(index)),
                    ("CPU_CAPABILITY", cap), (f"CPU_CAPABILITY_{cap}", None)]
                objects += self.compiler.compile(
                    ext.cpu_variant_sources, output_dir=os.path.join(self.build_temp, f"isa-{name}"),
                    macros=macros, include_dirs=ext.include_dirs, debug=self.debug,
                    extra_postargs=cxx + flags, depends=ext.depends)
            ext.extra_objects = objects + [o for o in (ext.extra_objects or []) if o not in objects]
            ext.depends = [d for d in ext.depends if d not in objects] + objects
        super().build_extension(ext)


if os.environ.get("LENETALEX_EMU") == "1" or os.environ.get("LENETALEX_EMU_ASAN") == "1":
    EXT_MODULES = [_emu_extension()]
elif os.environ.get("LENETALEX_NO_EXTENSION") == "1":
    _say("LENETALEX_NO_EXTENSION=1: Python package only (extension built in place)")
    EXT_MODULES = []
else:
    EXT_MODULES = [_extension()]

setup(
    ext_modules=EXT_MODULES,
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
