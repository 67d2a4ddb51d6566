"""Modules over the fused functions, as torch.nn wraps torch.nn.functional.

Each takes impl="fused" (the lenetalex ops) or impl="reference" (the plain
PyTorch twins in lenetalex.reference). Both build identical parameters and
buffers, so one state_dict loads into either.
"""
import math

import torch
from torch import nn

from . import reference

IMPLS = ("fused", "reference")


def _function(impl, name):
    if impl == "fused":
        import lenetalex

        try:
            return getattr(lenetalex, name)
        except AttributeError:
            raise NotImplementedError(
                f"impl='fused': this lenetalex build has no fused op {name!r}") from None
    if impl == "reference":
        return getattr(reference, name)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


class _OpModule(nn.Module):
    """A module over one function of lenetalex or lenetalex.reference, named
    OP. Setting impl looks the function up once: a lookup per forward costs
    about a microsecond, and LeNet-5's layers are small."""

    OP = None

    @property
    def impl(self):
        return self._impl

    @impl.setter
    def impl(self, impl):
        self._fn = _function(impl, self.OP)
        self._impl = impl


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def lecun_uniform_(tensor, fan_in):
    """LeCun 1998, Appendix A: uniform in (-2.4/F, 2.4/F), F the fan-in."""
    bound = 2.4 / fan_in
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


class Conv2dActivation(_OpModule):
    """Conv2d followed by an activation, fused.

    connection_table: optional bool tensor (out_channels, in_channels // groups);
    its False entries hold their weights at zero and give them zero gradient
    (LeNet-5's sparse C3). init="lecun" draws weights and biases uniformly in
    +-2.4/fan_in, fan_in counting only connected inputs (the bias is not counted);
    init="default" is torch.nn.Conv2d's.
    """

    OP = "conv2d_activation"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1,
                 bias=True, activation="scaled_tanh", connection_table=None, init="default",
                 impl="fused"):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.groups, self.activation, self.impl = groups, activation, impl
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        if connection_table is not None:
            table = torch.as_tensor(connection_table, dtype=torch.bool)
            if table.shape != (out_channels, in_channels // groups):
                raise ValueError(
                    f"connection_table must have shape {(out_channels, in_channels // groups)}, "
                    f"got {tuple(table.shape)}")
            self.register_buffer("connection_table", table)
            # The table as weight's dtype, shaped to multiply it: a buffer, so
            # it follows .to(dtype/device), non-persistent, so the state_dict
            # holds the table alone. One multiply per forward instead of four ops.
            self.register_buffer("connection_mask", table[:, :, None, None].to(self.weight.dtype),
                                 persistent=False)
        else:
            self.connection_table = None
        self.reset_parameters(init)

    def reset_parameters(self, init="default"):
        kh, kw = self.kernel_size
        if init == "lecun":
            if self.connection_table is not None:
                fan_in = self.connection_table.sum(1).to(torch.float64) * (kh * kw)
            else:
                fan_in = torch.full((self.out_channels,), float(self.weight[0].numel()), dtype=torch.float64)
            bound = (2.4 / fan_in.clamp_min(1)).to(self.weight.dtype)
            with torch.no_grad():
                self.weight.uniform_(-1, 1).mul_(bound.view(-1, 1, 1, 1))
                if self.bias is not None:
                    self.bias.uniform_(-1, 1).mul_(bound)
        elif init == "default":
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(self.weight[0].numel())
                nn.init.uniform_(self.bias, -bound, bound)
        else:
            raise ValueError(f"init must be 'lecun' or 'default', got {init!r}")
        if self.connection_table is not None:
            with torch.no_grad():
                self.weight.mul_(self.connection_table[:, :, None, None].to(self.weight.dtype))

    def effective_weight(self):
        if self.connection_table is None:
            return self.weight
        return self.weight * self.connection_mask

    def forward(self, x):
        return self._fn(x, self.effective_weight(), self.bias, self.stride, self.padding,
                        groups=self.groups, activation=self.activation)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}, activation={self.activation!r}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.connection_table is not None:
            s += f", connections={int(self.connection_table.sum())}"
        return s + f", impl={self.impl!r}"


def num_trainable_parameters(module):
    """Parameters that training can change: requires_grad ones, less the
    weights a Conv2dActivation's connection table holds at zero."""
    total = sum(p.numel() for p in module.parameters() if p.requires_grad)
    for m in module.modules():
        if isinstance(m, Conv2dActivation) and m.connection_table is not None and m.weight.requires_grad:
            kh, kw = m.kernel_size
            total -= int((~m.connection_table).sum()) * kh * kw
    return total


class AvgSubsample(_OpModule):
    """LeNet-5's trainable subsampling: act(weight[c] * mean of each window + bias[c]);
    bias=False leaves the shift out.

    init="default" starts at weight 1, bias 0 (plain average pooling).
    init="lecun" follows LeCun 1998, whose unit is coefficient * SUM of the
    window with the coefficient uniform in +-2.4/F, F = kernel_size**2 (kh*kw): on the
    mean that is a weight uniform in +-2.4 (the same function); the bias is
    drawn in +-2.4/F.
    """

    OP = "avg_subsample"

    def __init__(self, channels, kernel_size=2, stride=None, activation="scaled_tanh",
                 init="default", impl="fused", bias=True):
        super().__init__()
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        self.activation, self.impl = activation, impl
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters(init)

    def reset_parameters(self, init="default"):
        if init == "lecun":
            lecun_uniform_(self.weight, 1)  # 2.4/F on the sum = 2.4 on the mean
            kh, kw = _pair(self.kernel_size)
            if self.bias is not None:
                lecun_uniform_(self.bias, kh * kw)
        elif init == "default":
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)
        else:
            raise ValueError(f"init must be 'lecun' or 'default', got {init!r}")

    def forward(self, x):
        return self._fn(x, self.weight, self.bias, self.kernel_size, self.stride, self.activation)

    def extra_repr(self):
        return (f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"activation={self.activation!r}, impl={self.impl!r}")


class LocalResponseNorm(_OpModule):
    """torch.nn.LocalResponseNorm's numbers (alpha divided by size); for the
    AlexNet paper's formula (alpha not divided by n) pass alpha = paper_alpha * size."""

    OP = "local_response_norm"

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, impl="fused"):
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.impl = size, alpha, beta, k, impl

    def forward(self, x):
        return self._fn(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, impl={self.impl!r}"


class RBFOutput(_OpModule):
    """Euclidean RBF units: squared distance of each input row to each prototype.
    The prototypes (K, D) are a buffer unless trainable=True. A floating-point
    tensor keeps its dtype and device (as nn.Linear's weights would, once
    moved); anything else (lists, integer tensors) becomes the default dtype."""

    OP = "rbf_distance"

    def __init__(self, prototypes, trainable=False, impl="fused"):
        super().__init__()
        if isinstance(prototypes, torch.Tensor) and prototypes.is_floating_point():
            prototypes = prototypes.detach().clone()
        else:
            prototypes = torch.as_tensor(prototypes, dtype=torch.get_default_dtype()).clone()
        if prototypes.dim() != 2:
            raise ValueError(f"prototypes must be 2-D (K, D), got shape {tuple(prototypes.shape)}")
        self.impl = impl
        if trainable:
            self.prototypes = nn.Parameter(prototypes)
        else:
            self.register_buffer("prototypes", prototypes)

    def forward(self, x):
        return self._fn(x, self.prototypes)

    def extra_repr(self):
        k, d = self.prototypes.shape
        return f"in_features={d}, units={k}, trainable={isinstance(self.prototypes, nn.Parameter)}, impl={self.impl!r}"
