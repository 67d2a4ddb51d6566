"""The layer shapes of LeNet-5 and AlexNet, once: every op's `lenetalex check`
cases (lenetalex/ops/<op>.py), `lenetalex bench` (lenetalex/bench/cases.py)
and the tests build their LeNet-5/AlexNet cases from these tables, each at
its own batch size (and, where a case shrinks a layer, its own image size).

Shapes are without the batch: `CONV[name].shapes(batch)` adds it.
"""
from typing import NamedTuple


class Conv(NamedTuple):
    """One convolution layer: input (C, H, W), weight (out, C / groups, kH, kW)."""

    input: tuple
    weight: tuple
    stride: int = 1
    padding: int = 0
    groups: int = 1
    activation: str = "scaled_tanh"

    def shapes(self, batch, size=None):
        """(input shape, weight shape) at `batch` images, of size x size pixels
        if given (a smaller image through the same filter)."""
        return with_batch(self.input, batch, size), self.weight

    def case(self, batch, size=None):
        """(input shape, weight shape, stride, padding, groups, activation)."""
        return (*self.shapes(batch, size), self.stride, self.padding, self.groups, self.activation)


# LeNet-5 (LeCun et al. 1998): C1, C3 (dense here; Table I is
# lenetalex.models.lenet.C3_TABLE), C5, squashed by the scaled tanh.
# AlexNet (Krizhevsky et al. 2012), its two towers as groups, ReLU.
CONV = {
    "lenet_c1": Conv((1, 32, 32), (6, 1, 5, 5)),
    "lenet_c3": Conv((6, 14, 14), (16, 6, 5, 5)),
    "lenet_c5": Conv((16, 5, 5), (120, 16, 5, 5)),
    "alexnet_conv1": Conv((3, 227, 227), (96, 3, 11, 11), stride=4, activation="relu"),
    "alexnet_conv2": Conv((96, 27, 27), (256, 48, 5, 5), padding=2, groups=2, activation="relu"),
    "alexnet_conv3": Conv((256, 13, 13), (384, 256, 3, 3), padding=1, activation="relu"),
    "alexnet_conv4": Conv((384, 13, 13), (384, 192, 3, 3), padding=1, groups=2, activation="relu"),
    "alexnet_conv5": Conv((384, 13, 13), (256, 192, 3, 3), padding=1, groups=2, activation="relu"),
}
LENET_CONV = [name for name in CONV if name.startswith("lenet")]
ALEXNET_CONV = [name for name in CONV if name.startswith("alexnet")]

# LeNet-5's subsampling layers' inputs (C, H, W): 2x2 windows, stride 2.
SUBSAMPLE = {"lenet_s2": (6, 28, 28), "lenet_s4": (16, 10, 10)}

# AlexNet's local response normalization layers' inputs (C, H, W).
LRN = {"alexnet_lrn1": (96, 55, 55), "alexnet_lrn2": (256, 27, 27)}

# LeNet-5's RBF head: F6's 84 units against 10 prototypes, (K, D).
RBF_HEAD = (10, 84)

# LeNet-5 as one op (lenetalex.lenet5): its input (C, H, W) and parameters.
LENET5_INPUT = (1, 32, 32)
LENET5_PARAMETERS = {
    "c1_weight": CONV["lenet_c1"].weight, "c1_bias": (6,), "s2_weight": (6,), "s2_bias": (6,),
    "c3_weight": CONV["lenet_c3"].weight, "c3_bias": (16,), "s4_weight": (16,), "s4_bias": (16,),
    "c5_weight": CONV["lenet_c5"].weight, "c5_bias": (120,), "f6_weight": (84, 120, 1, 1),
    "f6_bias": (84,),
}


def with_batch(shape, batch, size=None):
    """(batch, *shape), its image size x size pixels if given (a smaller image,
    the same channels)."""
    if size is not None:
        shape = (shape[0], size, size)
    return (batch, *shape)
