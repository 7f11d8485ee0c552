"""Claim functions: pure functions of measured rows that return a verdict, and their helpers.

A claim function takes the rows a study measured (a DataFrame or a list of dicts) and returns a
:class:`Verdict`; :func:`claim_check` attaches the claim's words, kind and reference and turns a
:class:`NotComputed` into a claim that does not hold, with its reason::

    @claim_check("SAM reaches a lower test error than SGD.", criterion="...", reference="...")
    def sam_beats_sgd(rows, min_gap=1.0):
        gaps = [r["sgd_error"] - r["sam_error"] for r in rows]
        if len(gaps) < 2:
            raise NotComputed(f"{len(gaps)} seed(s); an interval needs 2 or more")
        iv = mean_interval(gaps)
        return Verdict(f"gap {iv}", holds=iv.low > min_gap, value=iv.mean, interval=iv.bounds)

and its test is ``assert_claim_can_fail(sam_beats_sgd, clear_rows, noise_rows)``.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fmlab.studies._base import EMPIRICAL, Claim, ClaimKind

__all__ = [
    "Interval",
    "NotComputed",
    "Verdict",
    "assert_claim_can_fail",
    "bootstrap_interval",
    "claim_check",
    "mean_interval",
]


class NotComputed(Exception):  # noqa: N818 - reads as "raise NotComputed(reason)"
    """Raised inside a claim function when the claim cannot be computed from the rows (too few
    runs, a failed fit). :func:`claim_check` reports it as a claim that does not hold."""


@dataclass(frozen=True)
class Verdict:
    """What a claim function returns: the measurement in words, whether the claim holds, and the
    headline number with its interval. ``criterion`` overrides the decorator's (when the
    criterion depends on the function's arguments)."""

    measured: str
    holds: bool
    value: float | None = None
    interval: tuple[float, float] | None = None
    criterion: str | None = None


def claim_check(claim: str, *, kind: ClaimKind = EMPIRICAL, criterion: str = "",
                reference: str = "") -> Callable[[Callable[..., Verdict | Claim]],
                                                 Callable[..., Claim]]:
    """Decorate a claim function (rows -> :class:`Verdict`) so that it returns a :class:`Claim`.

    The wrapped function keeps its arguments; :class:`NotComputed` raised inside becomes
    ``Claim.not_computed(claim, reason)``. The function may also return a full :class:`Claim`
    (for a claim whose words depend on the rows).
    """

    def decorate(fn: Callable[..., Verdict | Claim]) -> Callable[..., Claim]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Claim:
            try:
                out = fn(*args, **kwargs)
            except NotComputed as exc:
                return Claim.not_computed(claim, str(exc), kind=kind, criterion=criterion,
                                          reference=reference)
            if isinstance(out, Claim):
                return out
            return Claim(claim=claim, measured=out.measured, holds=bool(out.holds),
                         criterion=out.criterion if out.criterion is not None else criterion,
                         value=out.value, reference=reference, kind=kind,
                         interval=out.interval)

        wrapper.claim = claim  # type: ignore[attr-defined]
        wrapper.kind = kind  # type: ignore[attr-defined]
        return wrapper

    return decorate


@dataclass(frozen=True)
class Interval:
    """A mean (or other estimate) with a confidence interval over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)

    def excludes(self, x: float = 0.0) -> bool:
        """Whether ``x`` lies outside the interval."""
        return x < self.low or x > self.high

    def format(self, digits: int = 3) -> str:
        return (f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}] "
                f"({self.confidence:.0%} CI, n={self.n})")

    __str__ = format


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean with a Student-t confidence interval (e.g. over seeds). With one value the interval
    is infinite: one run says nothing about the spread."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise NotComputed("no finite values to average")
    m = float(x.mean())
    if x.size == 1:
        return Interval(m, -math.inf, math.inf, 1, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(m, m - half, m + half, int(x.size), confidence)


def bootstrap_interval(values: Sequence[Any], statistic: Callable[[Any], float] | None = None,
                       *, n_boot: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) over ``values``.

    ``values`` are numbers (non-finite ones dropped; ``statistic`` gets a resampled array) or,
    with a ``statistic``, any records such as per-task row dicts, resampled whole
    (``statistic`` gets a list of them: a paired bootstrap over units). Replicates whose
    statistic is not finite are dropped; when the point estimate is not finite or fewer than
    half the replicates are, the interval is :class:`NotComputed`.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if statistic is not None and not all(isinstance(v, int | float | np.number) for v in values):
        items = list(values)
        if not items:
            raise NotComputed("no records to bootstrap")
        draws = rng.integers(0, len(items), size=(n_boot, len(items)))
        point = float(statistic(items))  # type: ignore[misc]
        boots = np.array([statistic([items[i] for i in row]) for row in draws],  # type: ignore[misc]
                         dtype=float)
        n = len(items)
    else:
        x = np.asarray(values, dtype=float)
        x = x[np.isfinite(x)]
        if x.size == 0:
            raise NotComputed("no finite values to bootstrap")
        sample = x[rng.integers(0, x.size, size=(n_boot, x.size))]
        if statistic is None:
            point, boots = float(x.mean()), sample.mean(axis=1)
        else:
            point, boots = float(statistic(x)), np.array([statistic(d) for d in sample])
        n = int(x.size)
    boots = boots[np.isfinite(boots)]
    if not math.isfinite(point) or boots.size < n_boot // 2:
        raise NotComputed(f"the statistic is undefined on {n_boot - boots.size} of {n_boot} "
                          "bootstrap resamples (too few units on one side)")
    a = (1 - confidence) / 2
    return Interval(point, float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)),
                    n, confidence)


def _same(a: Any, b: Any) -> bool:
    if hasattr(a, "equals") and callable(a.equals):  # pandas
        return bool(a.equals(b))
    try:
        import numpy as np

        if isinstance(a, np.ndarray):
            return bool(np.array_equal(a, b, equal_nan=True))
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def assert_claim_can_fail(fn: Callable[..., Claim], clear: Any, noise: Any,
                          **kwargs: Any) -> tuple[Claim, Claim]:
    """Assert that the claim function ``fn`` holds on ``clear`` rows (a clear effect) and does
    not hold on ``noise`` rows (no effect, only run-to-run noise), that both are computed (a
    not-computed claim does not count as failing), and that ``fn`` is pure: it leaves its rows
    unchanged and gives the same claim twice. Returns the two claims."""
    before = (copy.deepcopy(clear), copy.deepcopy(noise))
    held, failed = fn(clear, **kwargs), fn(noise, **kwargs)
    for name, c in (("clear-effect", held), ("noise", failed)):
        if not isinstance(c, Claim):
            raise AssertionError(f"{fn.__name__} returned {type(c).__name__}, not a Claim")
        if c.error:
            raise AssertionError(f"{fn.__name__} could not compute the claim on the {name} "
                                 f"rows: {c.error}")
    if not held.holds:
        raise AssertionError(f"{fn.__name__} does not hold on a clear effect: {held.measured} "
                             f"(criterion: {held.criterion})")
    if failed.holds:
        raise AssertionError(f"{fn.__name__} holds on noise, so it cannot fail: "
                             f"{failed.measured} (criterion: {failed.criterion})")
    if not (_same(before[0], clear) and _same(before[1], noise)):
        raise AssertionError(f"{fn.__name__} changed the rows it was given (not pure)")
    if (fn(clear, **kwargs).to_dict() != held.to_dict()
            or fn(noise, **kwargs).to_dict() != failed.to_dict()):
        raise AssertionError(f"{fn.__name__} gave a different claim on the same rows (not pure)")
    return held, failed
