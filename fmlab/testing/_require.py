"""The one check the contract suites use: an explicit ``AssertionError`` (a bare ``assert`` is
stripped under ``python -O``, and a contract suite must still fail there)."""

from __future__ import annotations


def _require(condition: object, message: str) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` is true."""
    if not condition:
        raise AssertionError(message)
