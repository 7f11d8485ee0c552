"""Label-free OOD accuracy prediction: agreement-on-the-line and the usual baselines.

Estimators follow the scikit-learn contract (numpy/scipy only)::

    from fmlab.ood import ALineD
    est = ALineD().fit(id_probs, id_labels, ood_probs)   # (n_models, n, n_classes) softmax outputs
    est.ood_accuracy_, est.agreement_line_.r2, est.reliable_

The ensemble builder (:func:`build_ensemble`, :func:`extract_features`) needs torch and is loaded
on first use, so ``import fmlab.ood`` stays cheap.

References:
    Baek, Jiang, Raghunathan, Kolter. Agreement-on-the-Line, NeurIPS 2022, arXiv 2206.13089.
    Mehra et al. Predicting the Performance of Foundation Models via Agreement-on-the-Line,
    NeurIPS 2024, arXiv 2404.01542.
"""

from __future__ import annotations

from fmlab._imports import lazy_module
from fmlab.ood._agreement import LineFit, fit_probit_line, pairwise_agreement, probit
from fmlab.ood._diagnostics import LinesDiagnostics, diagnose_lines, prediction_errors
from fmlab.ood._estimators import (
    ALineD,
    ALineS,
    AverageConfidence,
    AverageThresholdedConfidence,
    BaseOODEstimator,
    DifferenceOfConfidences,
    NaiveAgreement,
)
from fmlab.ood._registry import create_estimator, list_estimators
from fmlab.ood._synthetic import SyntheticEnsemble, make_synthetic_ensemble

# Loaded on first attribute access (they import torch inside).
_LAZY = {
    "Ensemble": "fmlab.ood._ensemble",
    "build_ensemble": "fmlab.ood._ensemble",
    "train_heads": "fmlab.ood._ensemble",
    "train_small_cnns": "fmlab.ood._ensemble",
    "extract_features": "fmlab.ood._features",
    "list_backbones": "fmlab.ood._features",
    "load_outputs": "fmlab.ood._files",
    "save_outputs": "fmlab.ood._files",
}

__all__ = [
    "ALineD",
    "ALineS",
    "AverageConfidence",
    "AverageThresholdedConfidence",
    "BaseOODEstimator",
    "DifferenceOfConfidences",
    "LineFit",
    "LinesDiagnostics",
    "NaiveAgreement",
    "SyntheticEnsemble",
    "create_estimator",
    "diagnose_lines",
    "fit_probit_line",
    "list_estimators",
    "make_synthetic_ensemble",
    "pairwise_agreement",
    "prediction_errors",
    "probit",
    *sorted(_LAZY),
]

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
