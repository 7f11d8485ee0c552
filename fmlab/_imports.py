"""Lazy imports of optional dependencies, with errors that name the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

from fmlab.exceptions import MissingDependencyError

# module -> (pip distribution, fmlab extra that installs it)
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch==2.13.0", "torch"),
    "transformers": ("transformers", "hf"),
    "accelerate": ("accelerate", "hf"),
    "gguf": ("gguf", "hf"),
    "safetensors": ("safetensors", "hf"),
    "sentence_transformers": ("sentence-transformers", "hf"),
    "optuna": ("optuna", "hpo"),
    "psycopg": ("psycopg[binary]", "hpo"),
    "matplotlib": ("matplotlib", "report"),
    "pandas": ("pandas", "report"),
    "pyarrow": ("pyarrow", "report"),
    "skimage": ("scikit-image", "vision"),
    "PIL": ("pillow", "vision"),
    "gensim": ("gensim==4.4.0", "data"),
    "peft": ("peft", "jailbreak"),
    "playwright": ("playwright", "agents"),
}


def install_hint(module: str) -> str:
    """Return the command that installs the package providing ``module``."""
    top = module.split(".")[0]
    dist, extra = _EXTRAS.get(top, (top, ""))
    if extra:
        return f'pip install "fmlab[{extra}]"  (or: pip install "{dist}")'
    return f'pip install "{dist}"'


def require(module: str, *, feature: str = "This feature") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the install command.

    Args:
        module: Dotted module name, e.g. ``"transformers"``.
        feature: What needs it, used in the message (e.g. ``"fmlab.embeddings"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} requires '{module.split('.')[0]}', which is not installed. "
            f"Install it with: {install_hint(module)}"
        ) from exc


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported, checked without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def lazy_module(package: str, names: Mapping[str, str],
                public: Iterable[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package whose names load on first use
    (PEP 562), so importing the package stays cheap::

        __getattr__, __dir__ = lazy_module(__name__, _LAZY, __all__)

    Args:
        package: The package's ``__name__``.
        names: Each lazily loaded name -> the module that defines it; ``f"{package}.{name}"`` is the
            submodule ``name`` itself. A loaded value is kept in the package, so it loads once.
        public: What ``dir(package)`` lists (its ``__all__``; read at call time).
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(module)
        value = loaded if module == f"{package}.{name}" else getattr(loaded, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(public)

    return __getattr__, __dir__
