"""Numerical core of agreement-on-the-line: probits, accuracies, pairwise agreement, probit lines.

Everything here is numpy/scipy only. Predictions are integer arrays of shape ``(n_models, n)``
(argmax labels); agreement between all pairs of models is computed without materialising an
``(n_models, n_models, n)`` tensor, in chunks over examples, so memory is linear in ``n``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fmlab._stats import pairwise_agreement

__all__ = [
    "LineFit",
    "accuracies",
    "fit_probit_line",
    "pairwise_agreement",
    "probit",
    "resolve_eps",
]

def resolve_eps(eps: float | None, n: int) -> float:
    """The clipping constant for rates measured on ``n`` examples.

    ``None`` means half an example, ``0.5 / n`` (a continuity correction): a model that is right on
    all 1,000 examples is treated as having accuracy ``1 - 0.0005`` on the probit scale.
    """
    if eps is None:
        return 0.5 / max(int(n), 1)
    return float(eps)


def probit(p: Any, eps: float = 1e-4) -> np.ndarray:
    """The inverse standard-normal CDF, with the argument clipped to ``[eps, 1 - eps]``.

    Rates of exactly 0 or 1 have an infinite probit; clipping keeps fits finite. The clipping is
    part of the model: report ``eps`` with any result that used it.

    Args:
        p: Rates in [0, 1] (accuracies or agreements), any shape.
        eps: Clipping constant in (0, 0.5).

    Returns:
        ``Φ⁻¹(clip(p, eps, 1 - eps))`` as a float array of the same shape.
    """
    from scipy.special import ndtri

    return ndtri(np.clip(np.asarray(p, dtype=float), eps, 1.0 - eps))


def accuracies(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy of each model. ``preds`` (n_models, n) int, ``labels`` (n,) int -> (n_models,)."""
    return (preds == labels[None, :]).mean(axis=1)


@dataclass(frozen=True)
class LineFit:
    """An ordinary-least-squares line in probit space, ``y ≈ slope · x + intercept``.

    Attributes:
        slope, intercept: The fitted line.
        r2: Coefficient of determination of the fit (1 is a perfect line).
        correlation: Pearson correlation of x and y.
        n_points: Number of points fitted (models or model pairs).
        x_range: Spread (max - min) of x, a check that the line is identifiable.
    """

    slope: float
    intercept: float
    r2: float
    correlation: float
    n_points: int
    x_range: float

    def predict(self, x: Any) -> np.ndarray:
        """``slope · x + intercept`` (probit scale)."""
        return self.slope * np.asarray(x, dtype=float) + self.intercept

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def fit_probit_line(x: Any, y: Any) -> LineFit:
    """Fit ``y = slope · x + intercept`` by ordinary least squares (x and y already probit-scaled).

    A degenerate x (all values equal) gives slope 1 through the mean offset, r2 = 0 and
    correlation = 0, so callers can flag it instead of dividing by zero.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    xm, ym = x.mean(), y.mean()
    dx, dy = x - xm, y - ym
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    x_range = float(x.max() - x.min()) if x.size else 0.0
    if sxx <= 1e-24 * max(1.0, x.size):
        return LineFit(1.0, float(ym - xm), 0.0, 0.0, int(x.size), x_range)
    slope = sxy / sxx
    intercept = ym - slope * xm
    if syy <= 0:
        r2 = corr = 0.0
    else:
        resid = dy - slope * dx
        r2 = 1.0 - float(resid @ resid) / syy
        corr = sxy / np.sqrt(sxx * syy)
    return LineFit(float(slope), float(intercept), float(r2), float(corr), int(x.size), x_range)
