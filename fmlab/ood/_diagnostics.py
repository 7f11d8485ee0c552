"""Label-using diagnostics: both probit lines, slope match, and estimation errors (MAPE / MAE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmlab.ood._agreement import (
    LineFit,
    accuracies,
    fit_probit_line,
    pairwise_agreement,
    probit,
    resolve_eps,
)
from fmlab.ood._inputs import check_ensemble_outputs

__all__ = ["LinesDiagnostics", "diagnose_lines", "prediction_errors"]


@dataclass(frozen=True)
class LinesDiagnostics:
    """Accuracy-on-the-line and agreement-on-the-line for one ensemble and one shift.

    Attributes:
        accuracy_line: Probit OOD accuracy on probit ID accuracy, across models.
        agreement_line: Probit OOD agreement on probit ID agreement, across model pairs.
        slope_gap: ``|agreement slope - accuracy slope|``.
        intercept_gap: ``|agreement intercept - accuracy intercept|``.
        id_accuracy, ood_accuracy: (n_models,).
        id_agreement, ood_agreement: Upper-triangle pair agreements, (n_models·(n_models-1)/2,).
        eps_id, eps_ood: The probit clipping constants used.
    """

    accuracy_line: LineFit
    agreement_line: LineFit
    slope_gap: float
    intercept_gap: float
    id_accuracy: np.ndarray
    ood_accuracy: np.ndarray
    id_agreement: np.ndarray
    ood_agreement: np.ndarray
    eps_id: float
    eps_ood: float

    def lines_match(self, slope_tol: float = 0.1, min_r2: float = 0.9) -> bool:
        """Whether both lines are lines (R² >= ``min_r2``) with slopes within ``slope_tol``."""
        return bool(self.accuracy_line.r2 >= min_r2 and self.agreement_line.r2 >= min_r2
                    and self.slope_gap <= slope_tol)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy_line": self.accuracy_line.to_dict(),
            "agreement_line": self.agreement_line.to_dict(),
            "slope_gap": self.slope_gap,
            "intercept_gap": self.intercept_gap,
            "mean_id_agreement": float(self.id_agreement.mean()),
            "mean_ood_agreement": float(self.ood_agreement.mean()),
            "eps_id": self.eps_id,
            "eps_ood": self.eps_ood,
        }


def diagnose_lines(
    id_probs: Any,
    id_labels: Any,
    ood_probs: Any,
    ood_labels: Any,
    *,
    eps: float | None = None,
) -> LinesDiagnostics:
    """Fit both probit lines with OOD labels known (for studies and model selection, not for
    deployment, where ``ood_labels`` are unknown).

    Args:
        id_probs, ood_probs: Probabilities (n_models, n, n_classes) or integer predictions
            (n_models, n).
        id_labels, ood_labels: Integer labels.
        eps: Probit clipping constant; ``None`` means ``0.5 / n``.

    Returns:
        A :class:`LinesDiagnostics`.

    References:
        Baek et al., Agreement-on-the-Line, arXiv 2206.13089; Miller et al., Accuracy on the
        Line, arXiv 2107.04649.
    """
    data = check_ensemble_outputs(id_probs, id_labels, ood_probs, owner="diagnose_lines",
                                  min_models=3)
    ood_y = np.asarray(ood_labels)
    if ood_y.ndim != 1 or ood_y.shape[0] != data.ood_preds.shape[1]:
        raise ValueError(
            f"'ood_labels' of diagnose_lines must be 1-D with one label per OOD example "
            f"({data.ood_preds.shape[1]}); got shape {ood_y.shape}."
        )
    eps_id = resolve_eps(eps, data.id_preds.shape[1])
    eps_ood = resolve_eps(eps, data.ood_preds.shape[1])
    acc_id = accuracies(data.id_preds, data.id_labels)
    acc_ood = accuracies(data.ood_preds, ood_y)
    iu = np.triu_indices(data.n_models, k=1)
    agr_id = pairwise_agreement(data.id_preds, data.n_classes)[iu]
    agr_ood = pairwise_agreement(data.ood_preds, data.n_classes)[iu]
    acc_line = fit_probit_line(probit(acc_id, eps_id), probit(acc_ood, eps_ood))
    agr_line = fit_probit_line(probit(agr_id, eps_id), probit(agr_ood, eps_ood))
    return LinesDiagnostics(
        accuracy_line=acc_line,
        agreement_line=agr_line,
        slope_gap=abs(agr_line.slope - acc_line.slope),
        intercept_gap=abs(agr_line.intercept - acc_line.intercept),
        id_accuracy=acc_id,
        ood_accuracy=acc_ood,
        id_agreement=agr_id,
        ood_agreement=agr_ood,
        eps_id=eps_id,
        eps_ood=eps_ood,
    )


def prediction_errors(predicted: Any, true: Any) -> dict[str, float]:
    """Errors of predicted OOD accuracies, as the papers report them.

    Returns:
        ``{"mape": mean |pred - true| / true × 100, "mae": mean |pred - true| × 100 (accuracy
        points), "max_ae": max |pred - true| × 100, "correlation": Pearson r}``.
    """
    p = np.asarray(predicted, dtype=float).ravel()
    t = np.asarray(true, dtype=float).ravel()
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"'predicted' and 'true' must have the same non-zero length; got "
                         f"{p.shape} and {t.shape}.")
    err = np.abs(p - t)
    with np.errstate(divide="ignore", invalid="ignore"):
        mape = float(np.mean(err / t) * 100) if (t > 0).all() else float("inf")
    corr = float(np.corrcoef(p, t)[0, 1]) if p.size > 1 and p.std() > 0 and t.std() > 0 else 0.0
    return {"mape": mape, "mae": float(err.mean() * 100), "max_ae": float(err.max() * 100),
            "correlation": corr}
