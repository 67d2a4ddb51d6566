"""local_response_norm: the fused op against lenetalex.reference.local_response_norm
(= F.local_response_norm) and against the AlexNet paper's formula written out,
its autograd, fake kernels, torch.compile, argument checks, and
nn.LocalResponseNorm."""
import pytest
import torch

import lenetalex
from lenetalex import reference
from lenetalex.nn import LocalResponseNorm

from conftest import CUDA, DEVICE_DTYPES, DEVICES, TOL, assert_close

# Half types: dx mixes two terms of opposite sign, each rounded on the way in.
GRAD_FACTOR = {torch.float64: 1.0, torch.float32: 1.0, torch.float16: 4.0, torch.bfloat16: 4.0}


def _input(shape, device, dtype, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _fwd_bwd(fn, x, grad, *args):
    x = x.detach().requires_grad_(True)
    y = fn(x, *args)
    (gx,) = torch.autograd.grad(y, x, grad)
    return y.detach(), gx


def check_against_reference(x, size, alpha=1e-4, beta=0.75, k=1.0, grad=None):
    """Forward and grad of the fused op vs F.local_response_norm, which runs in
    float64 on the CPU from the same (possibly rounded) inputs."""
    dtype = x.dtype
    args = (size, alpha, beta, k)
    if grad is None:
        grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        grad = grad.to(x.device, dtype)
    fused = _fwd_bwd(lenetalex.local_response_norm, x, grad, *args)
    ref = _fwd_bwd(reference.local_response_norm, x.detach().cpu().double(), grad.cpu().double(), *args)
    assert fused[0].dtype == dtype and fused[0].device == x.device
    assert fused[1].dtype == dtype and fused[1].device == x.device
    assert_close(fused[0], ref[0], dtype)
    assert_close(fused[1], ref[1], dtype, factor=GRAD_FACTOR[dtype])


# -- reference match ---------------------------------------------------------

@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("channels", [1, 2, 3, 5, 96, 256])
@pytest.mark.parametrize("size", range(1, 10))
def test_matches_reference(device, dtype, channels, size):
    # Odd spatial sizes; sizes larger than the channel count; even sizes (the
    # forward window and the backward's transposed window are aligned differently).
    x = _input((2, channels, 5, 7), device, dtype, seed=size)
    check_against_reference(x, size, alpha=0.5, beta=0.75, k=1.0)
    check_against_reference(x, size, alpha=0.5, beta=0.6, k=1.0)  # the general-beta path


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("alpha,beta,k", [
    (1e-4, 0.75, 2.0),   # cuda-convnet2's AlexNet
    (5e-4, 0.75, 2.0),   # the paper's AlexNet in PyTorch's convention
    (1e-4, 0.75, 1.0),   # Caffe's bvlc_alexnet
    (2.0, 0.5, 1.0),
    (1.0, 1.0, 0.5),
    (0.3, 1.7, 3.0),
    (0.5, 0.0, 1.0),     # s^0 = 1: y = x
    (0.2, -0.5, 1.0),    # a negative beta multiplies instead
    (3.0, 0.75, 1e-3),   # a small k: s spans decades
    (-1.0, 1.0, -1.0),   # s < 0: a whole beta has a real power, odd: negative
    (-1.0, 2.0, -1.0),   # even: positive
    (-0.5, -1.0, -2.0),  # negative and whole
])
@pytest.mark.parametrize("size", [2, 5])
def test_alpha_beta_k(device, dtype, alpha, beta, k, size):
    x = _input((3, 11, 4, 5), device, dtype)
    check_against_reference(x, size, alpha, beta, k)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", [(32, 96, 13, 13), (4, 256, 5, 6)], ids=["conv1", "conv2"])
def test_alexnet_layers(device, dtype, shape):
    # AlexNet's two LRN inputs (smaller spatial size): ReLU outputs, paper parameters.
    x = torch.relu(_input(shape, device, dtype, scale=30.0))
    check_against_reference(x, 5, 5e-4, 0.75, 2.0)
    check_against_reference(x, 5, 1e-4, 0.75, 1.0)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("size,channels", [(32, 100), (33, 100), (40, 150), (64, 64), (100, 150), (301, 40)])
def test_large_windows(device, dtype, size, channels):
    # Windows as long as the restart period (32) or longer, and much longer than C.
    x = _input((2, channels, 3, 2), device, dtype)
    check_against_reference(x, size, alpha=size * 0.1, beta=0.75, k=1.0)
    check_against_reference(x, size, alpha=size * 0.1, beta=0.9, k=1.0)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_window_size_near_int64_max(device, dtype):
    # A window past every channel: the sum over all C; the chunk and ring
    # counts derived from size must not overflow.
    size = 2**63 - 1
    x = _input((2, 7, 3, 2), device, dtype)
    grad = _input((2, 7, 3, 2), device, dtype, seed=1)

    def by_formula(t):
        return t * (1.0 + (0.1 * size) / size * t.pow(2).sum(1, keepdim=True)) ** -0.75

    fused = _fwd_bwd(lenetalex.local_response_norm, x, grad, size, 0.1 * size, 0.75, 1.0)
    ref = _fwd_bwd(by_formula, x.detach().cpu().double(), grad.cpu().double())
    assert_close(fused[0], ref[0], dtype)
    assert_close(fused[1], ref[1], dtype, factor=GRAD_FACTOR[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,big", [(torch.float64, 1e15), (torch.float32, 1e7)], ids=["f64", "f32"])
@pytest.mark.parametrize("size", [1, 5])
def test_one_huge_channel_does_not_spoil_the_next(device, dtype, big, size):
    # Dropping big^2 from a sliding sum left its rounding error behind: the
    # channels after it were off by up to 1e9-fold (found by fuzzing). Forward
    # and grad against the reference, which sums each window afresh.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 40, 3, 2, generator=g, dtype=torch.float64)
    x[0, 3, 1, 1] = big
    x[1, 20:23, 0, 0] = -big
    check_against_reference(x.to(device, dtype), size, alpha=0.5 * size, beta=0.75, k=1.0)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_many_channels_no_drift(device, dtype):
    # 4096 channels whose magnitudes span 6 decades, in runs: a sliding sum that
    # never restarted would carry the rounding of every large square it dropped.
    g = torch.Generator().manual_seed(3)
    mag = 10.0 ** torch.randint(-3, 4, (1, 4096 // 64, 1, 1), generator=g).double()
    x = torch.randn(2, 4096, 3, 3, generator=g, dtype=torch.float64) * mag.repeat_interleave(64, 1)
    x = x.to(device, dtype)
    for size in (5, 6):
        y = lenetalex.local_response_norm(x, size, 1e-3, 0.75, 1.0)
        ref = reference.local_response_norm(x.cpu().double(), size, 1e-3, 0.75, 1.0)
        # relative to each element (the usual max-normalized error would hide the
        # small ones); float16's subnormals are held to float16's smallest normal
        rel = ((y.cpu().double() - ref).abs() / ref.abs().clamp(min=torch.finfo(dtype).tiny)).max().item()
        assert rel <= {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 2e-2), rel


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_large_then_small_channels(device, dtype):
    # A huge square leaves the window, tiny ones stay: the window sum must not
    # keep the big one's rounding (k small so that it would show). The sums are
    # double: exact for float32 squares; for float64 a sliding sum keeps
    # ~eps64 * (the largest square of its last <= 32 steps), here 1e6 * 1e-16.
    # Sizes 3 and 5 sum each window directly (fixed-window code), 4 slides.
    x = torch.full((1, 70, 2, 3), 1e-2, dtype=torch.float64)
    x[:, 10] = 1e3
    x = x.to(device, dtype)
    for size in (3, 4, 5):
        y = lenetalex.local_response_norm(x, size, 3.0, 0.75, 1e-3)
        ref = reference.local_response_norm(x.cpu().double(), size, 3.0, 0.75, 1e-3)
        # Relative to the output, or to the dtype's smallest normal below it: a
        # float16 output of 3e-7 is subnormal, with an ulp of 6e-8 (20%).
        scale = ref.abs().clamp_min(torch.finfo(dtype).tiny)
        rel = ((y.cpu().double() - ref).abs() / scale).max().item()
        assert rel <= {torch.float64: 1e-7, torch.float32: 1e-6}.get(dtype, 5e-2), (size, rel)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("alpha,beta,k", [(1e-4, 0.75, 2.0), (1e-4, 0.75, 0.0), (0.5, 0.6, 0.0), (0.5, 0.6, 1.0)])
def test_nonfinite_inputs(device, dtype, alpha, beta, k):
    # inf and nan spoil the windows that hold them and no others (a sliding sum
    # would carry them on: inf - inf is nan); k = 0 with an all-zero window is
    # 0 / 0 = nan, as in the reference. Sizes 3 and 5 take the fixed-window
    # code (a direct sum per window), 2, 4 and 6 the sliding sums.
    inf, nan = float("inf"), float("nan")
    vals = [0.0, 1.0, -2.0, inf, 0.0, 3.0, nan, 0.0, 0.0, 0.0, 0.5, 5.0, 1.0, 2.0, -inf, 1.0, 2.0, 3.0, 4.0, 5.0]
    x = torch.tensor(vals * 2, dtype=torch.float64).view(2, 20, 1, 1).repeat(1, 1, 3, 1)
    x = x.to(device, dtype)
    for size in (2, 3, 4, 5, 6):
        y = lenetalex.local_response_norm(x, size, alpha, beta, k).cpu().double()
        ref = reference.local_response_norm(x.cpu().double(), size, alpha, beta, k)
        assert torch.equal(y.isnan(), ref.isnan())
        ok = ~ref.isnan()
        assert torch.allclose(y[ok], ref[ok], rtol=TOL[dtype] * 10, atol=0)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("size", [3, 5])
def test_fixed_window_paths(device, dtype, size):
    # On CUDA sizes 3 and 5 take the fixed-window kernels: 4 positions a thread
    # where L % 4 == 0 and the tensors are 4-element aligned (here L = 32), one
    # where not (an offset storage), channel chunks with halos (70 channels over
    # few columns: 3 chunks of 24).
    x = _input((2, 70, 4, 8), device, dtype, seed=size)
    check_against_reference(x, size, alpha=0.5, beta=0.75, k=1.0)
    check_against_reference(x, size, alpha=0.5, beta=0.6, k=2.0)
    shifted = torch.empty(x.numel() + 1, device=device, dtype=dtype)[1:].view(x.shape)
    shifted.copy_(x)
    check_against_reference(shifted, size, alpha=0.5, beta=0.75, k=1.0)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("size", [2, 3, 4, 5, 6])
def test_sizes_around_the_fixed_windows(device, dtype, size):
    # Sizes 3 and 5 take fixed-window code (on the CPU each window summed
    # directly from its S rows, and the backward's ring of S channels), 2, 4
    # and 6 the sliding sums. Rows long enough that the CPU splits each image's
    # positions into blocks, odd lengths (a vector loop's tail in every block:
    # L = 2501 in 2 blocks), channels fewer than the window (fewer than the
    # ring's slots), windows cut at both ends.
    for shape in [(2, 9, 61, 41), (3, 2, 3, 3), (1, 4, 1, 13), (2, 1, 2, 5)]:
        x = _input(shape, device, dtype, seed=size)
        check_against_reference(x, size, alpha=0.5, beta=0.75, k=1.0)
        check_against_reference(x, size, alpha=0.5, beta=0.6, k=2.0)


@pytest.mark.parametrize("size", [3, 4, 5])
@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_float32_squares_past_the_range_cpu(size, beta):
    # |x| > 1.8e19: x^2 overflows float32, so the CPU's float window sums of
    # sizes 3 and 5 redo such rows in double (size 4: the sliding sums are
    # double). With beta 0.6 a float sum's s = inf would give y = 0 where
    # float64 gives 0.06. (s itself stays within float32 here: past that the
    # s^-beta in float32 is the limit, on every path.)
    x = _input((2, 12, 3, 2), "cpu", torch.float32)
    x[0, 4, 1, 1] = 3e19
    x[1, 7, 0, 0] = -1e21
    check_against_reference(x, size, alpha=1e-4, beta=beta, k=2.0)


@pytest.mark.parametrize("size", [3, 5])
def test_float32_squares_below_the_range_cpu(size):
    # x ~ 1e-22: x^2 is a float32 denormal with a few significant bits, or 0.
    # With k = 1e-30 and alpha / size = 1e15 those squares are most of s: float
    # window sums would put y off by 20-35%. The CPU takes its double sums
    # where k < alpha / size * size * (the smallest normal float); forward
    # only (the backward's float t overflows at this scale).
    x = _input((2, 9, 3, 4), "cpu", torch.float32, scale=1e-22)
    y = lenetalex.local_response_norm(x, size, 1e15 * size, 0.75, 1e-30)
    ref = reference.local_response_norm(x.double(), size, 1e15 * size, 0.75, 1e-30)
    assert ref.abs().max() > 0.1  # y of order 1: the squares matter
    assert_close(y, ref, torch.float32)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_3d_and_5d(device, dtype):
    for shape in [(3, 7, 10), (2, 6, 1), (2, 7, 3, 4, 5), (1, 9, 2, 1, 3, 2)]:
        for size in (2, 3):
            check_against_reference(_input(shape, device, dtype), size, 0.5, 0.75, 1.0)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_empty(device, dtype):
    for shape in [(0, 5, 4, 4), (2, 0, 4, 4), (2, 5, 0, 3), (0, 3, 4)]:
        x = _input(shape, device, dtype).requires_grad_(True)
        y = lenetalex.local_response_norm(x, 3)
        assert y.shape == x.shape and y.dtype == dtype
        (gx,) = torch.autograd.grad(y.sum(), x)
        assert gx.shape == x.shape


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_one_position_one_image(device, dtype):
    check_against_reference(_input((1, 7, 1, 1), device, dtype), 4, 0.5, 0.75, 1.0)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_non_contiguous_and_channels_last(device, dtype):
    x = _input((3, 12, 9, 10), device, dtype)
    check_against_reference(x.contiguous(memory_format=torch.channels_last), 5, 0.5, 0.75, 2.0)
    check_against_reference(x[:, 1::2, 1:, ::2], 4, 0.5, 0.75, 2.0)
    check_against_reference(x.transpose(2, 3), 3, 0.5, 0.6, 2.0)
    check_against_reference(x.transpose(0, 1), 6, 0.5, 0.75, 2.0)  # channels outermost
    y = lenetalex.local_response_norm(x.contiguous(memory_format=torch.channels_last), 5)
    assert y.is_contiguous()  # a new contiguous tensor, whatever the input's layout


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_non_contiguous_grad_output(device, dtype):
    x = _input((2, 6, 5, 4), device, dtype).requires_grad_(True)
    (fused,) = torch.autograd.grad(lenetalex.local_response_norm(x, 4, 0.5).sum(), x)  # expanded grad
    # The reference in float64 on the CPU (torch has no CPU avg_pool3d in half
    # types, which F.local_response_norm uses, for the CUDA emulator's tensors).
    xr = x.detach().cpu().double().requires_grad_(True)
    (ref,) = torch.autograd.grad(reference.local_response_norm(xr, 4, 0.5).sum(), xr)
    assert_close(fused, ref, dtype, factor=GRAD_FACTOR[dtype] * 4)
    g = _input((2, 6, 4, 5), device, dtype).transpose(2, 3)
    check_against_reference(x.detach(), 5, 0.5, 0.75, 1.0, grad=g)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_across_threads(device):
    x = _input((3, 40, 30, 30), device, torch.float32)
    g = _input((3, 40, 30, 30), device, torch.float32, seed=1)
    runs = []
    for threads in (1, 2, 1):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            runs.append(_fwd_bwd(lenetalex.local_response_norm, x, g, 5, 1e-2, 0.75, 2.0))
        finally:
            torch.set_num_threads(old)
    for other in runs[1:]:
        for a, e in zip(runs[0], other):
            assert torch.equal(a, e)


# -- the paper's convention ----------------------------------------------------

def _paper_lrn(a, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """Krizhevsky et al. 2012, section 3.3, as written: b_i = a_i / (k + alpha *
    sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a_j^2)^beta, alpha NOT
    divided by n. Plain loops over one pixel's channels."""
    out = []
    for i in range(len(a)):
        lo, hi = max(0, i - n // 2), min(len(a) - 1, i + n // 2)
        out.append(a[i] / (k + alpha * sum(a[j] ** 2 for j in range(lo, hi + 1))) ** beta)
    return out


PAPER_PIXEL = [0.594291582, 1.187871011, 1.780140394, 2.373609292, 2.967455545]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_paper_formula(device, dtype):
    by_hand = _paper_lrn([1.0, 2.0, 3.0, 4.0, 5.0])
    assert by_hand == pytest.approx(PAPER_PIXEL, rel=1e-9)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=dtype, device=device).view(1, 5, 1, 1)
    # the paper's alpha 1e-4, times size 5: PyTorch's convention divides it again
    y = lenetalex.local_response_norm(x, 5, alpha=1e-4 * 5, beta=0.75, k=2.0)
    assert y.flatten().double().cpu().tolist() == pytest.approx(PAPER_PIXEL, rel=max(TOL[dtype] * 2, 1e-9))
    assert y.flatten().double().cpu().tolist() == pytest.approx(by_hand, rel=TOL[dtype] * 2)
    # and alpha=1e-4 as the paper prints it is not the paper's layer
    wrong = lenetalex.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=2.0)
    assert wrong.flatten().double().cpu().tolist() != pytest.approx(PAPER_PIXEL, rel=1e-5)


def test_paper_formula_whole_tensor():
    x = torch.relu(_input((2, 9, 3, 2), "cpu", torch.float64, scale=20.0))
    y = lenetalex.local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)
    for n in range(2):
        for h in range(3):
            for w in range(2):
                assert y[n, :, h, w].tolist() == pytest.approx(_paper_lrn(x[n, :, h, w].tolist()), rel=1e-12)


# -- the backward op itself ----------------------------------------------------

@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_backward_op_direct(device, dtype):
    x = _input((2, 9, 4, 3), device, dtype)
    g = _input((2, 9, 4, 3), device, dtype, seed=1)
    gx = torch.ops.lenetalex.local_response_norm_backward(g, x, 4, 0.5, 0.75, 1.5)
    _, ref = _fwd_bwd(reference.local_response_norm, x.cpu().double(), g.cpu().double(), 4, 0.5, 0.75, 1.5)
    assert_close(gx, ref, dtype, factor=GRAD_FACTOR[dtype])


def test_saves_only_the_input():
    x = _input((2, 8, 5, 5), "cpu", torch.float32).requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = lenetalex.local_response_norm(x, 5)
    assert len(saved) == 1 and saved[0] is x  # the input itself: nothing new allocated
    y.sum().backward()


# -- autograd, fake kernels, compile -----------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size,beta", [(1, 0.75), (2, 0.75), (3, 0.6), (4, 0.75), (5, 1.3), (6, 0.75), (9, 0.75)])
def test_gradcheck(device, size, beta):
    x = _input((2, 7, 3, 2), device, torch.float64, scale=1.0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lenetalex.local_response_norm(x, size, 0.8, beta, 1.5), (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_many_channels(device):
    # 70 channels: the sliding sums restart (every 32 channels) inside.
    x = _input((1, 70, 2, 1), device, torch.float64, scale=1.0).requires_grad_(True)
    for size in (5, 6):
        assert torch.autograd.gradcheck(lambda x: lenetalex.local_response_norm(x, size, 2.0, 0.75, 1.0), (x,))


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, dtype, requires_grad):
    x = _input((2, 7, 5, 4), device, dtype).requires_grad_(requires_grad)
    op = torch.ops.lenetalex.local_response_norm.default
    torch.library.opcheck(op, (x, 5, 1e-2, 0.75, 2.0))
    torch.library.opcheck(op, (x, 4, 0.5, 0.6, 1.0))
    torch.library.opcheck(op, (_input((3, 5, 6), device, dtype).requires_grad_(requires_grad), 2, 0.5, 0.75, 1.0))
    g = _input((2, 7, 5, 4), device, dtype, seed=1)
    torch.library.opcheck(torch.ops.lenetalex.local_response_norm_backward.default,
                          (g, x.detach(), 5, 1e-2, 0.75, 2.0))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    x = _input((3, 10, 7, 6), device, torch.float32)

    def f(x):
        return lenetalex.local_response_norm(torch.relu(x), 5, 5e-4, 0.75, 2.0).square().sum()

    compiled = torch.compile(f, fullgraph=True)
    xc, xe = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = compiled(xc)
    (grad,) = torch.autograd.grad(out, xc)
    eager = f(xe)
    (eager_grad,) = torch.autograd.grad(eager, xe)
    assert_close(out, eager, torch.float32)
    assert_close(grad, eager_grad, torch.float32)


# -- bad input -----------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_bad_input(device):
    x = _input((2, 3, 4, 4), device, torch.float32)
    f = lenetalex.local_response_norm
    cases = [
        (lambda: f(x[0, 0], 3), ValueError, r"local_response_norm: expected input to be at least 3-D"),
        (lambda: f(x[0, 0, 0], 3), ValueError, r"expected input to be at least 3-D .* got a 1-D"),
        (lambda: f(x, 0), ValueError, r"local_response_norm: expected size >= 1, got 0"),
        (lambda: f(x, -2), ValueError, r"expected size >= 1, got -2"),
        (lambda: f(x, 2.5), TypeError, r"expected size to be an int"),
        (lambda: f(x, True), TypeError, r"expected size to be an int"),  # not size 1
        (lambda: f(x.long(), 3), TypeError, r"expected input to be a floating-point tensor"),
        (lambda: f(x.int(), 3), TypeError, r"expected input to be a floating-point tensor"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_bad_input_cpu_half():
    x = _input((2, 3, 4, 4), "cpu", torch.float16)
    with pytest.raises(TypeError, match=r"on the CPU input must be float32 or float64"):
        lenetalex.local_response_norm(x, 3)


def test_double_backward_raises():
    x = _input((1, 5, 2, 2), "cpu", torch.float64).requires_grad_()
    (gx,) = torch.autograd.grad(lenetalex.local_response_norm(x, 3, 0.5).pow(2).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="local_response_norm: double backward"):
        torch.autograd.grad(gx.sum(), x)


@pytest.mark.cuda
def test_bad_input_cuda_float8():
    x = _input((2, 5, 3, 3), CUDA, torch.float32).to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"on cuda input must be float32, float16, bfloat16 or float64"):
        lenetalex.local_response_norm(x, 3)


def test_bad_backward_arguments():
    x = _input((2, 3, 4, 4), "cpu", torch.float32)
    bw = torch.ops.lenetalex.local_response_norm_backward
    with pytest.raises(ValueError, match=r"local_response_norm_backward: expected grad_output of input's shape"):
        bw(x[:, :2], x, 3, 1e-4, 0.75, 1.0)
    with pytest.raises(TypeError, match=r"expected grad_output to have the dtype of input"):
        bw(x.double(), x, 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match=r"expected size >= 1"):
        bw(x, x, 0, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match=r"expected grad_output to be on the device of input"):
        bw(x.to("meta"), x, 3, 1e-4, 0.75, 1.0)


# -- nn.LocalResponseNorm --------------------------------------------------------

@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_module_fused_equals_reference(device, dtype):
    fused = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0, impl="fused")
    ref = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0, impl="reference")
    x = torch.relu(_input((4, 16, 7, 6), device, dtype, scale=20.0))
    xf, xr = x.clone().requires_grad_(True), x.detach().cpu().double().requires_grad_(True)
    yf, yr = fused(xf), ref(xr)
    assert_close(yf, yr, dtype)
    g = torch.randn(yr.shape, dtype=torch.float64)
    yf.backward(g.to(device, dtype))
    yr.backward(g)
    assert_close(xf.grad, xr.grad, dtype, factor=GRAD_FACTOR[dtype])
    assert_close(yf, torch.nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)(xr.detach()), dtype)  # torch.nn's numbers


# -- CUDA only -----------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("size,channels", [(5, 256), (6, 97), (40, 150), (250, 300), (1000, 600)])
def test_cuda_chunks_and_rings(dtype, size, channels):
    # Channel chunks of the CUDA kernels (32 or size channels each), the shared
    # memory ring, and its global-memory fallback for very long windows
    # (size + 1 > 192 float slots per thread).
    x = _input((2, channels, 5, 3), CUDA, dtype)
    check_against_reference(x, size, alpha=0.5 * size ** 0.5, beta=0.75, k=1.0)
    check_against_reference(x, size, alpha=0.5 * size ** 0.5, beta=0.6, k=1.0)


@pytest.mark.cuda
def test_cuda_many_positions():
    # More positions than one grid pass covers: the kernels' grid-stride loops.
    x = _input((64, 8, 128, 130), CUDA, torch.float16, scale=1.0)
    check_against_reference(x, 5, 5e-4, 0.75, 2.0)


@pytest.mark.cuda
def test_cuda_float64_matches_reference():
    for size in (1, 2, 5, 8):
        check_against_reference(_input((2, 40, 3, 5), CUDA, torch.float64), size, 0.5, 0.75, 1.0)


@pytest.mark.cuda
@pytest.mark.gpu
def test_mixed_cpu_cuda():
    x = _input((2, 3, 4, 4), "cuda", torch.float32)
    with pytest.raises(ValueError, match=r"expected grad_output to be on the device of input"):
        torch.ops.lenetalex.local_response_norm_backward(x.cpu(), x, 3, 1e-4, 0.75, 1.0)
