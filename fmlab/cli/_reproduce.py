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
        "  fmlab reproduce sam.label_noise --full --force --option epochs=5\n"
        "  fmlab reproduce --list\n"
        "  fmlab reproduce --describe scaling.chinchilla   # its options and defaults"
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
            help="study option (repeatable), given to each selected study that declares it; "
            "an option no selected study declares is an error (see --describe NAME)",
        )
        parser.add_argument(
            "--list", action="store_true", help="list the studies and their options, and exit"
        )
        parser.add_argument(
            "--describe",
            metavar="NAME",
            help="show a study's summary and its options (type, quick/full default, constraint)",
        )
        parser.add_argument(
            "--jobs", type=Int(1), default=None, metavar="N",
            help="studies run at once, each in its own process with its share of the cores "
            "(default: 2 on a machine with 2 or more cores; progress bars only with --jobs 1)")
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
        parser.add_argument("--quiet", action="store_true", help="no per-study status lines")
        parser.add_argument("--json", action="store_true", help="print the outcome as JSON")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.studies import get_study, list_studies, reproduce

        if args.list:
            infos = [get_study(n).describe() for n in list_studies()]
            text = "\n".join(
                f"{d['study']:28s} {d['title']}\n{'':28s} options: "
                + (", ".join(o["name"] for o in d["options"]) or "(none)")
                for d in infos
            )
            emit(
                [
                    {"study": d["study"], "title": d["title"],
                     "options": [o["name"] for o in d["options"]]}
                    for d in infos
                ],
                as_json=args.json,
                text=text,
            )
            return 0
        if args.describe:
            info = get_study(args.describe).describe()
            emit(info, as_json=args.json, text=_describe_text(info))
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
            jobs=args.jobs,
        )
        summary = {
            "out": str(result.out),
            "report": str(result.report),
            "ran": result.ran,
            "skipped": result.skipped,
            "failed": result.failed,
            "unavailable": result.unavailable,
        }
        text = f"report: {result.report}"
        if result.unavailable:
            text += "\nnot run (a reference file is not installed): " + "; ".join(
                f"{k} ({v})" for k, v in result.unavailable.items())
        if result.failed:
            text += "\nfailed: " + "; ".join(f"{k} ({v})" for k, v in result.failed.items())
        emit(summary, as_json=args.json, text=text)
        return 0 if result.ok else 1


def _describe_text(info: dict) -> str:
    import json

    lines = [f"{info['study']}: {info['title']}", f"paper: {info['paper']}", "",
             info["summary"], ""]
    if not info["options"]:
        lines.append("options: none")
        return "\n".join(lines)
    lines.append("options (--option NAME=VALUE):")
    for o in info["options"]:
        dflt = json.dumps(o["quick"])
        if o["full"] != o["quick"]:
            dflt = f"quick {dflt}, full {json.dumps(o['full'])}"
        cons = f"; {o['constraint']}" if o["constraint"] else ""
        lines.append(f"  {o['name']} ({o['type']}{cons}; default {dflt})")
        if o["help"]:
            lines.append(f"      {o['help']}")
    return "\n".join(lines)


class ReportCommand(Command):
    name = "report"
    help = "Re-render DIR/report.html from finished study results."
    epilog = ("Examples:\n  fmlab report --out fmlab-results\n"
              "  fmlab report --out full-results --publish docs/results   # into the repository")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=OutputFile(folder=True), default="fmlab-results",
                            help="results folder (written by 'fmlab reproduce --out')")
        parser.add_argument(
            "--publish",
            type=OutputFile(folder=True),
            metavar="DIR",
            help="also copy the results (metrics, figures, report) into DIR with a markdown "
            "summary DIR/README.md",
        )

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.studies import render_report

        print(render_report(args.out))
        if args.publish:
            from fmlab.studies._publish import publish_results

            print(publish_results(args.out, args.publish) / "README.md")
        return 0
