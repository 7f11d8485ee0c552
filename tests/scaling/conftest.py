"""Shared fixtures for the scaling tests: reference numbers and the public Chinchilla runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((Path(__file__).parent / "reference.json").read_text())


@pytest.fixture(scope="session")
def epoch_runs():
    from fmlab.exceptions import DataUnavailableError
    from fmlab.scaling import chinchilla_runs
    from fmlab.testing import require_or_skip

    try:
        return chinchilla_runs("epoch", drop_highest=5)
    except DataUnavailableError as exc:
        require_or_skip(f"Chinchilla reference data missing: {exc}")
