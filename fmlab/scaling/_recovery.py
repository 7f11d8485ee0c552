"""Synthetic runs from known parameters, and parameter recovery (bias, interval coverage)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmlab._validation import check_int, check_real
from fmlab.scaling._base import BaseLaw

__all__ = ["RecoveryResult", "parameter_recovery", "simulate_runs"]


def simulate_runs(
    law: BaseLaw, params: Mapping[str, Any], X: Any, *, noise: float = 0.01,
    random_state: int | None = 0,
) -> np.ndarray:
    """Losses for runs ``X`` from a law with known ``params``, times log-normal noise.

    ``y = L(X; params) * exp(noise * eps)``, ``eps ~ N(0, 1)``: ``noise`` is the standard
    deviation of the log loss (0.01 is about 1%).
    """
    from sklearn.base import clone

    check_real(noise, "noise", owner="simulate_runs", low=0, closed="left")
    truth = clone(law).set_fitted_params(params)
    y = truth.predict(X)
    rng = np.random.default_rng(random_state)
    return y * np.exp(noise * rng.standard_normal(y.shape))


@dataclass
class RecoveryResult:
    """Bias and interval coverage of a law's fit over many synthetic data sets.

    Attributes:
        truth: The generating parameters.
        estimates: name -> fitted values over seeds ``(n_seeds,)``.
        bias / relative_bias: mean(estimate - truth) and that over |truth|.
        coverage: Fraction of seeds whose bootstrap interval contains the truth.
        interval_width: Mean width of the intervals.
    """

    truth: dict[str, float]
    estimates: dict[str, np.ndarray]
    bias: dict[str, float]
    relative_bias: dict[str, float]
    coverage: dict[str, float]
    interval_width: dict[str, float]
    n_seeds: int
    confidence_level: float
    time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "truth": self.truth, "bias": self.bias, "relative_bias": self.relative_bias,
            "coverage": self.coverage, "interval_width": self.interval_width,
            "n_seeds": self.n_seeds, "confidence_level": self.confidence_level,
            "time_s": self.time_s,
        }


def parameter_recovery(
    make_law: Callable[[], BaseLaw],
    params: Mapping[str, float],
    X: Any,
    *,
    n_seeds: int = 20,
    noise: float = 0.01,
    random_state: int = 0,
) -> RecoveryResult:
    """Fit ``make_law()`` to ``n_seeds`` synthetic data sets drawn around ``params``.

    ``make_law`` must build a law with ``n_bootstrap > 0`` for coverage to be measured.
    """
    import time

    check_int(n_seeds, "n_seeds", owner="parameter_recovery", low=1)
    t0 = time.perf_counter()
    truth = {k: float(v) for k, v in params.items()}
    est: dict[str, list[float]] = {k: [] for k in truth}
    hit: dict[str, list[bool]] = {k: [] for k in truth}
    width: dict[str, list[float]] = {k: [] for k in truth}
    level = 0.95
    for s in range(n_seeds):
        law = make_law()
        level = law.confidence_level
        y = simulate_runs(law, truth, X, noise=noise, random_state=random_state + s)
        law.fit(X, y)
        fitted = law.params_.to_dict()
        for k, v in truth.items():
            est[k].append(float(fitted[k]))
            if k in law.intervals_:
                lo, hi = law.intervals_[k]
                hit[k].append(lo <= v <= hi)
                width[k].append(hi - lo)
    estimates = {k: np.asarray(v) for k, v in est.items()}
    bias = {k: float(np.mean(estimates[k] - truth[k])) for k in truth}
    return RecoveryResult(
        truth=truth, estimates=estimates, bias=bias,
        relative_bias={k: bias[k] / abs(truth[k]) if truth[k] else float("nan") for k in truth},
        coverage={k: float(np.mean(v)) if v else float("nan") for k, v in hit.items()},
        interval_width={k: float(np.mean(v)) if v else float("nan") for k, v in width.items()},
        n_seeds=n_seeds, confidence_level=level, time_s=time.perf_counter() - t0,
    )
