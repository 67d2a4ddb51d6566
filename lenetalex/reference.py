"""Plain-PyTorch references for every lenetalex op, written for clarity, not
speed. Every test and benchmark compares the fused ops against these."""

import torch
import torch.nn.functional as F

SCALED_TANH_A = 1.7159  # LeCun 1998, Appendix A: f(a) = A tanh(S a)
SCALED_TANH_S = 2.0 / 3.0


def activation(x, name):
    """The activations by name: scaled_tanh, tanh, relu, identity."""
    if name == "scaled_tanh":
        return SCALED_TANH_A * torch.tanh(SCALED_TANH_S * x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "identity":
        return x
    raise ValueError(f"unknown activation {name!r}")


def conv2d_activation(
    input, weight, bias=None, stride=1, padding=0, *, groups=1, activation="scaled_tanh"
):
    """act(conv2d(input, weight, bias))."""
    return globals()["activation"](
        F.conv2d(input, weight, bias, stride=stride, padding=padding, groups=groups), activation
    )


def avg_subsample(input, weight, bias=None, kernel_size=2, stride=None, activation="scaled_tanh"):
    """act(weight[c] * mean over each kernel_size x kernel_size window + bias[c]);
    no padding, floor mode, stride defaults to kernel_size; bias may be None."""
    pooled = F.avg_pool2d(input, kernel_size, stride if stride is not None else kernel_size)
    c = input.shape[1]
    pre = pooled * weight.view(1, c, 1, 1)
    if bias is not None:
        pre = pre + bias.view(1, c, 1, 1)
    return globals()["activation"](pre, activation)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """torch.nn.functional.local_response_norm itself: alpha is divided by size,
    and the window is [c - size//2, c + (size-1)//2], zero-padded."""
    return F.local_response_norm(input, size, alpha=alpha, beta=beta, k=k)


def rbf_distance(input, prototypes):
    """(N, D), (K, D) -> (N, K) squared Euclidean distances, via torch.cdist."""
    return torch.cdist(input, prototypes).pow(2)


def rbf_distance_broadcast(input, prototypes):
    """The definition itself, sum_j (x_nj - w_kj)^2, by broadcasting: exact, but
    memory N*K*D, so only for small shapes."""
    return (input[:, None, :] - prototypes[None, :, :]).pow(2).sum(-1)


# The paper says only that j is positive. 1 trained LeNet-5 best of those
# measured (1, 10, 84); why, and the numbers: lenetalex.lenet_map_loss.
DEFAULT_MAP_J = 1.0


def lenet_map_loss(distances, target, j=DEFAULT_MAP_J, reduction="mean"):
    """LeCun 1998's MAP criterion per sample: y[target] + log(exp(-j) + sum_i exp(-y_i))."""
    y_target = distances.gather(1, target.view(-1, 1)).squeeze(1)
    rubbish = torch.full_like(distances[:, :1], -float(j))
    per_sample = y_target + torch.logsumexp(torch.cat([rubbish, -distances], dim=1), dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


__all__ = [
    "SCALED_TANH_A",
    "SCALED_TANH_S",
    "activation",
    "conv2d_activation",
    "avg_subsample",
    "local_response_norm",
    "rbf_distance",
    "rbf_distance_broadcast",
    "lenet_map_loss",
    "DEFAULT_MAP_J",
]
