"""Shared pytest setup. Offline by default: no test reaches a model hub."""

from __future__ import annotations

import os

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
