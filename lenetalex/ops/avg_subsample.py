"""avg_subsample: LeNet-5's trainable subsampling, act(weight[c] * window mean + bias[c]), as one fused op.

Schema and checks: csrc/ops/avg_subsample.cpp; kernels:
csrc/cpu/avg_subsample_cpu.cpp and csrc/cuda/avg_subsample_cuda.cu;
reference: lenetalex.reference.avg_subsample; tests: tests/test_avg_subsample.py.
"""
import torch

from ..shapes import SUBSAMPLE, with_batch
from ._common import check_activation, check_devices, empty_grad, pair

_op = torch.ops.lenetalex.avg_subsample.default


def avg_subsample(input, weight, bias=None, kernel_size=2, stride=None, activation="scaled_tanh"):
    """``act(weight[c] * mean of each kernel_size window of input[n, c] + bias[c])`` in one op.

    input (N, C, H, W); weight (C,); bias (C,) or None (no shift).
    kernel_size and stride are an int or a pair; stride defaults to
    kernel_size. No padding, floor mode: trailing rows and columns that do not
    fill a window are dropped, as in F.avg_pool2d. activation is one of
    "scaled_tanh" (LeCun's 1.7159 tanh(2x/3)), "tanh", "relu", "identity".
    """
    check_activation(activation)
    kernel_size = pair(kernel_size, "kernel_size")
    stride = kernel_size if stride is None else pair(stride, "stride")
    return _op(input, weight, bias, kernel_size, stride, activation)


def _out_size(size, k, s):
    return (size - k) // s + 1


@torch.library.register_fake("lenetalex::avg_subsample")
def _fake(input, weight, bias, kernel_size, stride, activation):
    check_devices("avg_subsample", input, weight=weight, bias=bias)
    torch._check(input.dim() == 4, lambda: "avg_subsample: expected input to be 4-D")
    torch._check(weight.dim() == 1, lambda: "avg_subsample: expected weight to be 1-D")
    torch._check(bias is None or bias.dim() == 1, lambda: "avg_subsample: expected bias to be 1-D")
    n, c, h, w = input.shape
    # The C++ checks' value rules (the kernels that hold them do not run here).
    op = "avg_subsample"
    torch._check_value(min(kernel_size) >= 1 and min(stride) >= 1,
                       lambda: f"{op}: expected kernel_size and stride >= 1")
    torch._check_value(weight.shape[0] == c and (bias is None or bias.shape[0] == c),
                       lambda: f"{op}: expected weight and bias of length {c} (input's channels)")
    torch._check_value(kernel_size[0] <= h and kernel_size[1] <= w,
                       lambda: f"{op}: kernel_size {tuple(kernel_size)} is larger than the input")
    oh = _out_size(h, kernel_size[0], stride[0])
    ow = _out_size(w, kernel_size[1], stride[1])
    return input.new_empty((n, c, oh, ow))


@torch.library.register_fake("lenetalex::avg_subsample_backward")
def _fake_backward(grad_output, output, input, weight, kernel_size, stride, activation, output_mask):
    gx = input.new_empty(input.shape) if output_mask[0] else empty_grad(input)
    gw = weight.new_empty(weight.shape) if output_mask[1] else empty_grad(weight)
    gb = weight.new_empty(weight.shape) if output_mask[2] else empty_grad(weight)
    return gx, gw, gb




def check_cases(device, dtype):
    """Cases for `lenetalex check`: LeNet-5's S2 and S4 (small batch), then odd
    shapes, overlapping and gapped windows, and every activation."""
    from .. import reference

    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    cases = [
        ("lenet_s2 scaled_tanh", with_batch(SUBSAMPLE["lenet_s2"], 2), 2, None, "scaled_tanh"),
        ("lenet_s4 scaled_tanh", with_batch(SUBSAMPLE["lenet_s4"], 2), 2, None, "scaled_tanh"),
        ("odd 2x2 tanh", (3, 5, 11, 9), 2, None, "tanh"),
        ("k3 s2 overlap relu", (2, 4, 13, 10), 3, 2, "relu"),
        ("k2 s3 gaps identity", (2, 3, 11, 12), 2, 3, "identity"),
        ("k(3,2) s(1,2) scaled_tanh", (1, 7, 8, 9), (3, 2), (1, 2), "scaled_tanh"),
    ]
    for name, xs, k, s, act in cases:
        x, w, b = t(*xs), t(xs[1]), t(xs[1])
        fused = lambda x, w, b, k=k, s=s, a=act: avg_subsample(x, w, b, k, s, a)
        ref = lambda x, w, b, k=k, s=s, a=act: reference.avg_subsample(x, w, b, k, s, a)
        yield name, fused, ref, (x, w, b)
