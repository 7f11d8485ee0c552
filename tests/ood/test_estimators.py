"""Estimator behaviour on synthetic ensembles with known OOD accuracy, plus the sklearn contract."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from fmlab.exceptions import ReliabilityWarning
from fmlab.ood import (
    ALineD,
    ALineS,
    AverageConfidence,
    AverageThresholdedConfidence,
    DifferenceOfConfidences,
    NaiveAgreement,
    create_estimator,
    diagnose_lines,
    fit_probit_line,
    list_estimators,
    make_synthetic_ensemble,
    pairwise_agreement,
    prediction_errors,
    probit,
)
from fmlab.ood._estimators import solve_pairwise_system

ALL = [ALineD, ALineS, NaiveAgreement, AverageConfidence, DifferenceOfConfidences,
       AverageThresholdedConfidence]


@pytest.fixture(scope="module")
def benign():
    return make_synthetic_ensemble(10, random_state=0)


@pytest.fixture(scope="module")
def failing():
    return make_synthetic_ensemble(10, on_the_line=False, random_state=0)


# -- numerical core --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["onehot", "compare", "auto"])
@pytest.mark.parametrize("k", [2, 7, 300])
def test_pairwise_agreement_matches_materialised_tensor(method, k):
    rng = np.random.default_rng(k)
    preds = rng.integers(0, k, size=(6, 517))
    preds[3] = preds[1]  # an identical pair
    ref = (preds[:, None, :] == preds[None, :, :]).mean(-1)
    got = pairwise_agreement(preds, k, method=method, chunk=100)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    np.testing.assert_array_equal(pairwise_agreement(preds, k, method=method, chunk=100,
                                                     n_jobs=3), got)
    assert got[1, 3] == 1.0


def test_probit_clips_with_documented_eps():
    z = probit([0.0, 0.5, 1.0], eps=1e-3)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z, [-3.090232306, 0.0, 3.090232306], atol=1e-8)


def test_fit_probit_line_recovers_line_and_flags_degenerate_x():
    x = np.linspace(-1, 2, 20)
    fit = fit_probit_line(x, 0.7 * x - 0.3)
    assert fit.slope == pytest.approx(0.7) and fit.intercept == pytest.approx(-0.3)
    assert fit.r2 == pytest.approx(1.0)
    flat = fit_probit_line(np.ones(5), np.arange(5.0))
    assert flat.r2 == 0.0 and flat.x_range == 0.0


@pytest.mark.parametrize("n", [3, 4, 9])
def test_closed_form_pairwise_solution_equals_lstsq(n):
    rng = np.random.default_rng(n)
    i, j = np.triu_indices(n, k=1)
    y = rng.normal(size=i.size)
    a = np.zeros((i.size, n))
    a[np.arange(i.size), i] = 0.5
    a[np.arange(i.size), j] = 0.5
    assert np.linalg.matrix_rank(a) == n  # full column rank for n >= 3
    ref = np.linalg.lstsq(a, y, rcond=None)[0]
    np.testing.assert_allclose(solve_pairwise_system(y, i, j, n), ref, atol=1e-10)


def test_pairwise_system_rank_deficient_for_two_models():
    a = np.array([[0.5, 0.5]])
    assert np.linalg.matrix_rank(a) == 1
    with pytest.raises(ValueError, match="n >= 3"):
        solve_pairwise_system(np.zeros(1), np.array([0]), np.array([1]), 2)


# -- behaviour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ALineD, ALineS])
def test_aline_recovers_ood_accuracy_where_agl_holds(cls, benign):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReliabilityWarning)
        est = cls().fit(benign.id_probs, benign.id_labels, benign.ood_probs)
    err = prediction_errors(est.ood_accuracy_, benign.ood_accuracy)
    # Sampling noise on 2,000 examples is ~1 point; 4 points is a loose bound for a shift
    # that drops accuracy by ~15 points.
    assert err["mae"] < 4.0
    assert est.reliable_ and est.agreement_line_.r2 > 0.9
    # ALine beats the confidence baselines on this shift (they do not see agreement)
    for base in (AverageConfidence, DifferenceOfConfidences, NaiveAgreement):
        other = base().fit(benign.id_probs, benign.id_labels, benign.ood_probs)
        assert err["mae"] < prediction_errors(other.ood_accuracy_, benign.ood_accuracy)["mae"]


def test_agreement_and_accuracy_slopes_match_on_benign_shift(benign):
    d = diagnose_lines(benign.id_probs, benign.id_labels, benign.ood_probs, benign.ood_labels)
    assert d.accuracy_line.r2 > 0.9 and d.agreement_line.r2 > 0.9
    assert d.slope_gap < 0.15
    assert d.lines_match(slope_tol=0.15)


@pytest.mark.parametrize("cls", [ALineD, ALineS])
def test_failure_case_warns_and_reports_low_r2(cls, failing):
    with pytest.warns(ReliabilityWarning, match=r"not on a line.*R\^2"):
        est = cls().fit(failing.id_probs, failing.id_labels, failing.ood_probs)
    assert not est.reliable_
    assert est.agreement_line_.r2 < 0.6


@pytest.mark.parametrize("cls", ALL)
def test_predictions_equivariant_to_model_permutation(cls, benign):
    perm = np.random.default_rng(1).permutation(10)
    a = cls().fit(benign.id_probs, benign.id_labels, benign.ood_probs).ood_accuracy_
    b = cls().fit(benign.id_probs[perm], benign.id_labels, benign.ood_probs[perm]).ood_accuracy_
    np.testing.assert_allclose(b, a[perm], atol=1e-12)


def test_aline_accepts_argmax_predictions(benign):
    a = ALineD().fit(benign.id_probs, benign.id_labels, benign.ood_probs).ood_accuracy_
    b = ALineD().fit(benign.id_probs.argmax(-1), benign.id_labels,
                     benign.ood_probs.argmax(-1)).ood_accuracy_
    np.testing.assert_allclose(a, b)


def test_atc_threshold_definition():
    # one model, 10 ID examples, 3 wrong: 3 ID scores must lie below the threshold
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(1, 10))
    labels = probs[0].argmax(-1).copy()
    wrong = np.argsort(probs[0].max(-1))[:3]
    labels[wrong] = (labels[wrong] + 1) % 3
    est = AverageThresholdedConfidence().fit(probs, labels, probs)
    scores = probs[0].max(-1)
    assert (scores < est.threshold_[0]).sum() == 3
    assert est.ood_accuracy_[0] == pytest.approx(0.7)


def test_doc_and_ac_definitions(benign):
    ac = AverageConfidence().fit(benign.id_probs, benign.id_labels, benign.ood_probs)
    np.testing.assert_allclose(ac.ood_accuracy_, benign.ood_probs.max(-1).mean(1))
    doc = DifferenceOfConfidences().fit(benign.id_probs, benign.id_labels, benign.ood_probs)
    expect = ac.id_accuracy_ - (benign.id_probs.max(-1).mean(1) - benign.ood_probs.max(-1).mean(1))
    np.testing.assert_allclose(doc.ood_accuracy_, np.clip(expect, 0, 1))


def test_naive_agreement_definition(benign):
    est = NaiveAgreement().fit(benign.id_probs, benign.id_labels, benign.ood_probs)
    p = benign.ood_probs.argmax(-1)
    ref = [np.mean([(p[i] == p[j]).mean() for j in range(10) if j != i]) for i in range(10)]
    np.testing.assert_allclose(est.ood_accuracy_, ref)


def test_identical_models_clip_and_warn():
    ens = make_synthetic_ensemble(4, random_state=3)
    same = np.repeat(ens.id_probs[:1], 4, axis=0)
    with pytest.warns(ReliabilityWarning, match="clipped"):
        est = ALineD(eps=1e-3).fit(same, ens.id_labels, np.repeat(ens.ood_probs[:1], 4, axis=0))
    assert np.isfinite(est.ood_accuracy_).all()
    assert est.eps_id_ == 1e-3 and est.n_clipped_ > 0


# -- contract ---------------------------------------------------------------------------------


def test_registry():
    assert list_estimators("aline*") == ["aline-d", "aline-s"]
    assert isinstance(create_estimator("atc", score="negative_entropy"),
                      AverageThresholdedConfidence)
    with pytest.raises(ValueError, match="Did you mean: aline-d"):
        create_estimator("aline_d")
    with pytest.raises(ValueError, match="Valid parameters are"):
        create_estimator("aline-d", epsilon=0.1)


# -- bad input (table) ------------------------------------------------------------------------


def _good():
    ens = make_synthetic_ensemble(4, n_id=50, n_ood=40, random_state=0)
    return {"id_probs": ens.id_probs, "id_labels": ens.id_labels, "ood_probs": ens.ood_probs}


def _with(**changes):
    kw = _good()
    for key, fn in changes.items():
        kw[key] = fn(kw[key])
    return kw


BAD_INPUT = [
    ("two_models", ALineD(), _with(id_probs=lambda a: a[:2], ood_probs=lambda a: a[:2]),
     ValueError, r"at least 3 models.*got 2.*full rank"),
    ("one_model_agreement", NaiveAgreement(), _with(id_probs=lambda a: a[:1],
                                                     ood_probs=lambda a: a[:1]),
     ValueError, r"at least 2 models"),
    ("model_mismatch", ALineS(), _with(ood_probs=lambda a: a[:3]), ValueError,
     r"same models.*4 models on ID data and 3 on OOD"),
    ("class_mismatch", AverageConfidence(),
     _with(ood_probs=lambda a: np.concatenate([a, np.zeros(a.shape[:2] + (1,))], -1)),
     ValueError, r"same number of classes.*5 and 6"),
    ("label_count", ALineD(), _with(id_labels=lambda y: y[:-1]), ValueError,
     r"one label per ID example.*50 examples.*49"),
    ("label_range", ALineD(), _with(id_labels=lambda y: y + 10), ValueError,
     r"class indices in \[0, 4\]"),
    ("float_labels", ALineD(), _with(id_labels=lambda y: y + 0.5), ValueError,
     r"'id_labels'.*integer"),
    ("not_normalised", ALineD(), _with(ood_probs=lambda a: a * 1.5), ValueError,
     r"must hold probabilities in \[0, 1\]|must sum to 1"),
    ("logits", AverageThresholdedConfidence(), _with(id_probs=lambda a: a * 0.5),
     ValueError, r"must sum to 1 .*atol.*not logits"),
    ("nan", ALineD(), _with(id_probs=lambda a: np.where(a > 0.99, np.nan, a)), ValueError,
     r"finite"),
    ("wrong_ndim", ALineD(), _with(id_probs=lambda a: a[0, 0]), ValueError,
     r"3-D probabilities.*2-D\s+integer predictions.*Got shape \(5,\)"),
    ("float_2d", ALineD(), _with(id_probs=lambda a: a[:, :, 0]), ValueError,
     r"argmax predictions.*integer dtype"),
    ("preds_for_confidence", AverageConfidence(),
     _with(id_probs=lambda a: a.argmax(-1), ood_probs=lambda a: a.argmax(-1)), ValueError,
     r"uses confidences.*3-D probabilities"),
    ("strings", ALineD(), _with(id_probs=lambda a: np.full(a.shape, "x")), TypeError,
     r"numeric array"),
    ("bad_eps", ALineD(eps=0.7), _good(), ValueError,
     r"'eps' parameter of ALineD must be a float in the range \(0, 0.5\). Got 0.7"),
    ("bad_min_r2", ALineS(min_r2=2.0), _good(), ValueError, r"'min_r2' parameter of ALineS"),
    ("bad_score", AverageThresholdedConfidence(score="entropy"), _good(), ValueError,
     r"Invalid score 'entropy'.*Valid options are"),
]


@pytest.mark.parametrize("case,est,kwargs,error,pattern", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(case, est, kwargs, error, pattern):
    with pytest.raises(error, match=re.compile(pattern, re.S)):
        est.fit(**kwargs)


def test_set_params_rejects_unknown():
    with pytest.raises(ValueError, match=r"Invalid parameter 'epsilon' for estimator ALineD"):
        ALineD().set_params(epsilon=1)
    assert ALineD().set_params(eps=0.01).eps == 0.01


@pytest.mark.parametrize("cls", [ALineD, ALineS, NaiveAgreement])
def test_threads_do_not_change_results(cls, benign):
    one = cls(n_jobs=1).fit(benign.id_probs, benign.id_labels, benign.ood_probs).ood_accuracy_
    two = cls(n_jobs=2).fit(benign.id_probs, benign.id_labels, benign.ood_probs).ood_accuracy_
    np.testing.assert_array_equal(one, two)
    with pytest.raises(ValueError, match="'n_jobs' parameter"):
        cls(n_jobs=0).fit(benign.id_probs, benign.id_labels, benign.ood_probs)
