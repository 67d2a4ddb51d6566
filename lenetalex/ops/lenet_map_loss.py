"""lenet_map_loss: LeNet-5's MAP criterion on the RBF distances of
lenetalex/ops/rbf_distance.py.

Plain PyTorch (no kernel of its own: autograd and torch.compile handle it);
reference: lenetalex.reference.lenet_map_loss; tests:
tests/test_lenet_map_loss.py and
tests/test_models.py.
"""
import torch

from ..reference import DEFAULT_MAP_J

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
