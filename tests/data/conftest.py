"""Fixtures for the data-zoo tests: reference counts and a skip (fail in CI) for missing files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REFERENCE = json.loads((Path(__file__).with_name("reference.json")).read_text())


@pytest.fixture(scope="session")
def ref() -> dict[str, Any]:
    return REFERENCE


def _need(name: str) -> None:
    """Skip the calling test when dataset ``name`` is not installed (fail under FMLAB_CI=1)."""
    from fmlab.data import dataset_info
    from fmlab.testing import require_or_skip

    info = dataset_info(name)
    if not info.available:
        require_or_skip(f"dataset {name!r} is missing ({info.missing}); get it: {info.install}")


@pytest.fixture()
def need() -> Any:
    """``need("mnist")`` skips the test (fails it in CI) when the dataset is not installed."""
    return _need
