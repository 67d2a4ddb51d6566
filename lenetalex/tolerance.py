"""How close a fused op must come to its reference: one table, for
`lenetalex check` (lenetalex/check.py) and the tests (tests/conftest.py).

The error is normalized: max|actual - expected| / max(max|expected|, 1).
An op whose arithmetic rounds more (a convolution sums many products; half
types' grads sum many rounded terms) is held to TOLERANCE[dtype] times a
factor, which its module states (TOLERANCE_FACTOR in lenetalex/ops/<op>.py)
and the check and the op's tests use.
"""
import torch

# float64 to ~1e-10, float32 to ~1e-5 (convolutions ~1e-4: factor 10),
# half types to a rounding or two of their precision (float32 accumulation).
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 2e-2,
}

# Where many roundings pile up: a whole network in one op (lenetalex.lenet5),
# or a reference computed in the same low precision as the op
# (bench/gpu_kernels.py). float32 ~1e-4, float16 1e-2, bfloat16 5e-2.
LOOSE_FACTOR = {torch.float64: 1.0, torch.float32: 10.0, torch.float16: 5.0, torch.bfloat16: 2.5}


def max_error(actual, expected):
    """The normalized max error; inf where the shapes differ."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if actual.shape != expected.shape:
        return float("inf")
    if expected.numel() == 0:
        return 0.0
    return (actual - expected).abs().max().item() / max(expected.abs().max().item(), 1.0)
