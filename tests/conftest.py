"""Shared test fixtures. Test files import on a machine without a GPU. CUDA
cases carry the `cuda` marker: they run on a GPU when there is one, else on
the CUDA emulator (lenetalex._emu, built by `make test-emu`), which runs the
same CUDA kernels on CPU tensors, else they skip. Cases that need a real GPU
(streams, tensors on two devices, torch.compile's GPU code) carry `gpu` too."""
import pytest
import torch

from lenetalex import emu
from lenetalex.tolerance import TOLERANCE as TOL
from lenetalex.tolerance import max_error

HAS_CUDA = torch.cuda.is_available()
EMULATED = not HAS_CUDA and emu.available()
# Where `cuda` cases put their tensors: the GPU, or the CPU for the emulator.
CUDA = "cuda" if HAS_CUDA else "cpu"

# (device, dtype) pairs each op supports, CUDA ones marked.
CPU_DTYPES = [torch.float32, torch.float64]
CUDA_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE_DTYPES = [pytest.param("cpu", d, id=f"cpu-{str(d)[6:]}") for d in CPU_DTYPES] + [
    pytest.param(CUDA, d, id=f"cuda-{str(d)[6:]}", marks=pytest.mark.cuda) for d in CUDA_DTYPES
]
DEVICES = ["cpu", pytest.param(CUDA, marks=pytest.mark.cuda, id="cuda")]


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    no_gpu = pytest.mark.skip(reason="needs a real GPU")
    no_cuda = pytest.mark.skip(reason="no CUDA device, and no CUDA emulator (make test-emu)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(no_gpu)
        elif item.get_closest_marker("cuda") and not EMULATED:
            item.add_marker(no_cuda)


@pytest.fixture(autouse=True)
def _cuda_kernels_in_emulator(request):
    """A `cuda` case without a GPU: torch.ops.lenetalex.* on CPU tensors run the
    emulated CUDA kernels, each call under every schedule (bits must agree)."""
    if EMULATED and request.node.get_closest_marker("cuda"):
        with emu.routed():
            yield
    else:
        yield


@pytest.fixture(autouse=True)
def _float32_without_tf32(request):
    """`cuda` cases check float32 to float32's tolerance: TF32 off for cuDNN (which
    the fused conv's large layers and the references run) unless a test turns it on
    (test_float32_follows_allow_tf32)."""
    if not request.node.get_closest_marker("cuda"):
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def assert_close(actual, expected, dtype, factor=1.0):
    """Fails with the normalized max error (lenetalex.tolerance) when it exceeds
    TOL[dtype] * factor."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = max_error(actual, expected)
    assert err <= TOL[dtype] * factor, f"normalized max error {err:.3e} > {TOL[dtype] * factor:.1e}"
