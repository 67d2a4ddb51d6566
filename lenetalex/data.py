"""Data: a small reader of MNIST-format IDX files and the input transforms.

IDX (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the
number of dimensions, then each dimension as a big-endian uint32, then the
values, big-endian. Files may be gzip-compressed (told by their first bytes,
not their name). MNIST and Fashion-MNIST ship in this format:
{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
"""
import gzip
import os
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"

# IDX type code -> (numpy big-endian dtype, torch dtype)
IDX_TYPES = {
    0x08: (np.dtype(">u1"), torch.uint8),
    0x09: (np.dtype(">i1"), torch.int8),
    0x0B: (np.dtype(">i2"), torch.int16),
    0x0C: (np.dtype(">i4"), torch.int32),
    0x0D: (np.dtype(">f4"), torch.float32),
    0x0E: (np.dtype(">f8"), torch.float64),
}


class IDXError(ValueError):
    """A file that is not a well-formed IDX file (bad magic, truncated, corrupt)."""


def _read_bytes(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise IDXError(f"{path}: corrupt or truncated gzip data ({e})") from None


def parse_idx(data, name="<bytes>"):
    """The tensor held by the IDX bytes `data`; `name` is used in errors."""
    if len(data) < 4:
        raise IDXError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_TYPES or ndim == 0:
        raise IDXError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000 then a type "
            f"code in {[hex(c) for c in IDX_TYPES]} and a non-zero number of dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{name}: truncated header: {ndim} dimensions need {header} bytes, got {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    np_dtype, torch_dtype = IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise IDXError(
            f"{name}: {what}: shape {tuple(shape)} of {np_dtype.name} needs {expected} bytes of data, "
            f"found {found}")
    array = np.frombuffer(data, dtype=np_dtype, offset=header).astype(np_dtype.newbyteorder("="))
    return torch.from_numpy(array.reshape(shape)).to(torch_dtype)


def read_idx(path):
    """The tensor in an IDX file, gzip-compressed or raw."""
    return parse_idx(_read_bytes(path), os.fspath(path))


def write_idx(path, tensor, compress=None):
    """Writes `tensor` as an IDX file (gzip when compress, or when compress is
    None and the path ends in .gz). For tests and small exports."""
    tensor = torch.as_tensor(tensor).cpu()
    for code, (np_dtype, torch_dtype) in IDX_TYPES.items():
        if tensor.dtype == torch_dtype:
            break
    else:
        raise ValueError(f"write_idx: no IDX type for dtype {tensor.dtype}")
    data = struct.pack(">HBB", 0, code, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    data += tensor.numpy().astype(np_dtype).tobytes()
    if compress or (compress is None and os.fspath(path).endswith(".gz")):
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)


def _find(root, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(root, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no {stem}[.gz] in {root}")


def load_mnist(root=DEFAULT_ROOT, split="train"):
    """(images uint8 (N, 28, 28), labels int64 (N,)) of MNIST-format files in
    root; split "train" or "test" (files named t10k-*)."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images_path = _find(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise IDXError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise IDXError(
            f"{labels_path}: expected {images.shape[0]} labels to match {images_path}, "
            f"got shape {tuple(labels.shape)}")
    return images, labels.long()


# LeCun 1998: background -0.1, foreground 1.175, so the input has mean ~0 and
# variance ~1; the 28x28 image is centred in a 32x32 field of background.
LENET_BACKGROUND, LENET_FOREGROUND = -0.1, 1.175


def lenet_transform(images, pad=2, dtype=torch.float32):
    """uint8 images (N, 28, 28) (0 = background, 255 = ink) -> (N, 1, 32, 32):
    x = -0.1 + 1.275 * ink / 255, padded with the background value."""
    x = images.to(dtype).unsqueeze(1) * ((LENET_FOREGROUND - LENET_BACKGROUND) / 255.0) + LENET_BACKGROUND
    return F.pad(x, (pad, pad, pad, pad), value=LENET_BACKGROUND)


def resize_transform(images, size, mean, std, dtype=torch.float32):
    """uint8 images (N, H, W) or (N, C, H, W) -> (N, C, size, size), bilinear,
    standardized with the given mean and std (of the 0..1 values). AlexNet's
    input on MNIST-format data."""
    x = images.to(dtype) / 255.0
    if x.dim() == 3:
        x = x.unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - mean) / std
