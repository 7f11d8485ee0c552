"""Shared fixtures. Offline by default: no test reaches a model hub."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IN_CI = os.environ.get("FMLAB_CI") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip when a file or package is missing on a user's machine; fail in CI, which installs all.

    ``reason`` must name the install command.
    """
    if IN_CI:
        pytest.fail(f"missing in CI (an install step is broken): {reason}")
    pytest.skip(reason)

