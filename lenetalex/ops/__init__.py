"""Python entry points of the fused ops: one module per op, each registering its
fake kernels and autograd. Imported only after lenetalex._C has loaded."""
from .conv2d_activation import conv2d_activation
from .local_response_norm import local_response_norm

__all__ = ["conv2d_activation"]
