"""Shared pytest setup. Offline by default: no test reaches a model hub."""

from __future__ import annotations

import os
from typing import Any

import pytest

from fmlab.testing import require_or_skip

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- a real PostgreSQL server for the Optuna storage tests (quant sweeps, AutoFT) ---------------
@pytest.fixture()
def postgres_url():
    """A throw-away PostgreSQL server on loopback (fmlab.testing._postgres)."""
    from fmlab.testing._postgres import postgres_missing, postgres_server

    reason = postgres_missing()
    if reason:
        require_or_skip(reason)
    with postgres_server() as url:
        yield url


# -- reference files a clone may lack (licence-excluded: SICK-R, the counterfactual-QA sets) ------
def _need(name: str) -> None:
    """Skip the calling test when dataset ``name`` is not installed (fail under FMLAB_CI=1)."""
    from fmlab.data import dataset_info

    info = dataset_info(name)
    if not info.available:
        require_or_skip(f"dataset {name!r} is missing ({info.missing}); get it: {info.install}")


@pytest.fixture()
def need() -> Any:
    """``need("mnist")`` skips the test (fails it in CI) when the dataset is not installed."""
    return _need
