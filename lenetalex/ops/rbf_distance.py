"""rbf_distance: LeNet-5's Euclidean RBF output units (the MAP criterion
LeNet-5 trains them with is lenetalex/ops/lenet_map_loss.py).

Schema and checks: csrc/ops/rbf_distance.cpp; kernels:
csrc/cpu/rbf_distance_cpu.cpp and csrc/cuda/rbf_distance_cuda.cu; references:
lenetalex.reference.rbf_distance and rbf_distance_broadcast;
tests: tests/test_rbf_distance.py.
"""
import torch

from ..shapes import RBF_HEAD
from ._common import check_devices, empty_grad

_op = torch.ops.lenetalex.rbf_distance.default


def rbf_distance(input, prototypes):
    """Squared Euclidean distance of each row to each prototype.

    input (N, D), prototypes (K, D) -> (N, K) with
    ``y[n, k] = sum_j (input[n, j] - prototypes[k, j])**2``.

    Computed as written, a sum of squared differences, not through the
    ``|x|^2 - 2 x.w + |w|^2`` expansion that torch.cdist uses for large inputs:
    the result is exact to rounding even where x is close to w at large
    magnitude, and never negative. A prototype equal to an input row gives 0.
    Differentiable in both arguments (the prototypes are usually fixed, and
    then no work is spent on their grad).
    """
    return _op(input, prototypes)


@torch.library.register_fake("lenetalex::rbf_distance")
def _fake(input, prototypes):
    check_devices("rbf_distance", input, prototypes=prototypes)
    torch._check(input.dim() == 2, lambda: "rbf_distance: expected input to be 2-D (N, D)")
    torch._check(prototypes.dim() == 2, lambda: "rbf_distance: expected prototypes to be 2-D (K, D)")
    torch._check(
        prototypes.shape[1] == input.shape[1],
        lambda: "rbf_distance: expected prototypes of the width of input",
    )
    return input.new_empty((input.shape[0], prototypes.shape[0]))


@torch.library.register_fake("lenetalex::rbf_distance_backward")
def _fake_backward(grad_output, input, prototypes, output_mask):
    gx = input.new_empty(input.shape) if output_mask[0] else empty_grad(input)
    gw = prototypes.new_empty(prototypes.shape) if output_mask[1] else empty_grad(prototypes)
    return gx, gw


# Cases for `lenetalex check`: LeNet-5's head, a wide one, odd widths, large
# magnitudes with near-equal rows.
def check_cases(device, dtype):
    from .. import reference

    g = torch.Generator().manual_seed(0)

    def t(*shape, scale=1.0):
        x = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
        return x.to(device=device, dtype=dtype)

    signs = lambda k, d: (torch.randint(0, 2, (k, d), generator=g) * 2 - 1).to(device=device, dtype=dtype)
    cases = [
        ("lenet_head 64x84 K10", t(64, RBF_HEAD[1]), signs(*RBF_HEAD)),
        ("odd 33x7 K17", t(33, 7), t(17, 7)),
        ("wide 40x300 K100", t(40, 300), t(100, 300)),
        ("single 1x1 K1", t(1, 1), t(1, 1)),
    ]
    for name, x, w in cases:
        yield name, rbf_distance, reference.rbf_distance_broadcast, (x, w)
    # Prototypes near the inputs at magnitude 1e3: checked against the exact
    # broadcast form (cdist's expansion would fail this one).
    x = t(32, 20) + 1000
    w = torch.cat([x[:5], x[5:10] + 0.01 * t(5, 20)])
    yield "near 1e3 32x20 K10", rbf_distance, reference.rbf_distance_broadcast, (x, w)
