"""Contract suites for fitted objects: :func:`check_law` and :func:`check_ood_estimator`.

Both run the clauses every :class:`fmlab.base.BaseEstimator` owes (scikit-learn's structural checks,
``fit`` returns ``self``, not-fitted errors, idempotent fits, ``clone``), then the clauses of their
own kind. A later estimator kind (reliance metrics, ...) adds ``check_<kind>`` here the same way:
a function that builds example data and calls :func:`_check_estimator_clauses` with how to fit
and what to compare.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fmlab.testing._require import _require

__all__ = ["STRUCTURAL_CHECKS", "check_law", "check_ood_estimator", "make_law_runs"]


#: Names of scikit-learn's estimator checks every fmlab estimator passes. The generic data checks
#: of ``check_estimator`` feed random matrices of any width, zeros and negative values; fmlab's
#: estimators have a fixed input schema (named positive features, ensembles of probabilities), so
#: those fail by design and the kind-specific clauses below replace them.
STRUCTURAL_CHECKS: tuple[str, ...] = (
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
)


def _structural_checks() -> list[Callable[[str, Any], None]]:
    from sklearn.utils import estimator_checks as ec

    return [getattr(ec, name) for name in STRUCTURAL_CHECKS]


def _instance(obj: Any, kind: type) -> Any:
    if isinstance(obj, type):
        if not issubclass(obj, kind):
            raise TypeError(f"Expected a {kind.__name__} subclass or instance; got {obj!r}.")
        return obj()
    if not isinstance(obj, kind):
        raise TypeError(
            f"Expected a {kind.__name__} subclass or instance; got {type(obj).__name__}."
        )
    return obj


def _check_estimator_clauses(
    est: Any,
    fit: Callable[[Any], Any],
    output: Callable[[Any], np.ndarray],
    *,
    fitted_attr: str,
) -> Any:
    """The clauses every fmlab estimator owes; returns a fitted clone of ``est``.

    Args:
        est: An unfitted estimator (not modified).
        fit: Fits an estimator on the example data and returns what ``fit`` returned.
        output: The fitted result to compare across fits, e.g. ``lambda e: e.ood_accuracy_``.
        fitted_attr: An attribute that exists only after ``fit``.
    """
    from sklearn.base import clone

    from fmlab.base import BaseEstimator
    from fmlab.exceptions import NotFittedError

    name = type(est).__name__
    _require(
        isinstance(est, BaseEstimator),
        f"{name} must derive from fmlab.base.BaseEstimator (scikit-learn's BaseEstimator with "
        "fmlab's parameter hook and not-fitted errors).",
    )
    for check in _structural_checks():
        check(name, clone(est))
    params = est.get_params()
    for key, value in params.items():
        _require(
            getattr(est, key) is value,
            f"{name}.__init__ must store the argument {key!r} unchanged as self.{key}.",
        )
    fresh = clone(est)
    try:
        getattr(fresh, fitted_attr)
    except NotFittedError as exc:
        _require("not fitted" in str(exc), f"{name}'s not-fitted message must say so: {exc}")
    else:
        raise AssertionError(f"{name}.{fitted_attr} must raise NotFittedError before fit().")
    try:
        fresh.set_params(not_a_parameter_of_this_estimator=1)
    except ValueError:
        pass
    else:
        raise AssertionError(f"{name}.set_params must reject unknown parameter names.")
    returned = fit(fresh)
    _require(returned is fresh, f"{name}.fit must return self; got {type(returned).__name__}.")
    first = np.array(output(fresh), copy=True)
    fit(fresh)
    np.testing.assert_allclose(
        output(fresh),
        first,
        rtol=1e-12,
        atol=0,
        err_msg=f"Fitting {name} twice on the same data must give the same result.",
    )
    twin = clone(fresh)
    _require(twin.get_params().keys() == params.keys(), f"clone({name}) must keep the parameters.")
    _require(fitted_attr not in vars(twin), f"clone({name}) must not carry the fit over.")
    np.testing.assert_allclose(
        output(fit(twin)),
        first,
        rtol=1e-12,
        err_msg=f"A clone of {name} must fit to the same result.",
    )
    return fresh


# -- laws ---------------------------------------------------------------------------------------


def make_law_runs(
    feature_names: Sequence[str], n_runs: int = 40, random_state: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Synthetic runs ``(X as a dict of columns, y)`` for a law with these features.

    Knows the features of fmlab's laws (``n_params``, ``n_tokens``, ``*_bits``, ``post_bits``,
    ``pool``, ``samples_seen``, ``pool_size``); ``y`` is a smooth Chinchilla-like loss (an error
    in (0, 1) for pool features). A law with other features passes its own ``X, y`` to
    :func:`check_law`.
    """
    rng = np.random.default_rng(random_state)
    feats = list(feature_names)
    known = {"n_params", "n_tokens", "pool", "samples_seen", "pool_size"}
    unknown = [f for f in feats if f not in known and not f.endswith("_bits")]
    if unknown:
        raise ValueError(
            f"make_law_runs does not know the feature(s) {unknown}; pass example "
            "runs to check_law(law, X, y) instead."
        )
    X: dict[str, np.ndarray] = {}
    if "pool" in feats:
        pools = np.array(["p0", "p1", "p2"])[np.arange(n_runs) % 3]
        seen = np.exp(rng.uniform(np.log(2e6), np.log(2e8), n_runs))
        X["pool"] = pools
        X["samples_seen"] = seen
        if "pool_size" in feats:
            X["pool_size"] = np.where(np.arange(n_runs) % 2, 12.8e6, 25.6e6)
        b = np.array([-0.05, -0.1, -0.15])[np.arange(n_runs) % 3]
        return X, 0.1 + 0.8 * (seen / 1e6) ** b
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n_runs))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n_runs))
    X["n_params"], X["n_tokens"] = n, d
    y = 1.8 + 400.0 / n**0.34 + 410.0 / d**0.28
    train_bits = [f for f in feats if f.endswith("_bits") and f != "post_bits"]
    lowest = np.full(n_runs, 16.0)
    for f in train_bits:
        X[f] = rng.integers(4, 17, n_runs).astype(float)
        lowest = np.minimum(lowest, X[f])
        y = y + 0.5 * np.exp(-X[f] / 2.0)
    if "post_bits" in feats:
        X["post_bits"] = np.floor(rng.uniform(3, lowest + 1)).clip(3, lowest)
        y = y + 0.3 * np.exp(-X["post_bits"] / 1.5)
    return {f: X[f] for f in feats if f in X}, y


def check_law(law: Any, X: Any = None, y: Any = None) -> None:
    """Check that a scaling law keeps fmlab's law contract.

    Clauses: it is a :class:`fmlab.base.BaseEstimator` and passes scikit-learn's structural
    checks (:data:`STRUCTURAL_CHECKS`); ``__init__`` only stores its arguments; ``predict`` and
    fitted attributes raise ``NotFittedError`` before ``fit``; ``fit`` returns ``self``, sets
    ``params_`` (the law's ``params_class``) and is idempotent; a clone fits the same;
    ``predict`` gives one finite positive value per run; ``to_dict`` is JSON and re-creates a law
    that predicts the same.

    Args:
        law: A :class:`fmlab.scaling.BaseLaw` subclass or (unfitted) instance; not modified.
        X, y: Example runs; by default :func:`make_law_runs` for the law's features.

    Raises:
        AssertionError: naming the first clause the law breaks.

    Example:
        >>> from fmlab.scaling import ChinchillaLaw
        >>> from fmlab.testing import check_law
        >>> check_law(ChinchillaLaw(n_starts=16))
    """
    from sklearn.base import clone

    from fmlab.exceptions import ConvergenceWarning, NotFittedError
    from fmlab.scaling import BaseLaw

    law = clone(_instance(law, BaseLaw))
    name = type(law).__name__
    if X is None:
        X, y = make_law_runs(law.feature_names)
    if "n_starts" in law.get_params() and (law.n_starts is None or law.n_starts > 16):
        law.set_params(n_starts=16)  # the contract does not need the full start grid
    try:
        law.predict(X)
    except NotFittedError:
        pass
    else:
        raise AssertionError(f"{name}.predict must raise NotFittedError before fit().")
    with warnings.catch_warnings():  # few starts on synthetic runs: convergence is not the point
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = _check_estimator_clauses(
            law, lambda e: e.fit(X, y), lambda e: e.predict(X), fitted_attr="params_"
        )
    _require(
        isinstance(fitted.params_, fitted.params_class),
        f"{name}.params_ must be a {fitted.params_class.__name__}.",
    )
    pred = np.asarray(fitted.predict(X))
    n = len(np.asarray(y))
    _require(pred.shape == (n,), f"{name}.predict must return shape ({n},); got {pred.shape}.")
    _require(
        np.isfinite(pred).all() and (pred > 0).all(),
        f"{name}.predict must give finite positive losses.",
    )
    saved = json.loads(json.dumps(fitted.to_dict()))
    again = type(fitted)(**saved["init"]).set_fitted_params(saved["params"])
    np.testing.assert_allclose(
        again.predict(X),
        pred,
        rtol=1e-9,
        err_msg=f"{name}: a law re-created from to_dict() must predict the same.",
    )


# -- OOD estimators ----------------------------------------------------------------------------


def check_ood_estimator(estimator: Any, data: Any = None) -> None:
    """Check that an OOD accuracy estimator keeps fmlab's estimator contract.

    Clauses: the common estimator clauses (see :func:`check_law`); ``fit(id_probs, id_labels,
    ood_probs)`` sets ``ood_accuracy_`` and ``id_accuracy_`` of shape ``(n_models,)`` in [0, 1];
    ``id_accuracy_`` is the measured ID accuracy; permuting the models permutes the predictions.

    Args:
        estimator: A :class:`fmlab.ood.BaseOODEstimator` subclass or (unfitted) instance.
        data: Anything with ``id_probs``, ``id_labels``, ``ood_probs`` (default: a synthetic
            ensemble of 8 models, :func:`fmlab.ood.make_synthetic_ensemble`).

    Raises:
        AssertionError: naming the first clause the estimator breaks.

    Example:
        >>> from fmlab.ood import ALineD
        >>> from fmlab.testing import check_ood_estimator
        >>> check_ood_estimator(ALineD)
    """
    from sklearn.base import clone

    from fmlab.exceptions import ReliabilityWarning
    from fmlab.ood import BaseOODEstimator, make_synthetic_ensemble

    est = clone(_instance(estimator, BaseOODEstimator))
    name = type(est).__name__
    if data is None:
        data = make_synthetic_ensemble(n_models=8, n_id=400, n_ood=400, random_state=0)
    args = (data.id_probs, data.id_labels, data.ood_probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReliabilityWarning)
        fitted = _check_estimator_clauses(
            est, lambda e: e.fit(*args), lambda e: e.ood_accuracy_, fitted_attr="ood_accuracy_"
        )
        m = np.asarray(data.id_probs).shape[0]
        for attr in ("ood_accuracy_", "id_accuracy_"):
            v = np.asarray(getattr(fitted, attr))
            _require(v.shape == (m,), f"{name}.{attr} must have shape ({m},); got {v.shape}.")
            _require(((v >= 0) & (v <= 1)).all(), f"{name}.{attr} must lie in [0, 1].")
        probs = np.asarray(data.id_probs)
        measured = (probs.argmax(-1) if probs.ndim == 3 else probs) == np.asarray(data.id_labels)
        np.testing.assert_allclose(
            fitted.id_accuracy_,
            measured.mean(axis=1),
            atol=1e-12,
            err_msg=f"{name}.id_accuracy_ must be the measured accuracy.",
        )
        perm = np.random.default_rng(0).permutation(m)
        permuted = clone(est).fit(args[0][perm], args[1], args[2][perm]).ood_accuracy_
    np.testing.assert_allclose(
        permuted,
        fitted.ood_accuracy_[perm],
        rtol=1e-9,
        atol=1e-12,
        err_msg=f"{name}: permuting the models must permute the predictions.",
    )
