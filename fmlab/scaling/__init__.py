"""Scaling laws: one robust fitting core, the Chinchilla law, precision-aware laws and
data-filtering (quality-quantity) laws, with planners.

Every law is a scikit-learn regressor (``fit`` returns self, fitted attributes end in ``_``,
``params_`` is a named dataclass, ``clone``/``get_params`` work) fitted by the same core: a robust
loss (Huber on log loss by default), L-BFGS from a grid of starts evaluated as one batched array
operation, polished with scipy L-BFGS-B, with bootstrap intervals and diagnostics.

Example:
    >>> from fmlab.scaling import ChinchillaLaw, chinchilla_runs
    >>> runs = chinchilla_runs()                                    # doctest: +SKIP
    >>> law = ChinchillaLaw().fit(runs[["n_params", "n_tokens"]], runs["loss"])  # doctest: +SKIP
    >>> law.params_.alpha, law.compute_optimal(1e21).n_params       # doctest: +SKIP

This package imports numpy, scipy and scikit-learn only (no torch).

References:
    Hoffmann et al. 2022 (arXiv 2203.15556); Besiroglu et al. 2024 (arXiv 2404.10102);
    Kumar et al. 2024, Scaling Laws for Precision (arXiv 2411.04330); Goyal et al. 2024, Scaling
    Laws for Data Filtering (arXiv 2404.07177).
"""

from __future__ import annotations

from fmlab.scaling._base import BaseLaw, LawParams, load_law
from fmlab.scaling._chinchilla import ChinchillaLaw, ChinchillaParams, ComputeAllocation
from fmlab.scaling._data import chinchilla_runs, load_reference_table, openclip_curves, read_runs
from fmlab.scaling._filtering import (
    DataFilteringLaw,
    DataFilteringParams,
    PoolPlan,
    mixture_error,
    plan_pools,
    tmars_preset,
)
from fmlab.scaling._fitting import FitDiagnostics, ParamSpec, robust_loss
from fmlab.scaling._precision import (
    PrecisionLaw,
    PrecisionParams,
    PrecisionPlan,
    PTQLaw,
    PTQParams,
    UnifiedPrecisionLaw,
    UnifiedPrecisionParams,
    critical_data_size,
    optimal_precision,
    optimal_precision_tied,
    precision_curve,
)
from fmlab.scaling._recovery import RecoveryResult, parameter_recovery, simulate_runs
from fmlab.scaling._registry import LAWS, create_law, get_law, list_laws

__all__ = [
    "LAWS",
    "BaseLaw",
    "ChinchillaLaw",
    "ChinchillaParams",
    "ComputeAllocation",
    "DataFilteringLaw",
    "DataFilteringParams",
    "FitDiagnostics",
    "LawParams",
    "PTQLaw",
    "PTQParams",
    "ParamSpec",
    "PoolPlan",
    "PrecisionLaw",
    "PrecisionParams",
    "PrecisionPlan",
    "RecoveryResult",
    "UnifiedPrecisionLaw",
    "UnifiedPrecisionParams",
    "chinchilla_runs",
    "create_law",
    "critical_data_size",
    "get_law",
    "list_laws",
    "load_law",
    "load_reference_table",
    "mixture_error",
    "openclip_curves",
    "optimal_precision",
    "optimal_precision_tied",
    "parameter_recovery",
    "plan_pools",
    "precision_curve",
    "read_runs",
    "robust_loss",
    "simulate_runs",
    "tmars_preset",
]
