"""``fmlab agent``: the offline shop, its tasks, observations, and agents run on the tasks."""

from __future__ import annotations

import argparse
from typing import Any

from fmlab._validation import InputFile, Int, OutputFile
from fmlab.cli._base import Command, add_action, emit

_AGENTS = ("scripted", "caption", "pixel")
_CAPTIONERS = ("catalog", "captioner-emoji", "none")
_ATTACK_TYPES = ("wrong_object", "choose_me", "add_comment")


def _captioner(name: str, products: list[Any]) -> Any:
    from fmlab.agents import catalog_captioner

    if name == "none":
        return None
    if name == "catalog":
        return catalog_captioner(products)
    from fmlab.agents._models import zoo_captioner

    return zoo_captioner(name)


def _agent(name: str, encoder: str) -> Any:
    from fmlab.agents import CaptionAgent, PixelAgent, ScriptedAgent

    if name == "scripted":
        return ScriptedAgent()
    if name == "caption":
        return CaptionAgent()
    from fmlab.agents._models import pixel_agent

    agent: PixelAgent = pixel_agent(encoder)
    return agent


class AgentCommand(Command):
    name = "agent"
    help = "Web agents in an offline shop: serve it, list tasks, observe pages, run agents."
    epilog = (
        "Examples:\n"
        "  fmlab agent serve --port 8000            # browse http://127.0.0.1:8000/\n"
        "  fmlab agent tasks --attack-type wrong_object\n"
        "  fmlab agent observe '/list?ids=11,12,13&titles=0' --out page.png\n"
        "  fmlab agent run --agent scripted --captioner catalog\n"
        "  fmlab agent run --agent caption --limit 10 --json\n"
        "Needs Debian's Chromium (sudo apt-get install -y chromium) and playwright "
        "(pip install \"fmlab[agents]\")."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        serve = sub.add_parser("serve", help="serve the shop on localhost until Ctrl-C")
        serve.add_argument("--port", type=Int(0, 65535), default=8000,
                           help="TCP port (0: any free one)")
        tasks = add_action(sub, "tasks", "list the shipped attack tasks")
        tasks.add_argument("--attack-type", default=None, choices=_ATTACK_TYPES)
        tasks.add_argument("--file", type=InputFile(".json"), default=None,
                           help="a JSON task file instead")
        obs = add_action(sub, "observe", "what an agent sees of one page")
        obs.add_argument("path", help="page path, e.g. '/product/3' or '/list?ids=1,2&titles=0'")
        obs.add_argument("--captioner", choices=_CAPTIONERS, default="catalog")
        obs.add_argument("--out", type=OutputFile(".png"), default=None,
                         help="write the set-of-marks screenshot (PNG)")
        run = add_action(sub, "run", "run an agent on the tasks (benign) and judge each step")
        run.add_argument("--agent", choices=_AGENTS, default="scripted")
        run.add_argument("--captioner", choices=_CAPTIONERS, default="catalog")
        run.add_argument("--encoder", default="clip-emoji-2", help="dual encoder of --agent pixel")
        run.add_argument("--attack-type", default=None, choices=_ATTACK_TYPES)
        run.add_argument("--file", type=InputFile(".json"), default=None,
                         help="a JSON task file instead")
        run.add_argument("--limit", type=Int(1), default=None, help="first N tasks only")
        run.add_argument("--out", type=OutputFile(".json"), default=None,
                         help="write per-task records (JSON)")

    def run(self, args: argparse.Namespace) -> int:
        if args.action is None:
            return super().run(args)
        return int(getattr(self, f"_{args.action}")(args))

    def _serve(self, args: argparse.Namespace) -> int:
        import time

        from fmlab.agents import ShopSite, default_catalog

        with ShopSite(default_catalog(), port=args.port) as site:
            print(f"fmlab shop at {site.url}/  (Ctrl-C stops it)", flush=True)
            while True:
                time.sleep(3600)

    def _tasks(self, args: argparse.Namespace) -> int:
        from fmlab.agents import load_tasks

        tasks = load_tasks(args.file, attack_type=args.attack_type)
        lines = [f"{t.task_id:18s} {t.group:12s} {t.intent:45s} target={t.target_action}"
                 for t in tasks]
        emit([t.to_dict() for t in tasks], as_json=args.json,
             text="\n".join(lines + [f"{len(tasks)} tasks"]))
        return 0

    def _observe(self, args: argparse.Namespace) -> int:
        from fmlab.agents import Browser, ShopSite, default_catalog

        products = default_catalog()
        with ShopSite(products) as site, Browser() as browser:
            path = args.path if args.path.startswith("/") else "/" + args.path
            obs = browser.goto(site.url + path).observe(_captioner(args.captioner, products))
        if args.out:
            from PIL import Image

            from fmlab._io import atomic_write

            with atomic_write(args.out, "wb") as fh:
                Image.fromarray(obs.som_screenshot()).save(fh, format="PNG")
        emit({"url": obs.path, "text": obs.text, "screenshot": args.out}, as_json=args.json,
             text=obs.text + (f"\nscreenshot: {args.out}" if args.out else ""))
        return 0

    def _run(self, args: argparse.Namespace) -> int:
        from fmlab._stats import rate
        from fmlab.agents import default_catalog, load_tasks, run_tasks

        tasks = load_tasks(args.file, attack_type=args.attack_type)
        if args.limit is not None:
            tasks = tasks[: args.limit]
        products = default_catalog()
        records = run_tasks(tasks, _agent(args.agent, args.encoder),
                            captioner=_captioner(args.captioner, products), products=products)
        ok = sum(r.benign for r in records)
        summary = {"agent": args.agent, "captioner": args.captioner, "n_tasks": len(records),
                   "benign_success": rate(ok, len(records)),
                   "invalid": sum(not r.valid for r in records),
                   "records": [r.__dict__ for r in records]}
        if args.out:
            from fmlab._io import write_json

            write_json(args.out, summary)
        s = summary["benign_success"]
        text = "\n".join(
            [f"{r.task_id:18s} {r.action or r.reply[:30]!s:12s} -> {r.path:22s} "
             f"{'ok' if r.benign else 'FAIL'}" for r in records]
            + [f"benign success {ok}/{len(records)} = {s['rate']:.0%} "
               f"(95% Wilson {s['low']:.0%}-{s['high']:.0%}); invalid replies "
               f"{summary['invalid']}"]
        )
        emit(summary, as_json=args.json, text=text)
        return 0
