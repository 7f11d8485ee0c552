"""Number formats, fake quantization, quantization-aware training, GPTQ and precision sweeps.

Formats are data (:func:`get_format`, :func:`list_formats`, :class:`QuantFormat`) and import
nothing heavy; everything that needs torch, tokenizers or optuna is loaded on first access.

Example:
    >>> from fmlab.quant import get_format, list_formats
    >>> get_format("fp8_e4m3").max_value
    448.0
    >>> list_formats("fp4*")[:2]
    ['fp4_e2m1', 'fp4_e2m1_channel']

References:
    Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330; Frantar et al. 2022, GPTQ,
    arXiv 2210.17323.
"""

from __future__ import annotations

import importlib
from typing import Any

from fmlab.quant._formats import FORMATS, QuantFormat, get_format, list_formats, make_format

# public name -> private module holding it (imported on first access; these need torch etc.)
_LAZY: dict[str, str] = {
    "fake_quantize": "fmlab.quant._fake",
    "quantize_values": "fmlab.quant._fake",
    "compute_scale": "fmlab.quant._fake",
}

__all__ = ["FORMATS", "QuantFormat", "get_format", "list_formats", "make_format", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fmlab.quant' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
