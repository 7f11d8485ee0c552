"""The scaling studies' claim functions: each holds on a clear effect and fails on noise."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.scaling import _study as st
from fmlab.studies import assert_claim_can_fail


def _draws(center: dict[str, float], rel_sd: float, n: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: v * np.exp(rng.normal(0, rel_sd, n)) for k, v in center.items()}


def test_hoffmann_claim_needs_the_published_fit_outside_the_bootstrap_region() -> None:
    epoch = {k: st._EPOCH[k] for k in st._PARAMS}
    tight = _draws(epoch, 0.01)  # a well-determined refit: Hoffmann's values are far away
    between = {k: (epoch[k] + st._HOFFMANN[k]) / 2 for k in st._PARAMS}
    loose = _draws(between, 0.6)  # refits scattered widely around both fits: no evidence
    held, failed = assert_claim_can_fail(st.hoffmann_inconsistent, tight, loose,
                                         published=st._HOFFMANN)
    assert held.value > held.interval[1] and failed.value <= failed.interval[1]
    few = st.hoffmann_inconsistent(_draws(epoch, 0.01, n=5), st._HOFFMANN)
    assert not few.holds and "at least 20" in few.error


def test_tokens_per_parameter_claim_needs_a_tight_interval_near_20() -> None:
    epoch = {k: st._EPOCH[k] for k in st._PARAMS}
    fitted = dict(epoch)
    assert 15 < st._tokens_per_param(*(epoch[k] for k in st._PARAMS), 5.76e23) < 25
    held, failed = assert_claim_can_fail(
        lambda draws: st.tokens_per_param(fitted, draws), _draws(epoch, 0.005),
        _draws(epoch, 0.2))
    assert held.interval[0] >= 10 and held.interval[1] <= 40


def test_data_filtering_claims_can_fail() -> None:
    good = [{"variant": "utility", "pool": "p", "max_abs_err": 3e-7}]
    bad = [{"variant": "utility", "pool": "p", "max_abs_err": 2e-3}]
    assert_claim_can_fail(st.released_law_reproduced, good, bad)
    shift = [{"variant": "u", "tau_scaling": "none", "sizes": [1, 1, 2, 3],
              "best": ["top1", "top1", "top2", "top3"]}]
    jumble = [{"variant": "u", "tau_scaling": "none", "sizes": [2, 1, 3, 1],
               "best": ["top2", "top1", "top3", "top1"]}]
    assert_claim_can_fail(st.best_pool_shifts, shift, jumble)


def test_heldout_claim_needs_the_decay_law_to_win_on_every_model() -> None:
    rng = np.random.default_rng(1)
    clear = [{"model": m, "mape_decay": 0.03 + 0.01 * i, "mape_no_decay": 0.09 + 0.01 * i}
             for i, m in enumerate(("B-32", "B-16", "L-14"))]
    same = rng.uniform(0.04, 0.06, 3)
    noise = [{"model": m, "mape_decay": float(v + rng.normal(0, 0.002)),
              "mape_no_decay": float(v)} for m, v in zip(("B-32", "B-16", "L-14"), same,
                                                         strict=True)]
    assert_claim_can_fail(st.repetition_law_predicts_heldout, clear, noise)
    none = st.repetition_law_predicts_heldout([{"model": "B-32", "mape_decay": np.nan,
                                                "mape_no_decay": 0.1}])
    assert not none.holds and none.error


@pytest.mark.parametrize("name", ["scaling.chinchilla", "scaling.data_filtering",
                                  "scaling.precision"])
def test_scaling_studies_label_their_claims(name: str) -> None:
    from fmlab.studies import get_study

    assert get_study(name).options  # declared, so --describe lists them


def _heldout(gap: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    y = 4.5 + rng.normal(0, 0.1, 12)
    return [{"loss": float(v), "precision_law": float(v + rng.normal(0, 0.005)),
             "chinchilla": float(v + gap * rng.choice([-1, 1]) + rng.normal(0, 0.005))}
            for v in y]


def test_precision_law_claim_needs_a_clear_heldout_gain() -> None:
    assert_claim_can_fail(st.precision_law_beats_blind, _heldout(0.05, 0), _heldout(0.0, 1))
    missing = st.precision_law_beats_blind([], reason="DataUnavailableError: no table")
    assert not missing.holds and "no table" in missing.measured


def test_optimal_precision_claim_reads_the_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)

    def draws(center: float, sd: float) -> dict:
        return {k: np.abs(center + rng.normal(0, sd, 40)) + 0.05
                for k in ("gamma_w", "gamma_a", "gamma_kv")}

    # P* = 1.90381 gamma for tied gammas: gamma 3.5 gives about 6.7 bits
    held, failed = assert_claim_can_fail(st.optimal_precision_in_range, draws(3.5, 0.05),
                                         draws(3.5, 3.0))
    assert 6 < held.value < 7.5
    assert not st.optimal_precision_in_range(draws(1.2, 0.05)).holds  # P* about 2.4 bits


def test_precision_consistency_checks_can_fail() -> None:
    assert_claim_can_fail(lambda p: st.planner_matches_closed_form(p, 6.0), [6.0, 6.01],
                          [6.0, 7.0])
    truth = dict(st._PREC_TRUTH)
    good = {"truth": truth, "relative_bias": {k: 0.02 for k in truth}}
    bad = {"truth": truth, "relative_bias": {**{k: 0.0 for k in truth}, "gamma_a": -0.3}}
    assert_claim_can_fail(st.recovery_check, good, bad)


def test_precision_runs_table_is_checked(tmp_path) -> None:
    from fmlab.exceptions import DataUnavailableError

    with pytest.raises(DataUnavailableError, match="runs.csv"):
        st.precision_runs(str(tmp_path / "none.csv"))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        st.precision_runs(str(tmp_path / "bad.csv"))


def test_shipped_precision_runs_table() -> None:
    """The measured full-scale sweep that scaling.precision fits by default ships with fmlab,
    with its provenance (command, commit, machine, checksum)."""
    import hashlib
    from importlib.resources import files

    runs = st.precision_runs()
    trained = runs[runs.post_bits.map(np.isinf)]
    assert len(trained) >= 60 and trained.n_params.nunique() == 3
    assert trained.n_tokens.nunique() == 3 and (trained.loss > 0).all()
    data = files("fmlab.scaling").joinpath("data")
    provenance = data.joinpath("PROVENANCE.md").read_text()
    digest = hashlib.sha256(data.joinpath("precision_sweep_runs.csv").read_bytes()).hexdigest()
    assert digest in provenance and "quant.precision_sweep --full" in provenance
