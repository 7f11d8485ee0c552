"""Adversarial attacks on one shared loop: GCG on token suffixes, PGD-style attacks on images.

Every attack takes its hyperparameters in the constructor and the objective at call time,
``attack(objective, x)``, and returns an :class:`AttackResult` (best input, loss trace, query
count). Attacks are registry entries: :func:`list_attacks`, :func:`create_attack`; plugins register
through the ``fmlab.attacks`` entry-point group. How to write one: ``fmlab.attacks._core``.
"""

from __future__ import annotations

from fmlab.attacks._core import (
    ATTACKS,
    AttackResult,
    BaseAttack,
    Budget,
    Proposal,
    Selection,
    create_attack,
    list_attacks,
    run_attack,
)
from fmlab.attacks._gcg import GCG, GCGResult, TargetObjective
from fmlab.attacks._image import BIM, CWA, PGD, as_image, format_eps, quantize
from fmlab.attacks._objectives import (
    CaptionerObjective,
    ClassifierObjective,
    ClipEnsembleObjective,
    SpectrumAugmented,
    edit_similarity,
)

__all__ = [
    "ATTACKS",
    "AttackResult",
    "BaseAttack",
    "Budget",
    "GCG",
    "GCGResult",
    "Proposal",
    "Selection",
    "TargetObjective",
    "create_attack",
    "list_attacks",
    "run_attack",
    # image attacks (PGD/BIM) and their objectives
    "BIM",
    "CWA",
    "PGD",
    "CaptionerObjective",
    "ClassifierObjective",
    "ClipEnsembleObjective",
    "SpectrumAugmented",
    "as_image",
    "edit_similarity",
    "format_eps",
    "quantize",
]

ATTACKS.register("gcg", GCG)
ATTACKS.register("pgd", PGD)
ATTACKS.register("bim", BIM)
ATTACKS.register("cwa", CWA)
