"""Binomial rates with Wilson score intervals: the one implementation every capability uses.

Imports nothing beyond the standard library (any layer of fmlab may import it).
"""

from __future__ import annotations

import math

__all__ = ["Z95", "rate", "wilson_interval"]

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``k / n`` (95% by default), clipped to [0, 1].

    .. math:: \\frac{\\hat p + z^2/2n \\pm z\\sqrt{\\hat p(1-\\hat p)/n + z^2/4n^2}}{1 + z^2/n}

    ``n == 0`` (no observations) gives ``(0.0, 1.0)``: every proportion is consistent with no data.
    ``k`` may be fractional (a weighted count).

    References:
        Wilson, "Probable inference, the law of succession, and statistical inference",
        JASA 22 (1927).
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def rate(k: int, n: int, z: float = Z95) -> dict[str, float]:
    """``k`` successes out of ``n`` as ``{"k", "n", "rate", "low", "high"}`` (Wilson interval).

    ``n == 0`` gives a rate of NaN and the interval [0, 1].
    """
    low, high = wilson_interval(k, n, z)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "low": low, "high": high}
