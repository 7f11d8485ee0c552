"""The study context.inversion: registered with an options schema, and every claim function can
fail (clear effect -> holds, seed noise -> does not)."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.context._study import (
    filtering_flattens,
    heldout_improves,
    reliance_falls,
    reliance_rises,
    toy_filtering,
    toy_theorem,
)
from fmlab.context._toy import simulate_toy
from fmlab.studies import STUDIES, assert_claim_can_fail

STEPS = [0, 4, 8, 12, 16]


def _rows(curves: dict[str, np.ndarray], nll: np.ndarray) -> list[dict]:
    rows = []
    for cond, cf in curves.items():
        for s in range(cf.shape[0]):
            for j, t in enumerate(STEPS):
                rows.append({"condition": cond, "seed": s, "step": t,
                             "counterfactual": float(cf[s, j]), "heldout_nll": float(nll[s, j])})
    return rows


def _noise(seed: int, n: int = 3) -> np.ndarray:
    return 0.5 + 0.05 * np.random.default_rng(seed).standard_normal((n, len(STEPS)))


def test_registered_with_options():
    cls = STUDIES.get("context.inversion")
    assert cls.capability == "context" and "2410.10796" in cls.paper
    quick, full = cls.resolve_options({}, "quick"), cls.resolve_options({}, "full")
    assert quick["seeds"] >= 3 and full["steps"] > quick["steps"]
    assert set(full["conditions"]) == {"baseline", "filtered", "augmented", "qk_only"}
    assert cls.resolve_options({"conditions": ["augmented", "qk_only"]}, "full")["conditions"]
    with pytest.raises(ValueError):
        cls.resolve_options({"agree_share": 1.5}, "quick")


def test_rise_and_fall_claims_can_fail():
    bump = np.array([0.3, 0.6, 0.55, 0.45, 0.4])
    rng = np.random.default_rng(0)
    clear_cf = bump + 0.01 * rng.standard_normal((3, len(STEPS)))
    nll_down = np.linspace(2.0, 1.0, len(STEPS)) + 0.01 * rng.standard_normal((3, len(STEPS)))
    clear = _rows({"baseline": clear_cf}, nll_down)
    noise = _rows({"baseline": _noise(1)}, 1.5 + 0.05 * rng.standard_normal((3, len(STEPS))))
    for fn in (reliance_rises, reliance_falls, heldout_improves):
        held, failed = assert_claim_can_fail(fn, clear, noise)
        assert held.interval is not None
    # one seed or too few steps: not computed, and so not holding
    assert reliance_rises(_rows({"baseline": clear_cf[:1]}, nll_down[:1])).error


def test_filtering_claim_can_fail():
    bump = np.array([0.3, 0.6, 0.55, 0.45, 0.4])
    flat = np.array([0.3, 0.6, 0.6, 0.6, 0.6])
    rng = np.random.default_rng(2)
    e = lambda: 0.01 * rng.standard_normal((3, len(STEPS)))  # noqa: E731
    nll = np.ones((3, len(STEPS)))
    clear = _rows({"baseline": bump + e(), "filtered": flat + e()}, nll)
    noise = _rows({"baseline": bump + e(), "filtered": bump + e()}, nll)
    assert_claim_can_fail(filtering_flattens, clear, noise)
    assert "no runs of condition 'filtered'" in filtering_flattens(
        _rows({"baseline": bump + e()}, nll)).error


def test_toy_claims_are_consistency_checks_that_can_fail():
    def pack(**runs):
        return {k: {"m_c": v.m_c.tolist(), "theta_c": v.theta_c.tolist(),
                    "theta_s": v.theta_s.tolist()} for k, v in runs.items()}

    good = pack(exact=simulate_toy(steps=2), baseline=simulate_toy(lr=5.0, steps=15),
                **{"with S points": simulate_toy(lr=5.0, steps=15, n_subject_only=10),
                   "C+S filtered": simulate_toy(lr=5.0, steps=15, n_non_critical=0)})
    # the same toy with the roles swapped: no C+S points in the "exact" run (no flip), and the
    # filtered run in place of the baseline (no fall)
    bad = pack(exact=simulate_toy(steps=2, n_non_critical=0),
               baseline=simulate_toy(lr=5.0, steps=15, n_non_critical=0),
               **{"with S points": simulate_toy(lr=5.0, steps=15, n_subject_only=10),
                  "C+S filtered": simulate_toy(lr=5.0, steps=15)})
    for fn in (toy_theorem, toy_filtering):
        held, _ = assert_claim_can_fail(fn, good, bad)
        assert held.kind == "consistency"
