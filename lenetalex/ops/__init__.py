"""Python entry points of the fused ops: one module per op, each registering its
fake kernels and autograd. Imported only after lenetalex._C has loaded."""
from .conv2d_activation import conv2d_activation
from .avg_subsample import avg_subsample

__all__ = ["conv2d_activation"]
