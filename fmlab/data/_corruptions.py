"""A corruption suite in the style of ImageNet-C / CIFAR-10-C, vectorised over a stack of images.

Each corruption has five severities. The parameter tables (``CORRUPTIONS``) follow the structure
of Hendrycks & Dietterich's benchmark; the values are fmlab's own, set for 28x28 images (severity 5
is heavy on MNIST) and scaled with image size where they are lengths in pixels. Everything is
numpy: no PIL, no scipy, no per-image Python loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fmlab._validation import check_int, check_option

__all__ = ["CORRUPTIONS", "corrupt"]

# name -> five parameter values (severity 1..5) and what they mean.
CORRUPTIONS: dict[str, tuple[tuple[Any, ...], str]] = {
    "gaussian_noise": ((0.08, 0.12, 0.18, 0.26, 0.38), "std of additive noise (image in [0, 1])"),
    "shot_noise": ((60, 25, 12, 5, 3), "photons per unit intensity (Poisson rate; lower = worse)"),
    "gaussian_blur": ((0.5, 0.75, 1.0, 1.5, 2.0), "blur std in pixels at 28 px"),
    "contrast": ((0.4, 0.3, 0.2, 0.1, 0.05), "factor on the deviation from the image mean"),
    "fog": ((0.25, 0.5, 0.75, 1.0, 1.5), "fog amplitude (smooth random field, then renormalised)"),
    "elastic": ((6.0, 12.0, 18.0, 26.0, 34.0), "displacement scale alpha at 28 px (sigma 4 px)"),
    "jpeg": ((75, 50, 30, 15, 7), "JPEG quality of the 8x8 DCT quantisation"),
    "pixelate": ((2, 3, 4, 5, 7), "block size in pixels at 28 px (block means, then repeat)"),
}

# Standard JPEG quantisation tables (ITU-T T.81, Annex K).
_Q_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], float).reshape(8, 8)
_Q_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, float).reshape(8, 8)


def _scale(x: np.ndarray) -> float:
    # Lengths are set for 28 px; larger images scale them up, smaller ones keep them.
    return max(1.0, min(x.shape[1], x.shape[2]) / 28.0)


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix of a 1-D Gaussian blur with symmetric (half-sample) reflection at the ends."""
    r = max(1, int(np.ceil(3 * sigma)))
    taps = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (taps / sigma) ** 2)
    k /= k.sum()
    src = np.arange(n)[:, None] + taps[None, :]  # (n, 2r+1) source index of each tap
    period = 2 * n
    src = np.mod(src, period)
    src = np.where(src >= n, period - 1 - src, src)  # reflect: -1 -> 0, n -> n-1
    m = np.zeros((n, n), np.float64)
    np.add.at(m, (np.repeat(np.arange(n), taps.size), src.ravel()), np.tile(k, n))
    return m.astype(np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over axes 1 and 2 of (N, H, W, C), as two matrix products."""
    if sigma <= 0:
        return x
    by, bx = _blur_matrix(x.shape[1], sigma), _blur_matrix(x.shape[2], sigma)
    xc = np.moveaxis(x, -1, 1)  # (N, C, H, W)
    return np.moveaxis(by @ xc @ bx.T, 1, -1)


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(c)


def _shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.poisson(x * c) / c).astype(np.float32)


def _gaussian_blur(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return _blur(x, c * _scale(x))


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * np.float32(c) + mean


def _linear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear upsampling matrix (align corners)."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(np.int64), max(n_in - 2, 0))
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), np.minimum(lo + 1, n_in - 1)] += frac
    return m


def _smooth_field(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Per-image smooth random fields in [0, 1], (N, H, W, 1): three octaves of value noise.

    Each octave is Gaussian noise on a coarse grid (4, 8, 16 cells), upsampled bilinearly with
    two small matrix products, with amplitude halving per octave (a cheap plasma-like cloud).
    """
    field = np.zeros((n, h, w), np.float32)
    for cells, weight in ((4, 1.0), (8, 0.5), (16, 0.25)):
        gy, gx = min(cells, h), min(cells, w)
        coarse = rng.standard_normal((n, gy, gx), dtype=np.float32)
        up_y, up_x = _linear_matrix(h, gy), _linear_matrix(w, gx)  # (H, gy), (W, gx)
        field += weight * (up_y @ coarse @ up_x.T)
    lo = field.min(axis=(1, 2), keepdims=True)
    hi = field.max(axis=(1, 2), keepdims=True)
    return ((field - lo) / np.maximum(hi - lo, 1e-6))[..., None]


def _fog(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    top = x.max(axis=(1, 2, 3), keepdims=True)
    field = _smooth_field(x.shape[0], x.shape[1], x.shape[2], rng)
    return (x + np.float32(c) * field) * top / (top + np.float32(c))


def _sample_bilinear(x: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Sample (N, H, W, C) at per-image float coordinates sy, sx (N, H, W); edge clamp."""
    n, h, w, _ = x.shape
    sy = np.clip(sy, 0, h - 1)
    sx = np.clip(sx, 0, w - 1)
    y0 = np.minimum(np.floor(sy).astype(np.int64), h - 2 if h > 1 else 0)
    x0 = np.minimum(np.floor(sx).astype(np.int64), w - 2 if w > 1 else 0)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    b = np.arange(n)[:, None, None]
    return ((1 - fy) * (1 - fx) * x[b, y0, x0] + (1 - fy) * fx * x[b, y0, x1]
            + fy * (1 - fx) * x[b, y1, x0] + fy * fx * x[b, y1, x1]).astype(np.float32)


def _elastic(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    n, h, w, _ = x.shape
    s = _scale(x)
    # Simard et al. 2003: uniform(-1, 1) displacements, smoothed with a Gaussian, scaled by alpha.
    field = rng.uniform(-1, 1, size=(n, h, w, 2)).astype(np.float32)
    field = _blur(field, 4.0 * s) * np.float32(c * s)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return _sample_bilinear(x, yy + field[..., 0], xx + field[..., 1])


def _dct_matrix(k: int = 8) -> np.ndarray:
    i = np.arange(k)
    m = np.cos(np.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * k)) * np.sqrt(2.0 / k)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float64)  # orthonormal DCT-II, (8, 8)


def _sandwich(m: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """``m @ b @ m.T`` for every trailing 8x8 block ``b``, as one (64 x 64) matrix product on the
    flattened blocks: ``vec(m b m^T) = (m kron m) vec(b)`` (far faster than 8x8 batched matmuls)."""
    kron = np.kron(m, m)  # (64, 64)
    return (blocks.reshape(-1, 64) @ kron.T).reshape(blocks.shape)


def _jpeg(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG's lossy step: 8x8 block DCT, quantisation by the quality-scaled standard tables.

    Colour images go through YCbCr (no chroma subsampling). Entropy coding is lossless, so it is
    left out; pixels are padded to a multiple of 8 by edge replication and cropped back.
    """
    quality = int(c)
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    n, h, w, ch = x.shape
    v = x.astype(np.float64) * 255.0
    if ch == 3:  # RGB -> YCbCr (JFIF)
        m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                      [0.5, -0.418688, -0.081312]])
        v = v @ m.T + np.array([0.0, 128.0, 128.0])
    ph, pw = -h % 8, -w % 8
    v = np.pad(v, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge") - 128.0
    hb, wb = v.shape[1] // 8, v.shape[2] // 8
    blocks = v.reshape(n, hb, 8, wb, 8, ch).transpose(0, 1, 3, 5, 2, 4)  # (N, hb, wb, C, 8, 8)
    d = _dct_matrix()
    coef = _sandwich(d, blocks)
    tables = [_Q_LUMA] + [_Q_CHROMA] * (ch - 1) if ch == 3 else [_Q_LUMA] * ch
    q = np.stack([np.clip(np.floor((t * scale + 50) / 100), 1, 255) for t in tables])  # (C, 8, 8)
    coef = np.round(coef / q) * q
    blocks = _sandwich(d.T, coef)
    v = blocks.transpose(0, 1, 4, 2, 5, 3).reshape(n, hb * 8, wb * 8, ch)[:, :h, :w] + 128.0
    if ch == 3:
        minv = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])
        v = (v - np.array([0.0, 128.0, 128.0])) @ minv.T
    return (v / 255.0).astype(np.float32)


def _block_matrix(n: int, block: int) -> np.ndarray:
    """(n, n) matrix replacing each pixel by the mean of its aligned block of ``block`` pixels."""
    cell = np.arange(n) // block
    same = (cell[:, None] == cell[None, :]).astype(np.float32)
    return same / same.sum(axis=1, keepdims=True)


def _pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    _, h, w, _ = x.shape
    block = max(1, round(c * _scale(x)))
    ry, rx = _block_matrix(h, block), _block_matrix(w, block)  # (H, H), (W, W)
    xc = np.moveaxis(x, -1, 1)  # (N, C, H, W)
    return np.moveaxis(ry @ xc @ rx.T, 1, -1).astype(np.float32)


_FUNCS: dict[str, Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise,
    "gaussian_blur": _gaussian_blur, "contrast": _contrast, "fog": _fog,
    "elastic": _elastic, "jpeg": _jpeg, "pixelate": _pixelate,
}


def corrupt(images: Any, corruption: str, severity: int = 3, seed: int = 0) -> np.ndarray:
    """Apply one corruption at one severity (1-5) to a stack of uint8 images.

    Corruptions (parameters in ``CORRUPTIONS``): ``gaussian_noise``, ``shot_noise``,
    ``gaussian_blur``, ``contrast``, ``fog``, ``elastic``, ``jpeg``, ``pixelate``. The whole stack
    is processed in a few numpy operations. With the same seed, severities share their random
    draws (noise pattern, fog field, displacement field), so distance from the clean image grows
    with severity.

    Args:
        images: uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` (a single ``(H, W)`` image also works).
        corruption: Name of the corruption.
        severity: 1 (mild) to 5 (severe).
        seed: Random seed for the stochastic corruptions.

    Returns:
        A new uint8 array with the shape of ``images``.

    Raises:
        ValueError: for an unknown corruption, a severity outside 1-5, or a bad image shape.
        TypeError: for images that are not uint8.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((2, 28, 28), np.uint8)
        >>> corrupt(x, "contrast", severity=5).shape
        (2, 28, 28)

    References:
        Hendrycks, Dietterich 2019, Benchmarking neural network robustness to common corruptions
        and perturbations, arXiv 1903.12261; Mu, Gilmer 2019, MNIST-C, arXiv 1906.02337.
    """
    corruption = check_option(corruption, "corruption", tuple(CORRUPTIONS), owner="corrupt")
    severity = check_int(severity, "severity", owner="corrupt", low=1, high=5)
    seed = check_int(seed, "seed", owner="corrupt", low=0)
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"'images' must be a uint8 array with values 0-255. Got dtype {x.dtype} "
                        f"instead; convert with (x * 255).round().astype(np.uint8) first.")
    shape = x.shape
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"'images' must have shape (N, H, W) or (N, H, W, 3). Got {shape} instead.")
    rng = np.random.default_rng(seed)
    param = CORRUPTIONS[corruption][0][severity - 1]
    out = _FUNCS[corruption](x.astype(np.float32) / 255.0, param, rng)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8).reshape(shape)
