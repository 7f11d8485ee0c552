"""Precision-aware laws: limits, monotonicity, domain errors, planners and recovery."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.scaling import (
    ChinchillaLaw,
    PrecisionLaw,
    PTQLaw,
    UnifiedPrecisionLaw,
    critical_data_size,
    optimal_precision,
    optimal_precision_tied,
    parameter_recovery,
    precision_curve,
)

BASE = {"E": 1.8, "A": 300.0, "alpha": 0.33, "B": 1500.0, "beta": 0.33}
GAMMAS = {"gamma_w": 3.0, "gamma_a": 4.0, "gamma_kv": 2.0}
PTQ = {"C_T": 0.05, "gamma_D": 0.5, "gamma_N": 0.5, "gamma_post": 1.5}
UNI = {**BASE, **GAMMAS, **PTQ, "C_w": 1.0, "C_a": 1.0, "C_kv": 1.0}
N = np.array([30e6, 60e6, 110e6, 220e6])
D = np.array([1.5e9, 3e9, 6e9, 13e9, 26e9])


def test_effective_parameters_tend_to_n_at_high_precision():
    chin = ChinchillaLaw().set_fitted_params(BASE)
    prec = PrecisionLaw().set_fitted_params({**BASE, **GAMMAS})
    X = np.array([[1e8, 2e9, np.inf, np.inf, np.inf], [1e8, 2e9, 200.0, 200.0, 200.0]])
    np.testing.assert_allclose(prec.predict(X), chin.predict(X[:, :2]), rtol=1e-12)
    low = prec.predict([[1e8, 2e9, 3.0, 16.0, 16.0], [1e8, 2e9, 16.0, 3.0, 16.0]])
    assert (low > chin.predict([[1e8, 2e9]])).all()


def test_ptq_degradation_is_monotone():
    law = PTQLaw().set_fitted_params({**BASE, **PTQ})

    def delta(n, d, p):
        return law.predict([[n, d, p]])[0] - law.predict([[n, d, np.inf]])[0]

    assert delta(1e8, 2e10, 4) > delta(1e8, 2e9, 4) > 0  # grows with data
    assert delta(1e8, 2e10, 4) > delta(1e9, 2e10, 4)  # falls with model size
    assert delta(1e8, 2e10, 3) > delta(1e8, 2e10, 4) > delta(1e8, 2e10, 8)  # falls with bits


def test_unified_bracket_is_zero_when_trained_at_the_ptq_precision():
    uni = UnifiedPrecisionLaw().set_fitted_params(UNI)
    prec = PrecisionLaw().set_fitted_params({**BASE, **GAMMAS})
    X = np.array([[1e8, 2e10, 4.0, 4.0, 4.0, 4.0]])
    np.testing.assert_allclose(uni.predict(X), prec.predict(X[:, :5]), rtol=1e-12)
    hi = uni.predict([[1e8, 2e10, 16.0, 16.0, 16.0, 4.0]])[0]
    assert hi > prec.predict([[1e8, 2e10, 16.0, 16.0, 16.0]])[0]


def test_unified_domain_error_and_clamp():
    X = np.array([[1e8, 2e10, 3.0, 8.0, 8.0, 4.0]])
    law = UnifiedPrecisionLaw().set_fitted_params(UNI)
    with pytest.raises(ValueError, match=r"w_bits \(3\) is below post_bits \(4\)"):
        law.predict(X)
    clamp = UnifiedPrecisionLaw(below_post="clamp").set_fitted_params(UNI)
    assert np.isfinite(clamp.predict(X)).all()
    with pytest.raises(ValueError, match="positive bit widths"):
        law.predict([[1e8, 2e10, 0.0, 8.0, 8.0, 4.0]])


def test_critical_data_size_is_the_argmin_of_the_post_quantization_loss():
    law = PTQLaw().set_fitted_params({**BASE, **PTQ})
    d_star = critical_data_size(law, 1e8, 4)
    grid = np.geomspace(d_star / 30, d_star * 30, 2001)
    loss = law.predict(np.column_stack([np.full_like(grid, 1e8), grid, np.full_like(grid, 4.0)]))
    assert grid[np.argmin(loss)] == pytest.approx(d_star, rel=0.01)
    assert critical_data_size(law, 1e8, 6) > d_star  # more bits: quantization hurts later
    uni = UnifiedPrecisionLaw().set_fitted_params(UNI)
    assert np.isfinite(critical_data_size(uni, 1e8, 4, train_bits=16))


def test_optimal_precision_tied_constant(reference):
    ref = reference["optimal_precision_tied"]
    assert optimal_precision_tied(5.0) / 5.0 == pytest.approx(ref["ratio"],
                                                              abs=ref["tolerance"]["abs"])


def test_compute_optimal_precision_is_budget_independent_with_everything_free():
    law = PrecisionLaw().set_fitted_params({**BASE, **GAMMAS})
    plans = [optimal_precision(law, c) for c in (1e19, 1e21, 1e23)]
    root = optimal_precision_tied(tuple(GAMMAS.values()))
    for p in plans:
        assert p.bits == pytest.approx(root, abs=1e-3)
    fixed = [optimal_precision(law, c, n_params=1e8).bits for c in (1e19, 1e21, 1e23)]
    assert fixed[0] < fixed[1] < fixed[2]  # with N fixed the optimum rises with data


def test_precision_curve_shapes():
    law = UnifiedPrecisionLaw().set_fitted_params(UNI)
    bits = np.array([4.0, 6.0, 8.0, 16.0])
    train = precision_curve(law, 1e8, 2e10, bits, kind="train")
    post = precision_curve(law, 1e8, 2e10, bits, kind="post", train_bits=16)
    assert np.all(np.diff(train) < 0) and np.all(np.diff(post) < 0)


def _ptq_runs():
    return np.array([(n, d, p) for n in N for d in D for p in (3.0, 4.0, 6.0, 8.0, np.inf)])


def test_ptq_law_recovers_parameters_from_synthetic_runs():
    from fmlab.scaling import simulate_runs

    X = _ptq_runs()
    y = simulate_runs(PTQLaw(), {**BASE, **PTQ}, X, noise=0.0)
    law = PTQLaw(n_starts=300).fit(X, y)
    assert law.diagnostics_.objective < 1e-12
    for k in ("E", "gamma_D", "gamma_N", "gamma_post"):
        assert getattr(law.params_, k) == pytest.approx({**BASE, **PTQ}[k], rel=1e-3)


def test_recovery_reports_bias_and_coverage():
    X = _ptq_runs()
    res = parameter_recovery(lambda: PTQLaw(n_starts=60, n_polish=2, n_bootstrap=40),
                             {**BASE, **PTQ}, X, n_seeds=2, noise=0.003)
    assert set(res.coverage) == set(BASE) | set(PTQ)
    assert all(0.0 <= c <= 1.0 for c in res.coverage.values())
    assert abs(res.relative_bias["gamma_post"]) < 0.3


@pytest.mark.slow
def test_recovery_coverage_over_many_seeds():
    X = _ptq_runs()
    res = parameter_recovery(lambda: PTQLaw(n_starts=200, n_bootstrap=200),
                             {**BASE, **PTQ}, X, n_seeds=30, noise=0.005)
    for k in ("E", "gamma_D", "gamma_N", "gamma_post"):
        assert abs(res.relative_bias[k]) < 0.1
        assert res.coverage[k] >= 0.7
