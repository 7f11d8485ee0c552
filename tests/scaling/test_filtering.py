"""Data-filtering laws: the released T-MARS predictions, mixtures, the planner, fitting."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.scaling import DataFilteringLaw, mixture_error, plan_pools, tmars_preset

POOLS4 = ["tmars_top0to10p", "tmars_top10to20p", "tmars_top20to30p", "tmars_top30to40p"]


def _preset(variant):
    from fmlab.exceptions import DataUnavailableError
    from fmlab.testing import require_or_skip

    try:
        return tmars_preset(variant)
    except DataUnavailableError as exc:
        require_or_skip(f"T-MARS parameter file missing: {exc}")


@pytest.mark.parametrize("variant", ["utility", "data"])
def test_released_predictions_to_six_decimals(variant, reference):
    ref = reference["tmars_predictions"]
    law = _preset(variant)
    epochs = np.array(ref["epochs"], float)
    for pool, target in ref[variant].items():
        got = law.predict({"pool": [pool] * epochs.size, "samples_seen": epochs * 12.8e6})
        np.testing.assert_allclose(got, target, atol=ref["tolerance"]["abs"])


def test_partial_epoch(reference):
    r = reference["tmars_predictions"]["partial_epoch"]
    law = DataFilteringLaw(a=r["a"], d=r["d"]).set_fitted_params(
        {"a": r["a"], "d": r["d"], "b": {"p": r["b"]}, "tau": {"p": r["tau"]}})
    got = law.predict({"pool": ["p"], "samples_seen": [r["samples_seen"]]})[0]
    assert got == pytest.approx(r["error"], abs=1e-6)


def test_d_placement_only_matters_after_repeats():
    inside = _preset("utility")
    outside = tmars_preset("utility", d_placement="outside")
    one = {"pool": ["tmars_top30to40p"], "samples_seen": [12.8e6]}
    four = {"pool": ["tmars_top30to40p"], "samples_seen": [4 * 12.8e6]}
    assert inside.predict(one)[0] == pytest.approx(outside.predict(one)[0], abs=1e-12)
    # released quirk: repeats shrink d too when it sits inside the product
    assert outside.predict(four)[0] > inside.predict(four)[0] > 0.1


def test_a_mix_of_one_pool_is_the_pool():
    law = _preset("utility")
    n = np.array([10e6, 40e6, 300e6])
    np.testing.assert_allclose(mixture_error(law, ["tmars_top0to10p"], n),
                               law.predict({"pool": ["tmars_top0to10p"] * 3, "samples_seen": n}))


def test_best_pool_shifts_to_larger_pools_as_compute_grows():
    law = _preset("utility")
    plan = plan_pools(law, [32e6, 128e6, 640e6, 5e9], pools=POOLS4)
    sizes = [len(plan.mixes[plan.candidates.index(b)]) for b in plan.best]
    assert sizes[0] == 1 and sizes[-1] > 1 and sizes == sorted(sizes)
    scaled = plan_pools(law, [5e9], pools=POOLS4, tau_scaling="by_pool_count")
    assert not np.allclose(scaled.errors[1:, 0], plan.errors[1:, -1])


@pytest.mark.parametrize("variant", ["utility", "data"])
def test_fit_recovers_synthetic_pools(variant):
    truth = {"a": 0.025, "d": 0.1, "b": {"hq": -0.16, "lq": -0.09}, "tau": {"hq": 5.0, "lq": 2.0}}
    gen = DataFilteringLaw(variant=variant).set_fitted_params(truth)
    n = np.geomspace(5e6, 12.8e6 * 12, 25)
    X = {"pool": ["hq"] * 25 + ["lq"] * 25, "samples_seen": np.concatenate([n, n])}
    y = gen.predict(X)
    law = DataFilteringLaw(variant=variant, n_starts=300).fit(X, y)
    assert law.params_.a == pytest.approx(0.025, rel=1e-3)
    assert law.params_.b["hq"] == pytest.approx(-0.16, rel=1e-3)
    assert law.params_.tau["lq"] == pytest.approx(2.0, rel=1e-2)


def test_bad_input():
    law = _preset("utility")
    with pytest.raises(ValueError, match="Unknown pool 'nope'"):
        law.predict({"pool": ["nope"], "samples_seen": [1e6]})
    with pytest.raises(ValueError, match="needs the column"):
        law.predict({"pool": ["tmars_top0to10p"], "n": [1e6]})
    with pytest.raises(ValueError, match="finite positive"):
        law.predict({"pool": ["tmars_top0to10p"], "samples_seen": [-1.0]})
    with pytest.raises(ValueError, match="Invalid tau_scaling"):
        plan_pools(law, [1e8], tau_scaling="double")
    with pytest.raises(ValueError, match="Invalid variant"):
        DataFilteringLaw(variant="quality").fit({"pool": ["a"] * 5, "samples_seen": [1, 2, 3, 4, 5]},
                                                [0.9, 0.8, 0.7, 0.6, 0.5])
