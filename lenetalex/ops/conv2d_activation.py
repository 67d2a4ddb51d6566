"""conv2d_activation: act(conv2d(input, weight, bias)) as one fused op.

Schema and checks: csrc/ops/conv2d_activation.cpp; kernels:
csrc/cpu/conv2d_activation_cpu.cpp (entry) with its paths in
csrc/cpu/conv2d_activation/ (image-batched direct, Winograd, polyphase
(strided kernels through Winograd) and im2col/GEMM; which serves which shapes,
and why: plan.h), and csrc/cuda/conv2d_activation_cuda.cu with its kernels in
csrc/cuda/conv2d_activation/ (plan.cuh); the path a call takes:
torch.ops.lenetalex._conv2d_activation_path; reference:
lenetalex.reference.conv2d_activation; tests: tests/test_conv2d_activation.py,
tests/test_conv2d_activation_paths.py, tests/test_conv2d_activation_cuda.py.
"""
import torch

from ..shapes import CONV
from ._common import check_activation, check_devices, check_int, empty_grad, pair

_op = torch.ops.lenetalex.conv2d_activation.default


def conv2d_activation(
    input, weight, bias=None, stride=1, padding=0, *, groups=1, activation="scaled_tanh"
):
    """``act(F.conv2d(input, weight, bias, stride, padding, groups=groups))`` in one op.

    input (N, C, H, W); weight (out_channels, C / groups, kH, kW); bias
    (out_channels,) or None; stride and padding an int or a pair. activation is
    one of "scaled_tanh" (LeCun's 1.7159 tanh(2x/3)), "tanh", "relu", "identity".

    groups and activation are keyword-only: F.conv2d's sixth positional
    argument is dilation, so a positional call copied from it would otherwise
    pass its dilation as our groups.
    """
    check_activation(activation)
    return _op(input, weight, bias, pair(stride, "stride"), pair(padding, "padding"),
               check_int("conv2d_activation", groups, "groups"), activation)


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


@torch.library.register_fake("lenetalex::conv2d_activation")
def _fake(input, weight, bias, stride, padding, groups, activation):
    check_devices("conv2d_activation", input, weight=weight, bias=bias)
    torch._check(input.dim() == 4, lambda: "conv2d_activation: expected input to be 4-D")
    torch._check(weight.dim() == 4, lambda: "conv2d_activation: expected weight to be 4-D")
    n, c, h, w = input.shape
    # The C++ checks' value rules (the kernels that hold them do not run here).
    op = "conv2d_activation"
    torch._check_value(groups >= 1, lambda: f"{op}: expected groups >= 1, got {groups}")
    torch._check_value(min(stride) >= 1, lambda: f"{op}: expected stride to be >= 1, got {stride}")
    torch._check_value(min(padding) >= 0, lambda: f"{op}: expected padding to be >= 0, got {padding}")
    torch._check_value(c >= 1, lambda: f"{op}: expected input with at least one channel")
    torch._check_value(
        c % groups == 0 and weight.shape[0] % groups == 0 and weight.shape[1] * groups == c,
        lambda: f"{op}: input channels {c}, weight {tuple(weight.shape)} and groups={groups} disagree",
    )
    torch._check_value(
        h + 2 * padding[0] >= weight.shape[2] and w + 2 * padding[1] >= weight.shape[3],
        lambda: f"{op}: kernel size is larger than the padded input",
    )
    oh = _out_size(h, weight.shape[2], stride[0], padding[0])
    ow = _out_size(w, weight.shape[3], stride[1], padding[1])
    return input.new_empty((n, weight.shape[0], oh, ow))


@torch.library.register_fake("lenetalex::conv2d_activation_backward")
def _fake_backward(
    grad_output, output, input, weight, stride, padding, groups, activation, output_mask
):
    gx = input.new_empty(input.shape) if output_mask[0] else empty_grad(input)
    gw = weight.new_empty(weight.shape) if output_mask[1] else empty_grad(weight)
    gb = input.new_empty((weight.shape[0],)) if output_mask[2] else empty_grad(input)
    return gx, gw, gb




# Shapes for `lenetalex check`: LeNet-5's and AlexNet's layers (small batch),
# plus odd shapes, strides, groups and activations.
# Over lenetalex.tolerance.TOLERANCE, for `lenetalex check` and the op's tests:
# convolutions sum many products, float32 is held to ~1e-4; half types to a
# couple of roundings of the output.
TOLERANCE_FACTOR = {torch.float64: 1.0, torch.float32: 10.0, torch.float16: 2.0, torch.bfloat16: 2.0}


def check_cases(device, dtype):
    from .. import reference

    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    cases = [
        ("lenet_c1 scaled_tanh", *CONV["lenet_c1"].case(2)),
        ("lenet_c3 scaled_tanh", *CONV["lenet_c3"].case(2)),
        ("lenet_c5 scaled_tanh", *CONV["lenet_c5"].case(2)),
        ("alexnet_conv1 relu", *CONV["alexnet_conv1"].case(1, size=67)),
        ("alexnet_conv2 relu g2", *CONV["alexnet_conv2"].case(1, size=13)),
        ("odd s2 p1 g3 tanh", (3, 6, 11, 9), (9, 2, 3, 3), 2, 1, 3, "tanh"),
        ("1x1 identity", (2, 5, 7, 7), (4, 5, 1, 1), 1, 0, 1, "identity"),
    ]
    for name, xs, ws, stride, padding, groups, act in cases:
        x, w, b = t(*xs), t(*ws) / (ws[1] * ws[2] * ws[3]) ** 0.5, t(ws[0])
        fused = lambda x, w, b, s=stride, p=padding, gr=groups, a=act: conv2d_activation(x, w, b, s, p, groups=gr, activation=a)
        ref = lambda x, w, b, s=stride, p=padding, gr=groups, a=act: reference.conv2d_activation(x, w, b, s, p, groups=gr, activation=a)
        yield name, fused, ref, (x, w, b)
