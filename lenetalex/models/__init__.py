"""The two networks, built from lenetalex.nn modules: LeNet5 and AlexNet.
Each takes impl="fused" (the lenetalex ops) or impl="reference"; both build
identical parameters, so one state_dict loads into either."""
from .alexnet import AlexNet
from .lenet import LeNet5

__all__ = ["AlexNet", "LeNet5"]
