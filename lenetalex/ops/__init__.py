"""Python entry points of the fused ops: one module per op, each registering its
fake kernels and autograd. Imported only after lenetalex._C has loaded."""
from .avg_subsample import avg_subsample
from .conv2d_activation import conv2d_activation
from .lenet5 import lenet5
from .lenet_map_loss import lenet_map_loss
from .local_response_norm import local_response_norm
from .rbf_distance import rbf_distance

__all__ = [
    "avg_subsample",
    "conv2d_activation",
    "lenet5",
    "lenet_map_loss",
    "local_response_norm",
    "rbf_distance",
]
