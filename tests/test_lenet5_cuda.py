"""lenet5 on CUDA (csrc/cuda/lenet5_cuda.cu): the whole-network op pair against
the reference layers in float64, in every CUDA dtype, the C3 tables, odd and
empty batches, output_mask subsets, run-to-run bits, opcheck, argument
errors, and LeNet5(impl="fused") on CUDA. Every test carries the `cuda`
marker: without a GPU it runs the same kernels in the CUDA emulator
(conftest.py), each call under two schedules whose bits must agree, on a few
images (a block's threads are fibers there). The CPU tests are in
tests/test_lenet5.py."""
import pytest
import torch

import lenetalex
from lenetalex import emu
from lenetalex.models import LeNet5
from lenetalex.models.lenet import C3_TABLE
from lenetalex.ops.lenet5 import reference_lenet5, saved_numel
from lenetalex.shapes import LENET5_PARAMETERS

from conftest import CUDA, EMULATED, HAS_CUDA, assert_close

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        HAS_CUDA and not lenetalex.build_info()["cuda_compiled"],
        reason="lenetalex was built without its CUDA kernels",
    ),
]

_ops = torch.ops.lenetalex
DENSE = torch.ones(16, 6, dtype=torch.bool)
# Normalized-error factor over conftest.TOL: a six-layer network (the CPU tests' 10).
FACTOR = 10.0


def make_args(n, dtype, table=C3_TABLE, k=10, seed=0, f6_2d=False):
    """[input, 12 parameters, prototypes, table] on CUDA: weights ~ 1/sqrt(fan-in)
    (no layer all saturated), the paper's +-1 prototypes unless k != 10."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64)
              / (s[1] * s[-1] ** 2 if len(s) > 1 else 2) ** 0.5 for s in LENET5_PARAMETERS.values()]
    if f6_2d:
        params[10] = params[10].reshape(84, 120)
    protos = torch.where(torch.randn(k, 84, generator=g) > 0, 1.0, -1.0).double()
    x = torch.randn(n, 1, 32, 32, generator=g, dtype=torch.float64)
    tensors = [t.to(device=CUDA, dtype=dtype) for t in [x, *params, protos]]
    return tensors + [table.to(CUDA)]


def grads_of(fn, args, weights):
    """fn's output and the grads of sum(output * weights) wrt its 14 tensor arguments."""
    leaves = [t.detach().clone().requires_grad_(True) for t in args[:14]]
    out = fn(*leaves, args[14])
    grads = torch.autograd.grad((out * weights.to(out.dtype)).sum(), leaves)
    return out.detach(), grads


def check_against_reference(args, factor=FACTOR):
    """The op's distances and every grad against the reference in float64 from
    the same (rounded) numbers."""
    dtype = args[0].dtype
    n, k = args[0].shape[0], args[13].shape[0]
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y, g = grads_of(lenetalex.lenet5, args, w.to(CUDA))
    wide = [t.detach().cpu().double() for t in args[:14]] + [args[14].cpu()]
    yr, gr = grads_of(reference_lenet5, wide, w)
    assert y.dtype == dtype and y.shape == (n, k)
    assert_close(y, yr, dtype, factor)
    names = ["input"] + list(LENET5_PARAMETERS) + ["prototypes"]
    for name, a, e in zip(names, g, gr):
        assert a.dtype == dtype and a.shape == e.shape, name
        try:
            assert_close(a, e, dtype, factor)
        except AssertionError as err:
            raise AssertionError(f"grad of {name}: {err}") from None
    return g


# -- against the reference ----------------------------------------------------

@pytest.mark.parametrize("dtype, n", [
    (torch.float32, 1), (torch.float32, 5), (torch.float64, 3), (torch.float16, 3),
    (torch.bfloat16, 3)], ids=["float32-1", "float32-5", "float64-3", "float16-3", "bfloat16-3"])
def test_matches_reference(dtype, n):
    check_against_reference(make_args(n, dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_dense_c3_matches_reference(dtype):
    check_against_reference(make_args(3, dtype, table=DENSE))


def test_any_table_prototypes_and_2d_f6():
    # Neither the paper's table nor dense, a C3 map reading nothing (act(bias)),
    # 7 prototypes (not the 10 digits'), F6's weight as a Linear's (84, 120).
    table = torch.rand(16, 6, generator=torch.Generator().manual_seed(3)) < 0.4
    table[3] = False
    args = make_args(2, torch.float64, table=table, k=7, seed=1, f6_2d=True)
    g = check_against_reference(args)
    assert torch.all(g[5][~table.to(CUDA)] == 0)  # off the table: no grad


def test_batch_zero():
    args = make_args(0, torch.float32)
    y, acts = _ops.lenet5(*args, True)
    assert y.shape == (0, 10) and acts.shape == (0,)
    grads = _ops.lenet5_backward(y, acts, args[0], *[args[i] for i in (1, 3, 5, 7, 9, 11)],
                                 args[13], args[14], [True] * 14)
    assert grads[0].shape == (0, 1, 32, 32)
    for g, t in zip(grads[1:], args[1:14]):
        assert g.shape == t.shape and torch.all(g == 0)


def test_saved_activations_size_and_bits():
    # Whole blocks of 8 images (the fake kernel's saved_numel), every value written.
    args = make_args(3, torch.float32)
    y, acts = _ops.lenet5(*args, True)
    assert acts.shape == (saved_numel(3),)
    assert torch.isfinite(acts).all()
    y2, acts2 = _ops.lenet5(*args, True)
    assert torch.equal(y, y2) and torch.equal(acts, acts2)
    y3, none = _ops.lenet5(*args, False)
    assert torch.equal(y, y3) and none.shape == (0,)


def test_several_groups_per_block(monkeypatch):
    # As at a large batch, where each block takes many groups in turn (their
    # weight grads added into the block's one row of partial sums): on 9
    # images, with the grid capped at 2 blocks (forward: 4 groups with the
    # padding; backward: 5 in float32).
    monkeypatch.setenv("LENETALEX_LENET5_CUDA_MAX_BLOCKS", "2")
    check_against_reference(make_args(9, torch.float32, table=DENSE, seed=3))
    monkeypatch.setenv("LENETALEX_LENET5_CUDA_MAX_BLOCKS", "0")
    with pytest.raises(ValueError, match="LENETALEX_LENET5_CUDA_MAX_BLOCKS must be a positive"):
        lenetalex.lenet5(*make_args(1, torch.float32))


# -- output_mask ----------------------------------------------------------------

MASKS = [[i == j for i in range(14)] for j in (0, 1, 4, 5, 7, 10, 11, 13)]
MASKS += [[i >= 5 for i in range(14)], [i != 0 for i in range(14)], [False] * 14]


def test_output_mask_subsets():
    args = make_args(3, torch.float32)
    y, acts = _ops.lenet5(*args, True)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(CUDA)
    weights = [args[i] for i in (1, 3, 5, 7, 9, 11)]
    bw = lambda mask: _ops.lenet5_backward(g, acts, args[0], *weights, args[13], args[14], mask)
    full = bw([True] * 14)
    for mask in MASKS:
        for i, (asked, a, e) in enumerate(zip(mask, bw(mask), full)):
            if asked:
                assert torch.equal(a, e), (mask, i)
            else:
                assert a.shape == (0,), (mask, i)


# -- determinism ----------------------------------------------------------------

def test_bitwise_reproducible():
    # On a GPU: two runs give the same bits (no atomics). In the emulator every
    # call already runs under the forward and reverse schedules; a random one too.
    args = make_args(5, torch.float32, table=DENSE)
    y, acts = _ops.lenet5(*args, True)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(8)).to(CUDA)
    bargs = (g, acts, args[0], *[args[i] for i in (1, 3, 5, 7, 9, 11)], args[13], args[14],
             [True] * 14)
    first = _ops.lenet5_backward(*bargs)
    if EMULATED:
        again = emu.run("lenet5_backward", *bargs, schedules=("random", "forward"))
        assert torch.equal(emu.run("lenet5", *args, True, schedules=("random",))[0], y)
    else:
        again = _ops.lenet5_backward(*bargs)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


# -- opcheck ------------------------------------------------------------------

def test_opcheck():
    # One image, few calls: each opcheck runs the op a dozen times (the
    # emulator under two schedules each). The CPU tests cover save=False.
    args = make_args(1, torch.float64)
    tensors = [t.detach().clone().requires_grad_(True) for t in args[:14]]
    torch.library.opcheck(_ops.lenet5.default, (*tensors, args[14], True))
    y, acts = _ops.lenet5(*args, True)
    weights = [args[i] for i in (1, 3, 5, 7, 9, 11)]
    torch.library.opcheck(_ops.lenet5_backward.default,
                          (torch.randn_like(y), acts, args[0], *weights, args[13], args[14],
                           [True] * 14))


# -- bad input ------------------------------------------------------------------

def test_bad_input_names_the_argument():
    args = make_args(2, torch.float32)

    def with_(i, t):
        return [t if j == i else a for j, a in enumerate(args)]

    cases = [
        (with_(0, args[0][0]), ValueError, r"lenet5: expected input to be 4-D"),
        (with_(0, args[0][:, :, :28, :28]), ValueError, r"expected input of shape \(N, 1, 32, 32\)"),
        (with_(5, args[5][..., :4]), ValueError, r"expected c3_weight of shape"),
        (with_(13, args[13][:, :83]), ValueError, r"expected prototypes of shape \(K, 84\)"),
        (with_(14, args[14].float()), TypeError, r"expected c3_table to be a bool tensor"),
        (with_(7, args[7].double()), TypeError, r"expected s4_weight to have the dtype of input"),
        (with_(0, args[0].to(torch.float8_e4m3fn)), TypeError,
         r"on cuda input must be float32, float16, bfloat16 or float64"),
    ]
    for call_args, exc, match in cases:
        with pytest.raises(exc, match=match):
            lenetalex.lenet5(*call_args)
    y, acts = _ops.lenet5(*args, True)
    weights = [args[i] for i in (1, 3, 5, 7, 9, 11)]
    bw = lambda g, a: _ops.lenet5_backward(g, a, args[0], *weights, args[13], args[14], [True] * 14)
    with pytest.raises(ValueError, match=r"lenet5_backward: expected grad_distances of shape \[2, 10\]"):
        bw(y[:1], acts)
    with pytest.raises(ValueError, match=r"lenet5_backward: expected activations of shape \[64672\]"):
        bw(y, acts[:100])


@pytest.mark.gpu
def test_mixed_devices_raise():
    args = make_args(2, torch.float32)
    with pytest.raises(ValueError, match="expected c5_bias to be on the device of input"):
        lenetalex.lenet5(*args[:10], args[10].cpu(), *args[11:])


# -- LeNet5(impl="fused") on CUDA -------------------------------------------------

def test_model_uses_the_whole_network_op(monkeypatch):
    torch.manual_seed(0)
    ref = LeNet5(impl="reference").double()
    fused = LeNet5(impl="fused").to(CUDA)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    calls = []
    original = lenetalex.lenet5
    monkeypatch.setattr(lenetalex, "lenet5", lambda *a: calls.append(1) or original(*a))
    xf = x.to(CUDA).clone().requires_grad_(True)
    out = fused(xf)
    assert calls, "LeNet5(impl='fused') did not run lenetalex.lenet5"
    w = torch.randn(3, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    (out * w.to(CUDA).float()).sum().backward()
    xr = x.double().clone().requires_grad_(True)
    (ref(xr) * w).sum().backward()
    assert_close(out, ref(x.double()), torch.float32, FACTOR)
    assert_close(xf.grad, xr.grad, torch.float32, FACTOR)
    for (name, p), q in zip(fused.named_parameters(), ref.parameters()):
        assert_close(p.grad, q.grad, torch.float32, FACTOR)
