"""avg_subsample: the fused op against lenetalex.reference.avg_subsample, its
autograd, fake kernels, torch.compile, argument checks, and nn.AvgSubsample."""
import itertools

import pytest
import torch

import lenetalex
from lenetalex import reference
from lenetalex.nn import AvgSubsample
from lenetalex.ops._common import ACTIVATIONS
from lenetalex.shapes import SUBSAMPLE, with_batch

from conftest import CUDA, DEVICE_DTYPES, DEVICES, TOL, assert_close

# Half types: the backward reads the activation's derivative off a rounded output.
GRAD_FACTOR = {torch.float64: 1.0, torch.float32: 1.0, torch.float16: 4.0, torch.bfloat16: 4.0}


def _inputs(shape, device, dtype, seed=0, weight_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    c = shape[1]
    w = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5) * weight_scale
    b = torch.randn(c, generator=g, dtype=torch.float64) * 0.5
    return [t.to(device=device, dtype=dtype) for t in (x, w, b)]


def _fwd_bwd(fn, x, w, b, grad, *args):
    x, w, b = (t.detach().requires_grad_(True) for t in (x, w, b))
    y = fn(x, w, b, *args)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), grad)
    return y.detach(), gx, gw, gb


def check_against_reference(x, w, b, kernel_size=2, stride=None, activation="scaled_tanh"):
    """Forward and the three grads of the fused op vs the reference, which runs
    in float64 on the CPU from the same (possibly rounded) inputs."""
    dtype = x.dtype
    args = (kernel_size, stride, activation)
    y = lenetalex.avg_subsample(x.detach(), w.detach(), b.detach(), *args)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fused = _fwd_bwd(lenetalex.avg_subsample, x, w, b, g.to(x.device, dtype), *args)
    ref = _fwd_bwd(reference.avg_subsample, *(t.detach().cpu().double() for t in (x, w, b)), g, *args)
    assert fused[0].dtype == dtype and fused[0].device == x.device
    assert_close(fused[0], ref[0], dtype)
    for a, e in zip(fused[1:], ref[1:]):
        assert a.dtype == dtype
        assert_close(a, e, dtype, factor=GRAD_FACTOR[dtype])


# -- reference match ---------------------------------------------------------

@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
@pytest.mark.parametrize("stride", [None, 1, 2, 3])
def test_matches_reference(device, dtype, kernel_size, stride):
    # Odd sizes: floor mode drops trailing rows / columns for most (k, s).
    x, w, b = _inputs((3, 4, 11, 13), device, dtype)
    for act in ACTIVATIONS:
        check_against_reference(x, w, b, kernel_size, stride, act)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", [*(with_batch(s, 4) for s in SUBSAMPLE.values()), (2, 3, 9, 7), (1, 2, 2, 2)],
                         ids=[*SUBSAMPLE, "odd", "one_window"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_lenet_2x2(device, dtype, shape, activation):
    x, w, b = _inputs(shape, device, dtype)
    check_against_reference(x, w, b, 2, None, activation)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel_size,stride", [((3, 2), (1, 2)), ((2, 3), (3, 1)), ((1, 4), 2), (3, (2, 1))])
def test_pair_kernel_and_stride(device, dtype, kernel_size, stride):
    x, w, b = _inputs((2, 3, 10, 9), device, dtype)
    check_against_reference(x, w, b, kernel_size, stride, "tanh")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_kernel_equals_input(device, dtype):
    x, w, b = _inputs((2, 3, 4, 5), device, dtype)
    check_against_reference(x, w, b, (4, 5), 1, "scaled_tanh")  # one window per plane


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_batch_zero(device, dtype):
    x, w, b = _inputs((0, 3, 8, 8), device, dtype)
    x, w, b = (t.requires_grad_(True) for t in (x, w, b))
    y = lenetalex.avg_subsample(x, w, b)
    assert y.shape == (0, 3, 4, 4)
    gx, gw, gb = torch.autograd.grad(y.sum(), (x, w, b))
    assert gx.shape == x.shape
    assert torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros_like(b))


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_batch_one(device, dtype):
    x, w, b = _inputs((1, 5, 7, 7), device, dtype)
    check_against_reference(x, w, b, 3, 2, "scaled_tanh")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_many_channels(device, dtype):
    # More channels than CUDA's gridDim.y: the backward strides over channels.
    x, w, b = _inputs((2, 70000, 2, 3), device, dtype)
    check_against_reference(x, w, b, 2, None, "tanh")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_non_contiguous_and_channels_last(device, dtype):
    x, w, b = _inputs((3, 8, 15, 12), device, dtype)
    check_against_reference(x.contiguous(memory_format=torch.channels_last), w, b, 2)
    check_against_reference(x[:, 1::2, 1:, ::2], w[::2], b[1::2], 2, 1, "relu")
    check_against_reference(x.transpose(2, 3), w, b, 3, 2, "tanh")
    wide = torch.stack([w, w], 1)
    check_against_reference(x, wide[:, 0], wide[:, 1], 2, None, "identity")  # strided weight, bias


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_non_contiguous_grad_output(device, dtype):
    x, w, b = _inputs((2, 3, 8, 8), device, dtype)
    x, w, b = (t.requires_grad_(True) for t in (x, w, b))
    fused = torch.autograd.grad(lenetalex.avg_subsample(x, w, b).sum(), (x, w, b))  # expanded grad
    ref = torch.autograd.grad(reference.avg_subsample(x, w, b).sum(), (x, w, b))
    for a, e in zip(fused, ref):
        assert_close(a, e, dtype, factor=GRAD_FACTOR[dtype] * 4)


# -- the backward op itself --------------------------------------------------

@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel_size,stride", [(2, 2), (3, 2), (2, 3)])
def test_backward_output_mask(device, dtype, kernel_size, stride):
    x, w, b = _inputs((2, 3, 9, 8), device, dtype)
    k, s = [kernel_size] * 2, [stride] * 2
    y = torch.ops.lenetalex.avg_subsample(x, w, b, k, s, "scaled_tanh")
    g = torch.randn_like(y)
    full = torch.ops.lenetalex.avg_subsample_backward(g, y, x, w, k, s, "scaled_tanh", [True] * 3)
    for mask in itertools.product([False, True], repeat=3):
        got = torch.ops.lenetalex.avg_subsample_backward(g, y, x, w, k, s, "scaled_tanh", list(mask))
        for asked, a, e in zip(mask, got, full):
            if asked:
                assert_close(a, e, dtype)
            else:
                assert a.shape == (0,)


@pytest.mark.parametrize("device", DEVICES)
def test_reductions_deterministic(device):
    x, w, b = _inputs(with_batch(SUBSAMPLE["lenet_s2"], 64), device, torch.float32)
    runs = []
    for threads in (1, 2, 1):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            runs.append(_fwd_bwd(lenetalex.avg_subsample, x, w, b, torch.ones(64, 6, 14, 14, device=device)))
        finally:
            torch.set_num_threads(old)
    for other in runs[1:]:
        for a, e in zip(runs[0], other):
            assert torch.equal(a, e)


# -- autograd, fake kernels, compile -----------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size,stride,activation",
                         [(2, None, "scaled_tanh"), (3, 2, "tanh"), (2, 3, "relu"), ((2, 3), 1, "identity")])
def test_gradcheck(device, kernel_size, stride, activation):
    x, w, b = _inputs((2, 3, 7, 8), device, torch.float64)
    x, w, b = (t.requires_grad_(True) for t in (x, w, b))
    fn = lambda x, w, b: lenetalex.avg_subsample(x, w, b, kernel_size, stride, activation)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    # and each grad alone (other output_mask patterns)
    for i in range(3):
        args = [t.detach().requires_grad_(j == i) for j, t in enumerate((x, w, b))]
        assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, dtype, requires_grad):
    x, w, b = _inputs((2, 3, 9, 8), device, dtype)
    for t in (x, w, b):
        t.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.lenetalex.avg_subsample.default, (x, w, b, [2, 2], [2, 2], "scaled_tanh"))
    torch.library.opcheck(torch.ops.lenetalex.avg_subsample.default, (x, w, b, [3, 2], [1, 2], "relu"))
    y = torch.ops.lenetalex.avg_subsample(x.detach(), w.detach(), b.detach(), [2, 2], [2, 2], "tanh")
    g = torch.randn_like(y)
    for mask in ([True, True, True], [False, True, False], [True, False, True]):
        torch.library.opcheck(torch.ops.lenetalex.avg_subsample_backward.default,
                              (g, y, x.detach(), w.detach(), [2, 2], [2, 2], "tanh", mask))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    x, w, b = _inputs((3, 4, 11, 10), device, torch.float32)

    def f(x, w, b):
        return lenetalex.avg_subsample(x, w, b, 2, activation="scaled_tanh").square().sum()

    compiled = torch.compile(f, fullgraph=True)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    eager_leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    out = compiled(*leaves)
    grads = torch.autograd.grad(out, leaves)
    eager = f(*eager_leaves)
    eager_grads = torch.autograd.grad(eager, eager_leaves)
    assert_close(out, eager, torch.float32)
    for a, e in zip(grads, eager_grads):
        assert_close(a, e, torch.float32)


# -- bad input -----------------------------------------------------------------

def _bad_cases(device):
    x, w, b = _inputs((2, 3, 8, 8), device, torch.float32)
    f = lenetalex.avg_subsample
    return [
        (lambda: f(x[0], w, b), ValueError, r"avg_subsample: expected input to be 4-D"),
        (lambda: f(x, w[:2], b), ValueError, r"expected weight of length 3"),
        (lambda: f(x, w, torch.cat([b, b])), ValueError, r"expected bias of length 3"),
        (lambda: f(x, w.view(3, 1), b), ValueError, r"expected weight to be 1-D"),
        (lambda: f(x, w, b, kernel_size=9), ValueError, r"kernel_size \(9, 9\) is larger than the input"),
        (lambda: f(x, w, b, kernel_size=(2, 9)), ValueError, r"kernel_size \(2, 9\) is larger"),
        (lambda: f(x, w, b, kernel_size=0), ValueError, r"expected kernel_size to be >= 1"),
        (lambda: f(x, w, b, stride=0), ValueError, r"expected stride to be >= 1"),
        (lambda: f(x, w, b, stride=(1, -1)), ValueError, r"expected stride to be >= 1"),
        (lambda: f(x, w, b, kernel_size=(2, 2, 2)), ValueError, r"kernel_size must be an int or a pair"),
        (lambda: f(x.long(), w, b), TypeError, r"expected input to be a floating-point tensor"),
        (lambda: f(x, w.double(), b), TypeError, r"expected weight to have the dtype of input"),
        (lambda: f(x, w, b.half()), TypeError, r"expected bias to have the dtype of input"),
        (lambda: f(x, w, b, activation="sigmoid"), ValueError, r"activation must be one of"),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input(device):
    for call, exc, match in _bad_cases(device):
        with pytest.raises(exc, match=match):
            call()


def test_bad_input_cpu_half():
    x, w, b = _inputs((2, 3, 8, 8), "cpu", torch.float16)
    with pytest.raises(TypeError, match=r"on the CPU input must be float32 or float64"):
        lenetalex.avg_subsample(x, w, b)


def test_fake_kernel_checks_values_too():
    x, w, b = (t.to("meta") for t in _inputs((2, 3, 4, 4), "cpu", torch.float32))
    with pytest.raises(ValueError, match="larger than the input"):
        lenetalex.avg_subsample(x, w, b, kernel_size=9)
    with pytest.raises(ValueError, match="weight and bias of length 3"):
        lenetalex.avg_subsample(x, w[:2], b, kernel_size=2)


def test_double_backward_raises():
    # A second derivative must raise, not return zeros.
    x, w, b = (t.requires_grad_() for t in _inputs((1, 2, 4, 4), "cpu", torch.float64))
    (gx,) = torch.autograd.grad(lenetalex.avg_subsample(x, w, b, 2).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="avg_subsample: double backward"):
        torch.autograd.grad(gx.sum(), w)


@pytest.mark.parametrize("arg", ["kernel_size", "stride"])
def test_float_pairs_raise(arg):
    x, w, b = _inputs((1, 2, 8, 8), "cpu", torch.float32)
    with pytest.raises(TypeError, match=f"{arg} must be an int or a pair of ints"):
        lenetalex.avg_subsample(x, w, b, **{"kernel_size": 2, arg: (2.7, 2)})


@pytest.mark.cuda
def test_bad_input_cuda_float8():
    x, w, b = (t.to(torch.float8_e4m3fn) for t in _inputs((2, 3, 8, 8), CUDA, torch.float32))
    with pytest.raises(TypeError, match=r"on cuda input must be float32, float16, bfloat16 or float64"):
        lenetalex.avg_subsample(x, w, b)


@pytest.mark.parametrize("other", ["cpu", pytest.param(CUDA, marks=pytest.mark.cuda, id="cuda")])
def test_mixed_devices(other):
    x, w, b = _inputs((2, 3, 8, 8), other, torch.float32)
    meta = [t.to("meta") for t in (x, w, b)]
    with pytest.raises(ValueError, match=r"expected weight to be on the device of input"):
        lenetalex.avg_subsample(x, meta[1], b)
    with pytest.raises(ValueError, match=r"expected bias to be on the device of input"):
        lenetalex.avg_subsample(x, w, meta[2])
    with pytest.raises(ValueError, match=r"expected weight to be on the device of input"):
        lenetalex.avg_subsample(meta[0], w, b)


@pytest.mark.cuda
@pytest.mark.gpu
def test_mixed_cpu_cuda():
    x, w, b = _inputs((2, 3, 8, 8), "cuda", torch.float32)
    with pytest.raises(ValueError, match=r"expected weight to be on the device of input"):
        lenetalex.avg_subsample(x, w.cpu(), b)
    with pytest.raises(ValueError, match=r"expected bias to be on the device of input"):
        lenetalex.avg_subsample(x, w, b.cpu())


def test_bad_backward_arguments():
    x, w, b = _inputs((2, 3, 8, 8), "cpu", torch.float32)
    y = torch.ops.lenetalex.avg_subsample(x, w, b, [2, 2], [2, 2], "tanh")
    bw = torch.ops.lenetalex.avg_subsample_backward
    with pytest.raises(ValueError, match=r"avg_subsample_backward: expected grad_output of shape \[2, 3, 4, 4\]"):
        bw(y[:, :, :3], y, x, w, [2, 2], [2, 2], "tanh", [True] * 3)
    with pytest.raises(ValueError, match=r"avg_subsample_backward: expected output of shape"):
        bw(y, y[:1], x, w, [2, 2], [2, 2], "tanh", [True] * 3)
    with pytest.raises(TypeError, match=r"expected grad_output to have the dtype of input"):
        bw(y.double(), y, x, w, [2, 2], [2, 2], "tanh", [True] * 3)


# -- nn.AvgSubsample -------------------------------------------------------------

def test_module_parameters_and_init():
    m = AvgSubsample(6)
    assert m.weight.shape == (6,) and m.bias.shape == (6,)
    assert torch.equal(m.weight, torch.ones(6)) and torch.equal(m.bias, torch.zeros(6))
    torch.manual_seed(0)
    m = AvgSubsample(1000, kernel_size=2, init="lecun")
    # LeCun's coefficient multiplies the window's SUM and is drawn in +-2.4/F
    # (F = 4); on the mean that is +-2.4. The bias is drawn in +-2.4/F.
    for p, bound in ((m.weight, 2.4), (m.bias, 2.4 / 4)):
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.9 * bound  # drawn over the whole range
        assert p.min() < 0 < p.max()
    m = AvgSubsample(10, kernel_size=(2, 3), init="lecun")  # a rectangular window
    assert m.bias.abs().max() <= 2.4 / 6


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel_size,stride,activation", [(2, None, "scaled_tanh"), (3, 2, "relu")])
def test_module_fused_equals_reference(device, dtype, kernel_size, stride, activation):
    torch.manual_seed(0)
    fused = AvgSubsample(6, kernel_size, stride, activation, init="lecun", impl="fused")
    ref = AvgSubsample(6, kernel_size, stride, activation, impl="reference")
    ref.load_state_dict(fused.state_dict())
    fused.to(device, dtype)
    ref.to("cpu", torch.float64)
    x = _inputs((4, 6, 13, 12), device, dtype)[0]
    xf, xr = x.clone().requires_grad_(True), x.detach().cpu().double().requires_grad_(True)
    yf, yr = fused(xf), ref(xr)
    assert_close(yf, yr, dtype)
    g = torch.randn(yr.shape, dtype=torch.float64)
    yf.backward(g.to(device, dtype))
    yr.backward(g)
    for a, e in [(xf.grad, xr.grad), (fused.weight.grad, ref.weight.grad), (fused.bias.grad, ref.bias.grad)]:
        assert_close(a, e, dtype, factor=GRAD_FACTOR[dtype])


# -- bias None ---------------------------------------------------------------------

@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel_size,stride", [(2, None), (3, 2)])
def test_bias_none(device, dtype, kernel_size, stride):
    # As conv2d_activation's: no bias is no shift, and no grad is asked for it.
    x, w, _ = _inputs((2, 3, 9, 8), device, dtype)
    zero = torch.zeros_like(w)
    g = torch.randn(lenetalex.avg_subsample(x, w, None, kernel_size, stride).shape, dtype=dtype, device=device)
    leaves = [t.clone().requires_grad_() for t in (x, w)]
    y = lenetalex.avg_subsample(*leaves, None, kernel_size, stride, "tanh")
    grads = torch.autograd.grad(y, leaves, g)
    ref = _fwd_bwd(lenetalex.avg_subsample, x, w, zero, g, kernel_size, stride, "tanh")
    torch.testing.assert_close(y, ref[0], rtol=0, atol=0)
    for a, e in zip(grads, ref[1:3]):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    assert_close(reference.avg_subsample(x.cpu().double(), w.cpu().double(), None, kernel_size, stride, "tanh"),
                 y, dtype)
    torch.testing.assert_close(lenetalex.avg_subsample(x, w, kernel_size=kernel_size, stride=stride, activation="tanh"),
                               y.detach(), rtol=0, atol=0)  # bias defaults to None
    torch.library.opcheck(torch.ops.lenetalex.avg_subsample.default,
                          (x, w.requires_grad_(), None, [kernel_size] * 2, [stride or kernel_size] * 2, "tanh"))


def test_bias_none_compiles_and_module():
    torch._dynamo.reset()
    x, w, _ = _inputs((2, 3, 8, 8), "cpu", torch.float32)
    f = torch.compile(lambda x, w: lenetalex.avg_subsample(x, w, None), fullgraph=True)
    assert_close(f(x, w), lenetalex.avg_subsample(x, w, None), torch.float32)
    m = AvgSubsample(3, bias=False, init="lecun")
    assert m.bias is None and [n for n, _ in m.named_parameters()] == ["weight"]
    twin = AvgSubsample(3, bias=False, impl="reference")
    twin.load_state_dict(m.state_dict())
    assert_close(m(x), twin(x), torch.float32)
