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
