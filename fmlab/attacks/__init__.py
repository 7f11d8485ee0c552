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

__all__ = [
    "ATTACKS",
    "AttackResult",
    "BaseAttack",
    "Budget",
    "Proposal",
    "Selection",
    "create_attack",
    "list_attacks",
    "run_attack",
]
