"""lenetalex.data: the IDX reader (gzip and raw, clear errors on bad files),
MNIST-format loading and the paper's input transform."""
import gzip
import os
import struct

import pytest
import torch

from lenetalex import data as D


def _tiny(dtype=torch.uint8, shape=(3, 4, 5)):
    g = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return torch.randint(-100 if dtype == torch.int8 else 0, 100, shape, generator=g).to(dtype)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32,
                                   torch.float32, torch.float64])
def test_round_trip(tmp_path, compress, dtype):
    t = _tiny(dtype)
    path = tmp_path / "x.idx"
    D.write_idx(path, t, compress=compress)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == compress
    back = D.read_idx(path)
    assert back.dtype == dtype and back.shape == t.shape
    assert torch.equal(back, t)


def test_reads_hand_written_big_endian(tmp_path):
    # Written byte by byte, not by write_idx: int16 values 1, -2, 258 in a (3,) vector.
    raw = struct.pack(">HBBI", 0, 0x0B, 1, 3) + struct.pack(">3h", 1, -2, 258)
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    for name in ("a", "b.gz"):
        assert D.read_idx(tmp_path / name).tolist() == [1, -2, 258]


def test_gzip_told_by_content_not_name(tmp_path):
    t = _tiny()
    D.write_idx(tmp_path / "plain.gz", t, compress=False)
    D.write_idx(tmp_path / "packed", t, compress=True)
    assert torch.equal(D.read_idx(tmp_path / "plain.gz"), t)
    assert torch.equal(D.read_idx(tmp_path / "packed"), t)


def _write(tmp_path, data, name="bad"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_bad_magic(tmp_path):
    raw = struct.pack(">HBBI", 0, 0x08, 1, 2) + b"\x01\x02"
    for bad in (b"\x00\x01" + raw[2:], raw[:2] + b"\x07" + raw[3:], raw[:3] + b"\x00" + raw[4:]):
        with pytest.raises(D.IDXError, match="bad IDX magic"):
            D.read_idx(_write(tmp_path, bad))
    with pytest.raises(D.IDXError, match="too short"):
        D.read_idx(_write(tmp_path, b"\x00\x00"))


def test_truncated_and_oversized(tmp_path):
    t = _tiny(torch.int32)
    D.write_idx(tmp_path / "ok", t)
    raw = (tmp_path / "ok").read_bytes()
    with pytest.raises(D.IDXError, match=r"truncated: shape \(3, 4, 5\) of int32 needs 240 bytes"):
        D.read_idx(_write(tmp_path, raw[:-1]))
    with pytest.raises(D.IDXError, match="truncated header"):
        D.read_idx(_write(tmp_path, raw[:9]))
    with pytest.raises(D.IDXError, match="trailing bytes"):
        D.read_idx(_write(tmp_path, raw + b"\x00"))
    # IDXError is a ValueError, and the message names the file.
    with pytest.raises(ValueError, match="bad"):
        D.read_idx(_write(tmp_path, raw[:-4]))


def test_corrupt_and_truncated_gzip(tmp_path):
    packed = gzip.compress(struct.pack(">HBBI", 0, 0x08, 1, 1000) + bytes(range(256)) * 4)
    with pytest.raises(D.IDXError, match="corrupt or truncated gzip"):
        D.read_idx(_write(tmp_path, packed[: len(packed) // 2]))
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(D.IDXError, match="gzip"):
        D.read_idx(_write(tmp_path, bytes(broken)))


def write_mnist(root, n_train=20, n_test=10, compress=True, seed=0):
    """A tiny MNIST-format folder; returns the four tensors."""
    g = torch.Generator().manual_seed(seed)
    os.makedirs(root, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        ext = ".gz" if compress else ""
        D.write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{ext}"), images)
        D.write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{ext}"), labels)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_load_mnist(tmp_path, compress):
    written = write_mnist(tmp_path, compress=compress)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = D.load_mnist(tmp_path, split)
        assert torch.equal(images, written[prefix][0])
        assert labels.dtype == torch.int64 and torch.equal(labels, written[prefix][1].long())
    with pytest.raises(ValueError, match="split"):
        D.load_mnist(tmp_path, "valid")


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        D.load_mnist(tmp_path, "train")
    write_mnist(tmp_path, compress=False)
    D.write_idx(tmp_path / "train-labels-idx1-ubyte", torch.zeros(7, dtype=torch.uint8))
    with pytest.raises(D.IDXError, match="expected 20 labels"):
        D.load_mnist(tmp_path, "train")


def test_lenet_transform_values():
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[0, 3, 4] = 255
    images[1, 10, 11] = 51  # 0.2 of full ink
    x = D.lenet_transform(images)
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    # The 2-pixel border and the unlit pixels are background, -0.1.
    assert x[0, 0, 5, 6].item() == pytest.approx(1.175)
    assert x[1, 0, 12, 13].item() == pytest.approx(-0.1 + 0.2 * 1.275)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, 0, 5, 6] = mask[1, 0, 12, 13] = False
    assert torch.all(x[mask] == torch.tensor(-0.1, dtype=torch.float32))
    x64 = D.lenet_transform(torch.full((1, 28, 28), 255, dtype=torch.uint8), dtype=torch.float64)
    assert x64.dtype == torch.float64
    assert x64[0, 0, 2:30, 2:30].eq(1.175).all() and x64[0, 0, :2].eq(-0.1).all()


def test_resize_transform():
    images = torch.full((3, 28, 28), 255, dtype=torch.uint8)
    x = D.resize_transform(images, 227, mean=0.5, std=0.25)
    assert x.shape == (3, 1, 227, 227)
    torch.testing.assert_close(x, torch.full_like(x, 2.0))


@pytest.mark.skipif(not os.path.isdir(D.DEFAULT_ROOT), reason="no Fashion-MNIST installed")
def test_real_fashion_mnist_files():
    images, labels = D.load_mnist(D.DEFAULT_ROOT, "test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert torch.equal(labels.bincount(), torch.full((10,), 1000))
