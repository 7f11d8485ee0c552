"""ChinchillaLaw: the published replication, the estimator contract, planning and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from fmlab.exceptions import NotFittedError
from fmlab.scaling import ChinchillaLaw, ChinchillaParams, load_law

TRUE = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}


def _synthetic(noise=0.0, seed=0):
    n = np.repeat(np.geomspace(5e7, 1e10, 6), 6)
    d = np.tile(np.geomspace(1e9, 5e11, 6), 6)
    X = np.column_stack([n, d])
    y = ChinchillaLaw().set_fitted_params(TRUE).predict(X)
    return X, y * np.exp(noise * np.random.default_rng(seed).standard_normal(y.size))


def _check(value, target, tol):
    if "abs" in tol:
        assert abs(value - target) <= tol["abs"], (value, target, tol)
    else:
        assert abs(value - target) <= tol["rel"] * abs(target), (value, target, tol)


def test_reproduces_the_epoch_replication(epoch_runs, reference):
    ref = reference["chinchilla_epoch"]
    assert len(epoch_runs) == 240
    law = ChinchillaLaw().fit(epoch_runs[["n_params", "n_tokens"]], epoch_runs["loss"])
    assert law.diagnostics_.n_starts == ref["protocol"]["n_starts"]
    got = law.params_.to_dict() | {"objective": law.diagnostics_.objective}
    for key, target in ref["values"].items():
        _check(got[key], target, ref["tolerance"][key])
    assert law.diagnostics_.converged


def test_published_hoffmann_constants_score_worse(epoch_runs, reference):
    ref = reference["hoffmann_published_objective"]
    params = {k: v for k, v in ref["values"].items() if k != "objective"}
    obj = ChinchillaLaw().objective(epoch_runs[["n_params", "n_tokens"]], epoch_runs["loss"],
                                    params)
    _check(obj, ref["values"]["objective"], ref["tolerance"]["objective"])


def test_recovers_known_parameters_without_noise():
    X, y = _synthetic()
    law = ChinchillaLaw(n_starts=400).fit(X, y)
    for k, v in TRUE.items():
        assert getattr(law.params_, k) == pytest.approx(v, rel=1e-4)
    assert law.diagnostics_.r2 > 0.999999


def test_estimator_contract():
    X, y = _synthetic(noise=0.005)
    law = ChinchillaLaw(n_starts=200, n_bootstrap=50, random_state=3)
    assert law.fit(X, y) is law
    assert isinstance(law.params_, ChinchillaParams)
    twin = clone(law)
    assert twin.get_params() == law.get_params() and not hasattr(twin, "params_")
    again = clone(law).fit(X, y)
    assert again.params_ == law.params_  # seeded: identical
    assert again.intervals_ == law.intervals_
    lo, hi = law.intervals_["alpha"]
    assert lo <= law.params_.alpha <= hi
    assert law.score(X, y) > 0.99
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ChinchillaLaw().predict(X)


def test_sklearn_grid_search_and_pandas_input():
    import pandas as pd
    from sklearn.model_selection import GridSearchCV

    X, y = _synthetic(noise=0.005)
    frame = pd.DataFrame({"N": X[:, 0], "D": X[:, 1]})
    law = ChinchillaLaw(n_starts=100, columns={"n_params": "N", "n_tokens": "D"})
    search = GridSearchCV(law, {"loss": ["huber", "squared"]}, cv=3).fit(frame, y)
    assert search.best_estimator_.params_.alpha == pytest.approx(0.34, abs=0.05)
    assert list(search.best_estimator_.feature_names_in_) == ["N", "D"]


def test_compute_optimal_is_optimal_on_the_budget_line():
    law = ChinchillaLaw().set_fitted_params(TRUE)
    plan = law.compute_optimal(1e22)
    assert 6 * plan.n_params * plan.n_tokens == pytest.approx(1e22)
    for f in (0.8, 1.25):
        n = plan.n_params * f
        assert law.predict([[n, 1e22 / (6 * n)]])[0] > plan.loss


def test_validation_split_and_save_roundtrip(tmp_path):
    X, y = _synthetic(noise=0.005)
    law = ChinchillaLaw(n_starts=200, validation_fraction=0.2, validation="extrapolate").fit(X, y)
    assert law.diagnostics_.n_heldout == 7 and law.diagnostics_.heldout_rmse_log < 0.02
    law.save(tmp_path / "law.json")
    back = load_law(tmp_path / "law.json")
    np.testing.assert_allclose(back.predict(X), law.predict(X), rtol=1e-12)


def test_tied_exponents():
    X, y = _synthetic()
    law = ChinchillaLaw(n_starts=300, tie_exponents=True).fit(X, y)
    assert law.params_.alpha == law.params_.beta


BAD = [
    ({"loss": "l1"}, ValueError, r"Invalid loss 'l1'.*Valid options"),
    ({"huber_delta": -1.0}, ValueError, r"'huber_delta' parameter of ChinchillaLaw"),
    ({"n_starts": 0}, ValueError, r"'n_starts'"),
    ({"grid": {"gamma": [1]}}, ValueError, r"unknown coordinate.*gamma"),
    ({"validation_fraction": 1.0}, ValueError, r"validation_fraction"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD)
def test_bad_hyperparameters(kwargs, error, match):
    X, y = _synthetic()
    with pytest.raises(error, match=match):
        ChinchillaLaw(**kwargs).fit(X, y)


def test_bad_data():
    import pandas as pd

    X, y = _synthetic()
    law = ChinchillaLaw(n_starts=20)
    with pytest.raises(ValueError, match=r"needs the column\(s\) 'n_tokens'.*did you mean"):
        law.fit(pd.DataFrame({"n_params": X[:, 0], "n_token": X[:, 1]}), y)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/inf.*n_tokens"):
        law.fit(bad, y)
    bad = X.copy()
    bad[0, 0] = -5
    with pytest.raises(ValueError, match="'n_params' must be positive"):
        law.fit(bad, y)
    with pytest.raises(ValueError, match="5 free parameters but got only 4"):
        law.fit(X[:4], y[:4])
    with pytest.raises(ValueError, match="y has 35 values but X has 36"):
        law.fit(X, y[:-1])
    with pytest.raises(ValueError, match="must be positive to fit in log space"):
        law.fit(X, -y)
    with pytest.raises(ValueError, match="must have 2 column"):
        law.fit(np.column_stack([X, X[:, :1]]), y)


def test_nonconvergence_warns():
    from fmlab.exceptions import ConvergenceWarning

    X, y = _synthetic(noise=0.01)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        ChinchillaLaw(n_starts=5, max_iter=1, n_polish=1, grid={"alpha": [2.0]}).fit(X, y)
