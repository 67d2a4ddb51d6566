"""lenet5: the whole LeNet-5 forward (C1 -> S2 -> C3 -> S4 -> C5 -> F6 -> RBF
distances) as one op, and its backward as another.

Schema and checks: csrc/ops/lenet5.cpp; kernels: csrc/cpu/lenet5_cpu.cpp,
csrc/cuda/lenet5_cuda.cu; autograd (C++): csrc/autograd/lenet5.h; reference:
LeNet5(impl="reference"), layer by layer in plain PyTorch; tests:
tests/test_lenet5.py, tests/test_lenet5_cuda.py. LeNet5(impl="fused") calls it whenever its input and
configuration allow (lenetalex.models.lenet.LeNet5.fused_net_args).
"""
import torch

from ..shapes import LENET5_INPUT, LENET5_PARAMETERS
from ..tolerance import LOOSE_FACTOR
from ._common import check_devices, empty_grad

_ops = torch.ops.lenetalex

BLOCK = 8  # the saved activations hold whole blocks of 8 images (the CPU kernel's blocks)
SAVED_PER_IMAGE = 8084  # C1 4704 + S2 1176 + C3 1600 + S4 400 + C5 120 + F6 84

PARAMETERS = ("c1_weight", "c1_bias", "s2_weight", "s2_bias", "c3_weight", "c3_bias",
              "s4_weight", "s4_bias", "c5_weight", "c5_bias", "f6_weight", "f6_bias")


def lenet5(input, c1_weight, c1_bias, s2_weight, s2_bias, c3_weight, c3_bias, s4_weight,
           s4_bias, c5_weight, c5_bias, f6_weight, f6_bias, prototypes, c3_table):
    """LeNet-5's RBF distances (N, K) for input (N, 1, 32, 32), in one op.

    The parameters have lenetalex.models.LeNet5's shapes
    (lenetalex.shapes.LENET5_PARAMETERS; f6_weight (84, 120, 1, 1) or (84, 120)),
    prototypes (K, 84). c3_table: bool (16, 6), True where C3 map i reads S2
    map j (Table I for the paper; all True for a dense C3); only those
    connections are computed, and c3_weight elsewhere is neither read nor
    given a gradient. Every layer up to F6 is squashed by LeCun's
    1.7159 tanh(2a/3); S2/S4 are weight * window mean + bias.

    Differentiable in the input, every parameter and the prototypes (C++
    autograd; only the grads asked for are computed). CPU: float32 and float64;
    CUDA: float32, float64, float16 and bfloat16 (computed in float32, float64
    for float64).
    """
    tensors = (input, c1_weight, c1_bias, s2_weight, s2_bias, c3_weight, c3_bias, s4_weight,
               s4_bias, c5_weight, c5_bias, f6_weight, f6_bias, prototypes)
    # Keep the layer outputs only when a backward can follow.
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return _ops.lenet5(*tensors, c3_table, save)[0]


def saved_numel(n):
    """Size of the forward's activations output with save=True: whole blocks."""
    return (n + BLOCK - 1) // BLOCK * BLOCK * SAVED_PER_IMAGE


def _check_fake(op, input, params, prototypes, c3_table):
    # The C++ checks' rules (the kernels that hold them do not run here).
    check_devices(op, input, prototypes=prototypes, c3_table=c3_table, **params)
    torch._check_value(input.dim() == 4 and tuple(input.shape[1:]) == LENET5_INPUT,
                       lambda: f"{op}: expected input of shape (N, 1, 32, 32), got {tuple(input.shape)}")
    for name, t in params.items():
        ok = tuple(t.shape) == LENET5_PARAMETERS[name] or (name == "f6_weight" and tuple(t.shape) == (84, 120))
        torch._check_value(ok, lambda: f"{op}: expected {name} of shape {list(LENET5_PARAMETERS[name])} "
                                       f"(LeNet-5's), got {list(t.shape)}")
    torch._check_value(prototypes.dim() == 2 and prototypes.shape[1] == 84,
                       lambda: f"{op}: expected prototypes of shape (K, 84)")
    torch._check_value(tuple(c3_table.shape) == (16, 6) and c3_table.dtype == torch.bool,
                       lambda: f"{op}: expected c3_table to be a bool tensor of shape [16, 6]")


@torch.library.register_fake("lenetalex::lenet5")
def _fake(input, c1_weight, c1_bias, s2_weight, s2_bias, c3_weight, c3_bias, s4_weight, s4_bias,
          c5_weight, c5_bias, f6_weight, f6_bias, prototypes, c3_table, save):
    params = dict(zip(PARAMETERS, (c1_weight, c1_bias, s2_weight, s2_bias, c3_weight, c3_bias,
                                   s4_weight, s4_bias, c5_weight, c5_bias, f6_weight, f6_bias)))
    _check_fake("lenet5", input, params, prototypes, c3_table)
    n = input.shape[0]
    acts = input.new_empty((saved_numel(n),)) if save else input.new_empty((0,))
    return input.new_empty((n, prototypes.shape[0])), acts


@torch.library.register_fake("lenetalex::lenet5_backward")
def _fake_backward(grad_distances, activations, input, c1_weight, s2_weight, c3_weight,
                   s4_weight, c5_weight, f6_weight, prototypes, c3_table, output_mask):
    # The grads' shapes, in the op's order: input, then each parameter, then prototypes.
    shapes = [tuple(input.shape)] + [LENET5_PARAMETERS[name] for name in PARAMETERS] + [tuple(prototypes.shape)]
    shapes[PARAMETERS.index("f6_weight") + 1] = tuple(f6_weight.shape)
    return [input.new_empty(s) if m else empty_grad(input) for s, m in zip(shapes, output_mask)]


# Over lenetalex.tolerance.TOLERANCE, for `lenetalex check`: six layers' roundings.
TOLERANCE_FACTOR = LOOSE_FACTOR


def check_cases(device, dtype):
    """Cases for `lenetalex check`: the network at the paper's configuration
    and with a dense C3, against the reference layers."""
    from ..models.lenet import C3_TABLE

    g = torch.Generator().manual_seed(0)

    def t(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    dense = torch.ones(16, 6, dtype=torch.bool)
    for name, table in (("paper table I, 9 images", C3_TABLE), ("dense C3, 9 images", dense)):
        # weights ~ 1/sqrt(fan-in), so no layer is all saturated
        params = [t(*s, scale=(len(s) > 1 and 1 / (s[1] * s[-1] * s[-1]) ** 0.5) or 0.7)
                  for s in LENET5_PARAMETERS.values()]
        protos = torch.where(t(10, 84) > 0, 1.0, -1.0).to(dtype)
        x = t(9, *LENET5_INPUT)
        table = table.to(device)
        fused = lambda x, *p, table=table: lenet5(x, *p, table)
        yield name, fused, lambda x, *p, table=table: reference_lenet5(x, *p, table), (x, *params, protos)


def reference_lenet5(input, c1_weight, c1_bias, s2_weight, s2_bias, c3_weight, c3_bias, s4_weight,
                     s4_bias, c5_weight, c5_bias, f6_weight, f6_bias, prototypes, c3_table):
    """The same network from lenetalex.reference's layers (what LeNet5(impl="reference") computes)."""
    from .. import reference as r

    x = r.conv2d_activation(input, c1_weight, c1_bias)
    x = r.avg_subsample(x, s2_weight, s2_bias, 2)
    x = r.conv2d_activation(x, c3_weight * c3_table[:, :, None, None].to(c3_weight.dtype), c3_bias)
    x = r.avg_subsample(x, s4_weight, s4_bias, 2)
    x = r.conv2d_activation(x, c5_weight, c5_bias)
    x = r.conv2d_activation(x, f6_weight.reshape(84, 120, 1, 1), f6_bias)
    return r.rbf_distance(torch.flatten(x, 1), prototypes)
