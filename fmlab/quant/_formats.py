"""Number formats as data: integer k-bit and floating ExMy formats in one registry.

This module imports nothing heavy (no torch), so ``fmlab quant formats`` and ``list_formats`` stay
cheap. The arithmetic that applies a format lives in :mod:`fmlab.quant._fake`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from fmlab._precision import FULL_PRECISION_WORDS, parse_bits
from fmlab._registry import Registry
from fmlab._validation import check_int, check_option, check_real

__all__ = ["FORMATS", "QuantFormat", "get_format", "list_formats", "make_format", "resolve_format"]

Kind = Literal["int", "float"]
Granularity = Literal["tensor", "channel", "group", "token", "none"]
_GRANULARITIES = ("tensor", "channel", "group", "token", "none")


@dataclass(frozen=True)
class QuantFormat:
    """A number format plus how its scale is chosen; frozen, hashable, validated on creation.

    **Integer** (``kind="int"``, ``bits`` = k in 2..16), absmax scaling, round half to even
    (``torch.round``):

    - symmetric (the default) uses the *restricted* range ``[-(2^(k-1)-1), 2^(k-1)-1]`` (so -0 and
      +0 coincide and the grid is symmetric; ``2^k - 1`` levels):
      ``s = c·max|x| / (2^(k-1)-1)``, ``x̂ = s·clamp(round(x/s), -qmax, qmax)``;
    - asymmetric uses all ``2^k`` levels: ``s = c·(max x - min x)/(2^k - 1)``,
      ``z = round(-c·min x/s)``, ``x̂ = s·(clamp(round(x/s) + z, 0, 2^k-1) - z)``.

    **Floating ExMy** (``kind="float"``, 1 sign bit, ``exp_bits`` E, ``man_bits`` M, bias
    ``2^(E-1)-1``, subnormals kept, round to nearest even). The largest finite value follows the
    OCP conventions: ``fp8_e4m3`` is the "fn" variant (max 448, only the all-ones pattern is NaN);
    ``fp8_e5m2``, fp16 and bf16 are IEEE-like (max exponent field reserved for inf/NaN); the
    formats with fewer than 8 bits (fp6, fp4) have no special values at all (OCP MX).
    With scaling, ``s = c·absmax / max_finite`` and ``x̂ = s·cast(x/s)``; with
    ``granularity="none"`` the format is applied to the raw values (``s = 1``).

    **Saturation**: values beyond ``±max_finite`` are clamped to ``±max_finite`` before rounding
    (NaN stays NaN). torch's CPU cast to ``float8_e4m3fn`` saturates the same way, while its cast
    to ``float8_e5m2`` turns overflow into inf; fmlab always saturates, so results never depend on
    the cast's overflow behaviour.

    Args:
        kind: ``"int"`` or ``"float"``.
        bits: Total bit width (sign included).
        exp_bits: Exponent bits E (float only).
        man_bits: Mantissa bits M (float only).
        symmetric: Integer formats only: symmetric (zero point 0) or asymmetric range.
        granularity: Where one scale applies: ``"tensor"``; ``"channel"`` (one per output
            channel, i.e. per row of a ``(d_out, d_in)`` weight, or per leading index);
            ``"token"`` (one per vector along the last axis, for activations ``(..., d)``);
            ``"group"`` (``group_size`` consecutive elements along the last axis share one
            scale); ``"none"`` (float formats only: no scaling, a plain cast).
        group_size: Elements per group when ``granularity="group"``; must divide the last axis.
        clip_ratio: c in (0, 1]: the range is ``c·absmax`` (values beyond are clamped).
        name: Display name (set by the registry; derived formats get a descriptive name).

    Example:
        >>> fmt = get_format("fp8_e4m3")
        >>> fmt.max_value, fmt.exp_bits, fmt.man_bits
        (448.0, 4, 3)

    References:
        Micikevicius et al. 2022, FP8 Formats for Deep Learning, arXiv 2209.05433; OCP Microscaling
        Formats (MX) v1.0 specification; Kumar et al. 2024, Scaling Laws for Precision,
        arXiv 2411.04330.
    """

    kind: Kind
    bits: int
    exp_bits: int = 0
    man_bits: int = 0
    symmetric: bool = True
    granularity: Granularity = "tensor"
    group_size: int | None = None
    clip_ratio: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        owner = "QuantFormat"
        check_option(self.kind, "kind", ("int", "float"), owner=owner)
        check_option(self.granularity, "granularity", _GRANULARITIES, owner=owner)
        check_real(self.clip_ratio, "clip_ratio", owner=owner, low=0.0, high=1.0, closed="right")
        if self.kind == "int":
            check_int(self.bits, "bits", owner=f"an integer {owner}", low=2, high=16)
            if self.granularity == "none":
                raise ValueError("granularity='none' is only valid for float formats; integer "
                                 "formats need a scale. Use 'tensor', 'channel', 'token' or "
                                 "'group'.")
        else:
            check_int(self.exp_bits, "exp_bits", owner=f"a float {owner}", low=1, high=8)
            check_int(self.man_bits, "man_bits", owner=f"a float {owner}", low=0, high=10)
            if self.bits != 1 + self.exp_bits + self.man_bits:
                raise ValueError(
                    f"`bits == 1 + exp_bits + man_bits` must hold for a float QuantFormat, but got "
                    f"(bits={self.bits}, exp_bits={self.exp_bits}, man_bits={self.man_bits})."
                )
            if not self.symmetric:
                raise ValueError("Float formats are symmetric; pass symmetric=True.")
        if self.granularity == "group":
            if self.group_size is None:
                raise ValueError("granularity='group' needs a group_size, e.g. group_size=128.")
            check_int(self.group_size, "group_size", owner=owner, low=1)
        elif self.group_size is not None:
            raise ValueError(f"group_size={self.group_size} is only used with granularity="
                             f"'group'; got granularity={self.granularity!r}.")
        if not self.name:
            object.__setattr__(self, "name", self._auto_name())

    # -- derived properties ---------------------------------------------------------------------
    @property
    def bias(self) -> int:
        """Exponent bias ``2^(E-1) - 1`` (float formats)."""
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def has_specials(self) -> Literal["ieee", "fn", "none"]:
        """Which bit patterns are reserved: IEEE inf/NaN, NaN-only ("fn"), or none (OCP MX)."""
        if self.kind != "float" or self.bits < 8:
            return "none"
        if (self.exp_bits, self.man_bits) == (4, 3):
            return "fn"
        return "ieee"

    @property
    def max_exponent(self) -> int:
        """Unbiased exponent of the largest finite binade (float formats)."""
        top = 2**self.exp_bits - 1
        if self.has_specials == "ieee":
            top -= 1  # the all-ones exponent field encodes inf/NaN
        return top - self.bias

    @property
    def min_exponent(self) -> int:
        """Unbiased exponent of the smallest normal binade, ``1 - bias`` (float formats)."""
        return 1 - self.bias

    @property
    def max_value(self) -> float:
        """Largest finite magnitude: ``qmax`` for symmetric int, the format's max for floats."""
        if self.kind == "int":
            return float(2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1)
        man_max = 2**self.man_bits - 1
        if self.has_specials == "fn":
            man_max -= 1  # all-ones mantissa at the top exponent is NaN
        return float(2.0**self.max_exponent * (1 + man_max / 2**self.man_bits))

    @property
    def min_subnormal(self) -> float:
        """Smallest positive magnitude (float formats)."""
        return float(2.0 ** (self.min_exponent - self.man_bits))

    @property
    def n_levels(self) -> int:
        """Number of distinct values the format can produce (finite values, +0 and -0 merged)."""
        if self.kind == "int":
            return 2**self.bits - 1 if self.symmetric else 2**self.bits
        m = 2**self.man_bits
        n_pos = (self.max_exponent - self.min_exponent + 1) * m + m - 1  # normals + subnormals
        if self.has_specials == "fn":
            n_pos -= 1
        return 2 * n_pos + 1

    def representable_values(self) -> list[float]:
        """All non-negative finite values of a float format (exhaustive; for small formats)."""
        if self.kind != "float":
            raise ValueError("representable_values() is defined for float formats only.")
        if self.bits > 16:
            raise ValueError(f"Refusing to enumerate {self.name}: {self.bits} bits is too many.")
        m = 2**self.man_bits
        values = [k * 2.0 ** (self.min_exponent - self.man_bits) for k in range(m)]  # 0, subnormals
        for e in range(self.min_exponent, self.max_exponent + 1):
            values += [2.0**e * (1 + k / m) for k in range(m)]
        return [v for v in values if v <= self.max_value]

    def with_(self, **changes: Any) -> QuantFormat:
        """A copy with some fields changed (the name is re-derived unless given)."""
        changes.setdefault("name", "")
        return replace(self, **changes)

    def _auto_name(self) -> str:
        if self.kind == "int":
            base = f"int{self.bits}" + ("" if self.symmetric else "_asym")
        else:
            base = {(5, 10): "fp16", (8, 7): "bf16"}.get(
                (self.exp_bits, self.man_bits), f"fp{self.bits}_e{self.exp_bits}m{self.man_bits}"
            )
        if self.granularity == "group":
            base += f"_g{self.group_size}"
        elif self.granularity != ("none" if self.kind == "float" else "tensor"):
            base += f"_{self.granularity}"
        if self.clip_ratio != 1.0:
            base += f"_clip{self.clip_ratio:g}"
        return base


FORMATS: Registry[QuantFormat] = Registry("quantization format")


def _register_builtins() -> None:
    def reg(name: str, fmt: QuantFormat, description: str) -> None:
        FORMATS.register(name, replace(fmt, name=name), description=description)

    for k in range(2, 17):
        reg(f"int{k}", QuantFormat("int", k), f"{k}-bit symmetric integer, per-tensor absmax")
        reg(f"int{k}_channel", QuantFormat("int", k, granularity="channel"),
            f"{k}-bit symmetric integer, per-output-channel absmax")
        reg(f"int{k}_token", QuantFormat("int", k, granularity="token"),
            f"{k}-bit symmetric integer, one scale per token (last axis)")
        reg(f"int{k}_asym", QuantFormat("int", k, symmetric=False),
            f"{k}-bit asymmetric integer (zero point), per-tensor min/max")
    for k in (2, 3, 4, 8):
        for g in (32, 64, 128):
            reg(f"int{k}_g{g}", QuantFormat("int", k, granularity="group", group_size=g),
                f"{k}-bit symmetric integer, groups of {g} along the input dimension")
    floats = {
        "fp8_e4m3": (4, 3, "OCP fp8 E4M3 ('fn': max 448, no inf); bit-identical to float8_e4m3fn"),
        "fp8_e5m2": (5, 2, "OCP fp8 E5M2 (IEEE-like, max 57344); bit-identical to float8_e5m2"),
        "fp6_e3m2": (3, 2, "OCP MX fp6 E3M2 (max 28, no specials)"),
        "fp6_e2m3": (2, 3, "OCP MX fp6 E2M3 (max 7.5, no specials)"),
        "fp4_e2m1": (2, 1, "OCP MX fp4 E2M1 (max 6, values 0 .5 1 1.5 2 3 4 6)"),
    }
    for name, (e, m, desc) in floats.items():
        fmt = QuantFormat("float", 1 + e + m, e, m)
        reg(name, fmt, desc + ", per-tensor absmax scaling")
        reg(f"{name}_channel", fmt.with_(granularity="channel"), desc + ", per-channel scaling")
        reg(f"{name}_raw", fmt.with_(granularity="none"), desc + ", plain cast without scaling")
    reg("mxfp4", QuantFormat("float", 4, 2, 1, granularity="group", group_size=32),
        "fp4 E2M1 in groups of 32 with an absmax scale per group (MX-like; scale not E8M0)")
    reg("fp16", QuantFormat("float", 16, 5, 10, granularity="none"), "IEEE half, plain cast")
    reg("bf16", QuantFormat("float", 16, 8, 7, granularity="none"), "bfloat16, plain cast")


_register_builtins()

_FLOAT_RE = re.compile(r"^fp(\d+)_e(\d+)m(\d+)$")
_INT_RE = re.compile(r"^int(\d+)$")


def get_format(name: str | QuantFormat) -> QuantFormat:
    """Return the registered format ``name`` (a frozen :class:`QuantFormat`).

    Besides the registered names (``fmlab quant formats`` lists them), any float ``fpB_eEmM``
    (e.g. ``"fp5_e2m2"``) and any ``intK`` with K in 2..16 are accepted. Passing a
    :class:`QuantFormat` returns it unchanged.

    Raises:
        UnknownNameError: for an unknown name, with close matches.
        ValueError: for a pattern-valid name with an unsupported bit width.
    """
    if isinstance(name, QuantFormat):
        return name
    if not isinstance(name, str):
        raise TypeError(f"A quantization format must be a str name or a QuantFormat. Got "
                        f"{name!r} of type {type(name).__name__} instead.")
    if name in FORMATS:
        return FORMATS.get(name)
    if m := _FLOAT_RE.match(name):
        bits, e, man = map(int, m.groups())
        return QuantFormat("float", bits, e, man, name=name)
    if m := _INT_RE.match(name):
        bits = int(m.group(1))
        raise ValueError(f"Unsupported integer bit width {bits} in {name!r}: integer formats "
                         f"support 2..16 bits, e.g. 'int4' or 'int8'.")
    FORMATS.get(name)  # raises UnknownNameError with suggestions
    raise AssertionError("unreachable")


def list_formats(pattern: str | None = None) -> list[str]:
    """Names of the registered formats, optionally filtered by an fnmatch pattern (``"int*"``)."""
    return FORMATS.names(pattern)


def make_format(
    kind: Kind,
    bits: int,
    *,
    exp_bits: int | None = None,
    man_bits: int | None = None,
    symmetric: bool = True,
    granularity: Granularity = "tensor",
    group_size: int | None = None,
    clip_ratio: float = 1.0,
) -> QuantFormat:
    """Build a format from its fields (a float format needs ``exp_bits``; ``man_bits`` follows)."""
    if kind == "float":
        if exp_bits is None:
            raise ValueError("A float format needs exp_bits, e.g. make_format('float', 8, "
                             "exp_bits=4) for fp8 E4M3.")
        man_bits = bits - 1 - exp_bits if man_bits is None else man_bits
        return QuantFormat("float", bits, exp_bits, man_bits, granularity=granularity,
                           group_size=group_size, clip_ratio=clip_ratio)
    return QuantFormat(kind, bits, symmetric=symmetric, granularity=granularity,
                       group_size=group_size, clip_ratio=clip_ratio)


def resolve_format(spec: str | int | float | QuantFormat | None, *,
                   default_granularity: str = "tensor", name: str = "format"
                   ) -> QuantFormat | None:
    """Turn a user spec into a format, once, at the public boundary.

    Full precision (no quantization; ``None`` is returned) is spelled as everywhere in fmlab
    (:func:`fmlab._precision.parse_bits`): ``None``, ``"fp"``, ``"none"``, ``inf`` or a bit width
    >= 16. An int k in 2..15 gives ``intk`` with ``default_granularity``; a name or
    :class:`QuantFormat` gives :func:`get_format`'s format.
    """
    if isinstance(spec, QuantFormat):
        return spec
    if isinstance(spec, bool):
        raise TypeError(f"The {name!r} must be a format name, a bit width or None. Got {spec!r}.")
    if spec is None or isinstance(spec, int | float) or (
            isinstance(spec, str) and spec.strip().lower() in FULL_PRECISION_WORDS):
        bits = parse_bits(spec, name=name)
        if math.isinf(bits):
            return None
        fmt = QuantFormat("int", int(bits))
        if default_granularity != "tensor":
            fmt = fmt.with_(granularity=default_granularity)
        return fmt
    return get_format(spec)
