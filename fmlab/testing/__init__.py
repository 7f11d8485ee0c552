"""Contract suites users run on their own classes, plus small pytest helpers.

Each suite is a function that takes your object, runs every check of its contract and raises
``AssertionError`` naming the first broken clause (as scikit-learn's ``check_estimator`` does):

==========================  ===================================================================
:func:`check_law`           a scaling law (:class:`fmlab.scaling.BaseLaw` subclass)
:func:`check_ood_estimator` an OOD accuracy estimator (:class:`fmlab.ood.BaseOODEstimator`)
:func:`check_optimizer`     a SAM-style two-pass ``torch.optim.Optimizer``
:func:`check_encoder`       a sentence encoder with the sentence-transformers ``encode`` contract
:func:`check_attack`        an attack on :class:`fmlab.attacks.BaseAttack` (``testing.attacks``)
:func:`check_judge`         a jailbreak judge (:class:`fmlab.jailbreak.BaseJudge`)
:func:`check_defense`       a jailbreak defense's hooks (:class:`fmlab.jailbreak.BaseDefense`)
==========================  ===================================================================

fmlab runs the same suites on every registered entry in its default test run
(``tests/test_common.py``), so a new entry is checked for free. A capability that adds a registry
adds its suite here in the same shape: a private ``fmlab/testing/_<thing>.py`` with
``check_<thing>(obj, ...)`` built from small ``_check_*`` functions, re-exported below, and one
parametrised test over ``list_<things>()`` in ``tests/test_common.py``.

``require_or_skip(reason)`` skips a test when an optional file or package is missing on a user's
machine, and fails it when ``FMLAB_CI=1`` (CI installs everything, so a skip there would hide a
broken install step).

Importing this module is cheap: the suites import numpy, scikit-learn and torch when called.
"""

from __future__ import annotations

import os

from fmlab._imports import lazy_module

__all__ = [
    "check_attack",
    "check_defense",
    "check_encoder",
    "check_judge",
    "check_law",
    "check_ood_estimator",
    "check_optimizer",
    "in_ci",
    "require_or_skip",
]

_LAZY = {
    "check_attack": "fmlab.testing.attacks",
    "check_law": "fmlab.testing._estimators",
    "check_ood_estimator": "fmlab.testing._estimators",
    "check_optimizer": "fmlab.testing._optim",
    "check_encoder": "fmlab.testing._encoders",
    "check_judge": "fmlab.testing._jailbreak",
    "check_defense": "fmlab.testing._jailbreak",
}


def in_ci() -> bool:
    """Whether the tests run under CI (``FMLAB_CI=1``), where nothing may be skipped as missing."""
    return os.environ.get("FMLAB_CI") == "1"


def require_or_skip(reason: str) -> None:
    """Skip the calling test (fail it in CI). ``reason`` must name the install command."""
    import pytest

    if in_ci():
        pytest.fail(f"missing in CI (an install step is broken): {reason}")
    pytest.skip(reason)

__getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)
