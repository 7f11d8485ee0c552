"""``fmlab reproduce`` and ``fmlab report``."""

from __future__ import annotations

import argparse

from fmlab._validation import Int, OutputFile
from fmlab.cli._base import Command, emit, parse_options


class ReproduceCommand(Command):
    name = "reproduce"
    help = "Run paper reproductions (studies) and render DIR/report.html."
    epilog = (
        "Examples:\n  fmlab reproduce --quick                  # every study, minutes each\n"
        "  fmlab reproduce scaling.chinchilla --out results\n"
        "  fmlab reproduce 'sam.*' --full --force --option epochs=5\n"
        "  fmlab reproduce --list"
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "names", nargs="*", metavar="NAME", help="study names or patterns (default: all)"
        )
        scale = parser.add_mutually_exclusive_group()
        scale.add_argument(
            "--quick",
            dest="scale",
            action="store_const",
            const="quick",
            help="small scale, minutes per study (default)",
        )
        scale.add_argument(
            "--full",
            dest="scale",
            action="store_const",
            const="full",
            help="the larger scale described in each study",
        )
        parser.set_defaults(scale="quick")
        parser.add_argument(
            "--out", type=OutputFile(folder=True), default="fmlab-results",
            help="output folder (default: %(default)s)"
        )
        parser.add_argument(
            "--force", action="store_true", help="re-run studies that finished before"
        )
        parser.add_argument("--seed", type=Int(0), default=0, help="base random seed (default: 0)")
        parser.add_argument(
            "--option",
            action="append",
            metavar="KEY=VALUE",
            help="study option passed to the selected studies (repeatable)",
        )
        parser.add_argument("--list", action="store_true", help="list the studies and exit")
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
        parser.add_argument("--quiet", action="store_true", help="no per-study status lines")
        parser.add_argument("--json", action="store_true", help="print the outcome as JSON")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.studies import get_study, list_studies, reproduce

        if args.list:
            rows = [(n, get_study(n).title) for n in list_studies()]
            emit(
                [{"study": n, "title": t} for n, t in rows],
                as_json=args.json,
                text="\n".join(f"{n:28s} {t}" for n, t in rows),
            )
            return 0
        result = reproduce(
            args.names or None,
            out=args.out,
            scale=args.scale,
            force=args.force,
            seed=args.seed,
            options=parse_options(args.option),
            show_progress=not args.no_progress,
            verbose=not args.quiet,
        )
        summary = {
            "out": str(result.out),
            "report": str(result.report),
            "ran": result.ran,
            "skipped": result.skipped,
            "failed": result.failed,
        }
        text = f"report: {result.report}"
        if result.failed:
            text += "\nfailed: " + "; ".join(f"{k} ({v})" for k, v in result.failed.items())
        emit(summary, as_json=args.json, text=text)
        return 0 if result.ok else 1


class ReportCommand(Command):
    name = "report"
    help = "Re-render DIR/report.html from finished study results."
    epilog = "Example:\n  fmlab report --out fmlab-results"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=OutputFile(folder=True), default="fmlab-results",
                            help="results folder (written by 'fmlab reproduce --out')")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.studies import render_report

        print(render_report(args.out))
        return 0
