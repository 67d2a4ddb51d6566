"""lenet5: the whole LeNet-5 as one op pair, against LeNet5(impl="reference")
(forward and every grad), its autograd, fake kernels, torch.compile, argument
checks, determinism across threads, and when LeNet5(impl="fused") uses it."""
import itertools

import pytest
import torch

import lenetalex
from lenetalex.models import LeNet5
from lenetalex.models.lenet import C3_TABLE
from lenetalex.ops.lenet5 import reference_lenet5, saved_numel

from conftest import assert_close

_ops = torch.ops.lenetalex
CPU_DTYPES = [torch.float32, torch.float64]
NAMES = ("input", "c1.weight", "c1.bias", "s2.weight", "s2.bias", "c3.weight", "c3.bias",
         "s4.weight", "s4.bias", "c5.weight", "c5.bias", "f6.weight", "f6.bias")


def twins(dtype, c3_table="lecun", seed=0):
    """(reference, fused) LeNet5 with one state_dict; the reference in float64."""
    torch.manual_seed(seed)
    ref = LeNet5(impl="reference", c3_table=c3_table).double()
    fused = LeNet5(impl="fused", c3_table=c3_table).to(dtype)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def images(n, dtype, seed=2):
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def run(model, x, weights):
    """distances, and the grads of sum(distances * weights) wrt the input and every parameter."""
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad()
    out = model(x)
    (out * weights.to(out.dtype)).sum().backward()
    return out.detach(), [x.grad] + [dict(model.named_parameters())[n].grad for n in NAMES[1:]]


def compare(fused, ref, x, factor=10.0):
    dtype = x.dtype
    w = torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    yf, gf = run(fused, x, w)
    yr, gr = run(ref, x.double(), w)
    assert yf.dtype == dtype
    assert_close(yf, yr, dtype, factor)
    for name, a, e in zip(NAMES, gf, gr):
        assert a is not None and a.dtype == dtype, name
        try:
            assert_close(a, e, dtype, factor)
        except AssertionError as err:
            raise AssertionError(f"grad of {name}: {err}") from None


def calls_fused_net(model, x, monkeypatch):
    """Whether model(x) went through lenetalex.lenet5."""
    calls = []
    original = lenetalex.lenet5

    def spy(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(lenetalex, "lenet5", spy)
    model(x)
    monkeypatch.setattr(lenetalex, "lenet5", original)
    return bool(calls)


# -- reference match ---------------------------------------------------------

@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("n", [1, 7, 8, 33])
def test_matches_reference(dtype, n, monkeypatch):
    ref, fused = twins(dtype)
    x = images(n, dtype)
    assert calls_fused_net(fused, x, monkeypatch)
    compare(fused, ref, x)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=["float32", "float64"])
def test_dense_c3_matches_reference(dtype, monkeypatch):
    ref, fused = twins(dtype, c3_table="full")
    x = images(11, dtype)
    assert calls_fused_net(fused, x, monkeypatch)
    compare(fused, ref, x)


def test_any_table_and_prototype_grads():
    # A table that is neither the paper's nor dense, trainable prototypes, and
    # F6's weight as a Linear's 2-D (84, 120): against the reference layers.
    g = torch.Generator().manual_seed(3)
    table = torch.rand(16, 6, generator=g) < 0.4
    table[3] = False  # a C3 map that reads nothing: act(bias)
    from lenetalex.shapes import LENET5_PARAMETERS
    params = [torch.randn(s, generator=g, dtype=torch.float64) / (s[1] * s[-1] ** 2 if len(s) > 1 else 2) ** 0.5
              for s in LENET5_PARAMETERS.values()]
    params[10] = params[10].reshape(84, 120)
    protos = torch.randn(7, 84, generator=g, dtype=torch.float64)
    x = images(9, torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in [x, *params, protos]]
    ref_leaves = [t.clone().requires_grad_(True) for t in [x, *params, protos]]
    y = lenetalex.lenet5(*leaves, table)
    yr = reference_lenet5(*ref_leaves, table)
    assert y.shape == (9, 7)
    assert_close(y, yr, torch.float64)
    w = torch.randn(9, 7, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((y * w).sum(), leaves)
    ref_grads = torch.autograd.grad((yr * w).sum(), ref_leaves)
    for i, (a, e) in enumerate(zip(grads, ref_grads)):
        assert_close(a, e, torch.float64, 10)
    c3_grad = grads[5]
    assert torch.all(c3_grad[~table] == 0)


def test_batch_zero():
    _, fused = twins(torch.float32)
    x = torch.zeros(0, 1, 32, 32, requires_grad=True)
    y = fused(x)
    assert y.shape == (0, 10)
    y.sum().backward()
    assert x.grad.shape == x.shape
    for name, p in fused.named_parameters():
        assert torch.equal(p.grad, torch.zeros_like(p)), name


def test_non_contiguous_input_and_parameters():
    ref, fused = twins(torch.float32)
    big = images(14, torch.float32)
    compare(fused, ref, big[::2])  # a strided batch
    compare(fused, ref, big[:5].transpose(2, 3))  # strided rows and columns
    with torch.no_grad():  # non-contiguous parameters: a transposed copy's transpose
        fused.c5.weight.set_(fused.c5.weight.detach().transpose(0, 3).contiguous().transpose(0, 3))
    assert not fused.c5.weight.is_contiguous()
    compare(fused, ref, big[:3])


# -- the ops themselves ------------------------------------------------------

def _op_args(n=5, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    m = LeNet5(impl="fused").to(dtype)
    x = images(n, dtype)
    return [x, *m.fused_net_args(x)]


def test_backward_output_mask():
    args = _op_args()
    x, params, table = args[0], args[1:14], args[14]
    y, acts = _ops.lenet5(*args, True)
    assert acts.shape == (saved_numel(5),)
    g = torch.randn_like(y)
    weights = [params[i] for i in (0, 2, 4, 6, 8, 10)]
    bw = lambda mask: _ops.lenet5_backward(g, acts, x, *weights, params[12], table, mask)
    full = bw([True] * 14)
    for lowest in range(14):  # each grad alone, and each with all those above it
        for mask in ([i == lowest for i in range(14)], [i >= lowest for i in range(14)]):
            got = bw(mask)
            for i, (asked, a, e) in enumerate(zip(mask, got, full)):
                if asked:
                    assert torch.equal(a, e), (mask, i)
                else:
                    assert a.shape == (0,)


def test_threads_bitwise_equal():
    _, fused = twins(torch.float32)
    x = images(100, torch.float32)
    w = torch.randn(100, 10, generator=torch.Generator().manual_seed(6))
    runs = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            runs.append(run(fused, x, w))
    finally:
        torch.set_num_threads(old)
    for other in runs[1:]:
        assert torch.equal(runs[0][0], other[0])
        for name, a, e in zip(NAMES, runs[0][1], other[1]):
            assert torch.equal(a, e), name


def test_gradcheck():
    args = _op_args(n=3)
    table = args[14]
    leaves = [t.detach().clone().requires_grad_(True) for t in args[:14]]
    fn = lambda *t: lenetalex.lenet5(*t, table)
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)
    # Every entry of the small tensors, the others fixed.
    small = [2, 3, 4, 6, 7, 8, 12]  # biases and the subsampling weights
    for i in small:
        def one(t, i=i):
            return fn(*[t if j == i else a.detach() for j, a in enumerate(leaves)])
        assert torch.autograd.gradcheck(one, (leaves[i],)), i


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    args = _op_args(n=3, dtype=torch.float32)
    tensors = [t.detach().clone().requires_grad_(requires_grad) for t in args[:14]]
    for save in (False, True):
        if requires_grad and not save:
            continue  # autograd needs the saved activations
        torch.library.opcheck(_ops.lenet5.default, (*tensors, args[14], save))
    args = [t.detach() for t in args]  # the backward op is not differentiable
    x, params, table = args[0], args[1:14], args[14]
    y, acts = _ops.lenet5(*args, True)
    weights = [params[i] for i in (0, 2, 4, 6, 8, 10)]
    for mask in ([True] * 14, [False] + [True] * 12 + [False], [i == 9 for i in range(14)]):
        torch.library.opcheck(_ops.lenet5_backward.default,
                              (torch.randn_like(y), acts, x, *weights, params[12], table, mask))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    _, fused = twins(torch.float32)
    x = images(9, torch.float32)
    target = torch.arange(9) % 10
    compiled = torch.compile(fused, fullgraph=True)
    grads = []
    for model in (compiled, fused):
        fused.zero_grad()
        loss = lenetalex.lenet_map_loss(model(x), target)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in fused.named_parameters()}))
    assert_close(grads[0][0], grads[1][0], torch.float32)
    for name, g in grads[1][1].items():
        assert_close(grads[0][1][name], g, torch.float32)
    with torch.no_grad():
        assert_close(compiled(x), fused(x), torch.float32)


def test_double_backward_raises():
    args = _op_args(n=2)
    x = args[0].requires_grad_(True)
    w = args[9].detach().requires_grad_(True)
    y = lenetalex.lenet5(x, *args[1:9], w, *args[10:])
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="lenet5: double backward"):
        torch.autograd.grad(gx.sum(), w)


def test_backward_without_saved_activations_raises():
    args = _op_args(n=2)
    x = args[0].requires_grad_(True)
    y, _ = _ops.lenet5(x, *args[1:], False)
    with pytest.raises(RuntimeError, match="save=False"):
        y.sum().backward()


# -- bad input -----------------------------------------------------------------

def test_bad_input():
    args = _op_args(n=2, dtype=torch.float32)
    f = lambda *a: lenetalex.lenet5(*a)

    def with_(i, t):
        return [t if j == i else a for j, a in enumerate(args)]

    cases = [
        (with_(0, args[0][0]), ValueError, r"lenet5: expected input to be 4-D"),
        (with_(0, torch.zeros(2, 1, 28, 28)), ValueError, r"expected input of shape \(N, 1, 32, 32\)"),
        (with_(0, torch.zeros(2, 3, 32, 32)), ValueError, r"expected input of shape \(N, 1, 32, 32\)"),
        (with_(1, torch.zeros(6, 1, 3, 3)), ValueError, r"expected c1_weight of shape \[6, 1, 5, 5\]"),
        (with_(4, torch.zeros(5)), ValueError, r"expected s2_bias of shape \[6\]"),
        (with_(5, torch.zeros(16, 6, 5, 4)), ValueError, r"expected c3_weight of shape"),
        (with_(9, torch.zeros(120, 400)), ValueError, r"expected c5_weight of shape \[120, 16, 5, 5\]"),
        (with_(11, torch.zeros(84, 121)), ValueError, r"expected f6_weight of shape \[84, 120\]"),
        (with_(13, torch.zeros(10, 83)), ValueError, r"expected prototypes of shape \(K, 84\)"),
        (with_(13, torch.zeros(0, 84)), ValueError, r"expected prototypes of shape \(K, 84\) with K >= 1"),
        (with_(14, torch.ones(16, 6)), TypeError, r"expected c3_table to be a bool tensor"),
        (with_(14, torch.ones(6, 16, dtype=torch.bool)), ValueError, r"expected c3_table of shape \[16, 6\]"),
        (with_(0, args[0].long()), TypeError, r"expected input to be a floating-point tensor"),
        (with_(0, args[0].half()), TypeError, r"on the CPU input must be float32 or float64"),
        (with_(7, args[7].double()), TypeError, r"expected s4_weight to have the dtype of input"),
        (with_(10, args[10].to("meta")), ValueError, r"expected c5_bias to be on the device of input"),
    ]
    for call_args, exc, match in cases:
        with pytest.raises(exc, match=match):
            f(*call_args)


def test_bad_backward_arguments():
    args = _op_args(n=9, dtype=torch.float32)
    x, params, table = args[0], args[1:14], args[14]
    y, acts = _ops.lenet5(*args, True)
    weights = [params[i] for i in (0, 2, 4, 6, 8, 10)]
    bw = lambda g, a, xx: _ops.lenet5_backward(g, a, xx, *weights, params[12], table, [True] * 14)
    with pytest.raises(ValueError, match=r"lenet5_backward: expected grad_distances of shape \[9, 10\]"):
        bw(y[:3], acts, x)
    with pytest.raises(ValueError, match=r"lenet5_backward: expected activations of shape \[129344\]"):
        bw(y, acts[:100], x)
    _, acts_other = _ops.lenet5(x[:3], *args[1:], True)  # another batch's activations
    with pytest.raises(ValueError, match=r"expected activations of shape"):
        bw(y, acts_other, x)


def test_fake_kernel_checks_values_too():
    meta = [t.to("meta") for t in _op_args(n=2, dtype=torch.float32)]
    y, acts = _ops.lenet5(*meta, True)
    assert y.shape == (2, 10) and acts.shape == (saved_numel(2),) and y.device.type == "meta"
    with pytest.raises(ValueError, match="expected c1_weight of shape"):
        _ops.lenet5(meta[0], meta[2], *meta[2:], False)


@pytest.mark.cuda
@pytest.mark.gpu  # CUDA tensors (the emulator runs the CUDA kernel on CPU tensors: test_lenet5_cuda.py)
def test_cuda_tensors_run_the_cuda_kernel():
    args = [t.cuda() for t in _op_args(n=2, dtype=torch.float32)]
    y = lenetalex.lenet5(*args)
    cpu = lenetalex.lenet5(*[t.cpu() for t in args])
    assert y.device.type == "cuda"
    assert_close(y, cpu, torch.float32, 10)


# -- when LeNet5(impl="fused") uses it -----------------------------------------

def test_model_uses_fused_net_exactly_when_allowed(monkeypatch):
    torch.manual_seed(0)
    x = images(3, torch.float32)
    assert calls_fused_net(LeNet5(), x, monkeypatch)
    assert calls_fused_net(LeNet5(c3_table="full"), x, monkeypatch)
    assert calls_fused_net(LeNet5().double(), x.double(), monkeypatch)
    assert not calls_fused_net(LeNet5(head="linear"), x, monkeypatch)
    assert not calls_fused_net(LeNet5(impl="reference"), x, monkeypatch)
    changed = LeNet5()
    changed.c3.activation = "relu"
    assert not calls_fused_net(changed, x, monkeypatch)
    hooked = LeNet5()
    seen = []
    hooked.c3.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert not calls_fused_net(hooked, x, monkeypatch) and seen == [(3, 16, 10, 10)]
    # The per-layer path's results are the fused net's.
    m = LeNet5()
    with torch.no_grad():
        fused_net = m(x)
        m.c1.register_forward_pre_hook(lambda mod, inp: None)  # forces the per-layer ops
        assert_close(m(x), fused_net, torch.float32, 10)


@pytest.mark.cuda
@pytest.mark.gpu  # the model on CUDA tensors: a real GPU
def test_model_on_cuda_uses_fused_net(monkeypatch):
    torch.manual_seed(0)
    m = LeNet5().cuda()
    x = images(3, torch.float32).cuda()
    assert calls_fused_net(m, x, monkeypatch)
    assert calls_fused_net(m.half(), x.half(), monkeypatch)
    assert not calls_fused_net(LeNet5(fused_net=False).cuda(), x, monkeypatch)
    assert m(x.half()).shape == (3, 10)
