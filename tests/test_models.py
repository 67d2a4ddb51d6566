"""lenetalex.models: LeNet-5 and AlexNet layer by layer (shapes, parameter
counts, initialization), fused against reference (outputs and gradients,
same state_dict), torch.compile, from_torchvision, a few training steps."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

import lenetalex
from lenetalex import reference
from lenetalex.models import AlexNet, LeNet5
from lenetalex.models.alexnet import LRN_CONVENTIONS
from lenetalex.models.lenet import C3_TABLE, DIGIT_BITMAPS, rbf_prototypes
from lenetalex.nn import num_trainable_parameters

from conftest import CUDA, EMULATED, TOL, assert_close

CPU_DTYPES = [torch.float64, torch.float32]
# The reference twins run in the same dtype on the same device: in bfloat16 they
# need cdist and avg_pool3d, which torch has on CUDA only, so not beside the
# CUDA emulator (its bfloat16 kernels are checked op by op in the op tests).
NO_CPU_BF16_REFERENCE = pytest.mark.skipif(
    EMULATED, reason="reference models need bfloat16 cdist/avg_pool3d: CUDA only")
DEVICE_DTYPES = [pytest.param("cpu", d, id=f"cpu-{str(d)[6:]}") for d in CPU_DTYPES] + [
    pytest.param(CUDA, torch.float32, id="cuda-float32", marks=pytest.mark.cuda),
    pytest.param(CUDA, torch.bfloat16, id="cuda-bfloat16", marks=[pytest.mark.cuda, NO_CPU_BF16_REFERENCE]),
]


def twins(cls, device, dtype, **kwargs):
    """(reference model, fused model) with one state_dict."""
    torch.manual_seed(0)
    ref = cls(impl="reference", **kwargs).to(device=device, dtype=dtype)
    fused = cls(impl="fused", **kwargs).to(device=device, dtype=dtype)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


def compare_twins(ref, fused, x, dtype, factor):
    """Outputs in eval mode, then parameter gradients in train mode."""
    ref.eval(), fused.eval()
    with torch.no_grad():
        assert_close(fused(x), ref(x), dtype, factor)
    ref.train(), fused.train()
    target = torch.randint(0, 10, (x.shape[0],), generator=torch.Generator().manual_seed(1)).to(x.device)
    for m in (ref, fused):
        m.zero_grad()
        out = m(x)
        # A loss that weighs every output differently, so no gradient is trivial.
        (out.float().log_softmax(1).gather(1, target[:, None]).sum() + out.float().pow(2).mean()).backward()
    g_ref, g_fused = grads(ref), grads(fused)
    assert set(g_ref) == set(g_fused)
    for name in g_ref:
        assert g_fused[name] is not None, name
        try:
            assert_close(g_fused[name], g_ref[name], dtype, factor)
        except AssertionError as e:
            raise AssertionError(f"grad of {name}: {e}") from None


# --------------------------------------------------------------------- LeNet-5

def test_c3_table_is_table_one():
    # LeCun et al. 1998, Table I: for each C3 map, the S2 maps it reads.
    paper = [{0, 1, 2}, {1, 2, 3}, {2, 3, 4}, {3, 4, 5}, {0, 4, 5}, {0, 1, 5},
             {0, 1, 2, 3}, {1, 2, 3, 4}, {2, 3, 4, 5}, {0, 3, 4, 5}, {0, 1, 4, 5}, {0, 1, 2, 5},
             {0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5}, {0, 1, 2, 3, 4, 5}]
    assert C3_TABLE.dtype == torch.bool and C3_TABLE.shape == (16, 6)
    for row, expected in enumerate(paper):
        assert set(C3_TABLE[row].nonzero().flatten().tolist()) == expected, row
    assert int(C3_TABLE.sum()) == 60


def test_rbf_prototypes():
    p = rbf_prototypes()
    assert p.shape == (10, 84)
    assert torch.all((p == 1) | (p == -1))
    assert sorted(DIGIT_BITMAPS) == list(range(10))
    for digit, bitmap in DIGIT_BITMAPS.items():
        assert len(bitmap) == 12 and all(len(r) == 7 and set(r) <= {"#", "."} for r in bitmap), digit
        assert p[digit].tolist() == [1.0 if c == "#" else -1.0 for r in bitmap for c in r]
    d = torch.cdist(p, p)
    assert torch.all(d[~torch.eye(10, dtype=torch.bool)] > 0), "two prototypes are equal"
    assert rbf_prototypes(torch.float64).dtype == torch.float64


def test_lenet_layer_shapes():
    m = LeNet5(impl="reference")
    x = torch.randn(3, 1, 32, 32)
    expected = {"c1": (3, 6, 28, 28), "s2": (3, 6, 14, 14), "c3": (3, 16, 10, 10),
                "s4": (3, 16, 5, 5), "c5": (3, 120, 1, 1), "f6": (3, 84, 1, 1)}
    for name in ("c1", "s2", "c3", "s4", "c5", "f6"):
        x = getattr(m, name)(x)
        assert tuple(x.shape) == expected[name], name
    assert m.output(x.flatten(1)).shape == (3, 10)
    out = m(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 10) and torch.all(out >= 0)  # squared distances
    assert m(torch.randn(0, 1, 32, 32)).shape == (0, 10)


def test_lenet_parameter_counts():
    m = LeNet5(impl="reference")
    counts = {name: num_trainable_parameters(getattr(m, name)) for name in m.LAYERS}
    assert counts == {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164, "output": 0}
    assert m.num_trainable_parameters() == 60000
    # The tensors hold C3's 900 masked-out weights too; the 840 RBF values are a buffer.
    assert sum(p.numel() for p in m.parameters()) == 60900
    assert m.output.prototypes.numel() == 840 and not m.output.prototypes.requires_grad
    assert "output.prototypes" in m.state_dict() and "c3.connection_table" in m.state_dict()
    full = LeNet5(c3_table="full", impl="reference")
    assert num_trainable_parameters(full.c3) == 2416 and full.num_trainable_parameters() == 60900
    linear = LeNet5(head="linear", impl="reference")
    assert linear.num_trainable_parameters() == 60000 + 850


def test_lenet_lecun_init():
    torch.manual_seed(0)
    m = LeNet5(impl="reference")
    for name, fan_in in (("c1", 25), ("c5", 400), ("f6", 120)):
        layer = getattr(m, name)
        bound = 2.4 / fan_in
        for t in (layer.weight, layer.bias):
            assert t.abs().max() <= bound and t.abs().max() > 0.8 * bound, name
    fan_c3 = C3_TABLE.sum(1) * 25  # 75, 100 or 150 per map
    assert sorted(set(fan_c3.tolist())) == [75, 100, 150]
    w = m.c3.weight.detach()
    assert torch.all(w[~C3_TABLE] == 0)
    bound = (2.4 / fan_c3).view(16, 1, 1, 1)
    assert torch.all(w.abs() <= bound) and torch.all(m.c3.bias.abs() <= 2.4 / fan_c3)
    # S2/S4 average instead of summing: the coefficient takes the 4 (see AvgSubsample).
    for s in (m.s2, m.s4):
        assert s.weight.abs().max() <= 2.4 and s.weight.abs().max() > 1.0
        assert s.bias.abs().max() <= 0.6


def test_lenet_bad_arguments():
    with pytest.raises(ValueError, match="head"):
        LeNet5(head="softmax", impl="reference")
    with pytest.raises(ValueError, match="num_classes"):
        LeNet5(num_classes=26, impl="reference")
    with pytest.raises(ValueError, match="c3_table"):
        LeNet5(c3_table="sparse", impl="reference")
    with pytest.raises(ValueError, match="impl"):
        LeNet5(impl="cuda")
    assert LeNet5(num_classes=26, head="linear", impl="reference")(torch.randn(1, 1, 32, 32)).shape == (1, 26)


def test_lenet_predict():
    m = LeNet5(impl="reference")
    x = torch.randn(4, 1, 32, 32)
    assert torch.equal(m.predict(x), m(x).argmin(1))
    lin = LeNet5(head="linear", impl="reference")
    assert torch.equal(lin.predict(x), lin(x).argmax(1))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lenet_c3_mask_holds_after_steps(optimizer):
    torch.manual_seed(0)
    m = LeNet5(impl="reference")
    opt = (torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
           if optimizer == "sgd" else torch.optim.Adam(m.parameters(), lr=1e-3, weight_decay=1e-3))
    before = m.c3.weight.detach().clone()
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(3):
        opt.zero_grad()
        m.loss(m(x), y).backward()
        assert torch.all(m.c3.weight.grad[~C3_TABLE] == 0)
        assert m.c3.weight.grad[C3_TABLE].abs().sum() > 0
        opt.step()
    w = m.c3.weight.detach()
    assert torch.all(w[~C3_TABLE] == 0)
    assert not torch.equal(w[C3_TABLE], before[C3_TABLE])
    assert m.num_trainable_parameters() == 60000


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("head", ["rbf", "linear"])
def test_lenet_fused_matches_reference(device, dtype, head):
    ref, fused = twins(LeNet5, device, dtype, head=head)
    x = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    compare_twins(ref, fused, x, dtype, factor=10)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_lenet_map_loss_fused_matches_reference(device, dtype):
    ref, fused = twins(LeNet5, device, dtype)
    x = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(3)).to(device, dtype)
    y = torch.arange(6, device=device) % 10
    losses = []
    for m in (ref, fused):
        m.zero_grad()
        loss = m.loss(m(x), y, j=1.5)
        loss.backward()
        losses.append((loss, grads(m)))
    assert_close(losses[1][0], losses[0][0], dtype, 10)
    for name, g in losses[0][1].items():
        assert_close(losses[1][1][name], g, dtype, 10)


def test_lenet_compile_fullgraph():
    torch.manual_seed(0)
    m = LeNet5(impl="fused").eval()
    x = torch.randn(4, 1, 32, 32)
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        assert_close(compiled(x), m(x), torch.float32, 10)
    # And backward through the compiled graph.
    m.train()
    y = torch.arange(4)
    lenetalex.lenet_map_loss(compiled(x), y).backward()
    g = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    lenetalex.lenet_map_loss(m(x), y).backward()
    for n, p in m.named_parameters():
        assert_close(g[n], p.grad, torch.float32, 10)


# j=1: the MLE term dominates and the loss falls fast; j=84: cross-entropy-like, slower.
@pytest.mark.parametrize("j,factor", [(1.0, 0.7), (84.0, 0.97)])
def test_lenet_training_lowers_map_loss(j, factor):
    torch.manual_seed(0)
    m = LeNet5(impl="fused")
    x = torch.randn(32, 1, 32, 32)
    y = torch.arange(32) % 10
    opt = torch.optim.SGD(m.parameters(), lr=2e-3, momentum=0.9)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = lenetalex.lenet_map_loss(m(x), y, j=j)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < factor * losses[0], losses
    assert torch.all(m.c3.weight.detach()[~C3_TABLE] == 0)


# --------------------------------------------------------------------- AlexNet

ALEXNET_LAYERS = [  # (module name in features/classifier, output shape at 227, parameters)
    ("conv1", (96, 55, 55), 34944), ("lrn1", (96, 55, 55), 0), ("pool1", (96, 27, 27), 0),
    ("conv2", (256, 27, 27), 307456), ("lrn2", (256, 27, 27), 0), ("pool2", (256, 13, 13), 0),
    ("conv3", (384, 13, 13), 885120), ("conv4", (384, 13, 13), 663936),
    ("conv5", (256, 13, 13), 442624), ("pool5", (256, 6, 6), 0),
]
ALEXNET_FC = [("fc6", 4096, 37752832), ("fc7", 4096, 16781312), ("fc8", 1000, 4097000)]


@pytest.fixture(scope="module")
def alexnet_reference():
    torch.manual_seed(0)
    return AlexNet(impl="reference").eval()


def test_alexnet_layer_shapes_and_parameters(alexnet_reference):
    m = alexnet_reference
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        for name, shape, params in ALEXNET_LAYERS:
            layer = getattr(m.features, name)
            x = layer(x)
            assert tuple(x.shape[1:]) == shape, name
            assert sum(p.numel() for p in layer.parameters()) == params, name
        x = x.flatten(1)
        assert x.shape == (1, 9216)
        for name, features, params in ALEXNET_FC:
            layer = getattr(m.classifier, name)
            x = layer(x)
            assert x.shape == (1, features) and sum(p.numel() for p in layer.parameters()) == params
    assert sum(p.numel() for p in m.parameters()) == 60965224
    assert num_trainable_parameters(m) == 60965224


def test_alexnet_paper_init(alexnet_reference):
    m = alexnet_reference
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        layer = getattr(m.features, name, None) or getattr(m.classifier, name)
        assert abs(layer.weight.std().item() - 0.01) < 1e-3 and abs(layer.weight.mean().item()) < 1e-3, name
        assert torch.all(layer.bias == (1.0 if name in ones else 0.0)), name


def test_alexnet_lrn_conventions():
    # One pixel with channels 1..5; the paper's formula (alpha not divided by n).
    x = torch.arange(1.0, 6.0, dtype=torch.float64).view(1, 5, 1, 1)
    m = AlexNet(num_classes=10, impl="reference")
    assert m.lrn == "paper"
    paper = m.features.lrn1.double()(x).flatten()
    expected = [0.594291582, 1.187871011, 1.780140394, 2.373609292, 2.967455545]
    torch.testing.assert_close(paper, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)
    # The same by the paper's formula written out.
    sq = torch.nn.functional.pad(x.pow(2).flatten(), (2, 2))
    by_hand = x.flatten() / (2 + 1e-4 * sq.unfold(0, 5, 1).sum(1)) ** 0.75
    torch.testing.assert_close(paper, by_hand)
    for lrn, (size, alpha, beta, k) in (("caffe", (5, 1e-4, 0.75, 1.0)),
                                        ("cuda-convnet", (5, 1e-4, 0.75, 2.0))):
        layer = AlexNet(num_classes=10, lrn=lrn, impl="reference").features.lrn2
        assert (layer.size, layer.alpha, layer.beta, layer.k) == (size, alpha, beta, k)
        torch.testing.assert_close(
            layer(x), torch.nn.functional.local_response_norm(x, size, alpha, beta, k))
    none = AlexNet(num_classes=10, lrn="none", impl="reference")
    assert isinstance(none.features.lrn1, nn.Identity)
    assert set(LRN_CONVENTIONS) == {"paper", "caffe", "cuda-convnet", "none"}


def test_alexnet_torchvision_variant_shapes():
    m = AlexNet(variant="torchvision", impl="reference")
    assert sum(p.numel() for p in m.parameters()) == 61100840
    assert m.input_size == 224 and not any(
        isinstance(l, lenetalex.nn.LocalResponseNorm) for l in m.modules())
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_alexnet_bad_arguments(alexnet_reference):
    with pytest.raises(ValueError, match="variant"):
        AlexNet(variant="vgg", impl="reference")
    with pytest.raises(ValueError, match="lrn"):
        AlexNet(lrn="cudnn", num_classes=10, impl="reference")
    with pytest.raises(ValueError, match="no LRN"):
        AlexNet(variant="torchvision", lrn="paper", impl="reference")
    with pytest.raises(ValueError, match="227x227"):
        alexnet_reference(torch.randn(1, 3, 224, 224))


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_alexnet_fused_matches_reference(device, dtype):
    ref, fused = twins(AlexNet, device, dtype, num_classes=10, dropout=0.0)
    x = torch.randn(1, 3, 227, 227, generator=torch.Generator().manual_seed(4)).to(device, dtype)
    compare_twins(ref, fused, x, dtype, factor=50)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_alexnet_torchvision_variant_fused_matches_reference(device, dtype):
    # Adaptive pooling takes any input size: a small one keeps this quick.
    ref, fused = twins(AlexNet, device, dtype, num_classes=10, variant="torchvision", dropout=0.0)
    x = torch.randn(2, 3, 99, 99, generator=torch.Generator().manual_seed(5)).to(device, dtype)
    compare_twins(ref, fused, x, dtype, factor=50)


def test_alexnet_dropout_in_train_mode_only():
    m = AlexNet(num_classes=10, variant="torchvision", impl="reference")
    x = torch.randn(2, 3, 63, 63)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
        m.train()
        assert not torch.equal(m(x), m(x))


def _torchvision_like(num_classes, in_channels=3):
    """torchvision.models.AlexNet's layers, written out in plain PyTorch."""
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(in_channels, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    model.classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))
    model.forward = lambda x: model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
    return model


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_from_torchvision_state_dict(impl):
    torch.manual_seed(0)
    plain = _torchvision_like(num_classes=7, in_channels=1).double().eval()
    keys = list(plain.state_dict())
    assert keys[:2] == ["features.0.weight", "features.0.bias"] and "classifier.6.weight" in keys
    net = AlexNet.from_torchvision(plain.state_dict(), impl=impl).eval()
    assert net.variant == "torchvision" and net.impl == impl
    assert next(net.parameters()).dtype == torch.float64
    x = torch.randn(2, 1, 127, 127, dtype=torch.float64)
    with torch.no_grad():
        assert_close(net(x), plain(x), torch.float64)
    bad = dict(plain.state_dict(), **{"features.1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="features.1.weight"):
        AlexNet.from_torchvision(bad)


def test_from_torchvision_model():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(num_classes=10).eval()
    for impl in ("reference", "fused"):
        net = AlexNet.from_torchvision(tv, impl=impl).eval()
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            assert_close(net(x), tv(x), torch.float32, 10)


def test_alexnet_compile_fullgraph():
    torch.manual_seed(0)
    m = AlexNet(num_classes=10, variant="torchvision", impl="fused").eval()
    x = torch.randn(1, 3, 95, 95)
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        assert_close(compiled(x), m(x), torch.float32, 10)
