"""Parameter validation with one message template.

Messages name the parameter, the constraint, the value received and, where there is one, the fix:
``The 'rho' parameter of SAM must be a float in the range (0, inf). Got -0.1 instead.``
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_array",
    "check_bool",
    "check_int",
    "check_option",
    "check_probabilities",
    "check_real",
]


def _owner(owner: str | None) -> str:
    return f" of {owner}" if owner else ""


def _interval(low: float | None, high: float | None, closed: str) -> str:
    left = "[" if closed in ("both", "left") else "("
    right = "]" if closed in ("both", "right") else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def _in_range(x: float, low: float | None, high: float | None, closed: str) -> bool:
    if low is not None:
        if closed in ("both", "left"):
            if x < low:
                return False
        elif x <= low:
            return False
    if high is not None:
        if closed in ("both", "right"):
            if x > high:
                return False
        elif x >= high:
            return False
    return True


def check_real(
    value: Any,
    name: str,
    *,
    owner: str | None = None,
    low: float | None = None,
    high: float | None = None,
    closed: str = "neither",
) -> float:
    """Check that ``value`` is a finite real number in an interval and return it as a float.

    Args:
        closed: Which ends of the interval are included: ``"neither"``, ``"left"``, ``"right"``,
            ``"both"``.
    """
    what = f"The {name!r} parameter{_owner(owner)} must be a float in the range "
    what += _interval(low, high, closed)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}. Got {value!r} of type {type(value).__name__} instead.")
    x = float(value)
    if math.isnan(x) or not _in_range(x, low, high, closed):
        raise ValueError(f"{what}. Got {value!r} instead.")
    return x


def check_int(
    value: Any,
    name: str,
    *,
    owner: str | None = None,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Check that ``value`` is an integer in ``[low, high]`` and return it."""
    what = f"The {name!r} parameter{_owner(owner)} must be an int in the range "
    what += _interval(low, high, "both")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what}. Got {value!r} of type {type(value).__name__} instead.")
    if not _in_range(int(value), low, high, "both"):
        raise ValueError(f"{what}. Got {value!r} instead.")
    return int(value)


def check_bool(value: Any, name: str, *, owner: str | None = None) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"The {name!r} parameter{_owner(owner)} must be a bool. "
            f"Got {value!r} of type {type(value).__name__} instead."
        )
    return bool(value)


def check_option(value: Any, name: str, options: Iterable[Any], *, owner: str | None = None) -> Any:
    """Check that ``value`` is one of ``options``.

    The message reads ``Invalid pooling 'avg' for EchoEncoder. Valid options are:
    ('mean', 'last').``
    """
    opts = tuple(options)
    if value not in opts:
        raise ValueError(
            f"Invalid {name} {value!r}{' for ' + owner if owner else ''}. "
            f"Valid options are: {opts}."
        )
    return value


def check_array(
    value: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    dtype: Any = float,
    finite: bool = True,
    min_rows: int = 0,
) -> np.ndarray:
    """Convert ``value`` to a numpy array and check dimensions and finiteness."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name!r} must be array-like of numbers. Got {type(value).__name__}: {exc}"
        ) from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name!r} must have {' or '.join(map(str, allowed))} dimension(s). "
                f"Got shape {arr.shape} instead."
            )
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name!r} must contain only finite values. Got {bad} NaN or inf entries.")
    if arr.ndim and arr.shape[0] < min_rows:
        raise ValueError(f"{name!r} needs at least {min_rows} rows. Got {arr.shape[0]} instead.")
    return arr


def check_probabilities(value: Any, name: str, *, atol: float = 1e-3) -> np.ndarray:
    """Check an array of class probabilities (last axis sums to one, entries in [0, 1])."""
    arr = check_array(value, name, ndim=(2, 3))
    if (arr < 0).any() or (arr > 1).any():
        raise ValueError(
            f"{name!r} must hold probabilities in [0, 1]. Got min {arr.min():.3g}, "
            f"max {arr.max():.3g}. Apply a softmax to logits first."
        )
    sums = arr.sum(-1)
    worst = float(sums.flat[int(np.abs(sums - 1).argmax())]) if sums.size else 1.0
    if abs(worst - 1) > atol:
        raise ValueError(
            f"Each row of {name!r} must sum to 1 (tolerance {atol:g}); the worst row sums to "
            f"{worst:.4g}. Pass softmax probabilities, not logits."
        )
    return arr
