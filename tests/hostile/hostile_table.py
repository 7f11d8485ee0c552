"""The table the hostile-input suite runs: every flag of every command, with the invalid values
its declared constraint generates (``fmlab._validation.Constraint.invalid_values``).

A new command joins by being registered in ``fmlab.cli.COMMANDS`` and declaring its flags with
constraint types (``type=Real(0)``, ``type=Int(1)``, ``type=InputFile(".csv")``, ``choices=``);
nothing here needs editing. If it reads a file, add one row to ``FILE_ARGS`` in
``test_no_pickle.py`` (a test fails until every file argument has one).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

from fmlab._validation import Constraint, InputFile, OutputFile, _first_valid
from fmlab.cli import build_parser


@dataclass(frozen=True)
class Case:
    path: tuple[str, ...]  # ("sam", "train")
    flag: str  # "--rho", or the positional's dest
    value: str
    argv: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{' '.join(self.path)} {self.flag}={self.value!r}"


def leaf_parsers(parser: argparse.ArgumentParser | None = None,
                 path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                               argparse.ArgumentParser]]:
    """Every parser that takes arguments, with its command path (sub-actions included)."""
    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from leaf_parsers(child, (*path, name))


def value_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))
            and a.nargs != 0 and a.dest not in ("help", "debug")]


def valid_value(action: argparse.Action, tmp: str) -> str:
    """A value ``action`` accepts (for positionals that precede the one under test)."""
    t = action.type
    if action.choices:
        return str(next(iter(action.choices)))
    if isinstance(t, InputFile):
        import os

        suffix = t.suffixes[0] if t.suffixes else ".txt"
        path = os.path.join(tmp, f"valid{suffix}")
        open(path, "a").close()
        return path
    if isinstance(t, OutputFile):
        return f"{tmp}/out{t.suffixes[0] if t.suffixes else ''}"
    if isinstance(t, Constraint):
        return _first_valid(t) or "1"
    return "x"


def invalid_values(action: argparse.Action) -> list[str]:
    t = action.type
    out: list[str] = []
    if isinstance(t, Constraint):
        out += t.invalid_values()
    if action.choices:
        out += ["", "not-a-choice"]
    return list(dict.fromkeys(out))


def cases(tmp: str) -> list[Case]:
    out: list[Case] = []
    for path, parser in leaf_parsers():
        actions = value_actions(parser)
        positionals = [a for a in actions if not a.option_strings]
        for action in actions:
            values = invalid_values(action)
            if not values:
                continue
            if action.option_strings:
                flag = max(action.option_strings, key=len)
                for v in values:
                    out.append(Case(path, flag, v, (*path, f"{flag}={v}")))
            else:
                before = positionals[: positionals.index(action)]
                prefix = tuple(valid_value(a, tmp) for a in before)
                for v in values:
                    if v == "" and action.nargs in ("?", "*"):
                        continue  # an empty optional positional is "not given"
                    name = action.metavar if isinstance(action.metavar, str) else action.dest
                    out.append(Case(path, name, v, (*path, *prefix, v)))
    return out


def unconstrained_numeric_flags() -> list[str]:
    """Flags that parse numbers without a declared constraint (bare ``int``/``float``)."""
    bad = []
    for path, parser in leaf_parsers():
        for a in value_actions(parser):
            if a.type in (int, float):
                bad.append(f"{' '.join(path)} {a.option_strings or a.dest}")
    return bad
