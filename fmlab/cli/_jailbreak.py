"""``fmlab attack`` (GCG suffix search) and ``fmlab jailbreak`` (judge, evaluate defenses)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fmlab._validation import Int, OutputFile, Real
from fmlab.cli import _image_attack
from fmlab.cli._base import Command, UsageError, emit


def _check_model(name: str) -> None:
    from fmlab.models import list_models

    if name.startswith("hf:") or Path(name).expanduser().exists() or name in list_models():
        return
    raise UsageError(f"argument --model: unknown model {name!r}; use a zoo causal LM "
                     f"(e.g. smollm2-135m-instruct), 'hf:org/name' or a folder.")


class AttackCommand(Command):
    name = "attack"
    help = ("Adversarial attacks on the shared attack loop: GCG suffix search on a causal LM, "
            "PGD/BIM on images.")
    epilog = (
        "Examples:\n"
        "  fmlab attack list\n"
        "  fmlab attack gcg --prompt 'What colour is a plum?' --target Purple --num-steps 50 \\\n"
        "      --search-width 64 --topk 64 --snapshot-dir runs/gcg --json\n"
        "A killed run given the same --snapshot-dir resumes from its last snapshot.\n"
        + _image_attack.EPILOG
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        sub.add_parser("list", help="list the registered attacks")
        g = sub.add_parser("gcg", help="optimise an adversarial suffix with GCG")
        g.add_argument("--model", default="smollm2-135m-instruct",
                       help="causal LM: zoo name, 'hf:org/name' or a folder")
        g.add_argument("--prompt", action="append", required=True,
                       help="user prompt (repeat for a universal, multi-prompt suffix); "
                            "'{optim_str}' marks where the suffix goes (default: the end)")
        g.add_argument("--target", required=True, help="the text the model should say")
        g.add_argument("--system-prompt", default=None)
        g.add_argument("--num-steps", type=Int(0), default=100)
        g.add_argument("--search-width", type=Int(1), default=64)
        g.add_argument("--batch-size", type=Int(1), default=None)
        g.add_argument("--topk", type=Int(1), default=64)
        g.add_argument("--n-replace", type=Int(1), default=1)
        g.add_argument("--optim-str-init", default="x x x x x x x x x x x x x x x x x x x x")
        g.add_argument("--ppl-weight", type=Real(0, closed="left"), default=0.0,
                       help="weight of the suffix-perplexity term (evades perplexity filters)")
        g.add_argument("--early-stop", action="store_true")
        g.add_argument("--allow-non-ascii", action="store_true")
        g.add_argument("--max-time-s", type=Real(0), default=None)
        g.add_argument("--seed", type=Int(0), default=0)
        g.add_argument("--snapshot-dir", type=OutputFile(folder=True), default=None,
                       help="folder for resumable snapshots (safetensors + JSON)")
        g.add_argument("--no-progress", action="store_true")
        g.add_argument("--json", action="store_true", help="print JSON")
        _image_attack.configure(sub)  # fmlab attack image (PGD/BIM on pictures)

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "action", None)
        if action == "image":
            return _image_attack.run(args)
        if action == "list":
            from fmlab.attacks import ATTACKS

            for e in ATTACKS.entries():
                print(f"{e.name:12s} {e.description}")
            return 0
        if action != "gcg":
            return super().run(args)
        if not args.target:
            raise UsageError("argument --target: must be a non-empty string, e.g. Purple.")
        if not args.optim_str_init.strip():
            raise UsageError("argument --optim-str-init: a suffix of length 0 has nothing to "
                             "optimise; pass e.g. 'x x x x x'.")
        _check_model(args.model)
        from fmlab.attacks import GCG, TargetObjective

        gcg = GCG(num_steps=args.num_steps, optim_str_init=args.optim_str_init,
                  search_width=args.search_width, batch_size=args.batch_size, topk=args.topk,
                  n_replace=args.n_replace, early_stop=args.early_stop,
                  allow_non_ascii=args.allow_non_ascii, ppl_weight=args.ppl_weight,
                  max_time_s=args.max_time_s, random_state=args.seed)
        prompts = args.prompt if len(args.prompt) > 1 else args.prompt[0]
        obj = TargetObjective(args.model, None, prompts, args.target,
                              system_prompt=args.system_prompt)
        res = gcg(obj, snapshot_dir=args.snapshot_dir,
                  progress=False if args.no_progress else None)
        info = {"best_string": res.best_string, "best_loss": res.best_loss,
                "best_step": res.best_step, "n_steps": res.n_steps, "n_queries": res.n_queries,
                "success": res.success, "stop_reason": res.stop_reason,
                "elapsed_s": res.elapsed_s, "losses": res.losses}
        emit(info, as_json=args.json,
             text=f"best loss {res.best_loss:.4f} at step {res.best_step} "
                  f"({res.n_steps} steps, {res.stop_reason}); suffix:\n{res.best_string}")
        return 0


class JailbreakCommand(Command):
    name = "jailbreak"
    help = "Judge outputs and measure defense success rates (the Purple Problem)."
    epilog = (
        "Examples:\n"
        "  fmlab jailbreak list\n"
        "  fmlab jailbreak judge 'p u r p l e!' --judge contains:purple\n"
        "  fmlab jailbreak eval --defense none,output_filter --attack none --limit 20 "
        "--out runs/jb\n"
        "  fmlab jailbreak eval --defense dpo+perplexity_filter --attack gcg --gcg num_steps=20 "
        "--limit 10\n"
        "  fmlab jailbreak eval --task my_task.yaml --defense system_prompt --json\n"
        "Records go to OUT/records.jsonl; a rerun with the same --out skips finished examples."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        sub.add_parser("list", help="list defenses, attacks, judges and tasks")
        j = sub.add_parser("judge", help="judge texts against a definition")
        j.add_argument("text", nargs="+")
        j.add_argument("--judge", default="purple",
                       help="'purple', 'contains:WORD' or 'regex:PATTERN'")
        j.add_argument("--json", action="store_true", help="print JSON")
        e = sub.add_parser("eval", help="DSR of defenses against attacks on a task")
        e.add_argument("--model", default="smollm2-135m-instruct")
        e.add_argument("--task", default="purple_questions",
                       help="built-in task name or a task YAML file")
        e.add_argument("--defense", default="none",
                       help="comma-separated defenses; 'a+b' composes (e.g. dpo+output_filter)")
        e.add_argument("--attack", default="none",
                       help="comma-separated: none, suffix, gcg, gcg_ppl, ppl_prefix, repeat")
        e.add_argument("--suffix", default="", help="the suffix for --attack suffix")
        e.add_argument("--gcg", action="append", default=[],
                       help="GCG setting KEY=VALUE for adaptive attacks (repeatable)")
        e.add_argument("--judge", default=None, help="override the task's judge")
        e.add_argument("--split", default="test")
        e.add_argument("--limit", type=Int(1), default=None)
        e.add_argument("--max-new-tokens", type=Int(1), default=64)
        e.add_argument("--out", type=OutputFile(folder=True), default=None,
                       help="folder for records.jsonl (a rerun skips the finished examples)")
        e.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "action", None)
        if action == "list":
            return self._list()
        if action == "judge":
            from fmlab.jailbreak import get_judge

            judge = get_judge(args.judge)
            verdicts = [{"text": t, "unsafe": judge(t)} for t in args.text]
            emit(verdicts, as_json=args.json, text="\n".join(
                f"{'UNSAFE' if v['unsafe'] else 'safe  '}  {v['text']!r}" for v in verdicts))
            return 0
        if action == "eval":
            return self._eval(args)
        return super().run(args)

    def _list(self) -> int:
        from fmlab.jailbreak import DEFENSES, JUDGES, TASKS
        from fmlab.jailbreak._evaluate import JB_ATTACKS

        for title, reg in (("defenses", DEFENSES), ("attacks", JB_ATTACKS), ("judges", JUDGES),
                           ("tasks", TASKS)):
            print(f"{title}: {', '.join(reg.names())}")
        return 0

    def _eval(self, args: argparse.Namespace) -> int:
        from fmlab.cli._base import parse_options
        from fmlab.jailbreak import DEFENSES, JailbreakAttack, create_defense, evaluate, load_task
        from fmlab.jailbreak._evaluate import JB_ATTACKS

        defenses = [d.strip() for d in args.defense.split(",") if d.strip()]
        attacks = [a.strip() for a in args.attack.split(",") if a.strip()]
        for spec in defenses:
            for part in spec.split("+"):
                if part not in DEFENSES:
                    raise UsageError(f"argument --defense: {DEFENSES.unknown_message(part)}")
        for a in attacks:
            if a not in JB_ATTACKS:
                raise UsageError(f"argument --attack: {JB_ATTACKS.unknown_message(a)}")
        if "suffix" in attacks and not args.suffix:
            raise UsageError("argument --suffix: required with --attack suffix.")
        gcg = parse_options(args.gcg)
        task = load_task(args.task)  # a bad YAML fails before the model loads
        _check_model(args.model)
        from fmlab.models import load_causal_lm

        model, tok = load_causal_lm(args.model)
        rows: list[dict[str, Any]] = []
        for dspec in defenses:
            defense = create_defense(dspec)
            defense.fit(model, tok, task)
            for aspec in attacks:
                attack = JailbreakAttack(aspec, suffix=args.suffix, gcg=gcg)
                rep = evaluate(model, tok, defense=defense, attack=attack, task=task,
                               judge=args.judge, split=args.split, limit=args.limit,
                               max_new_tokens=args.max_new_tokens, out_dir=args.out,
                               defense_name=dspec, attack_name=aspec, fitted=True)
                rows.extend(rep.rows)
        from fmlab.jailbreak import JailbreakReport

        report = JailbreakReport(rows, str(Path(args.out) / "records.jsonl") if args.out else None)
        emit({"rows": rows, "records": report.records_path}, as_json=args.json,
             text=report.table())
        return 0
