"""The ood.agreement study's claim functions: each holds on a clear effect and fails on noise."""

from __future__ import annotations

import numpy as np

from fmlab.ood import _study as st
from fmlab.studies import assert_claim_can_fail

_SHIFTS = ("blur", "jpeg", "typos")


def _rows(gap: dict[str, float], seed: int, *, reliable: bool = True,
          aline_mape: float = 2.0) -> list[dict]:
    """Rows per (diversity, shift) whose line gap is ``gap[diversity]`` plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for d, g in gap.items():
        for s in _SHIFTS:
            sg, ig = abs(g + rng.normal(0, 0.02)), abs(g + rng.normal(0, 0.02))
            row = {"task": "t", "backbone": "b", "shift": s, "diversity": d, "slope_gap": sg,
                   "intercept_gap": ig, "line_gap": max(sg, ig), "acc_slope": 1.0,
                   "agr_slope": 1.0 + sg, "label_free_reliable": reliable}
            for m in st._ESTIMATORS:
                mape = aline_mape if m.startswith("aline") else 6.0
                row[f"mape_{m}"] = float(mape + rng.normal(0, 0.3))
                row[f"mae_{m}"] = row[f"mape_{m}"] / 2
            rows.append(row)
    return rows


def test_line_claims_hold_on_clear_gaps_and_fail_on_noise() -> None:
    clear = _rows({"head_init": 0.03, "data_order": 0.6, "data_subset": 0.5}, 0)
    noise = _rows({"head_init": 0.3, "data_order": 0.3, "data_subset": 0.3}, 1)
    assert_claim_can_fail(st.head_init_on_the_line, clear, noise)
    for d in ("data_order", "data_subset"):
        assert_claim_can_fail(lambda r, d=d: st.diversity_off_the_line(r, d), clear, noise)
    assert_claim_can_fail(st.scratch_cnns_on_the_line, _rows({"data_order": 0.03}, 2),
                          _rows({"data_order": 0.3}, 3))


def test_aline_claim_never_falls_back_to_unreliable_shifts() -> None:
    gaps = {"head_init": 0.03, "data_order": 0.6, "data_subset": 0.5}
    assert_claim_can_fail(st.aline_beats_baselines, _rows(gaps, 0),
                          _rows(gaps, 1, aline_mape=6.0))
    none = st.aline_beats_baselines(_rows(gaps, 0, reliable=False))
    assert not none.holds and "reliability check" in none.error


def test_skipped_tasks_are_named_in_every_claim() -> None:
    rows = _rows({"head_init": 0.03, "data_order": 0.6, "data_subset": 0.5}, 0)
    claims = st._claims(rows, {"rotten-tomatoes": "DataUnavailableError: not installed"})
    assert len(claims) == 4 and all("rotten-tomatoes" in c.measured for c in claims)
    empty = st._claims([], {})
    assert all(c.error and not c.holds for c in empty)
