"""Rates with Wilson score intervals, for success counts over tasks."""

from __future__ import annotations

import math

__all__ = ["rate"]


def rate(k: int, n: int, z: float = 1.96) -> dict[str, float]:
    """``k`` successes out of ``n`` as ``{"k", "n", "rate", "low", "high"}`` (Wilson interval).

    ``n == 0`` gives a rate of NaN and the interval [0, 1].
    """
    if n == 0:
        return {"k": k, "n": 0, "rate": math.nan, "low": 0.0, "high": 1.0}
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return {"k": k, "n": n, "rate": p, "low": max(0.0, centre - half),
            "high": min(1.0, centre + half)}
