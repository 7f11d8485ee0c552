"""Sharpness-aware minimization (SAM) and the variants that explain why it helps.

- :class:`SAM`: SAM / ASAM as a ``torch.optim.Optimizer`` around any base optimizer, with
  ``step(closure)``, public ``first_step`` / ``second_step``, per-group ``perturb`` scope
  (last-layer SAM) and :func:`frozen_bn_stats` for the perturbed pass.
- :func:`variant_step` with :class:`SAMVariant` (``sgd``, ``sam``, ``logit`` = L-SAM,
  ``jacobian`` = J-SAM): where the logit term and the Jacobian are evaluated (arXiv 2405.03676).
- :func:`weight_norm_penalty`, :func:`feature_norm_penalty`: the cheap regularisers, as loss terms.
- :func:`train_classifier`: the one training loop the studies and ``fmlab sam train`` use.

Importing this package does not import torch; the names load on first use.

Example:
    >>> from fmlab.sam import SAM  # doctest: +SKIP
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmlab._imports import lazy_module

if TYPE_CHECKING:
    from fmlab.sam._models import SmallCNN, TinyTransformer, resnet18_cifar
    from fmlab.sam._optim import SAM, frozen_bn_stats
    from fmlab.sam._train import ClassifierTrainResult, train_classifier
    from fmlab.sam._variants import (
        VARIANTS,
        LastLayerPenalty,
        SAMVariant,
        feature_norm_penalty,
        get_variant,
        list_variants,
        logit_residual,
        variant_step,
        weight_norm_penalty,
    )

_LAZY = {
    "SAM": "fmlab.sam._optim",
    "frozen_bn_stats": "fmlab.sam._optim",
    "VARIANTS": "fmlab.sam._variants",
    "SAMVariant": "fmlab.sam._variants",
    "feature_norm_penalty": "fmlab.sam._variants",
    "get_variant": "fmlab.sam._variants",
    "list_variants": "fmlab.sam._variants",
    "logit_residual": "fmlab.sam._variants",
    "variant_step": "fmlab.sam._variants",
    "weight_norm_penalty": "fmlab.sam._variants",
    "LastLayerPenalty": "fmlab.sam._variants",
    "SmallCNN": "fmlab.sam._models",
    "TinyTransformer": "fmlab.sam._models",
    "resnet18_cifar": "fmlab.sam._models",
    "ClassifierTrainResult": "fmlab.sam._train",
    "train_classifier": "fmlab.sam._train",
}

__all__ = [
    "LastLayerPenalty",
    "SAM",
    "SAMVariant",
    "SmallCNN",
    "TinyTransformer",
    "ClassifierTrainResult",
    "VARIANTS",
    "feature_norm_penalty",
    "frozen_bn_stats",
    "get_variant",
    "list_variants",
    "logit_residual",
    "resnet18_cifar",
    "train_classifier",
    "variant_step",
    "weight_norm_penalty",
]

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
