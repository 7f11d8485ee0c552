"""The ``fmlab`` command: ``fmlab <command> [...]``; ``fmlab --help`` lists the commands.

Exit codes: 0 success, 1 failure (one-line message; traceback with ``--debug``), 2 usage error.

Subcommands live in :data:`COMMANDS`, a :class:`~fmlab._registry.Registry` of lazy
``"module:Class"`` entries (so ``fmlab --help`` imports no capability), which plugins extend
through the entry-point group ``fmlab.commands``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fmlab._progress import progress_bars
from fmlab._registry import Registry
from fmlab.cli._base import Command, Parser, UsageError
from fmlab.version import __version__

__all__ = ["COMMANDS", "main"]

# name -> "module:Class". Each capability adds one line; modules import nothing heavy at the top.
_BUILTIN: dict[str, str] = {
    "reproduce": "fmlab.cli._reproduce:ReproduceCommand",
    "report": "fmlab.cli._reproduce:ReportCommand",
    "models": "fmlab.cli._zoo:ModelsCommand",
    "data": "fmlab.cli._zoo:DataCommand",
    "embed": "fmlab.cli._embed:EmbedCommand",
    "ood": "fmlab.cli._ood:OODCommand",
    "sam": "fmlab.cli._sam:SamCommand",
    "scaling": "fmlab.cli._scaling:ScalingCommand",
    "quant": "fmlab.cli._quant:QuantCommand",
    "sweep": "fmlab.cli._quant:SweepCommand",
    "context": "fmlab.cli._context:ContextCommand",
    "attack": "fmlab.cli._jailbreak:AttackCommand",
    "jailbreak": "fmlab.cli._jailbreak:JailbreakCommand",
    "autoft": "fmlab.cli._autoft:AutoFTCommand",
    "agent": "fmlab.cli._agent:AgentCommand",
}

COMMANDS: Registry[type[Command]] = Registry("command")
for _name, _target in _BUILTIN.items():
    COMMANDS.register(_name, _target)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fmlab",
        description="Reliability results for foundation models, as software.",
        epilog="Examples:\n  fmlab reproduce --quick --out results\n  fmlab models list\n"
        "  fmlab data list\nRun 'fmlab COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fmlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        cmd = COMMANDS.get(name)()
        p = sub.add_parser(
            name,
            help=cmd.help,
            description=cmd.help,
            epilog=cmd.epilog or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.configure(p)
        p.set_defaults(_command=cmd)
    return parser


def _prog(args: argparse.Namespace) -> str:
    action = getattr(args, "action", None)
    return f"fmlab {args.command}" + (f" {action}" if isinstance(action, str) else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fmlab`` command. Returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get("FMLAB_DEBUG") == "1"
    try:
        # --no-progress, wherever a command offers it, hides every bar (transformers' too)
        with progress_bars(not getattr(args, "no_progress", False)):
            return int(cmd.run(args) or 0)
    except KeyboardInterrupt:
        print("fmlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except SystemExit:
        raise
    except UsageError as exc:
        if debug:
            raise
        prog = _prog(args)
        msg = " ".join(str(exc).split()).rstrip(".")
        print(f"{prog}: error: {msg}; see '{prog} --help'", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        msg = str(exc).strip() or type(exc).__name__
        print(f"{_prog(args)}: error: {msg}", file=sys.stderr)
        if "\n" not in msg:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return 1
