"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) and torchvision's variant.

variant="original": the paper's two-tower net on 227x227 input, the towers as
groups=2 convolutions (60,965,224 parameters for 1000 classes):

    conv1 96@11x11 s4 + ReLU, LRN, max-pool 3/2    -> 96x55x55 -> 96x27x27
    conv2 256@5x5 p2 g2 + ReLU, LRN, max-pool 3/2  -> 256x27x27 -> 256x13x13
    conv3 384@3x3 p1 + ReLU                        -> 384x13x13
    conv4 384@3x3 p1 g2 + ReLU                     -> 384x13x13
    conv5 256@3x3 p1 g2 + ReLU, max-pool 3/2       -> 256x13x13 -> 256x6x6
    fc6 9216->4096 + ReLU, dropout; fc7 4096->4096 + ReLU, dropout; fc8 -> classes

variant="torchvision": torchvision.models.alexnet's single-tower net (64, 192,
384, 256, 256 maps, no LRN, no groups, adaptive average pool to 6x6, dropout
before fc6 and fc7; 224x224 input; 61,100,840 parameters).

Conv + ReLU runs through lenetalex.nn.Conv2dActivation and LRN through
lenetalex.nn.LocalResponseNorm (impl="fused" or "reference"); max-pool,
dropout and the fully connected layers are torch.nn's.
"""
from collections import OrderedDict

import torch
from torch import nn

from .. import nn as lnn

# LRN conventions in PyTorch's parametrization, where the sum of squares is
# multiplied by alpha / size (F.local_response_norm, Caffe, cuDNN and
# cuda-convnet2 all divide by size; the paper does not):
LRN_CONVENTIONS = {
    # The paper's b = a / (k + alpha * sum a^2)^beta with n=5, k=2,
    # alpha=1e-4 NOT divided by n: alpha/size = 1e-4 -> alpha = 5e-4.
    "paper": dict(size=5, alpha=5e-4, beta=0.75, k=2.0),
    # Caffe's bvlc_alexnet prototxt: local_size 5, alpha 1e-4, beta 0.75, k 1.
    "caffe": dict(size=5, alpha=1e-4, beta=0.75, k=1.0),
    # cuda-convnet2's layers-imagenet-1gpu.cfg: size 5, scale 1e-4, pow 0.75, k 2.
    "cuda-convnet": dict(size=5, alpha=1e-4, beta=0.75, k=2.0),
    "none": None,
}
VARIANTS = ("original", "torchvision")
INPUT_SIZE = {"original": 227, "torchvision": 224}

# torchvision's module indices -> ours, for from_torchvision.
_TORCHVISION_NAMES = {
    "features.0": "features.conv1",
    "features.3": "features.conv2",
    "features.6": "features.conv3",
    "features.8": "features.conv4",
    "features.10": "features.conv5",
    "classifier.1": "classifier.fc6",
    "classifier.4": "classifier.fc7",
    "classifier.6": "classifier.fc8",
}


class AlexNet(nn.Module):
    """AlexNet; see the module docstring for the layers of each variant.

    lrn: "paper" (default for variant="original"), "caffe", "cuda-convnet" or
    "none"; see LRN_CONVENTIONS. variant="torchvision" has no LRN.
    init: "paper" (default for "original"): weights N(0, 0.01^2), biases 1 in
    conv2, conv4, conv5, fc6, fc7 and 0 elsewhere; "default" (default for
    "torchvision"): PyTorch's own initialization, as torchvision's.
    `input_size` is the side of the square input the variant expects.
    """

    def __init__(self, num_classes=1000, variant="original", in_channels=3, dropout=0.5,
                 lrn=None, init=None, impl="fused"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if variant == "torchvision" and lrn not in (None, "none"):
            raise ValueError("variant='torchvision' has no LRN; leave lrn unset")
        lrn = lrn or ("paper" if variant == "original" else "none")
        if lrn not in LRN_CONVENTIONS:
            raise ValueError(f"lrn must be one of {tuple(LRN_CONVENTIONS)}, got {lrn!r}")
        init = init or ("paper" if variant == "original" else "default")
        if init not in ("paper", "default"):
            raise ValueError(f"init must be 'paper' or 'default', got {init!r}")
        self.variant, self.lrn, self.impl = variant, lrn, impl
        self.input_size = INPUT_SIZE[variant]

        def conv(cin, cout, k, stride=1, padding=0, groups=1):
            return lnn.Conv2dActivation(cin, cout, k, stride, padding, groups,
                                        activation="relu", impl=impl)

        def norm():
            spec = LRN_CONVENTIONS[lrn]
            return lnn.LocalResponseNorm(**spec, impl=impl) if spec else nn.Identity()

        def pool():
            return nn.MaxPool2d(3, 2)

        def fc(cin, cout):  # initialized once, by reset_parameters below
            return nn.utils.skip_init(nn.Linear, cin, cout)

        if variant == "original":
            self.features = nn.Sequential(OrderedDict(
                conv1=conv(in_channels, 96, 11, stride=4), lrn1=norm(), pool1=pool(),
                conv2=conv(96, 256, 5, padding=2, groups=2), lrn2=norm(), pool2=pool(),
                conv3=conv(256, 384, 3, padding=1),
                conv4=conv(384, 384, 3, padding=1, groups=2),
                conv5=conv(384, 256, 3, padding=1, groups=2), pool5=pool(),
            ))
            self.avgpool = nn.Identity()
            self.classifier = nn.Sequential(OrderedDict(
                fc6=fc(256 * 6 * 6, 4096), relu6=nn.ReLU(inplace=True), drop6=nn.Dropout(dropout),
                fc7=fc(4096, 4096), relu7=nn.ReLU(inplace=True), drop7=nn.Dropout(dropout),
                fc8=fc(4096, num_classes),
            ))
        else:
            self.features = nn.Sequential(OrderedDict(
                conv1=conv(in_channels, 64, 11, stride=4, padding=2), pool1=pool(),
                conv2=conv(64, 192, 5, padding=2), pool2=pool(),
                conv3=conv(192, 384, 3, padding=1),
                conv4=conv(384, 256, 3, padding=1),
                conv5=conv(256, 256, 3, padding=1), pool5=pool(),
            ))
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(OrderedDict(
                drop6=nn.Dropout(dropout), fc6=fc(256 * 6 * 6, 4096), relu6=nn.ReLU(inplace=True),
                drop7=nn.Dropout(dropout), fc7=fc(4096, 4096), relu7=nn.ReLU(inplace=True),
                fc8=fc(4096, num_classes),
            ))
        self.reset_parameters(init)

    def reset_parameters(self, init="paper"):
        layers = [m for m in self.modules() if isinstance(m, (lnn.Conv2dActivation, nn.Linear))]
        if init == "default":
            for m in layers:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
                else:
                    m.reset_parameters("default")
            return
        ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        with torch.no_grad():
            for name, m in list(self.features.named_children()) + list(self.classifier.named_children()):
                if isinstance(m, (lnn.Conv2dActivation, nn.Linear)):
                    m.weight.normal_(0.0, 0.01)
                    m.bias.fill_(1.0 if name in ones else 0.0)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        if x.shape[-2:] != (6, 6):
            raise ValueError(
                f"AlexNet(variant={self.variant!r}) expects {self.input_size}x{self.input_size} input; "
                f"its features came out {x.shape[-2]}x{x.shape[-1]}, not 6x6")
        return self.classifier(torch.flatten(x, 1))

    def predictions(self, output):
        """Class indices from forward's output (the logits)."""
        return output.argmax(1)

    def predict(self, x):
        return self.predictions(self(x))

    @classmethod
    def from_torchvision(cls, model_or_state_dict, impl="fused", dropout=None):
        """A lenetalex AlexNet(variant="torchvision") holding the weights of a
        torchvision.models.AlexNet (or its state_dict, with torchvision's key
        names); its outputs equal torchvision's. Classes, input channels,
        dtype and device come from the weights; dropout from the model when
        given one, else 0.5."""
        if isinstance(model_or_state_dict, nn.Module):
            state = model_or_state_dict.state_dict()
            if dropout is None:
                drops = [m.p for m in model_or_state_dict.modules() if isinstance(m, nn.Dropout)]
                dropout = drops[0] if drops else 0.5
        else:
            state = dict(model_or_state_dict)
        dropout = 0.5 if dropout is None else dropout
        mapped = {}
        for key, value in state.items():
            prefix, _, leaf = key.rpartition(".")
            if prefix not in _TORCHVISION_NAMES:
                raise ValueError(f"from_torchvision: unexpected key {key!r} in the state_dict")
            mapped[f"{_TORCHVISION_NAMES[prefix]}.{leaf}"] = value
        for needed in ("features.0.weight", "classifier.6.weight"):
            if needed not in state:
                raise ValueError(f"from_torchvision: the state_dict lacks {needed!r}")
        first = state["features.0.weight"]
        net = cls(num_classes=state["classifier.6.weight"].shape[0], variant="torchvision",
                  in_channels=first.shape[1], dropout=dropout, impl=impl)
        net.to(device=first.device, dtype=first.dtype)
        net.load_state_dict(mapped)
        return net
