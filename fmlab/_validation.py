"""Parameter validation with one message template: THE validator of fmlab.

Messages name the parameter, the constraint, the value received and, where there is one, the fix:
``The 'rho' parameter of SAM must be a float in the range (0, inf). Got -0.1 instead.``

Two ways in, one set of rules:

* the Python API calls ``check_real`` / ``check_int`` / ``check_option`` / ``check_array`` in
  ``__init__`` or ``fit``;
* the CLI declares the same constraints as argparse types, so a bad value is refused while the
  command line is parsed (exit 2, ``--dry-run`` included), before anything heavy is loaded::

      parser.add_argument("--rho", type=Real(0, None, closed="left"), default=0.05)
      parser.add_argument("--epochs", type=Int(1), default=3)
      parser.add_argument("--flops", type=Real(0).list(), default=None)      # 1e21,1e23
      parser.add_argument("--labels", type=InputFile(".npy", ".npz"))         # exists, is a file

  which prints ``fmlab sam train: error: argument --rho: must be a float in the range [0, inf);
  got 'nan'``.

Declare a capability's constraints once and use them on both paths (as scikit-learn's
``_parameter_constraints``)::

    PARAMS = {"lr": Real(0), "steps": Int(1), "eps": Real(0, 1, closed="right")}
    check_params({"lr": lr, "steps": steps, "eps": eps}, PARAMS, owner="AutoFT")  # API
    parser.add_argument("--lr", type=PARAMS["lr"])                                 # CLI

Each constraint also generates invalid values (:meth:`Constraint.invalid_values`, as
scikit-learn does from its parameter constraints): ``tests/hostile/`` feeds every one of them to
every flag of every command.

Numbers are finite unless ``allow_inf=True``: an unbounded side of an interval is open, so
``inf`` is outside ``[0, inf)``; NaN is never a valid number.
"""

from __future__ import annotations

import abc
import argparse
import math
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Constraint",
    "InputFile",
    "Int",
    "Options",
    "OutputFile",
    "Real",
    "check_array",
    "check_bool",
    "check_int",
    "check_option",
    "check_params",
    "check_probabilities",
    "check_real",
]


def _owner(owner: str | None) -> str:
    return f" of {owner}" if owner else ""


def _interval(low: float | None, high: float | None, closed: str, allow_inf: bool = False) -> str:
    left = "[" if closed in ("both", "left") or (low is None and allow_inf) else "("
    right = "]" if closed in ("both", "right") or (high is None and allow_inf) else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def _in_range(x: float, low: float | None, high: float | None, closed: str,
              allow_inf: bool = False) -> bool:
    if math.isinf(x) and not allow_inf:
        return False
    if low is not None:
        if closed in ("both", "left"):
            if x < low:
                return False
        elif x <= low:
            return False
    if high is not None:
        if closed in ("both", "right"):
            if x > high:
                return False
        elif x >= high:
            return False
    return True


def check_real(
    value: Any,
    name: str,
    *,
    owner: str | None = None,
    low: float | None = None,
    high: float | None = None,
    closed: str = "neither",
    allow_inf: bool = False,
) -> float:
    """Check that ``value`` is a finite real number in an interval and return it as a float.

    Args:
        closed: Which ends of the interval are included: ``"neither"``, ``"left"``, ``"right"``,
            ``"both"``.
        allow_inf: Accept ``inf`` / ``-inf`` at an unbounded side (e.g. ``post_bits=inf`` for
            "no quantization"); NaN is always refused.
    """
    what = f"The {name!r} parameter{_owner(owner)} must be a float in the range "
    what += _interval(low, high, closed, allow_inf)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}. Got {value!r} of type {type(value).__name__} instead.")
    x = float(value)
    if math.isnan(x) or not _in_range(x, low, high, closed, allow_inf):
        raise ValueError(f"{what}. Got {value!r} instead.")
    return x


def check_int(
    value: Any,
    name: str,
    *,
    owner: str | None = None,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Check that ``value`` is an integer in ``[low, high]`` and return it."""
    what = f"The {name!r} parameter{_owner(owner)} must be an int in the range "
    what += _interval(low, high, "both")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what}. Got {value!r} of type {type(value).__name__} instead.")
    if not _in_range(int(value), low, high, "both"):
        raise ValueError(f"{what}. Got {value!r} instead.")
    return int(value)


def check_bool(value: Any, name: str, *, owner: str | None = None) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"The {name!r} parameter{_owner(owner)} must be a bool. "
            f"Got {value!r} of type {type(value).__name__} instead."
        )
    return bool(value)


def check_option(value: Any, name: str, options: Iterable[Any], *, owner: str | None = None) -> Any:
    """Check that ``value`` is one of ``options``.

    The message reads ``Invalid pooling 'avg' for EchoEncoder. Valid options are:
    ('mean', 'last').``
    """
    opts = tuple(options)
    if value not in opts:
        raise ValueError(
            f"Invalid {name} {value!r}{' for ' + owner if owner else ''}. "
            f"Valid options are: {opts}."
        )
    return value


def check_array(
    value: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    dtype: Any = float,
    finite: bool = True,
    min_rows: int = 0,
) -> np.ndarray:
    """Convert ``value`` to a numpy array and check dimensions and finiteness."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name!r} must be array-like of numbers. Got {type(value).__name__}: {exc}"
        ) from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name!r} must have {' or '.join(map(str, allowed))} dimension(s). "
                f"Got shape {arr.shape} instead."
            )
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name!r} must contain only finite values. Got {bad} NaN or inf entries.")
    if arr.ndim and arr.shape[0] < min_rows:
        raise ValueError(f"{name!r} needs at least {min_rows} rows. Got {arr.shape[0]} instead.")
    return arr


def check_probabilities(value: Any, name: str, *, atol: float = 1e-3) -> np.ndarray:
    """Check an array of class probabilities (last axis sums to one, entries in [0, 1])."""
    arr = check_array(value, name, ndim=(2, 3))
    if (arr < 0).any() or (arr > 1).any():
        raise ValueError(
            f"{name!r} must hold probabilities in [0, 1]. Got min {arr.min():.3g}, "
            f"max {arr.max():.3g}. Apply a softmax to logits first."
        )
    sums = arr.sum(-1)
    worst = float(sums.flat[int(np.abs(sums - 1).argmax())]) if sums.size else 1.0
    if abs(worst - 1) > atol:
        raise ValueError(
            f"Each row of {name!r} must sum to 1 (tolerance {atol:g}); the worst row sums to "
            f"{worst:.4g}. Pass softmax probabilities, not logits."
        )
    return arr


# -- declarative constraints: the same rules as argparse types for the CLI ------------------------


class Constraint(abc.ABC):
    """A declared constraint on one value.

    ``check(value, name, owner)`` validates a Python value (the API path) and returns it converted;
    calling the constraint on a string (``constraint("0.1")``) parses and checks a command-line
    value, raising :class:`argparse.ArgumentTypeError` so that argparse reports
    ``argument --flag: <message>`` and exits 2. :meth:`invalid_values` lists strings that must be
    refused (used by the hostile-input suite).
    """

    #: shown by argparse in messages about this type
    __name__ = "value"

    @abc.abstractmethod
    def describe(self) -> str:
        """What the value must be, as a phrase (``"a float in (0, 1]"``)."""

    def check(self, value: Any, name: str, *, owner: str | None = None) -> Any:
        return self.parse(value) if isinstance(value, str) else value

    @abc.abstractmethod
    def parse(self, text: str) -> Any:
        """The value a command-line string stands for; ``ValueError`` naming the rule if none."""

    def invalid_values(self) -> list[str]:
        return []

    def __call__(self, text: str) -> Any:
        try:
            return self.parse(text)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def list(self, *, min_items: int = 1, unique: bool = False) -> ListOf:
        """The comma-separated list of values each satisfying this constraint."""
        return ListOf(self, min_items=min_items, unique=unique)

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


class _Interval(Constraint):
    kind = "float"

    def __init__(self, low: float | None = None, high: float | None = None, *,
                 closed: str = "neither", allow_inf: bool = False) -> None:
        check_option(closed, "closed", ("neither", "left", "right", "both"),
                     owner=type(self).__name__)
        self.low, self.high, self.closed, self.allow_inf = low, high, closed, allow_inf

    def describe(self) -> str:
        return (f"{'an' if self.kind == 'int' else 'a'} {self.kind} in the range "
                f"{_interval(self.low, self.high, self.closed, self.allow_inf)}")

    def _convert(self, text: str) -> float:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"must be {self.describe()}; got {text!r}") from None

    def parse(self, text: str) -> Any:
        x = self._convert(text)
        if math.isnan(x) or not _in_range(x, self.low, self.high, self.closed, self.allow_inf):
            raise ValueError(f"must be {self.describe()}; got {text!r}")
        return x

    def check(self, value: Any, name: str, *, owner: str | None = None) -> Any:
        if isinstance(value, str):
            return self.parse(value)
        return check_real(value, name, owner=owner, low=self.low, high=self.high,
                          closed=self.closed, allow_inf=self.allow_inf)

    def invalid_values(self) -> list[str]:
        out = ["abc", "", "nan"]
        if not self.allow_inf:
            out += ["inf", "-inf"]
        span = 1.0
        if self.low is not None and self.high is not None:
            span = max(float(self.high) - float(self.low), 1e-9)
        if self.low is not None:
            out.append(repr(float(self.low) - span) if self.closed in ("both", "left")
                       else repr(float(self.low)))
        if self.high is not None:
            out.append(repr(float(self.high) + span) if self.closed in ("both", "right")
                       else repr(float(self.high)))
        return out


class Real(_Interval):
    """A finite float between ``low`` and ``high``; ``closed`` says which ends are included
    (``"neither"`` by default, as in :func:`check_real`); a side given as ``None`` is unbounded.
    ``Real(0)`` is a positive float, ``Real(0, 1, closed="left")`` a fraction in ``[0, 1)``."""

    __name__ = "float"


class Int(_Interval):
    """An integer in ``[low, high]`` (both ends included). Accepts ``1e5``-style integral
    floats on the command line, as training-token counts are often written."""

    __name__ = "int"
    kind = "int"

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        super().__init__(low, high, closed="both")

    def parse(self, text: str) -> int:
        x = self._convert(text)
        if not math.isfinite(x) or x != int(x):
            raise ValueError(f"must be {self.describe()}; got {text!r}")
        if not _in_range(x, self.low, self.high, "both"):
            raise ValueError(f"must be {self.describe()}; got {text!r}")
        return int(x)

    def check(self, value: Any, name: str, *, owner: str | None = None) -> Any:
        if isinstance(value, str):
            return self.parse(value)
        return check_int(value, name, owner=owner, low=self.low, high=self.high)  # type: ignore[arg-type]

    def invalid_values(self) -> list[str]:
        out = ["abc", "", "1.5", "nan", "inf"]
        if self.low is not None:
            out.append(str(int(self.low) - 1))
        if self.high is not None:
            out.append(str(int(self.high) + 1))
        return out


class Options(Constraint):
    """One of a fixed set of strings (argparse's ``choices``, with fmlab's message)."""

    __name__ = "option"

    def __init__(self, *options: str) -> None:
        self.options = tuple(options)

    def describe(self) -> str:
        return f"one of {', '.join(self.options)}"

    def parse(self, text: str) -> str:
        if text not in self.options:
            raise ValueError(f"must be {self.describe()}; got {text!r}")
        return text

    def invalid_values(self) -> list[str]:
        return ["", "no-such-option", self.options[0].upper() + "x" if self.options else "x"]


class ListOf(Constraint):
    """Comma-separated values, each satisfying ``item`` (``1e21,1e23``)."""

    __name__ = "list"

    def __init__(self, item: Constraint, *, min_items: int = 1, unique: bool = False) -> None:
        self.item, self.min_items, self.unique = item, min_items, unique

    def describe(self) -> str:
        extra = ", without repeats" if self.unique else ""
        return f"a comma-separated list of {self.item.describe()}{extra}"

    def parse(self, text: str) -> list[Any]:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 1 and not parts[0]:
            parts = []
        if len(parts) < self.min_items or any(not p for p in parts):
            raise ValueError(f"must be {self.describe()}; got {text!r}")
        values = []
        for p in parts:
            try:
                values.append(self.item.parse(p))
            except ValueError as exc:
                raise ValueError(f"item {p!r} of {text!r}: {exc}") from None
        if self.unique and len(set(map(repr, values))) != len(values):
            raise ValueError(f"must be {self.describe()}; got {text!r} (repeated items)")
        return values

    def invalid_values(self) -> list[str]:
        out = [",", "1,,2"] + [v for v in self.item.invalid_values() if v]
        if self.unique:
            ok = _first_valid(self.item)
            if ok is not None:
                out.append(f"{ok},{ok}")
        return out


def _first_valid(item: Constraint) -> str | None:
    for candidate in ("1", "2", "4", "0.5", "0", "16"):
        try:
            item.parse(candidate)
            return candidate
        except ValueError:
            continue
    if isinstance(item, Options) and item.options:
        return item.options[0]
    return None


class InputFile(Constraint):
    """An existing, readable file (optionally with one of ``suffixes``). Contents are checked by
    the reader that loads it, which names the file in its messages."""

    __name__ = "file"

    def __init__(self, *suffixes: str, allow_dir: bool = False,
                 spec: Callable[[str], str] | None = None) -> None:
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.allow_dir = allow_dir
        self.spec = spec  # maps "file.npz:key" -> "file.npz" (ood predict)

    def describe(self) -> str:
        what = "an existing file" + (" or folder" if self.allow_dir else "")
        if self.suffixes:
            what += f" ({', '.join(self.suffixes)})"
        return what

    def parse(self, text: str) -> str:
        path = Path(self.spec(text) if self.spec else text)
        if not str(text).strip():
            raise ValueError(f"must be {self.describe()}; got ''")
        if not path.exists():
            raise ValueError(f"{str(path)!r} does not exist")
        if path.is_dir() and not self.allow_dir:
            raise ValueError(f"{str(path)!r} is a folder; expected a file")
        if path.is_file():
            if self.suffixes and not str(path).lower().endswith(self.suffixes):
                raise ValueError(f"{str(path)!r} is not {self.describe()}")
            if not os.access(path, os.R_OK):
                raise ValueError(f"{str(path)!r} is not readable")
        return text

    def invalid_values(self) -> list[str]:
        return ["", "/nonexistent/fmlab-file", "/"] if not self.allow_dir else \
            ["", "/nonexistent/fmlab-file"]


class OutputFile(Constraint):
    """A path fmlab will write: the suffix must match and the parent folder must exist (or be
    creatable), so that a typo fails before minutes of work, not after."""

    __name__ = "path"

    def __init__(self, *suffixes: str, folder: bool = False) -> None:
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.folder = folder

    def describe(self) -> str:
        if self.folder:
            return "a folder path"
        return "a file path" + (f" ending in {' or '.join(self.suffixes)}" if self.suffixes else "")

    def parse(self, text: str) -> str:
        if not text.strip():
            raise ValueError(f"must be {self.describe()}; got ''")
        path = Path(text)
        if self.folder:
            if path.exists() and not path.is_dir():
                raise ValueError(f"{text!r} exists and is not a folder")
            return text
        if path.is_dir():
            raise ValueError(f"{text!r} is a folder; expected {self.describe()}")
        if self.suffixes and not text.lower().endswith(self.suffixes):
            raise ValueError(f"{text!r} is not {self.describe()}")
        parent = path.parent if str(path.parent) else Path(".")
        probe = parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise ValueError(f"cannot create {text!r}: {str(probe)!r} is not a folder")
        return text

    def invalid_values(self) -> list[str]:
        out = ["", "/"] if not self.folder else ["", "/dev/null"]
        if self.suffixes:
            out.append("out.wrong-suffix")
        return out


def check_params(values: dict[str, Any], constraints: dict[str, Constraint], *,
                 owner: str | None = None) -> dict[str, Any]:
    """Check each of ``values`` against its declared constraint (API side of the constraints the
    CLI uses as argparse types); returns the converted values. Names without a constraint pass
    through unchanged."""
    return {k: constraints[k].check(v, k, owner=owner) if k in constraints and v is not None
            else v for k, v in values.items()}
