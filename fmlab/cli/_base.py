"""The one pattern every ``fmlab`` subcommand follows.

A command is a small class with a ``name``, a one-line ``help``, an ``epilog`` of copy-pasteable
examples, ``configure(parser)`` to add arguments and ``run(args) -> int`` that calls one library
function. Commands with their own sub-actions (``fmlab scaling fit``) add a nested subparser in
``configure`` and dispatch on ``args.action``. Heavy imports happen inside ``run``.

Arguments are checked while the command line is parsed, before anything heavy is loaded: every
numeric flag declares its constraint as its argparse ``type`` (``type=Real(0, closed="left")``,
``type=Int(1)``, ``type=InputFile(".csv")`` from :mod:`fmlab._validation`, the same validator the
Python API uses), so a bad value exits 2 with one line naming the flag. Problems only visible
later (two flags that exclude each other) raise :class:`UsageError` (exit 2); failures of the work
itself raise ordinary exceptions (exit 1). ``tests/hostile/`` runs every flag of every command with
the invalid values its constraint generates; a new command joins it by being in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, ClassVar, NoReturn

from fmlab.exceptions import UsageError  # the command line is wrong (exit 2, one line)

__all__ = ["Command", "Parser", "UsageError", "add_action", "emit", "parse_options"]




class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with fmlab's conventions, inherited by every sub-parser:
    ``--debug`` accepted at any depth, and usage errors printed as one line naming the flag
    (``fmlab sam train: error: argument --rho: must be ...; see 'fmlab sam train --help'``),
    exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show full tracebacks on errors")

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        message = " ".join(message.split()).rstrip(".")
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


class Command:
    """Base class of a subcommand; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    epilog: ClassVar[str] = ""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's arguments to ``parser`` (called once, before parsing)."""

    def run(self, args: argparse.Namespace) -> int:
        """Carry out the command; return the exit code (0 success, 1 failure)."""
        raise UsageError("no action given")


def add_action(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """Add the sub-action ``name`` (e.g. ``fmlab models info``) with the common ``--json`` flag."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def emit(obj: Any, *, as_json: bool, text: str | None = None) -> None:
    """Print ``obj`` as JSON when ``as_json``, else ``text`` (or a readable form of ``obj``)."""
    from fmlab._io import _json_default

    if as_json:
        print(json.dumps(obj, indent=2, default=_json_default))
    else:
        print(text if text is not None else obj)
    sys.stdout.flush()


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["epochs=3", "noise=0.1,0.3"]`` into ``{"epochs": 3, "noise": [0.1, 0.3]}``."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key or not key.replace("-", "_").isidentifier():
            raise UsageError(f"Invalid --option {pair!r}: expected KEY=VALUE with KEY a name, "
                             f"e.g. epochs=3.")
        try:
            parsed = yaml.safe_load(f"[{value}]") if "," in value else yaml.safe_load(value)
        except yaml.YAMLError as exc:
            first = " ".join(str(exc).split())
            raise UsageError(f"Invalid --option {pair!r}: the value is not valid YAML "
                             f"({first}); quote text, e.g. {key}='a: b'.") from None
        if isinstance(parsed, float) and parsed != parsed:
            raise UsageError(f"Invalid --option {pair!r}: NaN is not a usable value.")
        options[key.replace("-", "_")] = parsed
    return options
