"""The SAM studies' claim functions: each holds on a clear effect and fails on noise."""

from __future__ import annotations

import numpy as np

from fmlab.sam import _study as st
from fmlab.studies import assert_claim_can_fail

_METHODS = ("sgd", "sam", "logit", "jacobian", "penalty")


def _noise_rows(effect: float, seed: int, seeds: int = 4) -> list[dict]:
    """Runs where SAM, J-SAM and the penalties gain ``effect`` points over SGD at 40 % noise
    (L-SAM a fifth of it), SGD loses ``effect`` points after its early-stopped epoch, plus
    seed noise of 0.5 points; nothing changes without noise."""
    rng = np.random.default_rng(seed)
    gain = {"sgd": 0.0, "sam": 1.0, "jacobian": 0.9, "penalty": 0.8, "logit": 0.2}
    rows = []
    for s in range(seeds):
        base = 0.7 + rng.normal(0, 0.01)
        for noise in (0.0, 0.4):
            for m in _METHODS:
                acc = base + (effect / 100 * gain[m] if noise else 0) + rng.normal(0, 0.005)
                final = acc - (effect / 100 if m == "sgd" and noise else 0) + rng.normal(0, 0.005)
                step = {"sam": 2.0, "logit": 2.0, "jacobian": 2.0}.get(m, 1.0)
                rows.append({"noise": noise, "method": m, "seed": s, "stopped_test_acc": acc,
                             "final_test_acc": final,
                             "step_time": step * (1 + rng.normal(0, 0.01 + effect / 200))})
    return rows


def test_label_noise_claims_hold_on_a_clear_effect_and_fail_on_noise() -> None:
    clear, noise = _noise_rows(8.0, 0), _noise_rows(0.0, 1)
    for fn in (st.sam_beats_sgd, st.gain_grows_with_noise, st.jsam_recovers,
               st.lsam_recovers_less, st.penalties_recover, st.early_stopping_matters):
        assert_claim_can_fail(fn, clear, noise)
    # the cost claim fails when the timings scatter (one slow penalty round)
    slow = [dict(r, step_time=r["step_time"] * (1.6 if r["method"] == "penalty"
                                                and r["seed"] == 0 else 1.0))
            for r in _noise_rows(0.0, 2)]
    assert_claim_can_fail(st.penalty_step_cost, _noise_rows(0.0, 3), slow)


def test_label_noise_claims_need_two_seeds_and_noise() -> None:
    one = [r for r in _noise_rows(8.0, 0) if r["seed"] == 0]
    claim = st.sam_beats_sgd(one)
    assert not claim.holds and "interval needs 2" in claim.error
    clean = [r for r in _noise_rows(8.0, 0) if r["noise"] == 0]
    assert "no run with label noise" in st.sam_beats_sgd(clean).error
    assert len(st.noise_claims(_noise_rows(8.0, 0))) == 7
    assert len(st.noise_claims([r for r in _noise_rows(8, 0) if r["method"] in ("sgd", "sam")])) == 3


def _feature_rows(effect: float, seed: int, easy: float = 0.95, seeds: int = 4) -> list[dict]:
    """Per seed and method: probe accuracies where SAM adds ``effect`` points to the hard
    feature and the worst group, and lowers the Gini at w+eps by ``effect / 100``."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        hard, wg = 0.7 + rng.normal(0, 0.01), 0.6 + rng.normal(0, 0.01)
        for m in ("sgd", "sam"):
            up = effect / 100 if m == "sam" else 0.0
            gini = 0.5 + rng.normal(0, 0.01)
            rows.append({"seed": s, "method": m, "easy": easy + rng.normal(0, 0.003),
                         "hard": hard + up + rng.normal(0, 0.005), "easy_init": 0.8,
                         "hard_init": 0.6, "worst_group": wg + up + rng.normal(0, 0.005),
                         "gini_w": gini, "gini_w_eps": gini - up / 2 + rng.normal(0, 0.005)})
    return rows


def test_feature_balance_claims_hold_on_a_clear_effect_and_fail_on_noise() -> None:
    clear, noise = _feature_rows(5.0, 0), _feature_rows(0.0, 1)
    for fn in (st.toy_sam_learns_hard, st.sam_raises_hard_probe, st.sam_raises_worst_group,
               st.sam_evens_weights):
        assert_claim_can_fail(fn, clear, noise)
    # SGD prefers the easy feature: easy probe far above the hard one, or not
    assert_claim_can_fail(st.toy_sgd_prefers_easy, clear,
                          [dict(r, easy=r["hard"] + 0.002 * (-1) ** r["seed"]) for r in noise])
    # keeping the easy feature: fails when SAM loses it, cannot be judged at the ceiling
    lose = [dict(r, easy=r["easy"] - (0.05 if r["method"] == "sam" else 0)) for r in noise]
    assert_claim_can_fail(st.sam_keeps_easy_probe, noise, lose)
    ceiling = st.sam_keeps_easy_probe(_feature_rows(0.0, 2, easy=0.999))
    assert not ceiling.holds and "ceiling" in ceiling.error


def test_two_feature_toy_data() -> None:
    x, y, e, h = st.make_two_feature_toy(200, easy=1.0, hard=0.2, dim=10, noise=1.0,
                                         correlated=True, seed=0)
    assert x.shape == (200, 10) and (e == y).all() and (h == y).all()
    assert np.allclose(np.abs(x[:, 0]), 1.0) and np.allclose(np.abs(x[:, 1]), 0.2)
    _, _, e2, h2 = st.make_two_feature_toy(2000, easy=1.0, hard=0.2, dim=10, noise=1.0,
                                           correlated=False, seed=1)
    assert abs(np.mean(e2 == h2) - 0.5) < 0.05  # decorrelated for the probes
