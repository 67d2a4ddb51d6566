"""Autograd and autocast of every op, registered in C++ (csrc/autograd/): the
dispatch entries, the grads asked of each backward op, second derivatives,
and autocast on the CPU and CUDA."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lenetalex
from lenetalex import reference

from conftest import assert_close

OPS = ["conv2d_activation", "avg_subsample", "local_response_norm", "rbf_distance"]


def _inputs(op, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    if op == "conv2d_activation":
        return (t(2, 3, 8, 8), t(4, 3, 3, 3) / 5, t(4)), {"stride": 1, "padding": 1}
    if op == "avg_subsample":
        return (t(2, 3, 8, 8), t(3), t(3)), {"kernel_size": 2}
    if op == "local_response_norm":
        return (t(2, 6, 5, 5),), {"size": 3, "alpha": 0.1, "beta": 0.75, "k": 1.0}
    return (t(5, 7), t(3, 7)), {}


# -- dispatch entries ------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
def test_autograd_and_autocast_registered_in_cpp(op):
    entries = {line.split(":")[0]: line for line in torch._C._dispatch_dump(f"lenetalex::{op}").splitlines()}
    for key in ("Autograd[alias]", "AutocastCPU", "AutocastCUDA"):
        assert key in entries, f"{op}: no {key} kernel"
        assert "csrc/autograd/" in entries[key], entries[key]  # C++, not a Python registration
    backward = torch._C._dispatch_dump(f"lenetalex::{op}_backward")
    assert any(line.startswith("Autograd[alias]") and "csrc/autograd/" in line for line in backward.splitlines())


@pytest.mark.parametrize("op", OPS)
def test_grad_fn_is_the_cpp_function(op):
    args, kwargs = _inputs(op)
    leaves = [a.requires_grad_() for a in args]
    y = getattr(lenetalex, op)(*leaves, **kwargs)
    assert y.grad_fn.name().startswith("torch::autograd::CppNode<lenetalex::autograd::")
    with torch.no_grad():
        assert getattr(lenetalex, op)(*leaves, **kwargs).grad_fn is None


# -- only the grads asked for -----------------------------------------------------------

class _Calls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


def _backward_masks(op, wanted):
    """The output_mask of every backward op call when only the inputs in
    `wanted` (indices) require grad."""
    args, kwargs = _inputs(op)
    leaves = [a.requires_grad_(i in wanted) for i, a in enumerate(args)]
    y = getattr(lenetalex, op)(*leaves, **kwargs)
    with _Calls() as mode:
        torch.autograd.grad(y.sum(), [leaves[i] for i in wanted])
    backward = getattr(torch.ops.lenetalex, f"{op}_backward").default
    return [list(args[-1]) for func, args in mode.calls if func is backward]


@pytest.mark.parametrize("op,wanted,mask", [
    ("conv2d_activation", [0], [True, False, False]),
    ("conv2d_activation", [1], [False, True, False]),
    ("conv2d_activation", [2], [False, False, True]),
    ("avg_subsample", [1, 2], [False, True, True]),
    ("avg_subsample", [0], [True, False, False]),
    ("rbf_distance", [0], [True, False]),
    ("rbf_distance", [1], [False, True]),
])
def test_backward_op_asked_only_for_wanted_grads(op, wanted, mask):
    assert _backward_masks(op, wanted) == [mask]


def test_conv_without_bias_asks_no_bias_grad():
    x, w = torch.randn(1, 2, 5, 5, requires_grad=True), torch.randn(3, 2, 3, 3, requires_grad=True)
    with _Calls() as mode:
        lenetalex.conv2d_activation(x, w).sum().backward()
    masks = [a[-1] for f, a in mode.calls if f is torch.ops.lenetalex.conv2d_activation_backward.default]
    assert masks == [[True, True, False]]


@pytest.mark.parametrize("op", OPS)
def test_double_backward_raises(op):
    args, kwargs = _inputs(op, torch.float64)
    leaves = [a.requires_grad_() for a in args]
    (g,) = torch.autograd.grad(getattr(lenetalex, op)(*leaves, **kwargs).sum(), leaves[0], create_graph=True)
    assert g.requires_grad
    with pytest.raises(NotImplementedError, match=f"{op}: double backward .* lenetalex.reference.{op}"):
        g.sum().backward()


@pytest.mark.parametrize("op", OPS)
def test_forward_ad_raises(op):
    # Not supported: an error, not an output without a tangent.
    args, kwargs = _inputs(op, torch.float64)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level(), pytest.raises(RuntimeError, match="jvp is not implemented"):
        dual = fwAD.make_dual(args[0], torch.ones_like(args[0]))
        getattr(lenetalex, op)(dual, *args[1:], **kwargs)


# -- autocast ---------------------------------------------------------------------------

def _low_precision_first(args, dtype):
    """The activation (first input) in dtype, the parameters float32, all leaves."""
    return [a.to(dtype if i == 0 else torch.float32).requires_grad_() for i, a in enumerate(args)]


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", OPS)
def test_autocast_cpu_runs_float32(op, low):
    # The CPU kernels are float32/float64: under CPU autocast a low-precision
    # activation with float32 parameters runs in float32 and returns float32,
    # as PyTorch does for ops without low-precision kernels.
    args, kwargs = _inputs(op)
    leaves = _low_precision_first(args, low)
    with torch.autocast("cpu", dtype=low):
        y = getattr(lenetalex, op)(*leaves, **kwargs)
    assert y.dtype == torch.float32
    expected = getattr(reference, op if op != "rbf_distance" else "rbf_distance_broadcast")(
        *[a.detach().float() for a in leaves], **kwargs)
    assert_close(y, expected, torch.float32)
    y.sum().backward()
    assert [a.grad.dtype for a in leaves] == [a.dtype for a in leaves]


@pytest.mark.parametrize("op", OPS)
def test_autocast_cpu_keeps_float64(op):
    args, kwargs = _inputs(op, torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert getattr(lenetalex, op)(*args, **kwargs).dtype == torch.float64


# gpu: the AutocastCUDA kernels are reached only by CUDA tensors, so the
# emulator (CPU tensors) cannot run this case.
@pytest.mark.cuda
@pytest.mark.gpu
@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", OPS)
def test_autocast_cuda_casts_to_autocast_dtype(op, low):
    # As F.conv2d under torch.autocast("cuda"): every floating input cast to
    # the autocast dtype, so a float16 activation with float32 parameters runs.
    args, kwargs = _inputs(op, device="cuda")
    leaves = _low_precision_first(args, torch.float16)
    with torch.autocast("cuda", dtype=low):
        y = getattr(lenetalex, op)(*leaves, **kwargs)
    assert y.dtype == low
    expected = getattr(lenetalex, op)(*[a.detach().to(low) for a in leaves], **kwargs)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    y.float().sum().backward()
    assert [a.grad.dtype for a in leaves] == [a.dtype for a in leaves]
