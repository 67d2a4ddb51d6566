"""lenet_map_loss (LeNet-5's MAP criterion, lenetalex/ops/lenet_map_loss.py:
plain PyTorch, no kernel) against lenetalex.reference: values where the
distances are zero, tiny or huge, reductions, gradcheck, torch.compile, bad
input."""
import inspect
import math

import pytest
import torch

import lenetalex
from lenetalex import reference

from conftest import assert_close
from test_rbf_distance import _randn

# ---- values, reductions, autograd, compile ------------------------------------------------------------

def test_map_loss_default_j_is_the_reference_one():
    default = inspect.signature(lenetalex.lenet_map_loss).parameters["j"].default
    assert default == reference.DEFAULT_MAP_J == inspect.signature(reference.lenet_map_loss).parameters["j"].default
    assert default > 0


@pytest.mark.parametrize("j", [0.5, 1.0, reference.DEFAULT_MAP_J, 1000.0])
@pytest.mark.parametrize("k", [1, 10])
def test_map_loss_of_zero_distances(j, k):
    d = torch.zeros(4, k, dtype=torch.float64)
    t = torch.arange(4) % k
    loss = lenetalex.lenet_map_loss(d, t, j=j, reduction="none")
    # log(exp(-j) + k) (the paper's log(e^-j + 10) for K = 10), without rounding e^-84 away
    expected = math.log(k) + math.log1p(math.exp(-j) / k)
    assert torch.allclose(loss, torch.full((4,), expected, dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0, 1e4])
@pytest.mark.parametrize("j", [0.1, reference.DEFAULT_MAP_J])
def test_map_loss_matches_reference_and_is_positive(dtype, scale, j):
    g = torch.Generator().manual_seed(int(scale * 7) + 1)
    d = (torch.rand(64, 10, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = torch.randint(0, 10, (64,), generator=g)
    for reduction in ("none", "mean", "sum"):
        de, dr = d.clone().requires_grad_(), d.clone().requires_grad_()
        got = lenetalex.lenet_map_loss(de, t, j=j, reduction=reduction)
        want = reference.lenet_map_loss(dr, t, j=j, reduction=reduction)
        assert torch.isfinite(got).all()
        assert_close(got, want, dtype)
        got.sum().backward()
        want.sum().backward()
        assert_close(de.grad, dr.grad, dtype)
    per_sample = lenetalex.lenet_map_loss(d, t, j=j, reduction="none")
    # Positive in exact arithmetic; in floating point >= 0, and > 0 unless all
    # other terms are below exp(-80), where the true value underflows too.
    assert (per_sample >= 0).all()
    if scale <= 100:
        assert (per_sample > 0).all()


def test_map_loss_accurate_when_tiny():
    # Correct class clearly nearest (a trained net): the loss is sum exp(y_c - y_i),
    # far below float32's eps relative to y_c. The reference's logsumexp rounds it
    # to 0; this keeps its relative precision, and its gradient.
    d = torch.tensor([[1.0, 30.0, 45.0, 100.0], [50.0, 20.0, 90.0, 99.0]])
    t = torch.tensor([0, 1])
    exact = torch.tensor([math.log1p(math.exp(-29) + math.exp(-44) + math.exp(-84 + 1) + math.exp(-99)),
                          math.log1p(math.exp(-30) + math.exp(-70) + math.exp(-64) + math.exp(-79))])
    got = lenetalex.lenet_map_loss(d, t, j=84.0, reduction="none")
    assert (got > 0).all()
    assert torch.allclose(got.double(), exact.double(), rtol=1e-5, atol=0)


def test_map_loss_reductions():
    d = _randn(20, 10).abs() * 30
    t = torch.arange(20) % 10
    none = lenetalex.lenet_map_loss(d, t, reduction="none")
    assert none.shape == (20,)
    assert torch.allclose(lenetalex.lenet_map_loss(d, t, reduction="sum"), none.sum())
    assert torch.allclose(lenetalex.lenet_map_loss(d, t), none.mean())
    assert lenetalex.lenet_map_loss(d[:0], t[:0], reduction="none").shape == (0,)


def test_map_loss_gradcheck():
    d = (_randn(6, 5).abs() * 3).requires_grad_()
    t = torch.tensor([0, 4, 2, 2, 1, 3])
    assert torch.autograd.gradcheck(lambda d: lenetalex.lenet_map_loss(d, t, j=2.0), (d,))


def test_map_loss_compile_fullgraph():
    d = _randn(16, 10, dtype=torch.float32).abs() * 50
    t = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    for reduction in ("mean", "sum", "none"):
        fn = lambda d, t: lenetalex.lenet_map_loss(d, t, j=40.0, reduction=reduction)
        assert_close(torch.compile(fn, fullgraph=True)(d, t), fn(d, t), torch.float32)


# ---- bad input -----------------------------------------------------------------

def test_bad_input_map_loss():
    d, t = _randn(4, 10).abs(), torch.tensor([0, 1, 2, 9])
    with pytest.raises(ValueError, match="distances to be 2-D"):
        lenetalex.lenet_map_loss(d[0], t[:1])
    with pytest.raises(TypeError, match="distances to be floating point"):
        lenetalex.lenet_map_loss(d.long(), t)
    with pytest.raises(ValueError, match="target to be 1-D of length 4"):
        lenetalex.lenet_map_loss(d, t[:3])
    with pytest.raises(ValueError, match="target to be 1-D"):
        lenetalex.lenet_map_loss(d, t[:, None])
    with pytest.raises(TypeError, match="target to be int64"):
        lenetalex.lenet_map_loss(d, t.int())
    with pytest.raises(TypeError, match="target to be int64"):
        lenetalex.lenet_map_loss(d, t.double())
    with pytest.raises(ValueError, match=r"target values in \[0, 10\)"):
        lenetalex.lenet_map_loss(d, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"target values in \[0, 10\)"):
        lenetalex.lenet_map_loss(d, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="target to be on the device of distances"):
        lenetalex.lenet_map_loss(d, t.to("meta"))
    for j in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="j to be a positive number"):
            lenetalex.lenet_map_loss(d, t, j=j)
    with pytest.raises(ValueError, match="reduction must be one of"):
        lenetalex.lenet_map_loss(d, t, reduction="max")
    with pytest.raises(ValueError, match="at least one class"):
        lenetalex.lenet_map_loss(d[:, :0], t)
