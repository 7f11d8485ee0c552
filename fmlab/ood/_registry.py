"""The OOD estimator registry: ``list_estimators()`` and ``create_estimator(name, **params)``."""

from __future__ import annotations

from typing import Any

from fmlab._registry import Registry
from fmlab.ood._estimators import (
    ALineD,
    ALineS,
    AverageConfidence,
    AverageThresholdedConfidence,
    BaseOODEstimator,
    DifferenceOfConfidences,
    NaiveAgreement,
)

__all__ = ["ESTIMATORS", "create_estimator", "list_estimators"]

ESTIMATORS: Registry[type[BaseOODEstimator]] = Registry("OOD estimator")
ESTIMATORS.register("aline-d", ALineD,
                    description="ALine-D: pairwise agreement system (label-free)")
ESTIMATORS.register("aline-s", ALineS,
                    description="ALine-S: agreement-line slope and bias transfer")
ESTIMATORS.register("agreement", NaiveAgreement, description="Naive agreement (GDE)")
ESTIMATORS.register("ac", AverageConfidence, description="Average confidence")
ESTIMATORS.register("doc", DifferenceOfConfidences, description="Difference of confidences")
ESTIMATORS.register("atc", AverageThresholdedConfidence,
                    description="Average thresholded confidence")


def list_estimators(pattern: str | None = None) -> list[str]:
    """Registered estimator names, optionally filtered by an fnmatch pattern (``"aline*"``)."""
    return ESTIMATORS.names(pattern)


def create_estimator(name: str, **params: Any) -> BaseOODEstimator:
    """Build a registered estimator: ``create_estimator("atc", score="negative_entropy")``.

    Raises:
        UnknownNameError: For an unknown name (with suggestions).
        ValueError: For a parameter the estimator does not take, or a value it rejects.
    """
    return ESTIMATORS.create(name, **params)  # type: ignore[no-any-return]
