"""rbf_distance: LeNet-5's Euclidean RBF output units, and lenet_map_loss, the
MAP criterion LeNet-5 trains them with.

Schema and checks: csrc/ops/rbf_distance.cpp; kernels:
csrc/cpu/rbf_distance_cpu.cpp and csrc/cuda/rbf_distance_cuda.cu; references:
lenetalex.reference.rbf_distance, rbf_distance_broadcast and lenet_map_loss;
tests: tests/test_rbf.py.
"""
import torch

from ..reference import DEFAULT_MAP_J
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




_REDUCTIONS = ("mean", "sum", "none")


def lenet_map_loss(distances, target, j=DEFAULT_MAP_J, reduction="mean"):
    """LeCun et al. 1998's MAP criterion on RBF distances.

    Per sample ``y[target] + log(exp(-j) + sum_i exp(-y_i))``: the first term
    pulls the correct class's distance down (the MLE criterion), the second
    pushes the other classes' distances up, and ``exp(-j)`` is a "rubbish"
    class that stops classes already farther than about j from being pushed
    further. The loss is always positive (y[target] is at least the smallest
    term, and the log of a sum holding exp(-that) exceeds minus it).

    distances (N, K) floating point, e.g. from :func:`rbf_distance`; target
    (N,) int64 class indices in [0, K); j > 0; reduction "mean", "sum" or
    "none".

    j defaults to 1 (``lenetalex.reference.DEFAULT_MAP_J``; the paper says only
    that j is positive). j is the distance beyond which a class counts as
    "already very large": while the correct class is farther than j, the
    rubbish class dominates and the loss is the MLE criterion (pull the
    correct class in) plus a push on the classes nearer than about j; once it
    is nearer, the classes within a few units of it compete (softmax-like on
    -y). A far larger j (84, where all distances of LeNet-5's 84-wide +-1
    prototypes start) makes it plain cross-entropy on -y. Measured with
    `lenetalex train lenet5` (Fashion-MNIST, the paper's schedule, seed 0):
    10 epochs on all 60,000 images, 89.2% test accuracy with j = 1 and 88.1%
    with j = 10; 4 epochs on 12,000 images, 84.0% with j = 1 or 10 and 79.3%
    with j = 84.

    Computed stably, and accurately where the loss is tiny (the correct class
    clearly nearest): with y* the nearest of the K + 1 terms (the classes and
    the rubbish class at j), the per-sample loss is
    ``(y[target] - y*) + log1p(sum of exp(y* - y_i) over the other terms)``,
    two non-negative parts, so it is >= 0 in floating point too, and > 0 unless
    every other term underflows. Plain PyTorch: autograd and torch.compile
    handle it.
    """
    _check_map_args(distances, target, j, reduction)
    j = float(j)
    k = distances.shape[1]
    nearest = distances.argmin(dim=1)
    y_star = distances.gather(1, nearest[:, None]).squeeze(1)
    # Is a class at least as near as the rubbish class? Then it is the term
    # factored out (and the one its gradient flows through), else the rubbish.
    wins = y_star <= j
    m = torch.where(wins, -y_star, -j)  # -min(j, min_i y_i)
    terms = torch.exp(-distances - m[:, None])
    factored = (torch.arange(k, device=distances.device)[None, :] == nearest[:, None]) & wins[:, None]
    rest = terms.masked_fill(factored, 0).sum(dim=1) + torch.where(wins, torch.exp(-j - m), 0.0)
    per_sample = (distances.gather(1, target[:, None]).squeeze(1) + m) + torch.log1p(rest)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_map_args(distances, target, j, reduction):
    op = "lenet_map_loss"
    if not isinstance(distances, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{op}: expected distances and target to be tensors")
    if distances.dim() != 2:
        raise ValueError(f"{op}: expected distances to be 2-D (N, K), got shape {tuple(distances.shape)}")
    if not distances.is_floating_point():
        raise TypeError(f"{op}: expected distances to be floating point, got {distances.dtype}")
    if distances.shape[1] < 1:
        raise ValueError(f"{op}: expected distances to have at least one class (K >= 1), got shape {tuple(distances.shape)}")
    if target.dim() != 1 or target.shape[0] != distances.shape[0]:
        raise ValueError(
            f"{op}: expected target to be 1-D of length {distances.shape[0]} (distances' N), "
            f"got shape {tuple(target.shape)}"
        )
    if target.dtype != torch.int64:
        raise TypeError(f"{op}: expected target to be int64 class indices, got {target.dtype}")
    if target.device != distances.device:
        raise ValueError(
            f"{op}: expected target to be on the device of distances ({distances.device}), got {target.device}"
        )
    if isinstance(j, torch.Tensor) or not float(j) > 0:  # also rejects nan
        raise ValueError(f"{op}: expected j to be a positive number, got {j!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    # The range check reads target's values: skipped while tracing (torch.compile)
    # and on the meta device, where there are none.
    if not torch.compiler.is_compiling() and target.device.type != "meta" and target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= distances.shape[1]:
            raise ValueError(
                f"{op}: expected target values in [0, {distances.shape[1]}) (distances' K), "
                f"got values in [{lo}, {hi}]"
            )


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
        ("lenet_head 64x84 K10", t(64, 84), signs(10, 84)),
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
