"""lenetalex: fused kernels for LeNet-5 and AlexNet, as PyTorch custom ops.

Call the fused layers as you would torch.nn.functional:

    import lenetalex
    y = lenetalex.conv2d_activation(x, w, b, stride=1, padding=0, activation="scaled_tanh")

lenetalex.reference holds the same functions in plain PyTorch.
"""
from ._loader import build_info, cpu_isas, load_library, set_cpu_isa

_C = load_library()  # registers torch.ops.lenetalex.* before the Python side below

from .ops import (  # noqa: E402
    avg_subsample,
    conv2d_activation,
    lenet5,
    lenet_map_loss,
    local_response_norm,
    rbf_distance,
)
from . import models, nn, reference  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "avg_subsample",
    "build_info",
    "conv2d_activation",
    "cpu_isas",
    "lenet5",
    "lenet_map_loss",
    "local_response_norm",
    "models",
    "nn",
    "rbf_distance",
    "reference",
    "set_cpu_isa",
]
