"""local_response_norm: AlexNet's local response normalization as one fused op.

Schema and checks: csrc/ops/local_response_norm.cpp; kernels:
csrc/cpu/local_response_norm_cpu.cpp and csrc/cuda/local_response_norm_cuda.cu;
reference: lenetalex.reference.local_response_norm (F.local_response_norm);
tests: tests/test_local_response_norm.py.
"""

import torch

from ..shapes import LRN, with_batch
from ._common import check_devices, check_int

_op = torch.ops.lenetalex.local_response_norm.default


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalization across channels, with the numbers of
    ``torch.nn.functional.local_response_norm``::

        b_c = a_c / (k + alpha / size * sum_{c' in window(c)} a_c'^2) ** beta

    window(c) = [c - size // 2, c + (size - 1) // 2], zero-padded at both ends
    (so even sizes look one channel further back than forward, as in PyTorch;
    cuDNN and Caffe align even windows the other way).

    input (N, C, *): 3-D or more, the window runs along dim 1; float32 or
    float64 on the CPU, float32, float16, bfloat16 (or float64) on CUDA.
    Returns a new tensor of input's shape (contiguous).

    alpha is divided by size, as in PyTorch, Caffe and cuDNN. The AlexNet
    paper's formula ``b = a / (k + alpha_paper * sum a^2) ** beta`` does not
    divide: for it pass ``alpha = alpha_paper * size``. The paper's LRN
    (k=2, n=5, alpha=1e-4, beta=0.75) is therefore::

        lenetalex.local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)

    One pass over the channels with a sliding window sum of squares (kept in
    double, restarted every max(32, size) channels), so the cost does not grow
    with size. Backward saves only the input (no new tensor: 0 extra bytes per
    element; F.local_response_norm's autograd keeps three activation-sized
    intermediates, 12 bytes per element in float32) and recomputes the window
    sums.
    """
    size = check_int("local_response_norm", size, "size")
    return _op(input, size, float(alpha), float(beta), float(k))


def _check_fake(input, size):
    # The fake kernels run without the C++ checks: keep the shape rules here too.
    torch._check(
        input.dim() >= 3,
        lambda: f"local_response_norm: expected input to be at least 3-D (N, C, *), got {input.dim()}-D",
    )
    torch._check(size >= 1, lambda: f"local_response_norm: expected size >= 1, got {size}")


@torch.library.register_fake("lenetalex::local_response_norm")
def _fake(input, size, alpha, beta, k):
    _check_fake(input, size)
    return input.new_empty(input.shape)


@torch.library.register_fake("lenetalex::local_response_norm_backward")
def _fake_backward(grad_output, input, size, alpha, beta, k):
    check_devices("local_response_norm_backward", input, grad_output=grad_output)
    _check_fake(input, size)
    return input.new_empty(input.shape)




# Shapes for `lenetalex check`: AlexNet's two LRN layers (small batch and
# spatial size), odd and even sizes, sizes beyond the channel count, 3-D and 5-D.
def check_cases(device, dtype):
    from .. import reference

    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    cases = [
        ("alexnet_lrn1 paper", with_batch(LRN["alexnet_lrn1"], 2, size=11), 5, 5e-4, 0.75, 2.0),
        ("alexnet_lrn2 paper", with_batch(LRN["alexnet_lrn2"], 2, size=5), 5, 5e-4, 0.75, 2.0),
        ("caffe alexnet", (2, 96, 7, 7), 5, 1e-4, 0.75, 1.0),
        ("size 4 beta 0.6", (3, 7, 5, 3), 4, 2.0, 0.6, 1.5),
        ("size 9 > C=5", (2, 5, 3, 4), 9, 1.0, 1.2, 0.5),
        ("3-D size 2", (2, 6, 9), 2, 0.5, 0.75, 1.0),
        ("5-D size 3", (1, 4, 3, 2, 5), 3, 0.3, 0.9, 1.0),
    ]
    for name, shape, size, alpha, beta, k in cases:
        scale = 10.0 if "paper" in name or "caffe" in name else 1.0  # ReLU-sized activations
        x = t(*shape) * scale
        fused = lambda x, n=size, a=alpha, b=beta, kk=k: local_response_norm(x, n, a, b, kk)
        ref = lambda x, n=size, a=alpha, b=beta, kk=k: reference.local_response_norm(x, n, a, b, kk)
        yield name, fused, ref, (x,)
