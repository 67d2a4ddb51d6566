"""What `lenetalex bench` measures: every op at the shapes where LeNet-5 and
AlexNet use it, plus the large shapes the op issues name, and the two whole
models. Each case knows its inputs, its FLOPs and its compulsory bytes, so the
runner can turn a time into GFLOP/s or GB/s.

Ops and models are looked up by name at run time (lenetalex.<op>,
lenetalex.models.<Model>): one missing from this build is reported as "not
available", so the suite runs on any build.
"""
from dataclasses import dataclass, field

import torch

from ..shapes import ALEXNET_CONV, CONV, LRN, RBF_HEAD, SUBSAMPLE, with_batch

# Command-line group name -> op (or "models"), in report order.
GROUPS = {
    "conv": "conv2d_activation",
    "subsample": "avg_subsample",
    "lrn": "local_response_norm",
    "rbf": "rbf_distance",
    "models": "models",
}
DIRECTIONS = ("fwd", "fwd+bwd")
MODES = ("inference", "train step")


@dataclass
class Tensor:
    """One input: its shape, how to fill it, and whether fwd+bwd asks for its grad."""

    name: str
    shape: tuple
    init: str = "randn"  # randn | fan_in (randn / sqrt(fan-in)) | ones | sign (+-1)
    grad: bool = True

    def make(self, device, dtype, gen):
        t = torch.randn(self.shape, generator=gen, dtype=torch.float32)
        if self.init == "fan_in":
            fan_in = 1
            for s in self.shape[1:]:
                fan_in *= s
            t = t / max(fan_in, 1) ** 0.5
        elif self.init == "ones":
            t = torch.ones(self.shape)
        elif self.init == "sign":
            t = torch.where(t >= 0, 1.0, -1.0)
        return t.to(device=device, dtype=dtype)

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class OpCase:
    op: str
    name: str  # where the shape comes from: lenet_c1, alexnet_conv2, large, ...
    shape: str  # printable shapes and arguments
    tensors: list
    out_shape: tuple
    kwargs: dict = field(default_factory=dict)
    flops_fwd: float = 0.0  # 0 for memory-bound ops
    flops_bwd: float = 0.0  # the backward alone
    bound: str = "memory"  # "compute": report FLOP/s against the matmul peak; "memory": bytes/s against the copy

    def make_inputs(self, device, dtype):
        gen = torch.Generator().manual_seed(0)
        return [t.make(device, dtype, gen) for t in self.tensors]

    def bytes(self, direction, elem_size):
        """Compulsory traffic: the forward reads its inputs and writes its output;
        the backward reads grad_output and the inputs and writes the grads asked for."""
        n_out = 1
        for s in self.out_shape:
            n_out *= s
        fwd = sum(t.numel for t in self.tensors) + n_out
        if direction == "fwd":
            return fwd * elem_size
        bwd = n_out + sum(t.numel for t in self.tensors) + sum(t.numel for t in self.tensors if t.grad)
        return (fwd + bwd) * elem_size

    def flops(self, direction):
        return self.flops_fwd + (self.flops_bwd if direction == "fwd+bwd" else 0.0)

    def call(self, fn, inputs):
        return fn(*inputs, **self.kwargs)


def _fmt(shape):
    return "(" + ",".join(str(s) for s in shape) + ")"


def _with_batch(shape, batch):
    return shape if batch is None else (batch,) + tuple(shape[1:])


def conv_case(name, x, w, stride=1, padding=0, groups=1, activation="relu"):
    n, _, h, wd = x
    o, cg, kh, kw = w
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    flops = 2.0 * n * o * oh * ow * cg * kh * kw
    extra = "".join(f" {k}{v}" for k, v in (("s", stride), ("p", padding), ("g", groups)) if v != 1 and not (k == "p" and v == 0))
    return OpCase(
        "conv2d_activation", name, f"{_fmt(x)}x{_fmt(w)}{extra} {activation}",
        [Tensor("input", x), Tensor("weight", w, "fan_in"), Tensor("bias", (o,))],
        (n, o, oh, ow), dict(stride=stride, padding=padding, groups=groups, activation=activation),
        flops_fwd=flops, flops_bwd=2 * flops,  # grad_input and grad_weight: one conv's work each
        bound="compute")


def subsample_case(name, x, activation="scaled_tanh"):
    n, c, h, w = x
    return OpCase(
        "avg_subsample", name, f"{_fmt(x)} k2 {activation}",
        [Tensor("input", x), Tensor("weight", (c,), "ones"), Tensor("bias", (c,))],
        (n, c, h // 2, w // 2), dict(kernel_size=2, activation=activation))


def lrn_case(name, x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    return OpCase(
        "local_response_norm", name, f"{_fmt(x)} size {size} a {alpha:g} b {beta:g} k {k:g}",
        [Tensor("input", x)], tuple(x), dict(size=size, alpha=alpha, beta=beta, k=k))


def rbf_case(name, n, k, d):
    flops = 2.0 * n * k * d  # counted as the matmul it is, to compare with the matmul peak
    return OpCase(
        "rbf_distance", name, f"({n},{d}) vs ({k},{d})",
        [Tensor("input", (n, d)), Tensor("prototypes", (k, d), "sign", grad=False)],
        (n, k), flops_fwd=flops, flops_bwd=flops,  # grad_input: one (N,K)x(K,D) product
        bound="compute")


# The call-overhead case of each op: the smallest valid tensors (conv: the
# issue's (1,1,8,8) by (2,1,3,3)), where the time is the cost of a call, not of
# its arithmetic. Not resized by --batch.
OVERHEAD = "overhead"


def overhead_case(op):
    if op == "conv2d_activation":
        return conv_case(OVERHEAD, (1, 1, 8, 8), (2, 1, 3, 3), activation="scaled_tanh")
    if op == "avg_subsample":
        return subsample_case(OVERHEAD, (1, 1, 2, 2))
    if op == "local_response_norm":
        return lrn_case(OVERHEAD, (1, 1, 1, 1))
    return rbf_case(OVERHEAD, 1, 1, 1)


def op_cases(op, device_type, batch=None):
    """The cases of one op on one device type, the overhead case last; batch
    overrides every other batch size."""
    return _shape_cases(op, device_type, batch) + [overhead_case(op)]


def _shape_cases(op, device_type, batch):
    b = lambda shape: _with_batch(shape, batch)  # noqa: E731
    if op == "conv2d_activation":
        ab = 8 if device_type == "cpu" else 128  # AlexNet's conv batch
        return [conv_case(name, b(with_batch(CONV[name].input, ab if name in ALEXNET_CONV else 256)),
                          CONV[name].weight, CONV[name].stride, CONV[name].padding, CONV[name].groups,
                          CONV[name].activation)
                for name in CONV]
    if op == "avg_subsample":
        return [subsample_case(name, b(with_batch(shape, 256))) for name, shape in SUBSAMPLE.items()] + [
            subsample_case("large", b((64, 96, 56, 56))),
        ]
    if op == "local_response_norm":
        return [lrn_case(name, b(with_batch(shape, 32))) for name, shape in LRN.items()]
    if op == "rbf_distance":
        return [
            rbf_case("lenet_head", 4096 if batch is None else batch, *RBF_HEAD),
            rbf_case("large", 65536 if batch is None else batch, 1000, 128),
        ]
    raise ValueError(f"unknown op {op!r}")


@dataclass
class ModelCase:
    name: str  # the class in lenetalex.models
    batch: int
    input_shape: tuple  # without the batch
    kwargs: dict = field(default_factory=dict)
    loss: str = "cross_entropy"  # or "lenet_map"
    classes: int = 1000
    label: str = ""  # the row's name, when not the class's

    @property
    def row(self):
        return self.label or self.name

    @property
    def shape(self):
        return _fmt((self.batch,) + self.input_shape)


def model_cases(device_type, batch=None):
    cpu = device_type == "cpu"
    rows = [
        ModelCase("LeNet5", batch or 256, (1, 32, 32), loss="lenet_map", classes=10),
        # The per-layer fused ops, as LeNet5 ran before the whole-network op.
        ModelCase("LeNet5", batch or 256, (1, 32, 32), dict(fused_net=False), loss="lenet_map",
                  classes=10, label="LeNet5-layers"),
        ModelCase("AlexNet", batch or (4 if cpu else 128), (3, 227, 227), dict(variant="original")),
    ]
    if not cpu and batch is None:
        # Issue 21's GPU target (>= 20 M img/s inference) is at large batch,
        # where the whole-network op fills every SM.
        rows.insert(1, ModelCase("LeNet5", 65536, (1, 32, 32), loss="lenet_map", classes=10,
                                 label="LeNet5-b65536"))
    return rows
