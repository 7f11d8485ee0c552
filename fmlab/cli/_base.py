"""The one pattern every ``fmlab`` subcommand follows.

A command is a small class with a ``name``, a one-line ``help``, an ``epilog`` of copy-pasteable
examples, ``configure(parser)`` to add arguments and ``run(args) -> int`` that calls one library
function. Commands with their own sub-actions (``fmlab scaling fit``) add a nested subparser in
``configure`` and dispatch on ``args.action``. Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, ClassVar

__all__ = ["Command", "add_action", "emit", "parse_options"]


class Command:
    """Base class of a subcommand; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    epilog: ClassVar[str] = ""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's arguments to ``parser`` (called once, before parsing)."""

    def run(self, args: argparse.Namespace) -> int:
        """Carry out the command; return the exit code (0 success, 1 failure)."""
        raise SystemExit(f"fmlab {self.name}: no action given; see 'fmlab {self.name} --help'")


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
        if not sep or not key:
            raise ValueError(f"Invalid --option {pair!r}: expected KEY=VALUE, e.g. epochs=3.")
        parsed = yaml.safe_load(f"[{value}]") if "," in value else yaml.safe_load(value)
        options[key.replace("-", "_")] = parsed
    return options
