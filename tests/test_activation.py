"""The activation math (csrc/common/activation.h), seen through a 1x1 identity
convolution, so the exact float32 path every fused CPU epilogue uses is tested:
its vectorizable tanh against float64 tanh, and the derivative from the output."""
import pytest
import torch

import lenetalex
from lenetalex import reference


def _through_conv(x, activation):
    # (1, 1, 1, L) input, a single weight of 1 and no bias: y = act(x)
    w = torch.ones(1, 1, 1, 1, dtype=x.dtype)
    return lenetalex.conv2d_activation(x.view(1, 1, 1, -1), w, None, activation=activation).view(-1)


@pytest.mark.parametrize("activation", ["tanh", "scaled_tanh"])
def test_float32_tanh_is_accurate_everywhere(activation):
    # Dense grid across the region where tanh changes, plus the far tails, 0 and
    # the 0.3 switch between the series and the exp form.
    x = torch.cat([torch.linspace(-12, 12, 200_001), torch.tensor([0.0, -0.0, 0.3, -0.3, 50.0, -50.0, 1e-30])])
    y = _through_conv(x, activation)
    expected = reference.activation(x.double(), activation)
    rel = ((y.double() - expected).abs() / expected.abs().clamp_min(1e-30))
    assert rel.max().item() < 1e-6, f"max relative error {rel.max().item():.2e}"
    assert (y.abs() <= 1.7159 * (1 + 1e-7)).all()


def test_float32_tanh_is_odd_and_saturates():
    x = torch.linspace(0, 30, 10_001)
    y, y_neg = _through_conv(x, "tanh"), _through_conv(-x, "tanh")
    assert torch.equal(y, -y_neg)
    assert (y[1:] >= y[:-1]).all(), "tanh must be monotone"
    assert y[-1].item() == 1.0


def test_nan_propagates():
    y = _through_conv(torch.tensor([float("nan"), 1.0]), "tanh")
    assert torch.isnan(y[0]) and not torch.isnan(y[1])


@pytest.mark.parametrize("activation", ["tanh", "scaled_tanh", "relu", "identity"])
def test_derivative_from_output_matches_autograd(activation):
    x = torch.linspace(-4, 4, 4001, dtype=torch.float64).requires_grad_()
    _through_conv(x, activation).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    reference.activation(x_ref, activation).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)


def test_scaled_tanh_constants():
    # LeCun 1998: f(+-1) = +-1 and f'(0) = A*S = 1.14393
    x = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64, requires_grad=True)
    y = _through_conv(x, "scaled_tanh")
    assert abs(y[0].item() - 1.0) < 1e-4 and abs(y[1].item() + 1.0) < 1e-4
    y[2].backward()
    assert abs(x.grad[2].item() - 1.7159 * 2 / 3) < 1e-12
