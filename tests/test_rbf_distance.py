"""rbf_distance (LeNet-5's Euclidean RBF units) against lenetalex.reference: values, gradients, exactness where the
|x|^2 - 2 x.w + |w|^2 expansion cancels, strides, determinism, opcheck,
torch.compile, bad input, and CUDA (marked, skipped without a device)."""
import subprocess
import sys

import pytest
import torch

import lenetalex
from lenetalex import reference
from lenetalex.nn import RBFOutput

from conftest import CUDA, DEVICE_DTYPES, DEVICES, TOL, assert_close

OP = torch.ops.lenetalex.rbf_distance.default
OP_BACKWARD = torch.ops.lenetalex.rbf_distance_backward.default


def _randn(*shape, dtype=torch.float64, device="cpu", seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _signs(k, d, dtype=torch.float64, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (k, d), generator=g) * 2 - 1).to(device=device, dtype=dtype)


def _expected(x, w, g):
    """Distances and both grads in float64. Small shapes: the definition itself
    (broadcast); large ones: cdist and the grads' exact linear forms, whose
    float64 rounding is far below every tolerance for data of unit scale."""
    x, w, g = x.double().cpu(), w.double().cpu(), g.double().cpu()
    if x.shape[0] * w.shape[0] * x.shape[1] <= 2_000_000:
        y = reference.rbf_distance_broadcast(x, w)
    else:
        y = reference.rbf_distance(x, w)
    gx = 2 * (g.sum(1, keepdim=True) * x - g @ w)
    gw = 2 * (g.sum(0)[:, None] * w - g.t() @ x)
    return y, gx, gw


def _fused_with_grads(x, w, g):
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    y = lenetalex.rbf_distance(x, w)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    return y.detach(), gx, gw


# ---- reference match ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n", [0, 1, 257])
@pytest.mark.parametrize("k", [1, 10, 1000])
@pytest.mark.parametrize("d", [1, 7, 84, 300])
def test_matches_reference(d, k, n, dtype):
    x, w, g = _randn(n, d, dtype=dtype), _randn(k, d, dtype=dtype, seed=1), _randn(n, k, dtype=dtype, seed=2)
    y, gx, gw = _fused_with_grads(x, w, g)
    ey, egx, egw = _expected(x, w, g)
    assert y.dtype == dtype and gx.dtype == dtype and gw.dtype == dtype
    assert_close(y, ey, dtype)
    assert_close(gx, egx, dtype)
    assert_close(gw, egw, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_lenet_head_matches_reference_module(dtype):
    # LeNet-5's head: F6 outputs in +-1.7159, 10 fixed +-1 prototypes of width 84.
    x = 1.7159 * torch.tanh(_randn(64, 84, dtype=dtype))
    protos = _signs(10, 84, dtype=dtype)
    fused, ref = RBFOutput(protos, impl="fused"), RBFOutput(protos, impl="reference")
    fused.prototypes = fused.prototypes.to(dtype)
    ref.prototypes = ref.prototypes.to(dtype)
    assert_close(fused(x), reference.rbf_distance_broadcast(x, protos), dtype)
    assert_close(fused(x), ref(x), dtype)


def test_prototype_equal_to_input_row_gives_exact_zero():
    for dtype in (torch.float32, torch.float64):
        x = _randn(37, 84, dtype=dtype, scale=3.0)
        w = torch.cat([x[[5, 0, 36]], _randn(20, 84, dtype=dtype, seed=4)])
        y = lenetalex.rbf_distance(x, w)
        assert y[5, 0].item() == 0.0 and y[0, 1].item() == 0.0 and y[36, 2].item() == 0.0
        assert (y >= 0).all()


def test_large_magnitudes_stay_exact_where_the_expansion_cancels():
    # Rows and prototypes near 1e4, a few units apart: |x|^2 ~ 8e9 while the
    # distances are ~1e2, so the expansion loses about 8 digits in float32.
    base = 1e4 + _randn(1, 84, seed=5)
    x = (base + _randn(50, 84, seed=6)).float()
    w = (base + _randn(12, 84, seed=7)).float()
    w[3] = x[7]
    g = _randn(50, 12, dtype=torch.float32, seed=8)
    y, gx, gw = _fused_with_grads(x, w, g)
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    ey = reference.rbf_distance_broadcast(xd, wd)
    egx, egw = torch.autograd.grad(ey, (xd, wd), g.double())
    assert_close(y, ey, torch.float32)
    assert_close(gx, egx, torch.float32)
    assert_close(gw, egw, torch.float32)
    assert y[7, 3].item() == 0.0
    # The expansion in float32 misses by orders of magnitude more (and can go negative).
    expansion = (x * x).sum(1, keepdim=True) - 2 * x @ w.t() + (w * w).sum(1)
    err = lambda a: (a.double() - ey.detach()).abs().max().item() / ey.detach().abs().max().item()
    assert err(expansion) > 100 * max(err(y), 1e-9)


def test_non_contiguous_inputs_give_identical_results():
    x = _randn(84, 40, dtype=torch.float32).t()  # (40, 84), column-major
    w_big = _randn(10, 168, dtype=torch.float32, seed=1)
    w = w_big[:, ::2]  # element stride 2
    g = _randn(40, 10, dtype=torch.float32, seed=2).t().contiguous().t()  # column-major grad
    assert not x.is_contiguous() and not w.is_contiguous() and not g.is_contiguous()
    y, gx, gw = _fused_with_grads(x, w, g)
    cy, cgx, cgw = _fused_with_grads(x.contiguous(), w.contiguous(), g.contiguous())
    assert torch.equal(y, cy) and torch.equal(gx, cgx) and torch.equal(gw, cgw)
    # A broadcast row (stride 0) and a row-strided slice.
    xe = _randn(1, 84, dtype=torch.float32).expand(6, 84)
    xs = _randn(12, 84, dtype=torch.float32)[::2]
    for xi in (xe, xs):
        assert torch.equal(lenetalex.rbf_distance(xi, w), lenetalex.rbf_distance(xi.contiguous(), w))


def test_deterministic_across_runs_and_thread_counts():
    x, w, g = _randn(300, 128, dtype=torch.float32), _randn(70, 128, dtype=torch.float32, seed=1), _randn(300, 70, dtype=torch.float32, seed=2)
    first = _fused_with_grads(x, w, g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _fused_with_grads(x, w, g)
    finally:
        torch.set_num_threads(threads)
    again = _fused_with_grads(x, w, g)
    for a, b, c in zip(first, single, again):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_grads_only_where_asked():
    x, w, g = _randn(9, 5), _randn(4, 5, seed=1), _randn(9, 4, seed=2)
    gx, gw = OP_BACKWARD(g, x, w, [True, False])
    assert gx.shape == (9, 5) and gw.shape == (0,)
    gx, gw = OP_BACKWARD(g, x, w, [False, True])
    assert gx.shape == (0,) and gw.shape == (4, 5)
    _, egx, egw = _expected(x, w, g)
    assert_close(gw, egw, torch.float64)
    # Fixed prototypes: autograd asks for grad_input only.
    xr = x.clone().requires_grad_()
    lenetalex.rbf_distance(xr, w).backward(g)
    assert_close(xr.grad, egx, torch.float64)


def test_empty_sums_are_zero():
    x, w = _randn(3, 4), _randn(0, 4)
    gx, gw = OP_BACKWARD(torch.zeros(3, 0, dtype=torch.float64), x, w, [True, True])
    assert torch.equal(gx, torch.zeros(3, 4, dtype=torch.float64)) and gw.shape == (0, 4)
    x, w = _randn(0, 4), _randn(5, 4)
    gx, gw = OP_BACKWARD(torch.zeros(0, 5, dtype=torch.float64), x, w, [True, True])
    assert gx.shape == (0, 4) and torch.equal(gw, torch.zeros(5, 4, dtype=torch.float64))
    assert torch.equal(lenetalex.rbf_distance(_randn(3, 0), _randn(2, 0)), torch.zeros(3, 2, dtype=torch.float64))


# ---- autograd, opcheck, compile ------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 11, 13), (3, 1, 2), (6, 9, 20)], ids=str)
def test_gradcheck(shape):
    n, d, k = shape
    x = _randn(n, d).requires_grad_()
    w = _randn(k, d, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lenetalex.rbf_distance, (x, w))
    assert torch.autograd.gradcheck(lambda x: lenetalex.rbf_distance(x, w.detach()), (x,))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    x = _randn(7, 19, dtype=torch.float32).requires_grad_(requires_grad)
    w = _randn(18, 19, dtype=torch.float32, seed=1).requires_grad_(requires_grad)
    torch.library.opcheck(OP, (x, w))
    torch.library.opcheck(OP, (x, w.detach()))
    g = _randn(7, 18, dtype=torch.float32, seed=2)
    for mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(OP_BACKWARD, (g, x.detach(), w.detach(), mask))


def test_compile_fullgraph():
    x = _randn(33, 84, dtype=torch.float32)
    w = _signs(10, 84, dtype=torch.float32)
    t = torch.randint(0, 10, (33,), generator=torch.Generator().manual_seed(3))

    def loss(x, w, t):
        return lenetalex.lenet_map_loss(lenetalex.rbf_distance(x, w), t)

    compiled = torch.compile(loss, fullgraph=True)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager_loss, compiled_loss = loss(xe, w, t), compiled(xc, w, t)
    eager_loss.backward()
    compiled_loss.backward()
    assert_close(compiled_loss, eager_loss, torch.float32)
    assert_close(xc.grad, xe.grad, torch.float32)
    y = torch.compile(lenetalex.rbf_distance, fullgraph=True)(x, w)
    assert torch.equal(y, lenetalex.rbf_distance(x, w))


# ---- bad input -----------------------------------------------------------------

def test_bad_input_rbf_distance():
    x, w = _randn(4, 6), _randn(3, 6)
    with pytest.raises(ValueError, match="input to be 2-D"):
        lenetalex.rbf_distance(x[None], w)
    with pytest.raises(ValueError, match="prototypes to be 2-D"):
        lenetalex.rbf_distance(x, w[0])
    with pytest.raises(ValueError, match="prototypes of width 6"):
        lenetalex.rbf_distance(x, _randn(3, 5))
    with pytest.raises(TypeError, match="input to be a floating-point"):
        lenetalex.rbf_distance(x.long(), w.long())
    with pytest.raises(TypeError, match="prototypes to have the dtype of input"):
        lenetalex.rbf_distance(x, w.float())
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        lenetalex.rbf_distance(x.half(), w.half())
    with pytest.raises(ValueError, match="prototypes to be on the device of input"):
        lenetalex.rbf_distance(x.to("meta"), w)
    with pytest.raises(ValueError, match="prototypes to be on the device of input"):
        lenetalex.rbf_distance(x, w.to("meta"))
    with pytest.raises(ValueError, match="grad_output of shape"):
        OP_BACKWARD(_randn(4, 2), x, w, [True, True])


def test_double_backward_raises():
    x, w = _randn(4, 6).requires_grad_(), _randn(3, 6).requires_grad_()
    (gx,) = torch.autograd.grad(lenetalex.rbf_distance(x, w).pow(2).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="rbf_distance: double backward"):
        torch.autograd.grad(gx.sum(), w)


@pytest.mark.cuda
def test_bad_input_rbf_distance_cuda_float8():
    x, w = (t.to(CUDA, torch.float8_e4m3fn) for t in (_randn(4, 6), _randn(3, 6)))
    with pytest.raises(TypeError, match=r"on cuda input must be float32, float16, bfloat16 or float64"):
        lenetalex.rbf_distance(x, w)


def test_cli_check_passes():
    r = subprocess.run([sys.executable, "-m", "lenetalex", "check", "--ops", "rbf_distance"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout and "rbf_distance" in r.stdout


# ---- CUDA ----------------------------------------------------------------------

CUDA_ONLY = [p for p in DEVICE_DTYPES if p.marks]


@pytest.mark.parametrize("device,dtype", CUDA_ONLY)
@pytest.mark.parametrize("shape", [(0, 10, 84), (1, 1, 1), (257, 10, 84), (130, 1000, 7), (67, 33, 300)], ids=str)
def test_cuda_matches_reference(device, dtype, shape):
    n, k, d = shape
    x, w, g = _randn(n, d), _randn(k, d, seed=1), _randn(n, k, seed=2)
    # Round to dtype first, so the reference sees the same numbers.
    x, w, g = x.to(dtype).double(), w.to(dtype).double(), g.to(dtype).double()
    y, gx, gw = _fused_with_grads(x.to(device, dtype), w.to(device, dtype), g.to(device, dtype))
    ey, egx, egw = _expected(x, w, g)
    assert y.dtype == dtype and y.device.type == torch.device(CUDA).type
    # Half types: float32 accumulation, one rounding of the result; grads
    # sum k terms, hence the looser factor.
    factor = 1.0 if dtype == torch.float32 else 2.0
    assert_close(y, ey, dtype, factor)
    assert_close(gx, egx, dtype, factor)
    assert_close(gw, egw, dtype, factor)


@pytest.mark.cuda
def test_cuda_exact_and_deterministic():
    base = 1e4 + _randn(1, 84, seed=5)
    x = (base + _randn(300, 84, seed=6)).float().to(CUDA)
    w = (base + _randn(70, 84, seed=7)).float().to(CUDA)
    w[3] = x[7]
    g = _randn(300, 70, dtype=torch.float32, seed=8).to(CUDA)
    y, gx, gw = _fused_with_grads(x, w, g)
    assert y[7, 3].item() == 0.0 and (y >= 0).all()
    xd, wd = x.double().cpu().requires_grad_(), w.double().cpu().requires_grad_()
    ey = reference.rbf_distance_broadcast(xd, wd)
    egx, egw = torch.autograd.grad(ey, (xd, wd), g.double().cpu())
    assert_close(y, ey, torch.float32)
    assert_close(gx, egx, torch.float32)
    assert_close(gw, egw, torch.float32)
    again = _fused_with_grads(x, w, g)
    assert all(torch.equal(a, b) for a, b in zip((y, gx, gw), again))
    # Non-contiguous operands give the same numbers.
    nc = _fused_with_grads(x.t().contiguous().t(), w.t().contiguous().t(), g.t().contiguous().t())
    assert all(torch.equal(a, b) for a, b in zip((y, gx, gw), nc))


@pytest.mark.parametrize("device", [p for p in DEVICES if not isinstance(p, str)])
def test_cuda_map_loss_and_compile(device):
    x = _randn(64, 84, dtype=torch.float32, device=device)
    w = _signs(10, 84, dtype=torch.float32, device=device)
    t = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(3)).to(device)
    loss = lambda x: lenetalex.lenet_map_loss(lenetalex.rbf_distance(x, w), t)
    want = reference.lenet_map_loss(reference.rbf_distance_broadcast(x.double().cpu(), w.double().cpu()), t.cpu())
    assert_close(loss(x), want, torch.float32)
    assert_close(torch.compile(loss, fullgraph=True)(x), want, torch.float32)
    with pytest.raises(ValueError, match="target values"):
        lenetalex.lenet_map_loss(lenetalex.rbf_distance(x, w), torch.full_like(t, 10))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_module_keeps_the_prototypes_dtype(dtype):
    # As a PyTorch user expects: the prototypes given keep their dtype (they
    # were cast to the default dtype, so float64 prototypes failed on float64 input).
    protos = torch.randn(10, 84, dtype=dtype)
    for impl in ("fused", "reference"):
        m = RBFOutput(protos, impl=impl)
        assert m.prototypes.dtype == dtype and m.prototypes.data_ptr() != protos.data_ptr()
        y = m(torch.randn(4, 84, dtype=dtype))
        assert y.dtype == dtype and y.shape == (4, 10)
    assert RBFOutput([[1, -1], [-1, 1]]).prototypes.dtype == torch.get_default_dtype()
    assert RBFOutput(torch.ones(2, 3, dtype=torch.int64)).prototypes.dtype == torch.get_default_dtype()
