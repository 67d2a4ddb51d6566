"""conv2d_activation on CUDA: forward and backward against the reference in
float64, for float32/float16/bfloat16 (float64 for gradcheck), through both
forward kernels (direct and implicit GEMM, forced by LENETALEX_CONV_CUDA_KERNEL).
Every test here carries the `cuda` marker: without a GPU it runs the same
kernels in the CUDA emulator (conftest.py), or skips if that is not built. The CPU
tests of the op live in tests/test_conv2d_activation.py."""
import pytest
import torch
import torch.nn.functional as F

import lenetalex
from lenetalex import reference
# Normalized-error factors over conftest.TOL (float32 convolutions ~1e-4, docs/DESIGN.md).
from lenetalex.ops.conv2d_activation import TOLERANCE_FACTOR as FACTOR
from lenetalex.shapes import ALEXNET_CONV, CONV, LENET_CONV

from conftest import CUDA, EMULATED, HAS_CUDA, TOL, assert_close

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        HAS_CUDA and not lenetalex.build_info()["cuda_compiled"],
        reason="lenetalex was built without its CUDA kernels",
    ),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ACTIVATIONS = ["scaled_tanh", "tanh", "relu", "identity"]
KERNELS = ["auto", "direct", "gemm"]

# (name, input shape, weight shape, stride, padding, groups, activation)
CASES = [
    *[(name, *CONV[name].case(4)) for name in LENET_CONV],
    *[(name, *CONV[name].case(2)) for name in ALEXNET_CONV],
    ("odd_s2x1_p1x2_g3", (3, 6, 11, 9), (9, 2, 3, 3), (2, 1), (1, 2), 3, "tanh"),
    ("1x1", (2, 5, 7, 7), (4, 5, 1, 1), 1, 0, 1, "identity"),
    ("70_out_channels", (1, 3, 23, 17), (70, 3, 11, 11), 4, 2, 1, "relu"),
    ("depthwise", (2, 8, 9, 9), (8, 1, 3, 3), 1, 1, 8, "tanh"),
    ("asym_kernel", (2, 4, 10, 12), (6, 4, 3, 5), (1, 2), (2, 0), 1, "scaled_tanh"),
    ("wide_ragged", (1, 4, 40, 37), (10, 2, 3, 2), (1, 2), (1, 0), 2, "identity"),
]
CASE_IDS = [c[0] for c in CASES]
# The CUDA emulator runs AlexNet's conv1 backward at 227 x 227 in 50 s per
# dtype (a GPU in milliseconds): there it takes one 67 x 67 image, with the
# same filter, stride and channels, so the same kernels and tile edges run.
EMULATED_SHAPES = {"alexnet_conv1": CONV["alexnet_conv1"].shapes(1, size=67)[0]}
C3 = CONV["lenet_c3"]


# The forward's path (csrc/cuda/conv2d_activation/plan.cuh), asked of
# _conv2d_activation_path. Forced, every case fits the direct kernel's shared
# memory, so forcing it never falls back to the implicit GEMM. Auto: these take
# the direct kernel, AlexNet conv1 (per group M = 6050, ocg 96, K 363) cuDNN +
# our epilogue, the rest the tensor-core GEMM in half types and cuDNN + our
# epilogue in float32.
AUTO_DIRECT = {"lenet_c1", "lenet_c3", "odd_s2x1_p1x2_g3", "depthwise", "wide_ragged"}


def gemm_path(dtype):
    """The implicit GEMM's path: on tensor cores in half types (sm_80+, or the emulator)."""
    half = dtype in (torch.float16, torch.bfloat16)
    mma = not HAS_CUDA or torch.cuda.get_device_capability()[0] >= 8
    return "igemm_mma" if half and mma else "igemm"


def forward_path(name, dtype, kernel):
    if kernel != "auto":
        return {"direct": "direct", "gemm": gemm_path(dtype)}[kernel]
    if name == "alexnet_conv1":
        return "cudnn_epilogue"
    if name in AUTO_DIRECT:
        return "direct"
    # The rest: tensor cores in half types, cuDNN + our epilogue in float32.
    return "igemm_mma" if gemm_path(dtype) == "igemm_mma" else "cudnn_epilogue"


def cuda_path(x, w, stride, padding, groups, part):
    """The CUDA entries' path for this call (the emulator's op on CPU tensors)."""
    ops = torch.ops.lenetalex_emu if EMULATED else torch.ops.lenetalex
    return ops._conv2d_activation_path(x, w, list(pair(stride)), list(pair(padding)), groups, part)


@pytest.fixture(params=["auto", "gemm"])
def backward_kernels(request, monkeypatch):
    """The backward's kernels: cuDNN after our prologue (auto), or ours (forced)."""
    monkeypatch.setenv("LENETALEX_CONV_CUDA_KERNEL", request.param)
    return request.param


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    """The forward kernel the op is made to use (read by the C++ side per call)."""
    monkeypatch.setenv("LENETALEX_CONV_CUDA_KERNEL", request.param)
    return request.param


def make(xs, ws, dtype, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*xs, generator=g, dtype=torch.float64)
    fan_in = max(ws[1] * ws[2] * ws[3], 1)
    w = torch.randn(*ws, generator=g, dtype=torch.float64) / fan_in**0.5
    b = torch.randn(ws[0], generator=g, dtype=torch.float64) if bias else None
    cast = lambda t: None if t is None else t.to(device=CUDA, dtype=dtype)
    return cast(x), cast(w), cast(b)


def ref64(x, w, b, stride, padding, groups, act):
    """The reference in float64 on the same (already rounded) values."""
    d = lambda t: None if t is None else t.double()
    return reference.conv2d_activation(d(x), d(w), d(b), stride, padding, groups=groups, activation=act)


def grad_from_output(y, act):
    """act'(pre) written through y = act(pre), in float64: the backward's oracle."""
    y = y.double()
    if act == "relu":
        return (y > 0).double()
    if act == "tanh":
        return 1 - y * y
    if act == "scaled_tanh":
        a, s = reference.SCALED_TANH_A, reference.SCALED_TANH_S
        return s * (a - y * y / a)
    return torch.ones_like(y)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def backward_oracle(gy, y, x, w, stride, padding, groups, act):
    """grad_input, grad_weight, grad_bias in float64 from the same grad_output and output."""
    gpre = gy.double() * grad_from_output(y, act)
    gx = torch.nn.grad.conv2d_input(x.shape, w.double(), gpre, stride, padding, 1, groups)
    gw = torch.nn.grad.conv2d_weight(x.double(), w.shape, gpre, stride, padding, 1, groups)
    return gx, gw, gpre.sum((0, 2, 3))


# --- forward ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_matches_reference(case, dtype, kernel):
    _, xs, ws, stride, padding, groups, act = case
    x, w, b = make(xs, ws, dtype)
    y = lenetalex.conv2d_activation(x, w, b, stride, padding, groups=groups, activation=act)
    assert y.dtype == dtype and y.device == x.device
    assert_close(y, ref64(x, w, b, stride, padding, groups, act), dtype, FACTOR[dtype])
    assert cuda_path(x, w, stride, padding, groups, "forward") == forward_path(case[0], dtype, kernel)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_forward_activations(act, dtype, kernel):
    x, w, b = make((3, 6, 11, 9), (9, 2, 3, 3), dtype)
    y = lenetalex.conv2d_activation(x, w, b, (2, 1), (1, 2), groups=3, activation=act)
    assert_close(y, ref64(x, w, b, (2, 1), (1, 2), 3, act), dtype, FACTOR[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_without_bias(dtype, kernel):
    x, w, _ = make(*C3.shapes(2), dtype, bias=False)
    y = lenetalex.conv2d_activation(x, w, None, 1, 0, groups=1, activation="tanh")
    assert_close(y, ref64(x, w, None, 1, 0, 1, "tanh"), dtype, FACTOR[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_noncontiguous_and_channels_last(dtype, kernel):
    x, w, b = make((2, 6, 30, 28), (8, 6, 5, 5), dtype)
    strided = x[:, :, ::2, 1::2]  # (2, 6, 15, 14), not contiguous
    assert not strided.is_contiguous()
    want = ref64(strided, w, b, 1, 1, 1, "scaled_tanh")
    assert_close(lenetalex.conv2d_activation(strided, w, b, 1, 1), want, dtype, FACTOR[dtype])
    cl = strided.contiguous(memory_format=torch.channels_last)
    wcl = w.contiguous(memory_format=torch.channels_last)
    assert_close(lenetalex.conv2d_activation(cl, wcl, b, 1, 1), want, dtype, FACTOR[dtype])


# A large layer (per group M = 4624, ocg 64, K 288): cuDNN (ATen's CPU conv in the
# emulator) with our epilogue forward, our prologue backward.
LARGE = ((4, 32, 34, 34), (64, 32, 3, 3))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ["relu", "scaled_tanh"])
def test_forward_cudnn_and_epilogue(dtype, act):
    x, w, b = make(*LARGE, dtype)
    y = lenetalex.conv2d_activation(x, w, b, 1, 1, activation=act)
    assert cuda_path(x, w, 1, 1, 1, "forward") == "cudnn_epilogue"
    assert_close(y, ref64(x, w, b, 1, 1, 1, act), dtype, FACTOR[dtype])


def test_float32_follows_allow_tf32():
    """float32 on the cudnn paths is F.conv2d's: with TF32 allowed (conftest turns it off
    for the other CUDA tests) cuDNN may use it, and the result is within TF32's 10-bit
    mantissa (float16's tolerance) of the exact one; our kernels never use TF32."""
    x, w, b = make(*LARGE, torch.float32)
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        y = lenetalex.conv2d_activation(x, w, b, 1, 1, activation="relu")
        assert cuda_path(x, w, 1, 1, 1, "forward") == "cudnn_epilogue"
        want = F.relu(F.conv2d(x, w, b, 1, 1))  # the same cuDNN, the same flag
    finally:
        torch.backends.cudnn.allow_tf32 = old
    assert_close(y, ref64(x, w, b, 1, 1, 1, "relu"), torch.float16, FACTOR[torch.float16])
    assert_close(y, want.double(), torch.float16, FACTOR[torch.float16])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_batch_zero(dtype, kernel):
    x, w, b = make((0, 3, 9, 9), (4, 3, 3, 3), dtype)
    y = lenetalex.conv2d_activation(x, w, b, 2, 1)
    assert y.shape == (0, 4, 5, 5) and y.device == x.device


def test_path_of_each_backward_part(monkeypatch):
    # float32: cuDNN after our prologue; ours under the knob (implicit GEMMs for grad_input
    # and grad_weight, column sums for grad_bias) and over an empty batch, where nothing runs
    # but grad_weight's GEMM (grad_weight, grad_bias: zero-filled).
    x, w, _ = make((2, 6, 14, 14), (16, 6, 5, 5), torch.float32)
    parts = ("grad_input", "grad_weight", "grad_bias")
    assert [cuda_path(x, w, 1, 0, 1, p) for p in parts] == ["cudnn_prologue"] * 3
    monkeypatch.setenv("LENETALEX_CONV_CUDA_KERNEL", "gemm")
    assert [cuda_path(x, w, 1, 0, 1, p) for p in parts] == ["igemm", "igemm", "column_sums"]
    monkeypatch.setenv("LENETALEX_CONV_CUDA_KERNEL", "auto")
    x0 = x[:0]
    assert [cuda_path(x0, w, 1, 0, 1, p) for p in ("forward", "grad_input", "grad_weight", "grad_bias")] == [
        "none", "none", "igemm", "none"]


@pytest.mark.parametrize("dtype", [*DTYPES, torch.float64], ids=str)
def test_path_of_each_large_backward_part(dtype, monkeypatch):
    # cuDNN after our prologue, every part; float64 and the testing knob: ours.
    x, w, _ = make(*LARGE, dtype)
    parts = ("grad_input", "grad_weight", "grad_bias")
    ours = [gemm_path(dtype), gemm_path(dtype), "column_sums"]
    want = ours if dtype == torch.float64 else ["cudnn_prologue"] * 3
    assert [cuda_path(x, w, 1, 1, 1, p) for p in parts] == want
    monkeypatch.setenv("LENETALEX_CONV_CUDA_KERNEL", "gemm")
    assert [cuda_path(x, w, 1, 1, 1, p) for p in parts] == ours


@pytest.mark.gpu
def test_forward_on_side_stream(kernel):
    x, w, b = make(*C3.shapes(4), torch.float32)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        x2 = x * 2  # produced on the side stream: the op must run there too
        y = lenetalex.conv2d_activation(x2, w, b)
    side.synchronize()
    assert_close(y, ref64(x * 2, w, b, 1, 0, 1, "scaled_tanh"), torch.float32, 10)


# --- backward --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backward_op_matches_oracle(case, dtype, backward_kernels):
    name, xs, ws, stride, padding, groups, act = case
    xs = EMULATED_SHAPES.get(name, xs) if EMULATED else xs
    x, w, b = make(xs, ws, dtype)
    y = lenetalex.conv2d_activation(x, w, b, stride, padding, groups=groups, activation=act)
    gy = torch.randn(y.shape, dtype=torch.float64).to(device=CUDA, dtype=dtype)
    s, p = list(pair(stride)), list(pair(padding))
    gx, gw, gb = torch.ops.lenetalex.conv2d_activation_backward(
        gy, y, x, w, s, p, groups, act, [True, True, True]
    )
    want = backward_oracle(gy, y, x, w, s, p, groups, act)
    for got, exp in zip((gx, gw, gb), want):
        assert got.dtype == dtype and got.device == x.device
        assert_close(got, exp, dtype, FACTOR[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ["relu", "scaled_tanh"])
def test_backward_cudnn_and_prologue(dtype, act, backward_kernels):
    """A large layer's backward: our gpre pass and cuDNN (auto), or our kernels (forced),
    against the float64 oracle, every output mask."""
    x, w, b = make(*LARGE, dtype)
    y = lenetalex.conv2d_activation(x, w, b, 1, 1, activation=act)
    gy = torch.randn(y.shape, dtype=torch.float64).to(device=CUDA, dtype=dtype)
    want = backward_oracle(gy, y, x, w, (1, 1), (1, 1), 1, act)
    for mask in [(True, True, True), (False, True, False), (True, False, True)]:
        got = torch.ops.lenetalex.conv2d_activation_backward(
            gy, y, x, w, [1, 1], [1, 1], 1, act, list(mask))
        for asked, g, exp in zip(mask, got, want):
            if asked:
                assert g.dtype == dtype and g.is_contiguous()
                assert_close(g, exp, dtype, FACTOR[dtype])
            else:
                assert g.shape == (0,)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("case", CASES[:3] + CASES[8:], ids=CASE_IDS[:3] + CASE_IDS[8:])
def test_autograd_float32_matches_reference(case, act, kernel):
    _, xs, ws, stride, padding, groups, _ = case
    x, w, b = make(xs, ws, torch.float32)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    refs = [t.double().requires_grad_() for t in (x, w, b)]
    gy = torch.randn(lenetalex.conv2d_activation(x, w, b, stride, padding, groups=groups,
                                                 activation=act).shape, device=CUDA)
    lenetalex.conv2d_activation(*leaves, stride, padding, groups=groups,
                                activation=act).backward(gy)
    reference.conv2d_activation(*refs, stride, padding, groups=groups,
                                activation=act).backward(gy.double())
    for got, exp in zip(leaves, refs):
        assert_close(got.grad, exp.grad, torch.float32, 10)


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True),
                                  (False, True, True)])
def test_backward_output_mask(mask):
    x, w, b = make(*C3.shapes(2), torch.float32)
    y = lenetalex.conv2d_activation(x, w, b)
    gy = torch.randn_like(y)
    got = torch.ops.lenetalex.conv2d_activation_backward(
        gy, y, x, w, [1, 1], [0, 0], 1, "scaled_tanh", list(mask))
    want = backward_oracle(gy, y, x, w, (1, 1), (0, 0), 1, "scaled_tanh")
    for asked, g, exp in zip(mask, got, want):
        if asked:
            assert_close(g, exp, torch.float32, 10)
        else:
            assert g.shape == (0,)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_batch_zero(dtype):
    x, w, b = make((0, 3, 9, 9), (4, 3, 3, 3), dtype)
    y = lenetalex.conv2d_activation(x, w, b, 2, 1)
    gx, gw, gb = torch.ops.lenetalex.conv2d_activation_backward(
        torch.zeros_like(y), y, x, w, [2, 2], [1, 1], 1, "tanh", [True, True, True])
    assert gx.shape == x.shape
    assert gw.shape == w.shape and torch.equal(gw, torch.zeros_like(w))
    assert gb.shape == (4,) and torch.equal(gb, torch.zeros_like(gb))


def test_backward_noncontiguous_grad_output():
    x, w, b = make(*C3.shapes(2), torch.float32)
    x = x.contiguous(memory_format=torch.channels_last)
    y = lenetalex.conv2d_activation(x, w, b)
    gy = torch.randn(y.shape[::-1], device=CUDA).permute(3, 2, 1, 0)  # not contiguous
    got = torch.ops.lenetalex.conv2d_activation_backward(
        gy, y, x, w, [1, 1], [0, 0], 1, "scaled_tanh", [True, True, True])
    want = backward_oracle(gy, y, x, w, (1, 1), (0, 0), 1, "scaled_tanh")
    for g, exp in zip(got, want):
        assert_close(g, exp, torch.float32, 10)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[5]],
                         ids=[CASE_IDS[0], CASE_IDS[2], CASE_IDS[5]])
def test_backward_is_deterministic(case, monkeypatch):
    """Our backward: grad_input and grad_weight are reduced in split-K chunks (C5's
    grad_input: K = 3000) and grad_bias in chunks of images, each summed in a fixed order:
    bitwise repeatable."""
    monkeypatch.setenv("LENETALEX_CONV_CUDA_KERNEL", "gemm")
    _, xs, ws, stride, padding, groups, act = case
    x, w, b = make((8,) + xs[1:], ws, torch.float32)
    y = lenetalex.conv2d_activation(x, w, b, stride, padding, groups=groups, activation=act)
    gy = torch.randn_like(y)
    s, p = list(pair(stride)), list(pair(padding))
    first = torch.ops.lenetalex.conv2d_activation_backward(gy, y, x, w, s, p, groups, act, [True] * 3)
    for _ in range(3):
        again = torch.ops.lenetalex.conv2d_activation_backward(gy, y, x, w, s, p, groups, act, [True] * 3)
        for a, c in zip(first, again):
            assert torch.equal(a, c)


def test_cudnn_backward_repeatable_when_deterministic_asked():
    """The cudnn path is as deterministic as F.conv2d's backward: under
    torch.use_deterministic_algorithms cuDNN picks deterministic algorithms."""
    x, w, b = make(*C3.shapes(8), torch.float32)
    y = lenetalex.conv2d_activation(x, w, b)
    gy = torch.randn_like(y)
    assert cuda_path(x, w, 1, 0, 1, "grad_weight") == "cudnn_prologue"
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        args = (gy, y, x, w, [1, 1], [0, 0], 1, "scaled_tanh", [True] * 3)
        first = torch.ops.lenetalex.conv2d_activation_backward(*args)
        again = torch.ops.lenetalex.conv2d_activation_backward(*args)
    finally:
        torch.use_deterministic_algorithms(old)
    assert all(torch.equal(a, c) for a, c in zip(first, again))


@pytest.mark.parametrize("xs, ws", [CONV["lenet_c5"].shapes(37),   # P = 1: 37 chunks of one image
                                     CONV["lenet_c1"].shapes(5)])      # 5 chunks, P = 784
def test_grad_bias_chunked(xs, ws, monkeypatch):
    """grad_bias's two passes (column sums over chunks of images, then per channel), alone."""
    monkeypatch.setenv("LENETALEX_CONV_CUDA_KERNEL", "gemm")
    x, w, b = make(xs, ws, torch.float32)
    y = lenetalex.conv2d_activation(x, w, b)
    gy = torch.randn_like(y)
    _, _, gb = torch.ops.lenetalex.conv2d_activation_backward(
        gy, y, x, w, [1, 1], [0, 0], 1, "scaled_tanh", [False, False, True])
    assert_close(gb, backward_oracle(gy, y, x, w, (1, 1), (0, 0), 1, "scaled_tanh")[2],
                 torch.float32, 10)


# --- float64: gradcheck, opcheck, compile ----------------------------------

SMALL = [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, 1, "scaled_tanh"),
    ((2, 4, 9, 8), (6, 2, 3, 2), (2, 1), (1, 0), 2, "tanh"),
    ((1, 2, 10, 10), (3, 2, 5, 5), 1, 0, 1, "relu"),
    ((2, 3, 5, 5), (2, 3, 1, 1), 1, 0, 1, "identity"),
]


@pytest.mark.parametrize("case", SMALL, ids=[c[5] for c in SMALL])
def test_gradcheck_float64(case, kernel):
    xs, ws, stride, padding, groups, act = case
    x, w, b = (t.requires_grad_() for t in make(xs, ws, torch.float64))
    if act == "relu":  # keep pre-activations away from the kink
        with torch.no_grad():
            b += 0.5
    fn = lambda x, w, b: lenetalex.conv2d_activation(x, w, b, stride, padding, groups=groups, activation=act)
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    x, w, b = make((2, 4, 9, 8), (6, 2, 3, 2), torch.float64)
    for t in (x, w, b):
        t.requires_grad_(requires_grad)
    torch.library.opcheck(
        torch.ops.lenetalex.conv2d_activation.default, (x, w, b, [2, 1], [1, 0], 2, "tanh"))
    y = lenetalex.conv2d_activation(x, w, b, (2, 1), (1, 0), groups=2, activation="tanh").detach()
    torch.library.opcheck(
        torch.ops.lenetalex.conv2d_activation_backward.default,
        (torch.randn_like(y), y, x.detach(), w.detach(), [2, 1], [1, 0], 2, "tanh",
         [True, True, True]))


@pytest.mark.gpu  # its CPU counterpart is in test_conv2d_activation.py
def test_compile_fullgraph():
    pytest.importorskip("triton")
    x, w, b = make(*C3.shapes(4), torch.float32)
    fn = lambda x, w, b: lenetalex.conv2d_activation(x, w, b, 1, 0, groups=1, activation="scaled_tanh")
    compiled = torch.compile(fn, fullgraph=True)
    assert torch.equal(compiled(x, w, b), fn(x, w, b))


# --- bad input --------------------------------------------------------------


@pytest.mark.gpu
def test_mixed_devices_raise():
    x, w, b = make((1, 3, 8, 8), (4, 3, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="weight.*device"):
        lenetalex.conv2d_activation(x, w.cpu(), b)
    with pytest.raises(ValueError, match="weight.*device"):
        lenetalex.conv2d_activation(x.cpu(), w, b)
    with pytest.raises(ValueError, match="bias.*device"):
        lenetalex.conv2d_activation(x, w, b.cpu())
    y = lenetalex.conv2d_activation(x, w, b)
    with pytest.raises(ValueError, match="grad_output.*device"):
        torch.ops.lenetalex.conv2d_activation_backward(
            y.cpu(), y, x, w, [1, 1], [0, 0], 1, "scaled_tanh", [True, True, True])


def test_unsupported_dtype_raises():
    x = torch.randn(1, 1, 6, 6, device=CUDA).to(torch.float8_e4m3fn)
    w = torch.randn(2, 1, 3, 3, device=CUDA).to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="float32, float16, bfloat16"):
        lenetalex.conv2d_activation(x, w)


def test_bad_kernel_override_raises(monkeypatch):
    monkeypatch.setenv("LENETALEX_CONV_CUDA_KERNEL", "winograd")
    x, w, b = make((1, 3, 8, 8), (4, 3, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="LENETALEX_CONV_CUDA_KERNEL"):
        lenetalex.conv2d_activation(x, w, b)
