"""conv2d_activation on the CPU: reference match (forward and grads) across
activations, kernel sizes, strides, paddings, groups, odd sizes, batch 0/1,
layouts and dtypes; gradcheck; opcheck; torch.compile; clear errors.
The CUDA tests of the op live in tests/test_conv2d_activation_cuda.py."""
import pytest
import torch

import lenetalex
from lenetalex import reference
# Normalized-error factors over conftest.TOL (float32 convolutions ~1e-4, docs/DESIGN.md).
from lenetalex.ops.conv2d_activation import TOLERANCE_FACTOR as FACTOR
from lenetalex.shapes import CONV

from conftest import TOL, assert_close

ACTIVATIONS = ["scaled_tanh", "tanh", "relu", "identity"]
DTYPES = [torch.float32, torch.float64]
C3 = CONV["lenet_c3"]

# (input shape, weight shape, stride, padding, groups)
SHAPES = [
    CONV["lenet_c1"].case(2)[:5],  # LeNet C1
    C3.case(2)[:5],  # LeNet C3 (dense)
    CONV["lenet_c5"].case(3)[:5],  # LeNet C5: 1x1 output
    ((1, 3, 51, 51), (8, 3, 11, 11), 4, 0, 1),  # AlexNet conv1-like
    ((1, 8, 13, 13), (16, 4, 5, 5), 1, 2, 2),  # AlexNet conv2-like, groups 2
    ((2, 9, 11, 9), (6, 3, 3, 3), 2, 1, 3),  # groups 3, odd sizes, stride 2
    ((1, 4, 7, 10), (5, 4, 1, 1), 1, 0, 1),  # 1x1 kernel
    ((2, 2, 9, 8), (3, 2, 3, 3), (2, 1), (1, 2), 1),  # pairs of stride/padding
    ((1, 64, 9, 9), (96, 64, 3, 3), 1, 1, 1),  # many channels (Winograd in the avx512 variant, GEMM elsewhere)
    ((2, 6, 12, 12), (4, 3, 5, 5), 4, 2, 2),  # stride 4 with padding
    ((1, 2, 6, 5), (16, 2, 3, 3), 1, (3, 4), 1),  # padding past the kernel: rows of padding only
    ((1, 1, 2, 2), (16, 1, 1, 1), 2**31, 2**31 - 1, 1),  # padding and stride past 2^31 - 1
    ((1, 1, 3, 3), (2, 1, 3, 3), (1, 2**63 - 1), (0, 2), 1),  # stride near 2^63 (GEMM path)
    ((1, 1, 3, 3), (1, 1, 1, 1), (1, 2**63 - 1), (0, 2**61 - 1), 1),  # and padding near 2^61
]


def _make(xs, ws, dtype, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*xs, generator=g, dtype=torch.float64).to(dtype)
    fan_in = ws[1] * ws[2] * ws[3]
    w = (torch.randn(*ws, generator=g, dtype=torch.float64) / fan_in**0.5).to(dtype)
    b = torch.randn(ws[0], generator=g, dtype=torch.float64).to(dtype) if bias else None
    return x, w, b


def _forward_and_grads(fn, x, w, b, conf, grad_out=None):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    stride, padding, groups, activation = conf
    y = fn(*leaves, stride, padding, groups=groups, activation=activation)
    if grad_out is None:
        grad_out = torch.randn_like(y)
    y.backward(grad_out)
    return y, [t.grad for t in leaves if t is not None], grad_out


def _compare(x, w, b, conf, dtype):
    y, grads, g = _forward_and_grads(lenetalex.conv2d_activation, x, w, b, conf)
    y_ref, grads_ref, _ = _forward_and_grads(reference.conv2d_activation, x, w, b, conf, g)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, FACTOR[dtype])
    for a, e in zip(grads, grads_ref):
        assert_close(a, e, dtype, FACTOR[dtype])


# -- reference match -----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("i", range(len(SHAPES)))
def test_matches_reference(i, dtype):
    xs, ws, stride, padding, groups = SHAPES[i]
    x, w, b = _make(xs, ws, dtype)
    _compare(x, w, b, (stride, padding, groups, ACTIVATIONS[i % len(ACTIVATIONS)]), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("i", [1, 5])
def test_every_activation(i, activation, dtype):
    xs, ws, stride, padding, groups = SHAPES[i]
    x, w, b = _make(xs, ws, dtype)
    _compare(x, w, b, (stride, padding, groups, activation), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_bias(dtype):
    x, w, _ = _make((2, 4, 9, 9), (6, 4, 3, 3), dtype)
    _compare(x, w, None, (1, 1, 1, "scaled_tanh"), dtype)


@pytest.mark.parametrize("batch", [0, 1])
def test_batch_zero_and_one(batch):
    x, w, b = _make((batch, 3, 10, 10), (5, 3, 3, 3), torch.float64)
    _compare(x, w, b, (1, 1, 1, "tanh"), torch.float64)
    if batch == 0:
        y, grads, _ = _forward_and_grads(lenetalex.conv2d_activation, x, w, b, (1, 1, 1, "tanh"))
        assert y.shape == (0, 5, 10, 10)
        assert torch.equal(grads[1], torch.zeros_like(w)) and torch.equal(grads[2], torch.zeros_like(b))


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
def test_non_contiguous_input(layout):
    x, w, b = _make(*C3.shapes(2), torch.float64)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
    else:
        x = torch.cat([x, x], dim=3)[..., ::2]
    assert not x.is_contiguous()
    w = w.transpose(2, 3).contiguous().transpose(2, 3)  # a non-contiguous weight too
    _compare(x, w, b, (1, 0, 1, "scaled_tanh"), torch.float64)


def test_non_contiguous_grad_output():
    x, w, b = _make((2, 3, 8, 8), (4, 3, 3, 3), torch.float64)
    x.requires_grad_()
    y = lenetalex.conv2d_activation(x, w, b)
    g = torch.randn(y.shape[::-1], dtype=y.dtype).permute(3, 2, 1, 0)
    (gx,) = torch.autograd.grad(y, x, g)
    x_ref = x.detach().clone().requires_grad_()
    (gx_ref,) = torch.autograd.grad(reference.conv2d_activation(x_ref, w, b), x_ref, g)
    assert_close(gx, gx_ref, torch.float64)


def test_only_requested_grads_are_computed():
    x, w, b = _make((2, 3, 8, 8), (4, 3, 3, 3), torch.float64)
    y = lenetalex.conv2d_activation(x, w, b)
    gx, gw, gb = torch.ops.lenetalex.conv2d_activation_backward(
        torch.ones_like(y), y, x, w, [1, 1], [0, 0], 1, "scaled_tanh", [False, True, False])
    assert gx.numel() == 0 and gb.numel() == 0 and gw.shape == w.shape


def test_deterministic():
    x, w, b = _make(*C3.shapes(8), torch.float32)
    outs = []
    for _ in range(2):
        y, grads, _ = _forward_and_grads(lenetalex.conv2d_activation, x, w, b, (1, 0, 1, "tanh"),
                                         torch.ones(8, 16, 10, 10))
        outs.append([y, *grads])
    for a, e in zip(*outs):
        assert torch.equal(a, e)


# -- autograd, opcheck, compile -------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(activation):
    x, w, b = _make((2, 4, 7, 6), (6, 2, 3, 2), torch.float64, seed=1)
    inputs = [t.requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(
        lambda x, w, b: lenetalex.conv2d_activation(x, w, b, (2, 1), (1, 1), groups=2, activation=activation), inputs)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    x, w, b = _make((2, 4, 9, 8), (6, 2, 3, 3), torch.float32)
    for t in (x, w, b):
        t.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.lenetalex.conv2d_activation.default,
                          (x, w, b, [2, 1], [1, 0], 2, "scaled_tanh"))
    torch.library.opcheck(torch.ops.lenetalex.conv2d_activation.default,
                          (x, w, None, [1, 1], [0, 0], 2, "relu"))


def test_opcheck_backward():
    x, w, b = _make((2, 4, 9, 8), (6, 4, 3, 3), torch.float32)
    y = lenetalex.conv2d_activation(x, w, b)
    torch.library.opcheck(torch.ops.lenetalex.conv2d_activation_backward.default,
                          (torch.randn_like(y), y, x, w, [1, 1], [0, 0], 1, "scaled_tanh",
                           [True, True, True]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaled_tanh_slope_never_negative(dtype):
    # A saturated output saved in bfloat16 is 1.71875, past A = 1.7159: the slope
    # A*S - S*y^2/A would be -0.0025 there; the backward clamps it to 0.
    x, w, _ = _make((1, 1, 4, 4), (2, 1, 3, 3), dtype)
    y = torch.full((1, 2, 2, 2), 1.71875, dtype=dtype)
    y[:, 1] = -1.71875
    gx, gw, gb = torch.ops.lenetalex.conv2d_activation_backward(
        torch.ones_like(y), y, x, w, [1, 1], [0, 0], 1, "scaled_tanh", [True, True, True])
    assert torch.equal(gb, torch.zeros_like(gb))
    assert torch.equal(gx, torch.zeros_like(gx)) and torch.equal(gw, torch.zeros_like(gw))


def test_torch_compile_fullgraph():
    conv = lenetalex.nn.Conv2dActivation(3, 8, 3, padding=1, activation="scaled_tanh")
    x = torch.randn(2, 3, 12, 12)
    compiled = torch.compile(conv, fullgraph=True)
    torch.testing.assert_close(compiled(x), conv(x))
    xr = x.clone().requires_grad_()
    compiled(xr).sum().backward()
    xe = x.clone().requires_grad_()
    reference.conv2d_activation(xe, conv.weight, conv.bias, 1, 1, groups=1, activation="scaled_tanh").sum().backward()
    torch.testing.assert_close(xr.grad, xe.grad, rtol=1e-4, atol=1e-5)


def test_module_fused_equals_reference_and_lecun_init():
    torch.manual_seed(0)
    table = torch.rand(16, 6) > 0.5
    fused = lenetalex.nn.Conv2dActivation(6, 16, 5, connection_table=table, init="lecun")
    ref = lenetalex.nn.Conv2dActivation(6, 16, 5, connection_table=table, impl="reference")
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(3, 6, 14, 14)
    torch.testing.assert_close(fused(x), ref(x), rtol=1e-4, atol=1e-5)
    fan_in = table.sum(1).clamp_min(1) * 25
    assert (fused.weight.abs().amax((1, 2, 3)) <= 2.4 / fan_in).all()
    assert (fused.weight[~table] == 0).all()


# -- bad input -------------------------------------------------------------------

def _args(**over):
    x, w, b = _make((2, 4, 9, 9), (6, 2, 3, 3), torch.float32)
    args = dict(input=x, weight=w, bias=b, stride=1, padding=0, groups=2, activation="relu")
    args.update(over)
    return args


@pytest.mark.parametrize("over,exc,match", [
    (dict(input=torch.randn(4, 9, 9)), ValueError, "input to be 4-D"),
    (dict(weight=torch.randn(6, 2, 3)), ValueError, "weight to be 4-D"),
    (dict(groups=1), ValueError, "input channels per group"),
    (dict(groups=3), ValueError, "groups=3"),
    (dict(groups=0), ValueError, "groups >= 1"),
    (dict(groups=True), TypeError, "expected groups to be an int"),  # not groups=1
    (dict(groups=2.0), TypeError, "expected groups to be an int"),
    (dict(bias=torch.randn(5)), ValueError, "bias of length 6"),
    (dict(bias=torch.randn(6, 1)), ValueError, "bias to be 1-D"),
    (dict(input=torch.ones(2, 4, 9, 9, dtype=torch.int32)), TypeError, "input to be a floating-point"),
    (dict(weight=torch.randn(6, 2, 3, 3, dtype=torch.float64)), TypeError, "weight to have the dtype"),
    (dict(stride=0), ValueError, "stride to be >= 1"),
    (dict(padding=-1), ValueError, "padding to be >= 0"),
    (dict(padding=2**63 - 1), ValueError, "padding below 2"),  # H + 2 * padding would wrap
    (dict(input=torch.randn(2, 4, 2, 2)), ValueError, "larger than the padded input"),
    (dict(input=torch.randn(2, 0, 9, 9), weight=torch.randn(6, 0, 3, 3), groups=1), ValueError,
     "input with at least one channel"),
    (dict(activation="sigmoid"), ValueError, "activation must be one of"),
    (dict(stride=(1, 2, 3)), ValueError, "stride"),
    (dict(stride=(1.9, 1)), TypeError, "stride must be an int or a pair of ints"),  # not truncated
    (dict(padding=(0, 0.5)), TypeError, "padding must be an int or a pair of ints"),
])
def test_bad_input_raises_clearly(over, exc, match):
    with pytest.raises(exc, match=match):
        lenetalex.conv2d_activation(**_args(**over))


@pytest.mark.parametrize("over,match", [
    (dict(input=torch.empty(2, 4, 2, 2)), "larger than the padded input"),
    (dict(groups=1), "groups=1 disagree"),
    (dict(groups=0), "groups >= 1"),
])
def test_fake_kernel_checks_values_too(over, match):
    # On meta tensors (torch.compile's tracing) only the fake kernel runs: it
    # refuses what the C++ checks refuse, rather than inventing a shape.
    args = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in _args(**over).items()}
    with pytest.raises(ValueError, match=match):
        lenetalex.conv2d_activation(**args)


def test_numpy_ints_are_ints():
    # stride/padding/groups from numpy (e.g. a config array) are ints, not floats
    import numpy as np

    args = _args(stride=(np.int64(2), 1), padding=np.array([1, 0]), groups=np.int32(2))
    expected = _args(stride=(2, 1), padding=(1, 0), groups=2)
    torch.testing.assert_close(lenetalex.conv2d_activation(**args),
                               lenetalex.conv2d_activation(**expected), rtol=0, atol=0)


def test_mixed_devices_raise():
    # No GPU here: the meta device stands in for "another device".
    with pytest.raises(ValueError, match="weight to be on the device of input"):
        lenetalex.conv2d_activation(**_args(weight=torch.randn(6, 2, 3, 3, device="meta")))


def test_half_on_cpu_is_a_type_error():
    with pytest.raises(TypeError, match="float32 or float64"):
        lenetalex.conv2d_activation(**_args(input=torch.randn(2, 4, 9, 9).half(),
                                            weight=torch.randn(6, 2, 3, 3).half(), bias=None))


def test_groups_and_activation_are_keyword_only():
    # F.conv2d's sixth positional argument is dilation: a call copied from it
    # gets a TypeError, not its dilation taken as groups.
    x, w, b = _make((1, 4, 6, 6), (4, 2, 3, 3), torch.float32)
    for fn in (lenetalex.conv2d_activation, reference.conv2d_activation):
        with pytest.raises(TypeError, match="positional argument"):
            fn(x, w, b, 1, 0, 2)
        assert fn(x, w, b, 1, 0, groups=2, activation="relu").shape == (1, 4, 4, 4)
