"""The scaling-law registry: ``list_laws()``, ``get_law(name)``, ``create_law(name, **kwargs)``."""

from __future__ import annotations

from typing import Any

from fmlab._registry import Registry

__all__ = ["LAWS", "create_law", "get_law", "list_laws"]

LAWS: Registry[type] = Registry("scaling law")
LAWS.register("chinchilla", "fmlab.scaling._chinchilla:ChinchillaLaw",
              description="L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022)")
LAWS.register("ptq", "fmlab.scaling._precision:PTQLaw",
              description="Chinchilla + post-training quantization degradation (Kumar et al. 2024)")
LAWS.register("precision", "fmlab.scaling._precision:PrecisionLaw",
              description="quantized training via effective parameters (Kumar et al. 2024)")
LAWS.register("unified_precision", "fmlab.scaling._precision:UnifiedPrecisionLaw",
              description="training precision + PTQ in one law (Kumar et al. 2024)")
LAWS.register("data_filtering", "fmlab.scaling._filtering:DataFilteringLaw",
              description="pool utility with repetition half-life (Goyal et al. 2024)")


def list_laws(pattern: str | None = None) -> list[str]:
    """Names of the registered laws (fnmatch ``pattern`` optional)."""
    return LAWS.names(pattern)


def get_law(name: str) -> type:
    """The law class registered under ``name``."""
    return LAWS.get(name)


def create_law(name: str, **params: Any) -> Any:
    """A new, unfitted law ``name`` built with ``params``, validated up front.

    Example: ``create_law("chinchilla", n_starts=64)``.

    Raises:
        UnknownNameError: For an unknown name (with suggestions).
        ValueError: For a parameter the law does not take, or a value it rejects.
    """
    return LAWS.create(name, **params)
