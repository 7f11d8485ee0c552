"""OOD accuracy estimators with the scikit-learn contract.

Every estimator follows one shape::

    est = ALineD().fit(id_probs, id_labels, ood_probs)   # returns est
    est.ood_accuracy_                                    # (n_models,) predicted OOD accuracy

``id_probs`` / ``ood_probs`` are an ensemble's softmax outputs, (n_models, n_examples, n_classes);
the agreement-based estimators (ALine-S, ALine-D, naive agreement) also accept integer argmax
predictions, (n_models, n_examples). The constructor only stores its arguments; ``fit`` validates
them, so ``get_params`` / ``set_params`` / ``sklearn.base.clone`` work (the base is
:class:`fmlab.base.BaseEstimator`, scikit-learn's).
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from fmlab._validation import check_option, check_real
from fmlab.base import BaseEstimator
from fmlab.exceptions import ReliabilityWarning
from fmlab.ood._agreement import (
    LineFit,
    accuracies,
    fit_probit_line,
    pairwise_agreement,
    probit,
    resolve_eps,
)
from fmlab.ood._inputs import EnsembleOutputs, check_ensemble_outputs

__all__ = [
    "ALineD",
    "ALineS",
    "AverageConfidence",
    "AverageThresholdedConfidence",
    "BaseOODEstimator",
    "DifferenceOfConfidences",
    "NaiveAgreement",
]


class BaseOODEstimator(BaseEstimator):
    """Base class of OOD accuracy estimators (an :class:`fmlab.base.BaseEstimator`).

    Contract (checked by :func:`fmlab.testing.check_ood_estimator` for every registered
    estimator):

    - ``__init__`` stores its keyword arguments unchanged as attributes of the same name; nothing
      is validated or computed there.
    - ``fit(id_probs, id_labels, ood_probs)`` validates parameters (:meth:`_check_params`) and
      inputs, sets attributes ending in ``_`` (at least ``ood_accuracy_`` and ``id_accuracy_``,
      both (n_models,)) and returns ``self``. Fitting twice on the same data gives the same
      result.
    - Reading a fitted attribute before ``fit`` raises :class:`~fmlab.exceptions.NotFittedError`.

    Subclasses implement ``_fit(data)`` and set ``min_models`` / ``needs_probs``.
    """

    min_models: ClassVar[int] = 1
    needs_probs: ClassVar[bool] = False
    _fitted_attr = "ood_accuracy_"
    _fit_call = "fit(id_probs, id_labels, ood_probs)"

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, id_probs: Any, id_labels: Any, ood_probs: Any) -> BaseOODEstimator:
        """Estimate every model's accuracy on the OOD data.

        Args:
            id_probs: Probabilities on labelled ID data, (n_models, n_id, n_classes); or integer
                argmax predictions (n_models, n_id) for estimators that need no confidences.
            id_labels: Integer ID labels, (n_id,).
            ood_probs: Probabilities (or predictions) on unlabelled OOD data, same models.

        Returns:
            ``self``, with ``ood_accuracy_`` (n_models,) and the estimator's diagnostics set.
        """
        self._check_params()
        data = check_ensemble_outputs(
            id_probs, id_labels, ood_probs, owner=type(self).__name__,
            min_models=self.min_models, need_probs=self.needs_probs,
            n_jobs=getattr(self, "n_jobs", None),
        )
        self.n_models_ = data.n_models
        self.n_classes_ = data.n_classes
        self.id_accuracy_ = accuracies(data.id_preds, data.id_labels)
        self.ood_accuracy_ = np.asarray(self._fit(data), dtype=float)
        return self

    def fit_predict(self, id_probs: Any, id_labels: Any, ood_probs: Any) -> np.ndarray:
        """``fit`` and return ``ood_accuracy_``."""
        return self.fit(id_probs, id_labels, ood_probs).ood_accuracy_

    @abc.abstractmethod
    def _fit(self, data: EnsembleOutputs) -> np.ndarray:
        """The estimated OOD accuracy of each model, ``(n_models,)``."""


def _check_n_jobs(n_jobs: Any, owner: str) -> None:
    if n_jobs is None or n_jobs == -1:
        return
    from fmlab._validation import check_int

    check_int(n_jobs, "n_jobs", owner=owner, low=1)


# ---------------------------------------------------------------------------------------------
# Agreement-on-the-line
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probits:
    """Probit coordinates of one ALine fit: pair indices ``(i, j)`` with i < j, the pairwise ID
    and OOD agreements ``(n_pairs,)`` and the ID accuracies ``(n_models,)``."""

    pairs: tuple[np.ndarray, np.ndarray]
    agr_id: np.ndarray
    agr_ood: np.ndarray
    acc_id: np.ndarray


class _ALineBase(BaseOODEstimator):
    """Shared fitting of ALine-S and ALine-D: agreements, probits and the agreement line."""

    min_models = 3
    _name: ClassVar[str] = "ALine"

    def __init__(self, *, eps: float | None = None, min_r2: float = 0.9,
                 n_jobs: int | None = None) -> None:
        self.eps = eps
        self.min_r2 = min_r2
        self.n_jobs = n_jobs

    def _check_params(self) -> None:
        owner = type(self).__name__
        if self.eps is not None:
            check_real(self.eps, "eps", owner=owner, low=0.0, high=0.5)
        check_real(self.min_r2, "min_r2", owner=owner, high=1.0, closed="right")
        _check_n_jobs(self.n_jobs, owner)

    def _agreement_fit(self, data: EnsembleOutputs) -> _Probits:
        """Fit the agreement line; return the probit coordinates the estimators solve with."""
        m = data.n_models
        n_id, n_ood = data.id_preds.shape[1], data.ood_preds.shape[1]
        self.eps_id_ = resolve_eps(self.eps, n_id)
        self.eps_ood_ = resolve_eps(self.eps, n_ood)
        self.id_agreement_ = pairwise_agreement(data.id_preds, data.n_classes,
                                                n_jobs=self.n_jobs)  # (m, m)
        self.ood_agreement_ = pairwise_agreement(data.ood_preds, data.n_classes,
                                                 n_jobs=self.n_jobs)  # (m, m)
        iu = np.triu_indices(m, k=1)
        agr_id, agr_ood = self.id_agreement_[iu], self.ood_agreement_[iu]  # (m(m-1)/2,)
        self.n_clipped_ = int(
            np.sum((agr_id <= self.eps_id_) | (agr_id >= 1 - self.eps_id_))
            + np.sum((agr_ood <= self.eps_ood_) | (agr_ood >= 1 - self.eps_ood_))
            + np.sum((self.id_accuracy_ <= self.eps_id_) | (self.id_accuracy_ >= 1 - self.eps_id_))
        )
        z = _Probits(pairs=iu, agr_id=probit(agr_id, self.eps_id_),
                     agr_ood=probit(agr_ood, self.eps_ood_),
                     acc_id=probit(self.id_accuracy_, self.eps_id_))
        self.agreement_line_: LineFit = fit_probit_line(z.agr_id, z.agr_ood)
        self.slope_ = self.agreement_line_.slope
        self.intercept_ = self.agreement_line_.intercept
        self.reliable_ = bool(self.agreement_line_.r2 >= self.min_r2)
        problems = []
        if not self.reliable_:
            problems.append(
                f"agreement is not on a line in probit space (R^2 = {self.agreement_line_.r2:.3f} "
                f"< min_r2 = {self.min_r2:g})"
            )
        if self.n_clipped_:
            problems.append(
                f"{self.n_clipped_} accuracies/agreements were 0 or 1 and were clipped to "
                f"[eps, 1 - eps] (eps = {self.eps_id_:.3g} ID, {self.eps_ood_:.3g} OOD) before "
                "the probit"
            )
        if problems:
            warnings.warn(
                f"{type(self).__name__}: {'; '.join(problems)}. The {self._name} estimate is "
                "unreliable for this shift; diversify the ensemble (random head initialisation, "
                "several backbones) or compare with the baselines.",
                ReliabilityWarning,
                stacklevel=4,
            )
        return z


class ALineS(_ALineBase):
    r"""ALine-S: transfer the agreement line's slope and bias to accuracy.

    Fit :math:`\Phi^{-1}(\mathrm{Agr}_{OOD}) = a\,\Phi^{-1}(\mathrm{Agr}_{ID}) + b` by least squares
    over all model pairs (no labels needed on either side), then predict

    .. math::
        \widehat{\mathrm{Acc}}_{OOD}(h_i) = \Phi\big(a\,\Phi^{-1}(\mathrm{Acc}_{ID}(h_i)) + b\big).

    Rates of exactly 0 or 1 are clipped to ``[eps, 1 - eps]`` before the probit.

    Args:
        eps: Probit clipping constant. ``None`` (default) uses half an example, ``0.5 / n``, for
            rates measured on ``n`` examples; a float in (0, 0.5) is used as given.
        min_r2: A :class:`~fmlab.exceptions.ReliabilityWarning` is raised when the R² of the
            agreement line is below this (agreement-on-the-line does not hold). 0.9 is our
            choice; the papers' exclusion threshold was not recovered.
        n_jobs: Threads for input checks and pairwise agreement (``None`` = 1, ``-1`` = all
            cores); results do not depend on it.

    Attributes:
        ood_accuracy_: Predicted OOD accuracy per model, (n_models,).
        id_accuracy_: Measured ID accuracy per model, (n_models,).
        id_agreement_, ood_agreement_: Pairwise agreement matrices, (n_models, n_models).
        agreement_line_: The :class:`LineFit` of OOD on ID agreement in probit space (slope,
            intercept, r2, correlation).
        slope_, intercept_: ``agreement_line_.slope`` and ``.intercept``.
        reliable_: Whether ``agreement_line_.r2 >= min_r2``.
        n_clipped_: How many rates were clipped before the probit.
        eps_id_, eps_ood_: The clipping constants used.

    Example:
        >>> from fmlab.ood import ALineS, make_synthetic_ensemble
        >>> ens = make_synthetic_ensemble(n_models=8, random_state=0)
        >>> est = ALineS().fit(ens.id_probs, ens.id_labels, ens.ood_probs)
        >>> bool(abs(est.ood_accuracy_ - ens.ood_accuracy).mean() < 0.04)
        True

    References:
        Baek, Jiang, Raghunathan, Kolter. Agreement-on-the-Line: Predicting the Performance of
        Neural Networks under Distribution Shift. NeurIPS 2022, arXiv 2206.13089.
        Mehra et al. Predicting the Performance of Foundation Models via Agreement-on-the-Line.
        NeurIPS 2024, arXiv 2404.01542.
    """

    _name = "ALine-S"

    def _fit(self, data: EnsembleOutputs) -> np.ndarray:
        from scipy.special import ndtr

        z = self._agreement_fit(data)
        self.ood_probit_ = self.agreement_line_.predict(z.acc_id)  # (m,)
        return ndtr(self.ood_probit_)


class ALineD(_ALineBase):
    r"""ALine-D: solve the pairwise linear system that eliminates the unknown bias.

    For every pair (i, j), averaging the accuracy-line equations of h_i and h_j and subtracting
    the agreement-line equation removes the intercept:

    .. math::
        \tfrac12(w_i + w_j) = \Phi^{-1}(\mathrm{Agr}_{OOD}(h_i,h_j))
          + a\big(\tfrac12[\Phi^{-1}(\mathrm{Acc}_{ID}(h_i)) + \Phi^{-1}(\mathrm{Acc}_{ID}(h_j))]
          - \Phi^{-1}(\mathrm{Agr}_{ID}(h_i,h_j))\big)

    with unknowns :math:`w_i = \Phi^{-1}(\mathrm{Acc}_{OOD}(h_i))` and ``a`` the slope of the
    agreement line. The least-squares solution over all n(n-1)/2 pairs has a closed form: the
    normal matrix is :math:`\tfrac14[(n-2)I + \mathbf{1}\mathbf{1}^\top]`, inverted by
    Sherman-Morrison, so solving costs O(n²) rather than a (pairs × n) ``lstsq``. It has full
    rank exactly when n >= 3. Prediction is :math:`\Phi(\hat w_i)`.

    Args:
        eps: Probit clipping constant; see :class:`ALineS`.
        min_r2: Reliability threshold on the agreement line's R²; see :class:`ALineS`.
        n_jobs: Threads; see :class:`ALineS`.

    Attributes:
        ood_accuracy_, id_accuracy_, id_agreement_, ood_agreement_, agreement_line_, slope_,
        intercept_, reliable_, n_clipped_, eps_id_, eps_ood_: As in :class:`ALineS`.
        ood_probit_: The solution :math:`\hat w` (probit OOD accuracies), (n_models,).
        accuracy_line_: The accuracy line implied by the solution, a :class:`LineFit` of
            :math:`\hat w` on probit ID accuracy.

    Example:
        >>> from fmlab.ood import ALineD, make_synthetic_ensemble
        >>> ens = make_synthetic_ensemble(n_models=8, random_state=0)
        >>> est = ALineD().fit(ens.id_probs, ens.id_labels, ens.ood_probs)
        >>> bool(abs(est.ood_accuracy_ - ens.ood_accuracy).mean() < 0.04)
        True

    References:
        Baek, Jiang, Raghunathan, Kolter. Agreement-on-the-Line, NeurIPS 2022, arXiv 2206.13089.
        Mehra et al. Predicting the Performance of Foundation Models via Agreement-on-the-Line,
        NeurIPS 2024, arXiv 2404.01542.
    """

    _name = "ALine-D"

    def _fit(self, data: EnsembleOutputs) -> np.ndarray:
        from scipy.special import ndtr

        z = self._agreement_fit(data)
        i, j = z.pairs
        z_acc = z.acc_id  # (m,)
        # Right-hand side, one entry per pair: (n_pairs,)
        y = z.agr_ood + self.slope_ * (0.5 * (z_acc[i] + z_acc[j]) - z.agr_id)
        self.ood_probit_ = solve_pairwise_system(y, i, j, data.n_models)
        self.accuracy_line_ = fit_probit_line(z_acc, self.ood_probit_)
        return ndtr(self.ood_probit_)


def solve_pairwise_system(y: np.ndarray, i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Least-squares solution of ``½(w_i + w_j) = y_ij`` over all pairs i < j of n >= 3 unknowns.

    Uses the closed-form inverse of the normal matrix ``¼[(n-2)I + 11ᵀ]``:
    ``w = 4/(n-2) · (s - 1·Σs/(2n-2))`` with ``s = Aᵀy``, ``s_i = ½ Σ_{j≠i} y_ij``.
    """
    if n < 3:
        raise ValueError(f"The ALine-D system needs n >= 3 models for full rank; got n={n}.")
    s = 0.5 * (np.bincount(i, weights=y, minlength=n) + np.bincount(j, weights=y, minlength=n))
    return 4.0 / (n - 2) * (s - s.sum() / (2.0 * n - 2.0))


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


class NaiveAgreement(BaseOODEstimator):
    r"""Naive agreement (GDE): a model's OOD accuracy is its mean OOD agreement with the others.

    .. math::
        \widehat{\mathrm{Acc}}_{OOD}(h_i) = \frac{1}{n-1}\sum_{j\ne i}\mathrm{Agr}_{OOD}(h_i,h_j)

    Accurate when the ensemble is well calibrated in the sense of Jiang et al.; it ignores the
    shift's effect on ID agreement, which ALine corrects.

    Args:
        n_jobs: Threads for input checks and agreement (``None`` = 1, ``-1`` = all cores).

    Attributes:
        ood_accuracy_, id_accuracy_: (n_models,).
        ood_agreement_: Pairwise OOD agreement, (n_models, n_models).

    References:
        Jiang, Nagarajan, Baek, Kolter. Assessing Generalization of SGD via Disagreement. ICLR 2022,
        arXiv 2106.13799.
    """

    min_models = 2

    def __init__(self, *, n_jobs: int | None = None) -> None:
        self.n_jobs = n_jobs

    def _check_params(self) -> None:
        _check_n_jobs(self.n_jobs, type(self).__name__)

    def _fit(self, data: EnsembleOutputs) -> np.ndarray:
        m = data.n_models
        self.ood_agreement_ = pairwise_agreement(data.ood_preds, data.n_classes,
                                                 n_jobs=self.n_jobs)
        return (self.ood_agreement_.sum(axis=1) - 1.0) / (m - 1)


def _max_confidence(probs: np.ndarray) -> np.ndarray:
    return probs.max(axis=-1)  # (m, n)


class AverageConfidence(BaseOODEstimator):
    r"""AC: the mean maximum softmax probability on OOD data.

    .. math:: \widehat{\mathrm{Acc}}_{OOD}(h) = \mathbb{E}_{x\sim OOD}\max_k p_k(x)

    Attributes:
        ood_accuracy_, id_accuracy_: (n_models,).
        id_confidence_, ood_confidence_: Mean max-probability per model, (n_models,).

    References:
        Hendrycks and Gimpel. A Baseline for Detecting Misclassified and Out-of-Distribution
        Examples. ICLR 2017, arXiv 1610.02136.
    """

    needs_probs = True

    def __init__(self) -> None:
        pass

    def _fit(self, data: EnsembleOutputs) -> np.ndarray:
        assert data.id_probs is not None and data.ood_probs is not None
        self.id_confidence_ = _max_confidence(data.id_probs).mean(axis=1)
        self.ood_confidence_ = _max_confidence(data.ood_probs).mean(axis=1)
        return self.ood_confidence_


class DifferenceOfConfidences(AverageConfidence):
    r"""DoC: the drop in average confidence is taken as the drop in accuracy.

    .. math:: \widehat{\mathrm{Acc}}_{OOD} = \mathrm{Acc}_{ID} - (\overline{\mathrm{conf}}_{ID}
        - \overline{\mathrm{conf}}_{OOD})

    Predictions are clipped to [0, 1].

    References:
        Guillory, Shankar, Ebrahimi, Darrell, Schmidt. Predicting with Confidence on Unseen
        Distributions. ICCV 2021, arXiv 2107.03315.
    """

    def _fit(self, data: EnsembleOutputs) -> np.ndarray:
        super()._fit(data)
        return np.clip(self.id_accuracy_ - (self.id_confidence_ - self.ood_confidence_), 0, 1)


class AverageThresholdedConfidence(BaseOODEstimator):
    r"""ATC: the fraction of OOD examples whose score clears a threshold learnt on ID data.

    For each model, the threshold ``t`` is chosen on labelled ID data so that the fraction of ID
    examples with score ``s < t`` equals the ID error rate; the prediction is the fraction of OOD
    examples with ``s >= t``. No calibration step is applied (the official code fits a
    temperature and never uses it).

    Args:
        score: ``"max_confidence"`` (:math:`\max_k p_k`) or ``"negative_entropy"``
            (:math:`\sum_k p_k \log p_k`).

    Attributes:
        ood_accuracy_, id_accuracy_: (n_models,).
        threshold_: The threshold per model, (n_models,).

    References:
        Garg, Balakrishnan, Lipton, Neyshabur, Sedghi. Leveraging Unlabeled Data to Predict
        Out-of-Distribution Performance. ICLR 2022, arXiv 2201.04234.
    """

    needs_probs = True

    def __init__(self, *, score: Literal["max_confidence", "negative_entropy"] = "max_confidence"
                 ) -> None:
        self.score = score

    def _check_params(self) -> None:
        check_option(self.score, "score", ("max_confidence", "negative_entropy"),
                     owner=type(self).__name__)

    def _scores(self, probs: np.ndarray) -> np.ndarray:
        if self.score == "max_confidence":
            return _max_confidence(probs)
        from scipy.special import xlogy

        return xlogy(probs, probs).sum(axis=-1)  # (m, n): Σ p log p, 0 log 0 = 0

    def _fit(self, data: EnsembleOutputs) -> np.ndarray:
        assert data.id_probs is not None and data.ood_probs is not None
        s_id = np.sort(self._scores(data.id_probs), axis=1)  # (m, n_id) ascending
        s_ood = self._scores(data.ood_probs)  # (m, n_ood)
        n_id = s_id.shape[1]
        # Exactly round(err * n_id) ID examples lie strictly below s_id[idx] (barring ties).
        idx = np.rint((1.0 - self.id_accuracy_) * n_id).astype(int)  # (m,)
        thr = np.where(idx < n_id, s_id[np.arange(len(idx)), np.minimum(idx, n_id - 1)], np.inf)
        self.threshold_ = thr
        # Ties at the threshold (e.g. one-hot "probabilities", every score 1.0) make the ID error
        # rate unreachable: every ID example clears it and the estimate is 1.0 whatever the data.
        below = (s_id < thr[:, None]).sum(axis=1)  # (m,) ID examples under the threshold
        flat = np.isfinite(thr) & (np.abs(below - idx) > max(1, 0.05 * n_id))
        if flat.any():
            warnings.warn(
                f"ATC cannot place its threshold for {int(flat.sum())} of {len(thr)} models: their "
                "ID scores have too little spread (ties, e.g. one-hot probabilities), so the "
                "prediction is not informative. Pass softmax probabilities, not hard labels.",
                ReliabilityWarning, stacklevel=3)
        return (s_ood >= thr[:, None]).mean(axis=1)
