"""conv2d_activation on the CPU, path by path: the fused op against the reference,
and which path each case takes in each ISA variant.

The CPU op runs one of four paths, chosen by conv_cpu::choose_path
(csrc/cpu/conv2d_activation/plan.h, with the table of which shapes each path
serves): polyphase (float32, strided kernels spanning three strides, through
Winograd; avx512), image-batched direct (float32, few channels, stride 1,
batch >= 8 or 16; avx2, avx512), Winograd (float32, 3x3 or 5x5 stride 1,
>= 16 channels; avx512), and im2col/GEMM (everything else, float64 always).
The shape list below reaches every one of them, forward and backward, with
odd sizes, strides, paddings and groups; PATHS says which path each case takes
in each variant, and test_path_of_every_case holds the op to it through
torch.ops.lenetalex._conv2d_activation_path."""
import pytest
import torch
import torch.nn.functional as F

import lenetalex
from lenetalex import reference
from lenetalex.ops.conv2d_activation import TOLERANCE_FACTOR
from conftest import assert_close

ACTIVATIONS = ["scaled_tanh", "tanh", "relu", "identity"]
# Convolutions sum many products: the op's own factor (lenetalex/tolerance.py).
CONV_FACTOR = TOLERANCE_FACTOR[torch.float32]

# (name, input shape, weight shape, stride, padding, groups)
CASES = [
    # image-batched direct path (float32): LeNet's layers and relatives
    ("lenet_c1", (20, 1, 32, 32), (6, 1, 5, 5), 1, 0, 1),
    ("lenet_c3", (17, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1),
    ("batched_pad_g2", (16, 4, 9, 11), (6, 2, 3, 3), 1, (1, 2), 2),
    ("batched_7x7_pad3", (18, 3, 12, 10), (5, 3, 7, 7), 1, 3, 1),
    ("batched_1x1", (16, 5, 6, 7), (3, 5, 1, 1), 1, 0, 1),
    # a kernel covering the whole input: a plain matrix product (LeNet's C5)
    ("lenet_c5", (19, 16, 5, 5), (120, 16, 5, 5), 1, 0, 1),
    # Winograd path (float32): 3x3, stride 1, >= 16 channels, odd sizes and paddings;
    # F(4x4, 3x3) tiles on outputs of 6 x 6 and more (edges cut 1-3 pixels), F(2x2, 3x3) below
    ("winograd_p1", (2, 32, 13, 13), (48, 32, 3, 3), 1, 1, 1),
    ("winograd_p0_g2", (3, 40, 9, 12), (32, 20, 3, 3), 1, 0, 2),
    ("winograd_p2_odd", (1, 16, 7, 6), (16, 16, 3, 3), 1, 2, 1),
    ("winograd_asym_pad", (2, 16, 5, 8), (20, 16, 3, 3), 1, (2, 0), 1),
    ("winograd2_small", (3, 24, 5, 4), (20, 24, 3, 3), 1, 1, 1),
    # chunks of images: the forward in three (6, 6, 1), the backward in three (5, 5, 3)
    ("winograd_chunks", (13, 64, 48, 48), (64, 64, 3, 3), 1, 1, 1),
    # Winograd 5x5: F(3x3, 5x5) (AlexNet conv2, winograd5_p2_g2) and F(2x2, 5x5)
    # on outputs under 6 x 6, with channel counts off the vector width
    ("alexnet_conv2_g2", (2, 96, 13, 13), (256, 48, 5, 5), 1, 2, 2),
    ("winograd5_p2_g2", (2, 40, 11, 9), (34, 20, 5, 5), 1, 2, 2),
    ("winograd5_p0_odd", (3, 17, 9, 8), (16, 17, 5, 5), 1, 0, 1),
    ("winograd5_p4_asym", (1, 16, 6, 7), (18, 16, 5, 5), 1, (4, 1), 1),
    # polyphase path (float32): a strided kernel spanning three strides, as a
    # stride-1 3x3 over the input's stride phases (then Winograd): AlexNet conv1,
    # padding, input rows and columns the convolution never reads, unequal strides with groups
    ("alexnet_conv1_s4", (2, 3, 35, 35), (96, 3, 11, 11), 4, 0, 1),
    ("polyphase_pad", (2, 3, 17, 19), (32, 3, 11, 11), 4, 2, 1),
    ("polyphase_crop", (2, 3, 38, 41), (20, 3, 11, 11), 4, 0, 1),
    ("polyphase_s3x4_g2", (2, 4, 23, 30), (32, 2, 7, 9), (3, 4), (1, 2), 2),
    # im2col/GEMM path (float32: few channels, small batch, strides the other paths don't
    # take; the first four went to a channel-blocked direct path, removed in issue 19)
    ("gemm_s2_odd", (3, 8, 11, 9), (20, 8, 3, 5), 2, (1, 2), 1),
    ("gemm_g3", (2, 9, 10, 10), (48, 3, 5, 5), 1, 1, 3),
    ("gemm_c1", (2, 1, 23, 21), (16, 1, 5, 5), 1, 0, 1),
    ("gemm_c15_s2", (2, 15, 9, 11), (17, 15, 3, 3), 2, 1, 1),
    ("gemm_s2_g3", (3, 6, 11, 9), (9, 2, 3, 3), 2, 1, 3),
    ("gemm_1x1", (2, 5, 7, 7), (4, 5, 1, 1), 1, 0, 1),
    ("gemm_1x1_s2", (3, 4, 9, 9), (6, 2, 1, 1), 2, 1, 2),
    ("gemm_kernel_beyond_input", (1, 3, 6, 6), (3, 3, 8, 8), 1, 1, 1),
    ("batch_1", (1, 2, 8, 8), (3, 2, 3, 3), 1, 1, 1),
    ("batch_0", (0, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1),
]

# The path each case takes in float32, per variant (baseline, avx2, avx512); float64 takes
# gemm everywhere. Batched needs batch >= 8 (avx2) or 16 (avx512); Winograd and polyphase
# are AVX-512 code. Forward and backward take the same path ("none": nothing to compute).
_B, _W, _P, _O, _G = "batched", "winograd", "polyphase", "onednn", "gemm"
PATHS = {
    "lenet_c1": (_G, _B, _B), "lenet_c3": (_G, _B, _B), "batched_pad_g2": (_G, _B, _B),
    "batched_7x7_pad3": (_G, _B, _B), "batched_1x1": (_G, _B, _B),
    "lenet_c5": (_G, _G, _G),  # covers its input: one GEMM
    **{name: (_G, _G, _W) for name in [
        "winograd_p1", "winograd_p0_g2", "winograd_p2_odd", "winograd_asym_pad", "winograd2_small",
        "winograd5_p2_g2", "winograd5_p0_odd", "winograd5_p4_asym"]},
    # >= 64 output channels per group over >= 256 products: oneDNN where Winograd is missing
    **{name: (_O, _O, _W) for name in ["winograd_chunks", "alexnet_conv2_g2"]},
    "alexnet_conv1_s4": (_O, _O, _P),
    **{name: (_G, _G, _P) for name in ["polyphase_pad", "polyphase_crop", "polyphase_s3x4_g2"]},
    **{name: (_G, _G, _G) for name in [
        "gemm_s2_odd", "gemm_g3", "gemm_c1", "gemm_c15_s2", "gemm_s2_g3", "gemm_1x1", "gemm_1x1_s2",
        "gemm_kernel_beyond_input", "batch_1"]},
    "batch_0": ("none", "none", "none"),
}
ISAS = ["baseline", "avx2", "avx512"]
PARTS = ["forward", "grad_input", "grad_weight", "grad_bias"]


def _tensors(xs, ws, dtype, device="cpu", seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(xs, generator=g, dtype=torch.float64)
    w = torch.randn(ws, generator=g, dtype=torch.float64) / (ws[1] * ws[2] * ws[3]) ** 0.5
    b = torch.randn(ws[0], generator=g, dtype=torch.float64) if bias else None
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype).requires_grad_()
    return cast(x), cast(w), cast(b)


def _forward_backward(fn, x, w, b, stride, padding, groups, activation):
    y = fn(x, w, b, stride, padding, groups=groups, activation=activation)
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, inputs, g, allow_unused=True) if y.numel() else [None] * 3
    return y, grads


def _check_against_reference(x, w, b, stride, padding, groups, activation, dtype):
    y, grads = _forward_backward(lenetalex.conv2d_activation, x, w, b, stride, padding, groups, activation)
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    br = None if b is None else b.detach().double().requires_grad_()
    y_ref, grads_ref = _forward_backward(reference.conv2d_activation, xr, wr, br, stride, padding, groups, activation)
    assert y.dtype == dtype and y.is_contiguous()
    assert_close(y, y_ref, dtype, CONV_FACTOR)
    if y.numel():
        for name, a, e in zip(["grad_input", "grad_weight", "grad_bias"], grads, grads_ref):
            assert a is not None, name
            # NCHW-contiguous whatever the layout in: the oneDNN path returns
            # ATen's convolution_backward grads, which follow a channels_last x.
            assert a.is_contiguous(), name
            assert_close(a, e, dtype, CONV_FACTOR)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_matches_reference_cpu(case, dtype):
    _, xs, ws, stride, padding, groups = case
    # one activation per case, rotating, so every path meets every activation
    activation = ACTIVATIONS[CASES.index(case) % len(ACTIVATIONS)]
    x, w, b = _tensors(xs, ws, dtype)
    _check_against_reference(x, w, b, stride, padding, groups, activation, dtype)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", ["lenet_c3", "winograd_p1", "winograd5_p2_g2", "alexnet_conv1_s4", "gemm_s2_g3"])
def test_every_activation_on_every_path(name, activation):
    _, xs, ws, stride, padding, groups = next(c for c in CASES if c[0] == name)
    x, w, b = _tensors(xs, ws, torch.float32, seed=1)
    _check_against_reference(x, w, b, stride, padding, groups, activation, torch.float32)


@pytest.mark.parametrize("name", ["lenet_c1", "winograd_p0_g2", "polyphase_pad", "gemm_1x1"])
def test_without_bias(name):
    _, xs, ws, stride, padding, groups = next(c for c in CASES if c[0] == name)
    x, w, _ = _tensors(xs, ws, torch.float32, bias=False)
    _check_against_reference(x, w, None, stride, padding, groups, "tanh", torch.float32)


@pytest.mark.parametrize("name", ["lenet_c3", "winograd_p1", "winograd5_p2_g2", "alexnet_conv1_s4", "gemm_s2_g3"])
@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
def test_memory_layouts(name, layout):
    _, xs, ws, stride, padding, groups = next(c for c in CASES if c[0] == name)
    x, w, b = _tensors(xs, ws, torch.float32)
    if layout == "channels_last":
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
        w = w.detach().to(memory_format=torch.channels_last).requires_grad_()
    else:  # every other column of a wider tensor, and a transposed weight view
        wide = torch.zeros(*xs[:3], 2 * xs[3], dtype=torch.float32)
        wide[..., ::2] = x.detach()
        x = wide[..., ::2].requires_grad_()
        w = w.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
        assert not x.is_contiguous()
    _check_against_reference(x, w, b, stride, padding, groups, "scaled_tanh", torch.float32)


@pytest.mark.parametrize("name", ["lenet_c3", "winograd_p1", "winograd5_p2_g2", "gemm_g3", "alexnet_conv1_s4", "gemm_s2_g3"])
def test_backward_output_mask_subsets(name):
    # Each grad alone must equal the same grad computed together with the others.
    _, xs, ws, stride, padding, groups = next(c for c in CASES if c[0] == name)
    x, w, b = _tensors(xs, ws, torch.float32)
    x, w = x.detach(), w.detach()
    y = lenetalex.conv2d_activation(x, w, b.detach(), stride, padding, groups=groups, activation="relu")
    gy = torch.randn_like(y)
    st = [stride] * 2 if isinstance(stride, int) else list(stride)
    pd = [padding] * 2 if isinstance(padding, int) else list(padding)
    op = torch.ops.lenetalex.conv2d_activation_backward
    full = op(gy, y, x, w, st, pd, groups, "relu", [True, True, True])
    for i in range(3):
        mask = [j == i for j in range(3)]
        part = op(gy, y, x, w, st, pd, groups, "relu", mask)
        torch.testing.assert_close(part[i], full[i], rtol=1e-5, atol=1e-5)
        for j in range(3):
            if j != i:
                assert part[j].shape == (0,)


@pytest.mark.parametrize("name", ["lenet_c3", "winograd_p1", "winograd5_p2_g2", "alexnet_conv1_s4", "lenet_c5"])
def test_backward_is_deterministic(name):
    _, xs, ws, stride, padding, groups = next(c for c in CASES if c[0] == name)
    x, w, b = _tensors(xs, ws, torch.float32)
    runs = [_forward_backward(lenetalex.conv2d_activation, x, w, b, stride, padding, groups, "tanh")[1] for _ in range(2)]
    for a, b_ in zip(*runs):
        assert torch.equal(a, b_)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_float64(activation):
    x, w, b = _tensors((2, 4, 6, 5), (6, 2, 3, 3), torch.float64, seed=3)
    fn = lambda x, w, b: lenetalex.conv2d_activation(x, w, b, (2, 1), (1, 0), groups=2, activation=activation)
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7)


def test_double_backward_raises():
    # The backward is its own op without a double backward; a second
    # derivative must raise rather than return a wrong number.
    x, w, b = _tensors((1, 1, 4, 4), (1, 1, 3, 3), torch.float64)
    y = lenetalex.conv2d_activation(x, w, b)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(gx.sum(), w)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("name", ["lenet_c3", "gemm_s2_g3", "winograd_p0_g2", "winograd5_p2_g2"])
def test_opcheck(name, requires_grad):
    _, xs, ws, stride, padding, groups = next(c for c in CASES if c[0] == name)
    x, w, b = _tensors(xs, ws, torch.float32)
    x, w, b = (t.detach().requires_grad_(requires_grad) for t in (x, w, b))
    st = [stride] * 2 if isinstance(stride, int) else list(stride)
    pd = [padding] * 2 if isinstance(padding, int) else list(padding)
    torch.library.opcheck(torch.ops.lenetalex.conv2d_activation.default, (x, w, b, st, pd, groups, "tanh"))
    y = lenetalex.conv2d_activation(x.detach(), w.detach(), b.detach(), st, pd, groups=groups, activation="tanh")
    gy = torch.randn_like(y)
    torch.library.opcheck(
        torch.ops.lenetalex.conv2d_activation_backward.default,
        (gy, y, x.detach(), w.detach(), st, pd, groups, "tanh", [True, True, requires_grad]),
    )


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(6, 1, 5, 5) / 5)
        self.b1 = torch.nn.Parameter(torch.randn(6))
        self.w2 = torch.nn.Parameter(torch.randn(16, 6, 3, 3) / 7)

    def forward(self, x):
        y = lenetalex.conv2d_activation(x, self.w1, self.b1, activation="scaled_tanh")
        return lenetalex.conv2d_activation(y, self.w2, None, stride=2, padding=1, activation="relu")


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    block, x = _Block(), torch.randn(16, 1, 12, 12)
    eager = block(x)
    eager.sum().backward()
    grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    for p, g in zip(block.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


# Bad input: a clear exception that names the argument.
def _args(**kw):
    args = dict(input=torch.randn(2, 4, 8, 8), weight=torch.randn(6, 4, 3, 3), bias=torch.randn(6),
                stride=1, padding=0, groups=1, activation="relu")
    args.update(kw)
    return args


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(input=torch.randn(4, 8, 8)), ValueError, "input to be 4-D"),
        (dict(weight=torch.randn(6, 4, 3)), ValueError, "weight to be 4-D"),
        (dict(weight=torch.randn(6, 3, 3, 3)), ValueError, "weight expects 3 input channels"),
        (dict(groups=3), ValueError, "groups=3"),
        (dict(weight=torch.randn(6, 2, 3, 3), groups=2, input=torch.randn(2, 5, 8, 8)), ValueError, "groups=2"),
        (dict(bias=torch.randn(5)), ValueError, "bias of length 6"),
        (dict(bias=torch.randn(6, 1)), ValueError, "bias to be 1-D"),
        (dict(input=torch.randint(0, 5, (2, 4, 8, 8))), TypeError, "input to be a floating-point"),
        (dict(weight=torch.randn(6, 4, 3, 3, dtype=torch.float64)), TypeError, "weight to have the dtype of input"),
        (dict(input=torch.randn(2, 4, 8, 8, dtype=torch.float16), weight=torch.randn(6, 4, 3, 3, dtype=torch.float16),
              bias=None), TypeError, "on the CPU input must be float32 or float64"),
        (dict(weight=torch.randn(6, 4, 3, 3, device="meta")), ValueError, "weight to be on the device of input"),
        (dict(bias=torch.randn(6, device="meta")), ValueError, "bias to be on the device of input"),
        (dict(stride=0), ValueError, "stride to be >= 1"),
        (dict(stride=(1, 0)), ValueError, "stride to be >= 1"),
        (dict(padding=-1), ValueError, "padding to be >= 0"),
        (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
        (dict(weight=torch.randn(6, 4, 9, 3)), ValueError, "larger than the padded input"),
        (dict(groups=0), ValueError, "groups >= 1"),
        (dict(activation="sigmoid"), ValueError, "activation must be one of"),
    ],
)
def test_bad_input(kw, exc, match):
    args = _args(**kw)
    with pytest.raises(exc, match=match):
        lenetalex.conv2d_activation(**args)


def test_bad_backward_input():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
    y = lenetalex.conv2d_activation(x, w, None)
    with pytest.raises(ValueError, match="grad_output of shape"):
        torch.ops.lenetalex.conv2d_activation_backward(y[:1], y, x, w, [1, 1], [0, 0], 1, "relu", [True] * 3)
    with pytest.raises(ValueError, match="activation must be one of"):
        torch.ops.lenetalex.conv2d_activation_backward(y, y, x, w, [1, 1], [0, 0], 1, "gelu", [True] * 3)


# The Winograd and polyphase paths are AVX-512 code (csrc/cpu/conv2d_activation/plan.h),
# in the avx512 variant only; elsewhere these shapes go the GEMM path, whose
# grad_weight sums per thread (seen on an AVX2-only AMD EPYC).
@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512",
                    reason="the Winograd path needs an AVX-512 CPU")
@pytest.mark.parametrize("name", ["winograd_p1", "winograd5_p2_g2", "alexnet_conv1_s4"])
def test_winograd_independent_of_thread_count(name):
    # The Winograd (and polyphase) passes split their work by image and by
    # Winograd point, never by thread: bitwise the same with 1 and 2 threads.
    if lenetalex.build_info()["cpu_isa"] != "avx512":  # elsewhere the GEMM path takes these
        pytest.skip("the Winograd path runs in the avx512 CPU variant only")
    _, xs, ws, stride, padding, groups = next(c for c in CASES if c[0] == name)
    runs, old = [], torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            x, w, b = _tensors(xs, ws, torch.float32)
            runs.append(_forward_backward(lenetalex.conv2d_activation, x, w, b, stride, padding, groups, "relu"))
        finally:
            torch.set_num_threads(old)
    (y1, g1), (y2, g2) = runs
    assert torch.equal(y1, y2)
    for a, e in zip(g1, g2):
        assert torch.equal(a, e)


# ---- which path each case takes ---------------------------------------------------


def _pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def _path(x, w, stride, padding, groups, part):
    return torch.ops.lenetalex._conv2d_activation_path(x, w, _pair(stride), _pair(padding), groups, part)


@pytest.fixture
def isa(request):
    """Runs the test in the ISA variant request.param (lenetalex.set_cpu_isa), then restores
    the one before; skips a variant this CPU or build cannot run, naming it."""
    if request.param not in lenetalex.cpu_isas():
        pytest.skip(f"the {request.param} CPU variant does not run here (runnable: "
                    f"{', '.join(lenetalex.cpu_isas())})")
    before = lenetalex.build_info()["cpu_isa"]
    lenetalex.set_cpu_isa(request.param)
    yield request.param
    lenetalex.set_cpu_isa(before)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_path_of_every_case(case, isa):
    name, xs, ws, stride, padding, groups = case
    want = PATHS[name][ISAS.index(isa)]
    for dtype in (torch.float32, torch.float64):
        x, w, _ = _tensors(xs, ws, dtype)
        expected = want if dtype == torch.float32 or want == "none" else "gemm"
        got = {part: _path(x, w, stride, padding, groups, part) for part in PARTS}
        assert got == dict.fromkeys(PARTS, expected), (name, isa, dtype)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_path_of_the_bench_shapes(isa):
    # lenetalex bench's conv rows (lenetalex/bench/cases.py), as plan.h's table says.
    lenet = "gemm" if isa == "baseline" else "batched"
    alex = lambda path: path if isa == "avx512" else "onednn"
    rows = [
        ((256, 1, 32, 32), (6, 1, 5, 5), 1, 0, 1, lenet),
        ((256, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, lenet),
        ((256, 16, 5, 5), (120, 16, 5, 5), 1, 0, 1, "gemm"),
        ((8, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1, alex("polyphase")),
        ((8, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2, alex("winograd")),
        ((8, 256, 13, 13), (384, 256, 3, 3), 1, 1, 1, alex("winograd")),
        ((8, 384, 13, 13), (384, 192, 3, 3), 1, 1, 2, alex("winograd")),
        ((8, 384, 13, 13), (256, 192, 3, 3), 1, 1, 2, alex("winograd")),
    ]
    for xs, ws, stride, padding, groups, want in rows:
        x, w = torch.empty(xs), torch.empty(ws)
        for part in PARTS:
            assert _path(x, w, stride, padding, groups, part) == want, (xs, ws, part)


def test_path_op_checks_its_arguments():
    x, w = torch.empty(2, 3, 8, 8), torch.empty(4, 3, 3, 3)
    with pytest.raises(ValueError, match="part must be one of"):
        _path(x, w, 1, 0, 1, "backward")
    with pytest.raises(ValueError):
        _path(x, torch.empty(4, 2, 3, 3), 1, 0, 1, "forward")  # channel mismatch


def test_bench_rows_name_their_path():
    # `lenetalex bench` prints each conv row's path beside it (lenetalex/bench/measure.py).
    from lenetalex.bench import cases, measure

    active = lenetalex.build_info()["cpu_isa"]
    for case in cases.op_cases("conv2d_activation", "cpu", None):
        fwd = measure.kernel_path(case, "cpu", torch.float32, "fwd")
        assert fwd in ("batched", "winograd", "polyphase", "onednn", "gemm"), (case.name, active)
        assert measure.kernel_path(case, "cpu", torch.float32, "fwd+bwd") == fwd  # one path per call
