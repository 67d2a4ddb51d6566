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


class LeNet5(nn.Module):
    """LeNet-5 on (N, 1, 32, 32) input.

    c3_table: "lecun" (Table I, 60 of the 96 C3-S2 connections) or "full".
    head: "rbf" returns the 10 RBF distances y_i (smaller is better; train
    with `loss`, LeCun's MAP criterion); "linear" swaps the RBF units for a
    Linear(84, num_classes) returning logits (train with cross-entropy).
    init: "lecun" draws every weight uniformly in +-2.4/F, F the number of
    inputs of the receiving unit (C1 25, S2 4, C3 75/100/150, S4 4, C5 400,
    F6 120), as in the paper's Appendix A. The paper does not say how biases
    start; we draw each bias from its unit's weight range, +-2.4/F (F not
    counting the bias). S2/S4 compute weight * mean instead of the paper's
    weight * sum, so their weights are drawn in +-2.4 (= 4 * 2.4/4), the same
    function at initialization as the paper's. init="default" is PyTorch's.
    """

    def __init__(self, num_classes=10, c3_table="lecun", head="rbf", impl="fused", init="lecun"):
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
        x = self.c5(self.s4(self.c3(self.s2(self.c1(x)))))
        return self.output(torch.flatten(self.f6(x), 1))

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
