"""A study's declared options: name, type, quick and full defaults, help and constraint.

Each study lists its options as :class:`Option` objects in ``Study.options``. The runner resolves
what the user gave against that schema before anything runs (:func:`resolve_options`): unknown
names are a :class:`~fmlab.exceptions.UsageError` with close matches, values are checked and
converted (``"1e6"`` from the command line becomes ``1000000`` for an int option), and missing
ones take the default of the scale. The study then reads ``ctx.options[name]`` (or
``ctx.option(name)``) and never invents a default of its own.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fmlab._validation import Int, Real
from fmlab.exceptions import UsageError

__all__ = ["Option", "resolve_options", "result_options"]

_SAME = object()  # ``full`` default: the same as ``quick``
_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool", list: "list"}


@dataclass(frozen=True)
class Option:
    """One declared study option.

    Args:
        name: The key users pass (``--option name=value``); snake_case.
        type: ``int``, ``float``, ``str``, ``bool`` or ``list`` (then ``item`` is the element
            type; a single value given for a list option becomes a one-element list).
        quick: Default at quick scale.
        full: Default at full scale (omit: the same as ``quick``).
        help: One line: what it sets, and what ``None`` means when ``none_ok``.
        low, high: Inclusive bounds for numbers (each element of a list).
        choices: Allowed values (each element of a list).
        item: Element type of a list option (``int``, ``float`` or ``str``).
        none_ok: ``None`` (``null`` on the command line) is allowed.
        affects_result: ``False`` for options that change how a study runs but not what it
            measures (worker count, threads): a finished result is reused whatever their value.
    """

    name: str
    type: type
    quick: Any
    full: Any = _SAME
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    item: type | None = None
    none_ok: bool = False
    affects_result: bool = True

    def __post_init__(self) -> None:
        if self.type not in _TYPE_NAMES:
            raise TypeError(f"Option {self.name!r}: type must be one of int, float, str, bool, "
                            f"list. Got {self.type!r} instead.")
        if self.type is list and self.item not in (int, float, str):
            raise TypeError(f"Option {self.name!r}: a list option needs item=int, float or str.")
        if self.full is _SAME:
            object.__setattr__(self, "full", self.quick)
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        for scale in ("quick", "full"):  # a declared default must pass its own check
            self.check(getattr(self, scale), owner="its declaration")

    def default(self, scale: str) -> Any:
        """The default at ``scale`` (``"quick"`` or ``"full"``)."""
        value = self.full if scale == "full" else self.quick
        return list(value) if isinstance(value, list | tuple) else value

    @property
    def type_name(self) -> str:
        name = f"list[{_TYPE_NAMES[self.item]}]" if self.type is list else _TYPE_NAMES[self.type]
        return f"{name} or null" if self.none_ok else name

    @property
    def constraint(self) -> str:
        """The constraint in words (empty when any value of the type is allowed)."""
        parts = []
        if self.choices is not None:
            parts.append(f"one of {', '.join(map(str, self.choices))}")
        if self.low is not None or self.high is not None:
            lo = "(-inf" if self.low is None else f"[{self.low:g}"
            hi = "inf)" if self.high is None else f"{self.high:g}]"
            parts.append(f"in {lo}, {hi}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_name, "quick": self.default("quick"),
                "full": self.default("full"), "help": self.help, "constraint": self.constraint,
                "affects_result": self.affects_result}

    # -- checking ----------------------------------------------------------------------------
    def check(self, value: Any, *, owner: str | None = None) -> Any:
        """Return ``value`` converted to the option's type, or raise a ``TypeError`` /
        ``ValueError`` naming the option, the constraint, the value and the fix."""
        if value is None:
            if self.none_ok:
                return None
            raise ValueError(self._what(owner) + " Got null instead; give a value.")
        if self.type is list:
            items = list(value) if isinstance(value, list | tuple) else [value]
            if not items:
                raise ValueError(self._what(owner) + " Got an empty list instead.")
            return [self._scalar(v, self.item, owner) for v in items]  # type: ignore[arg-type]
        return self._scalar(value, self.type, owner)

    def _what(self, owner: str | None) -> str:
        article = "an" if self.type_name[0] in "aeiou" else "a"
        text = f"The {self.name!r} option{' of ' + owner if owner else ''} must be {article} " \
               f"{self.type_name}"
        return text + (f" ({self.constraint})." if self.constraint else ".")

    def _scalar(self, value: Any, kind: type, owner: str | None) -> Any:
        bad = TypeError(f"{self._what(owner)} Got {value!r} of type {type(value).__name__} "
                        "instead.")
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            raise bad
        if kind is str:
            if not isinstance(value, str):
                raise bad
            out: Any = value
        elif kind is int:  # the numbers go through fmlab's one validator
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, str | numbers.Integral):
                raise bad
            out = _checked(Int(_bound(self.low, math.ceil), _bound(self.high, math.floor)),
                           value, self.name, owner)
        else:
            if isinstance(value, bool) or not isinstance(value, str | numbers.Real):
                raise bad
            out = float(_checked(Real(self.low, self.high, closed="both"), value, self.name,
                                 owner))
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"{self._what(owner)} Got {value!r} instead.")
        return out


def _bound(x: float | None, rounding: Any) -> int | None:
    return None if x is None else int(rounding(x))


def _checked(constraint: Any, value: Any, name: str, owner: str | None) -> Any:
    """``constraint.check`` with the option's name in a string value's message too."""
    try:
        return constraint.check(value, name, owner=owner)
    except ValueError as exc:
        if isinstance(value, str):
            raise ValueError(f"The {name!r} option{' of ' + owner if owner else ''}: {exc}."
                             ) from None
        raise


def _unknown(name: str, known: Iterable[str], owner: str) -> UsageError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listed = ", ".join(known) if known else "(it takes no options)"
    return UsageError(f"Unknown option {name!r} for {owner}.{hint} Its options: {listed}. "
                      "See 'fmlab reproduce --describe NAME'.")


def resolve_options(schema: Iterable[Option], given: Mapping[str, Any] | None, scale: str,
                    *, owner: str) -> dict[str, Any]:
    """Every declared option's value for this run: ``given`` checked and converted, the rest at
    the default of ``scale``. Unknown names raise :class:`~fmlab.exceptions.UsageError` (with
    close matches); bad values raise ``TypeError`` / ``ValueError`` naming the option."""
    by_name = {o.name: o for o in schema}
    given = {str(k).replace("-", "_"): v for k, v in (given or {}).items()}
    for key in given:
        if key not in by_name:
            raise _unknown(key, by_name, owner)
    return {name: (opt.check(given[name], owner=owner) if name in given else opt.default(scale))
            for name, opt in by_name.items()}


def result_options(schema: Iterable[Option], resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``resolved`` that changes what a study measures (the reuse key)."""
    keep = {o.name for o in schema if o.affects_result}
    return {k: v for k, v in resolved.items() if k in keep}
