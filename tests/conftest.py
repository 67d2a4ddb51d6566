"""Shared test fixtures. Test files import on a machine without a GPU: CUDA
cases carry the `cuda` marker and skip there."""
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

# (device, dtype) pairs each op supports, CUDA ones marked.
CPU_DTYPES = [torch.float32, torch.float64]
CUDA_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE_DTYPES = [pytest.param("cpu", d, id=f"cpu-{str(d)[6:]}") for d in CPU_DTYPES] + [
    pytest.param("cuda", d, id=f"cuda-{str(d)[6:]}", marks=pytest.mark.cuda) for d in CUDA_DTYPES
]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# Normalized error bounds (max|a-b| / max(max|b|, 1)) per dtype.
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def assert_close(actual, expected, dtype, factor=1.0):
    """Fails with the normalized max error when it exceeds TOL[dtype] * factor."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if e.numel() == 0:
        return
    err = (a - e).abs().max().item() / max(e.abs().max().item(), 1.0)
    assert err <= TOL[dtype] * factor, f"normalized max error {err:.3e} > {TOL[dtype] * factor:.1e}"
