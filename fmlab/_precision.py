"""Bit widths: the one spelling of full precision and the one parser, for quant and scaling.

Full precision (not quantized) is the bit width ``inf`` (:data:`FULL_PRECISION`) in every table,
law feature and result, and is written ``"fp"`` (:data:`FULL_PRECISION_LABEL`) in labels, the CLI
and JSON-facing text. :func:`parse_bits` is the one parser of user input: ``None``, ``"fp"``,
``"inf"``, ``"none"``, ``inf`` and any width of 16 bits or more (the papers' high-precision
baseline, left unquantized) mean full precision; otherwise an integer width in ``[low, 15]``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["FULL_PRECISION", "FULL_PRECISION_LABEL", "bits_label", "is_full_precision",
           "parse_bits"]

#: The bit width that means "not quantized".
FULL_PRECISION: float = math.inf
#: How full precision is written in labels, tables and on the command line.
FULL_PRECISION_LABEL = "fp"
#: Words :func:`parse_bits` reads as full precision (case-insensitive).
FULL_PRECISION_WORDS: tuple[str, ...] = ("fp", "inf", "none")
#: Widths at or above this are the high-precision baseline, run unquantized.
FULL_PRECISION_FROM = 16


def parse_bits(value: Any, *, name: str = "bits", owner: str | None = None, low: int = 2,
               real: bool = False) -> float:
    """A bit width from user input: :data:`FULL_PRECISION` or an integer width in ``[low, 15]``.

    Args:
        value: ``None``, ``"fp"`` / ``"inf"`` / ``"none"``, a number, or its string (``"4"``).
        name: The parameter's name, for the error message.
        owner: The function or class taking it, for the error message.
        low: The smallest width accepted.
        real: Accept any real width ``> 0`` as given (a scaling law's continuous precision,
            where 16 bits is a finite value); only the full-precision spellings map to ``inf``.

    Returns:
        ``math.inf`` for full precision, else the width as a float (``4.0``).

    Raises:
        ValueError: anything else, naming the accepted spellings.

    Example:
        >>> parse_bits("fp"), parse_bits(None), parse_bits(32), parse_bits("4")
        (inf, inf, inf, 4.0)
        >>> parse_bits("16", real=True), parse_bits("fp", real=True)
        (16.0, inf)
    """
    where = f" of {owner}" if owner else ""
    if value is None:
        return FULL_PRECISION
    if isinstance(value, str):
        text = value.strip().lower()
        if text in FULL_PRECISION_WORDS:
            return FULL_PRECISION
        try:
            value = float(text)
        except ValueError:
            value = text
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"The {name!r} parameter{where} must be a bit width ({low}..15), or "
            f"{FULL_PRECISION_LABEL!r} / None / >= {FULL_PRECISION_FROM} for full precision. "
            f"Got {value!r} instead.")
    x = float(value)
    if real:
        if not x > 0:  # NaN fails too
            raise ValueError(
                f"The {name!r} parameter{where} must be a positive bit width, or "
                f"{FULL_PRECISION_LABEL!r} / inf for full precision. Got {value!r} instead.")
        return x
    if x >= FULL_PRECISION_FROM:
        return FULL_PRECISION
    if not (math.isfinite(x) and x == int(x) and low <= x):
        raise ValueError(
            f"The {name!r} parameter{where} must be an integer bit width in {low}..15, or "
            f"{FULL_PRECISION_LABEL!r} / None / >= {FULL_PRECISION_FROM} for full precision. "
            f"Got {value!r} instead.")
    return x


def is_full_precision(bits: Any) -> bool:
    """Whether a parsed bit width means full precision."""
    return bits is None or (isinstance(bits, int | float) and math.isinf(bits))


def bits_label(bits: Any) -> str:
    """``"fp"`` for full precision, else the integer width (``"4"``)."""
    return FULL_PRECISION_LABEL if is_full_precision(bits) else str(int(bits))
