"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), layer for layer.

    input 1@32x32
    C1  6@5x5 conv + f            -> 6@28x28     156 parameters
    S2  trainable 2x2 subsampling -> 6@14x14      12
    C3  16@5x5 conv, Table I      -> 16@10x10  1,516
    S4  trainable 2x2 subsampling -> 16@5x5       32
    C5  120@5x5 conv + f          -> 120@1x1  48,120
    F6  84 units + f              -> 84       10,164
    output: 10 Euclidean RBF units with fixed +-1 prototypes -> distances (N, 10)

f is LeCun's squashing function 1.7159 tanh(2a/3). Every layer runs through
lenetalex.nn modules, so impl="fused" uses the lenetalex ops and
impl="reference" their plain-PyTorch twins, with identical parameters.

F6 is a 1x1 Conv2dActivation on C5's (N, 120, 1, 1) output: a fully connected
layer with the squashing function fused in, on the same op as the other layers
(its weight has shape (84, 120, 1, 1); 10,164 parameters either way).
"""
import torch
from torch import nn

from .. import nn as lnn
from .. import reference

# Table I: column j of row i is True when C3 map i reads S2 map j.
_C3_INPUTS = [
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
]
C3_TABLE = torch.zeros(16, 6, dtype=torch.bool)
for _row, _cols in enumerate(_C3_INPUTS):
    C3_TABLE[_row, list(_cols)] = True
del _row, _cols

# The output layer's prototypes: stylized 7x12 bitmaps of the digits in the
# spirit of the paper's Figure 3 (which exists only as a picture), drawn for
# lenetalex. '#' is +1, '.' is -1; read row by row into 84 values.
DIGIT_BITMAPS = {
    0: (".......", "..###..", ".#...#.", "#.....#", "#.....#", "#.....#",
        "#.....#", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    1: (".......", "...#...", "..##...", ".#.#...", "...#...", "...#...",
        "...#...", "...#...", "...#...", "...#...", ".#####.", "......."),
    2: (".......", ".####..", "#....#.", "......#", "......#", ".....#.",
        "....#..", "...#...", "..#....", ".#.....", "#######", "......."),
    3: (".......", "#####..", ".....#.", "......#", ".....#.", "..###..",
        ".....#.", "......#", "......#", ".....#.", "#####..", "......."),
    4: (".......", "....#..", "...##..", "..#.#..", ".#..#..", "#...#..",
        "#######", "....#..", "....#..", "....#..", "....#..", "......."),
    5: (".......", "#######", "#......", "#......", "#####..", ".....#.",
        "......#", "......#", "......#", ".....#.", "#####..", "......."),
    6: (".......", "..###..", ".#.....", "#......", "#......", "#.###..",
        "##...#.", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    7: (".......", "#######", "......#", ".....#.", "....#..", "....#..",
        "...#...", "...#...", "..#....", "..#....", "..#....", "......."),
    8: (".......", "..###..", ".#...#.", "#.....#", ".#...#.", "..###..",
        ".#...#.", "#.....#", "#.....#", ".#...#.", "..###..", "......."),
    9: (".......", "..###..", ".#...#.", "#.....#", "#.....#", ".#...##",
        "..###.#", "......#", "......#", ".....#.", "..###..", "......."),
}


def rbf_prototypes(dtype=None):
    """The (10, 84) tensor of +-1: row d is DIGIT_BITMAPS[d] read row by row."""
    rows = []
    for digit in range(10):
        bitmap = DIGIT_BITMAPS[digit]
        assert len(bitmap) == 12 and all(len(r) == 7 for r in bitmap), digit
        rows.append([1.0 if ch == "#" else -1.0 for r in bitmap for ch in r])
    return torch.tensor(rows, dtype=dtype or torch.get_default_dtype())


HEADS = ("rbf", "linear")


def _fused_net():
    """lenetalex.lenet5, or None in a build without it."""
    import lenetalex

    return getattr(lenetalex, "lenet5", None)


# The dtypes of lenetalex.lenet5's kernels, per device type.
_FUSED_NET_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}

_ALL_CONNECTIONS = {}


def _all_connections(device):
    """A dense C3's table, made once per device."""
    if device not in _ALL_CONNECTIONS:
        _ALL_CONNECTIONS[device] = torch.ones(16, 6, dtype=torch.bool, device=device)
    return _ALL_CONNECTIONS[device]


class LeNet5(nn.Module):
    """LeNet-5 on (N, 1, 32, 32) input.

    c3_table: "lecun" (Table I, 60 of the 96 C3-S2 connections) or "full".
    head: "rbf" returns the 10 RBF distances y_i (smaller is better; train
    with `loss`, LeCun's MAP criterion); "linear" swaps the RBF units for a
    Linear(84, num_classes) returning logits (train with cross-entropy).
    fused_net: with impl="fused", run the whole network as one op
    (lenetalex.lenet5: one pass per block of images, no per-layer tensors)
    wherever fused_net_args allows; False keeps the per-layer fused ops (the
    same parameters and numbers to rounding).
    init: "lecun" draws every weight uniformly in +-2.4/F, F the number of
    inputs of the receiving unit (C1 25, S2 4, C3 75/100/150, S4 4, C5 400,
    F6 120), as in the paper's Appendix A. The paper does not say how biases
    start; we draw each bias from its unit's weight range, +-2.4/F (F not
    counting the bias). S2/S4 compute weight * mean instead of the paper's
    weight * sum, so their weights are drawn in +-2.4 (= 4 * 2.4/4), the same
    function at initialization as the paper's. init="default" is PyTorch's.
    """

    def __init__(self, num_classes=10, c3_table="lecun", head="rbf", impl="fused", init="lecun",
                 fused_net=True):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "rbf" and num_classes != 10:
            raise ValueError(
                f"head='rbf' has prototypes for the 10 digits only, got num_classes={num_classes}; "
                "use head='linear'")
        if c3_table == "lecun":
            table = C3_TABLE
        elif c3_table == "full":
            table = None
        else:
            raise ValueError(f"c3_table must be 'lecun' or 'full', got {c3_table!r}")
        self.num_classes, self.head, self.impl = num_classes, head, impl
        self.fused_net = fused_net
        conv = dict(activation="scaled_tanh", init=init, impl=impl)
        sub = dict(kernel_size=2, activation="scaled_tanh", init=init, impl=impl)
        self.c1 = lnn.Conv2dActivation(1, 6, 5, **conv)
        self.s2 = lnn.AvgSubsample(6, **sub)
        self.c3 = lnn.Conv2dActivation(6, 16, 5, connection_table=table, **conv)
        self.s4 = lnn.AvgSubsample(16, **sub)
        self.c5 = lnn.Conv2dActivation(16, 120, 5, **conv)
        self.f6 = lnn.Conv2dActivation(120, 84, 1, **conv)
        if head == "rbf":
            self.output = lnn.RBFOutput(rbf_prototypes(), impl=impl)
        else:
            self.output = nn.Linear(84, num_classes)

    LAYERS = ("c1", "s2", "c3", "s4", "c5", "f6", "output")

    def forward(self, x):
        args = self.fused_net_args(x)
        if args is not None:  # the whole network in one op (lenetalex.lenet5)
            return _fused_net()(x, *args)
        x = self.c5(self.s4(self.c3(self.s2(self.c1(x)))))
        return self.output(torch.flatten(self.f6(x), 1))

    def fused_net_args(self, x):
        """The parameters lenetalex.lenet5 takes after the input, when this model
        runs as that one op on x: impl="fused" and fused_net, the RBF head, the layers as built
        (scaled tanh, 2x2 subsampling; any C3 table), no hooks on them, and x a
        tensor (N, 1, 32, 32) of the parameters' dtype that the op's kernels
        take: float32/float64 on the CPU; float32/float64/float16/bfloat16 on
        CUDA. Else None: forward runs layer by layer."""
        if (self.impl != "fused" or not self.fused_net or self.head != "rbf"
                or not isinstance(x, torch.Tensor)):
            return None
        if (x.dtype not in _FUSED_NET_DTYPES.get(x.device.type, ())
                or x.dim() != 4 or tuple(x.shape[1:]) != (1, 32, 32)
                or self.c1.weight.dtype != x.dtype or _fused_net() is None):
            return None
        layers = [getattr(self, name) for name in self.LAYERS]
        if any(m._forward_hooks or m._forward_pre_hooks for m in layers):
            return None
        convs, subs = (self.c1, self.c3, self.c5, self.f6), (self.s2, self.s4)
        if any(m.activation != "scaled_tanh" or m.bias is None for m in convs + subs
               if hasattr(m, "activation")):
            return None
        if any(m.kernel_size != 2 or m.stride not in (None, 2) for m in subs):
            return None
        table = self.c3.connection_table
        if table is None:  # dense C3: all 96 connections
            table = _all_connections(x.device)
        return (self.c1.weight, self.c1.bias, self.s2.weight, self.s2.bias,
                self.c3.weight, self.c3.bias, self.s4.weight, self.s4.bias,
                self.c5.weight, self.c5.bias, self.f6.weight, self.f6.bias,
                self.output.prototypes, table)

    def predict(self, x):
        """Class indices: the nearest prototype (RBF head) or the largest logit."""
        out = self(x)
        return out.argmin(1) if self.head == "rbf" else out.argmax(1)

    def predictions(self, output):
        """Class indices from forward's output."""
        return output.argmin(1) if self.head == "rbf" else output.argmax(1)

    def loss(self, output, target, j=reference.DEFAULT_MAP_J):
        """The training criterion on forward's output: the MAP loss for the
        RBF head (through impl's lenet_map_loss), cross-entropy for logits."""
        if self.head == "linear":
            return nn.functional.cross_entropy(output, target)
        return lnn._function(self.impl, "lenet_map_loss")(output, target, j=j)

    def num_trainable_parameters(self):
        """60,000 for the default model: C3's 900 masked-out weights and the
        840 fixed RBF values are not counted."""
        return lnn.num_trainable_parameters(self)
