"""Synthetic image sets built from MNIST and Fashion-MNIST: dominoes, coloured and rotated digits.

All generators are vectorised numpy, seeded, and exact: a requested correlation or flip rate is met
to within one example per class, not only in expectation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fmlab._validation import check_int, check_option, check_real
from fmlab.data._images import FASHION_CLASSES, MNIST_CLASSES, _arrays
from fmlab.data._schema import ImageDataset

__all__ = ["colored_digits", "make_dominoes", "rotate_images", "rotated_digits"]

_SOURCES = ("mnist", "fashion-mnist")


def _class_index(value: int | str, classes: tuple[str, ...], param: str) -> int:
    if isinstance(value, str):
        if value not in classes:
            raise ValueError(f"Invalid {param} entry {value!r}. Valid options are: {classes}.")
        return classes.index(value)
    return check_int(value, param, owner="make_dominoes", low=0, high=len(classes) - 1)


def _exact_flags(groups: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask with exactly round(rate * count) true entries inside each group."""
    out = np.zeros(groups.shape, dtype=bool)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        k = int(round(rate * members.size))
        out[rng.choice(members, size=k, replace=False)] = True
    return out


def _draw(pool: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``size`` indices from ``pool``; without replacement whenever the pool is big enough."""
    return rng.choice(pool, size=size, replace=size > pool.size)


def make_dominoes(
    n: int | None = None,
    *,
    p: float = 1.0,
    split: Literal["train", "test"] = "train",
    label: Literal["digit", "fashion"] = "digit",
    digit_classes: Sequence[int | str] = (0, 1),
    fashion_classes: Sequence[int | str] = ("Dress", "Coat"),
    seed: int = 0,
) -> ImageDataset:
    """Two-feature "dominoes": an MNIST digit on the top half, a Fashion-MNIST item below.

    Each image carries two binary features: the digit (``digit_classes[0]`` vs ``[1]``; easy) and
    the clothing item (``fashion_classes[0]`` vs ``[1]``; harder). ``labels`` is the feature named
    by ``label``; the other one (the *spurious* feature) agrees with it on exactly
    ``round(p * n_y)`` examples of each label value ``y``. So:

    - ``p=1.0``: perfectly correlated features, as in the CIFAR-MNIST dominoes of Shah et al.;
    - ``p=0.5``: decorrelated, for linear probes of each feature (``attributes["digit"]`` and
      ``attributes["fashion"]`` are the probe targets);
    - ``label="fashion", p=0.95``: the spurious-correlation variant, where the easy digit predicts
      the label on 95 % of training examples; ``attributes["group"] = 2 * label + spurious`` gives
      the four groups for worst-group accuracy (groups 1 and 2 are the minority when ``p > 0.5``).

    Source images are drawn without replacement from the chosen split whenever the split holds
    enough of a class.

    Args:
        n: Number of images; default: as many as the rarer source class allows without reuse
            (11,846 for train, 1,960 for test with the default classes).
        p: Fraction of examples on which the two features agree, in ``[0, 1]``.
        split: Source split of MNIST and Fashion-MNIST (``"train"`` or ``"test"``).
        label: Which feature is the label: ``"digit"`` or ``"fashion"``.
        digit_classes: Two MNIST classes, as ints or names.
        fashion_classes: Two Fashion-MNIST classes, as ints or names (``"Dress"``).
        seed: Random seed.

    Returns:
        ImageDataset with ``images`` uint8 ``(n, 56, 28)``, binary ``labels``, ``classes`` naming
        the two label classes, and attributes ``digit``, ``fashion``, ``spurious``, ``group``
        (int64), ``agree`` (bool), ``digit_class``, ``fashion_class`` (source class ids) and
        ``digit_index``, ``fashion_index`` (rows of the source split used).

    Example:
        >>> train = make_dominoes(2000, p=1.0, seed=0)           # doctest: +SKIP
        >>> probe = make_dominoes(2000, p=0.5, split="test")     # doctest: +SKIP

    References:
        Shah et al. 2020, The pitfalls of simplicity bias in neural networks, arXiv 2006.07710;
        Springer, Nagarajan, Raghunathan 2024, SAM enhances feature quality via balanced learning,
        arXiv 2405.20439.
    """
    p = check_real(p, "p", owner="make_dominoes", low=0.0, high=1.0, closed="both")
    split = check_option(split, "split", ("train", "test"), owner="make_dominoes")
    label = check_option(label, "label", ("digit", "fashion"), owner="make_dominoes")
    seed = check_int(seed, "seed", owner="make_dominoes", low=0)
    dc = [_class_index(c, MNIST_CLASSES, "digit_classes") for c in digit_classes]
    fc = [_class_index(c, FASHION_CLASSES, "fashion_classes") for c in fashion_classes]
    for name, pair in (("digit_classes", dc), ("fashion_classes", fc)):
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"The {name!r} parameter of make_dominoes must name two different "
                             f"classes. Got {pair} instead.")
    d_img, d_lab = _arrays("mnist", split)
    f_img, f_lab = _arrays("fashion-mnist", split)
    d_pools = [np.flatnonzero(d_lab == c) for c in dc]
    f_pools = [np.flatnonzero(f_lab == c) for c in fc]
    if n is None:
        n = 2 * min(min(q.size for q in d_pools), min(q.size for q in f_pools))
    n = check_int(n, "n", owner="make_dominoes", low=2)

    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)  # balanced label   # (n,)
    agree = _exact_flags(y, p, rng)
    spurious = np.where(agree, y, 1 - y)
    digit, fashion = (y, spurious) if label == "digit" else (spurious, y)

    d_idx = np.empty(n, dtype=np.int64)
    f_idx = np.empty(n, dtype=np.int64)
    for b in (0, 1):
        sel = np.flatnonzero(digit == b)
        d_idx[sel] = _draw(d_pools[b], sel.size, rng)
        sel = np.flatnonzero(fashion == b)
        f_idx[sel] = _draw(f_pools[b], sel.size, rng)
    images = np.concatenate([d_img[d_idx], f_img[f_idx]], axis=1)  # (n, 56, 28)
    classes = (tuple(MNIST_CLASSES[c] for c in dc) if label == "digit"
               else tuple(FASHION_CLASSES[c] for c in fc))
    attrs = {
        "digit": digit.astype(np.int64), "fashion": fashion.astype(np.int64),
        "spurious": spurious.astype(np.int64), "group": (2 * y + spurious).astype(np.int64),
        "agree": agree, "digit_class": np.asarray(dc)[digit],
        "fashion_class": np.asarray(fc)[fashion], "digit_index": d_idx, "fashion_index": f_idx,
    }
    return ImageDataset(images, y.astype(np.int64), classes, "dominoes", split, attrs)


def _source(source: str, split: str, n: int | None, rng: np.random.Generator,
            owner: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    source = check_option(source, "source", _SOURCES, owner=owner)
    split = check_option(split, "split", ("train", "test"), owner=owner)
    images, labels = _arrays(source, split)
    total = labels.shape[0]
    if n is None:
        idx = np.arange(total)
    else:
        n = check_int(n, "n", owner=owner, low=1, high=total)
        idx = np.sort(rng.choice(total, size=n, replace=False))
    classes = MNIST_CLASSES if source == "mnist" else FASHION_CLASSES
    return images[idx], labels[idx], classes


def colored_digits(
    n: int | None = None,
    *,
    color_flip: float = 0.1,
    label_noise: float = 0.25,
    split: Literal["train", "test"] = "train",
    source: Literal["mnist", "fashion-mnist"] = "mnist",
    seed: int = 0,
) -> ImageDataset:
    """Coloured MNIST (Arjovsky et al.): a binary label that colour predicts better than shape.

    The binary label is ``class >= 5``, flipped on exactly ``label_noise`` of the examples (so shape
    predicts it with accuracy ``1 - label_noise``). The colour (0 red, 1 green) equals the noisy
    label except on exactly ``color_flip`` of the examples. IRM's environments use
    ``color_flip`` 0.1 and 0.2 for training and 0.9 for testing.

    Args:
        n: Number of images (default: the whole split).
        color_flip: Fraction of examples whose colour disagrees with the label, in ``[0, 1]``.
        label_noise: Fraction of labels flipped relative to the shape, in ``[0, 1]``.
        split: Source split.
        source: ``"mnist"`` or ``"fashion-mnist"``.
        seed: Random seed.

    Returns:
        ImageDataset with RGB ``images`` uint8 ``(n, 28, 28, 3)`` (the stroke in the red or green
        channel), binary ``labels``, and attributes ``color``, ``digit`` (source class),
        ``shape_label`` (label before noise).

    References:
        Arjovsky, Bottou, Gulrajani, Lopez-Paz 2019, Invariant risk minimization, arXiv 1907.02893;
        Gulrajani, Lopez-Paz 2020, In search of lost domain generalization (DomainBed),
        arXiv 2007.01434.
    """
    color_flip = check_real(color_flip, "color_flip", owner="colored_digits", low=0.0, high=1.0,
                            closed="both")
    label_noise = check_real(label_noise, "label_noise", owner="colored_digits", low=0.0,
                             high=1.0, closed="both")
    seed = check_int(seed, "seed", owner="colored_digits", low=0)
    rng = np.random.default_rng(seed)
    images, digits, _ = _source(source, split, n, rng, "colored_digits")
    shape_label = (digits >= 5).astype(np.int64)
    y = np.where(_exact_flags(shape_label, label_noise, rng), 1 - shape_label, shape_label)
    color = np.where(_exact_flags(y, color_flip, rng), 1 - y, y).astype(np.int64)
    rgb = np.zeros((*images.shape, 3), dtype=np.uint8)  # (n, 28, 28, 3)
    rgb[color == 0, :, :, 0] = images[color == 0]
    rgb[color == 1, :, :, 1] = images[color == 1]
    attrs = {"color": color, "digit": digits.astype(np.int64), "shape_label": shape_label}
    return ImageDataset(rgb, y, ("0-4", "5-9"), "colored-digits", split, attrs)


def rotate_images(images: np.ndarray, angle: float) -> np.ndarray:
    """Rotate a stack of images counter-clockwise by ``angle`` degrees about their centres.

    Bilinear interpolation, zero fill outside; one gather for the whole stack.

    Args:
        images: uint8 ``(N, H, W)`` or ``(N, H, W, C)``.
        angle: Degrees, counter-clockwise.

    Returns:
        uint8 array of the same shape.
    """
    n, h, w = images.shape[:3]
    theta = np.deg2rad(angle)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)  # output grid   # (H, W)
    # Inverse map: the source pixel of each output pixel (rotation by -angle; y points down).
    c, s = np.cos(theta), np.sin(theta)
    sx = c * (xx - cx) - s * (yy - cy) + cx
    sy = s * (xx - cx) + c * (yy - cy) + cy
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = sx - x0, sy - y0
    src = images.astype(np.float32)
    out = np.zeros(src.shape, dtype=np.float32)
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                        (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + dy, x0 + dx
        valid = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)  # (H, W)
        wv = (wgt * valid).astype(np.float32)
        vals = src[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]  # (N, H, W[, C])
        out += vals * (wv[..., None] if src.ndim == 4 else wv)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def rotated_digits(
    n: int | None = None,
    *,
    angles: float | Sequence[float] = (0, 15, 30, 45, 60, 75),
    split: Literal["train", "test"] = "train",
    source: Literal["mnist", "fashion-mnist"] = "mnist",
    seed: int = 0,
) -> ImageDataset:
    """Rotated MNIST (DomainBed): each image rotated by one of ``angles``, in equal shares.

    Args:
        n: Number of images (default: the whole split).
        angles: One angle for all images, or several (one domain each); degrees, counter-clockwise.
            DomainBed uses 0, 15, 30, 45, 60, 75.
        split: Source split.
        source: ``"mnist"`` or ``"fashion-mnist"``.
        seed: Random seed (picks the images and assigns the angles).

    Returns:
        ImageDataset with ``images`` uint8 ``(n, 28, 28)``, the source ``labels``, and attributes
        ``angle`` (float64 degrees) and ``domain`` (index into ``angles``).

    References:
        Ghifary et al. 2015, Domain generalization for object recognition with multi-task
        autoencoders, arXiv 1508.07680; Gulrajani, Lopez-Paz 2020, arXiv 2007.01434.
    """
    angle_list = [angles] if isinstance(angles, (int, float)) else list(angles)
    if not angle_list:
        raise ValueError("The 'angles' parameter of rotated_digits must hold at least one angle.")
    angle_list = [check_real(a, "angles", owner="rotated_digits", low=-360.0, high=360.0,
                             closed="both") for a in angle_list]
    seed = check_int(seed, "seed", owner="rotated_digits", low=0)
    rng = np.random.default_rng(seed)
    images, labels, classes = _source(source, split, n, rng, "rotated_digits")
    domain = rng.permutation(np.arange(labels.shape[0]) % len(angle_list))
    out = np.empty_like(images)
    for d, a in enumerate(angle_list):
        sel = domain == d
        out[sel] = rotate_images(images[sel], a) if a % 360 else images[sel]
    attrs = {"angle": np.asarray(angle_list, dtype=np.float64)[domain],
             "domain": domain.astype(np.int64)}
    return ImageDataset(out, labels.astype(np.int64), classes, "rotated-digits", split, attrs)
