"""Test helpers shipped with fmlab: contract suites, tiny models and data, and pytest utilities.

``require_or_skip(reason)`` skips a test when an optional file or package is missing on a user's
machine, and fails it when ``FMLAB_CI=1`` (CI installs everything, so a skip there would hide a
broken install step).
"""

from __future__ import annotations

import os

__all__ = ["in_ci", "require_or_skip"]


def in_ci() -> bool:
    """Whether the tests run under CI (``FMLAB_CI=1``), where nothing may be skipped as missing."""
    return os.environ.get("FMLAB_CI") == "1"


def require_or_skip(reason: str) -> None:
    """Skip the calling test (fail it in CI). ``reason`` must name the install command."""
    import pytest

    if in_ci():
        pytest.fail(f"missing in CI (an install step is broken): {reason}")
    pytest.skip(reason)
