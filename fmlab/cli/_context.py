"""``fmlab context``: counterfactual evaluation, reliance over checkpoints, the §5 toy, and the
generated data (conflict sets, instruction mixes) as files."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fmlab._validation import Int, OutputFile, Real
from fmlab.cli._base import Command, add_action, emit


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    from fmlab._io import atomic_write

    with atomic_write(path) as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, default=list) + "\n")


class ContextCommand(Command):
    name = "context"
    help = "Context reliance: counterfactual evaluation, tracking over checkpoints, the §5 toy."
    epilog = (
        "Examples:\n"
        "  fmlab context tasks\n"
        "  fmlab context eval --model smollm2-135m-instruct --tasks cf_capitals,cf_quotes "
        "--limit 50 --out records.jsonl\n"
        "  fmlab context eval --model tiny-llama --tasks my_items.jsonl --method loglikelihood\n"
        "  fmlab context eval --model smollm2-135m-instruct --tasks cf_capitals --cad-alpha 0.5\n"
        "  fmlab context track ckpt/step-100 ckpt/step-200 --tasks cf_capitals --limit 64\n"
        "  fmlab context toy --steps 3 --json\n"
        "  fmlab context make-set capital --agree-share 0.5 --out capitals.jsonl\n"
        "  fmlab context mix --n 512 --agree-share 0.75 --out mix.jsonl\n"
        "A task file is JSONL: one object per line with context, question, answer, "
        "memory_answer (optional id, category, relation)."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        add_action(sub, "tasks", "list the registered counterfactual tasks")

        ev = add_action(sub, "eval", "measure context reliance of a causal LM")
        ev.add_argument("--model", required=True,
                        help="zoo name, 'hf:org/name' or a folder saved with save_pretrained")
        ev.add_argument("--tasks", default="cf_world_facts,cf_capitals,cf_bio,cf_quotes",
                        help="comma-separated task names or JSONL task files")
        ev.add_argument("--method", default="generate", choices=("generate", "loglikelihood"))
        ev.add_argument("--scoring", default=None,
                        choices=("first", "substring", "exact", "choice"),
                        help="primary scoring (default: first for generate, choice for "
                             "loglikelihood)")
        ev.add_argument("--limit", type=Int(1), default=None,
                        help="items per task (seeded sample)")
        ev.add_argument("--seed", type=Int(0), default=0)
        ev.add_argument("--out", type=OutputFile(".jsonl"), default=None,
                        help="per-item JSONL records; an interrupted run resumes from it")
        ev.add_argument("--batch-size", type=Int(1), default=16)
        ev.add_argument("--max-new-tokens", type=Int(1), default=24)
        ev.add_argument("--cad-alpha", type=Real(0, closed="left"), default=0.0,
                        help="context-aware decoding strength (0 = off; 0.5 typical)")
        ev.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
        ev.add_argument("--no-progress", action="store_true")

        tr = add_action(sub, "track", "reliance over saved checkpoints (in training order)")
        tr.add_argument("checkpoints", nargs="+", help="checkpoint folders")
        tr.add_argument("--tasks", default="cf_capitals", help="comma-separated tasks")
        tr.add_argument("--limit", type=Int(1), default=64)
        tr.add_argument("--method", default="loglikelihood",
                        choices=("generate", "loglikelihood"))
        tr.add_argument("--heldout", type=Int(0), default=32,
                        help="held-out generated instructions for the instruction metric (0=off)")
        tr.add_argument("--base", default=None, help="base model of LoRA adapter checkpoints")
        tr.add_argument("--steps", type=Int(0).list(), default=None,
                        help="comma-separated step of each checkpoint")

        toy = add_action(sub, "toy", "the one-layer attention model of the paper's §5")
        toy.add_argument("--steps", type=Int(0), default=25)
        toy.add_argument("--lr", type=Real(0), default=20.0)
        toy.add_argument("--n-subject-only", type=Int(0), default=0)
        toy.add_argument("--n-non-critical", type=Int(0), default=10)
        toy.add_argument("--train-value", action="store_true")
        toy.add_argument("--plot", type=OutputFile(".png"), default=None,
                         help="write the curves to this PNG")

        ms = add_action(sub, "make-set", "write a generated conflict set as a JSONL task file")
        ms.add_argument("relation",
                        choices=("capital", "language", "currency", "nationality", "occupation"))
        ms.add_argument("--n", type=Int(1), default=None)
        ms.add_argument("--agree-share", type=Real(0, 1, closed="both"), default=0.5)
        ms.add_argument("--seed", type=Int(0), default=0)
        ms.add_argument("--out", type=OutputFile(".jsonl"), required=True)

        mx = add_action(sub, "mix", "write a generated instruction-tuning mix as JSONL")
        mx.add_argument("--n", type=Int(1), default=512)
        mx.add_argument("--agree-share", type=Real(0, 1, closed="both"), default=0.5)
        mx.add_argument("--split", default="train", choices=("train", "heldout"))
        mx.add_argument("--seed", type=Int(0), default=0)
        mx.add_argument("--out", type=OutputFile(".jsonl"), required=True)

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "action", None)
        if action is None:
            return super().run(args)
        return int(getattr(self, "_" + action.replace("-", "_"))(args) or 0)

    def _tasks(self, args: argparse.Namespace) -> int:
        from fmlab.context import TASKS

        rows = [{"name": e.name, "description": e.description} for e in TASKS.entries()]
        emit(rows, as_json=args.json,
             text="\n".join(f"{r['name']:<18}{r['description']}" for r in rows))
        return 0

    def _eval(self, args: argparse.Namespace) -> int:
        from fmlab.context import evaluate

        rep = evaluate(args.model, _split(args.tasks), method=args.method, scoring=args.scoring,
                       limit=args.limit, seed=args.seed, output=args.out,
                       batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                       cad_alpha=args.cad_alpha, dtype=args.dtype,
                       progress=not args.no_progress)
        emit(rep.to_dict(), as_json=args.json, text=rep.summary())
        return 0

    def _track(self, args: argparse.Namespace) -> int:
        from fmlab.context import make_instruction_mix, track

        steps = args.steps
        held = make_instruction_mix(args.heldout, split="heldout") if args.heldout else None
        rows = track(args.checkpoints, _split(args.tasks), heldout=held, base=args.base,
                     steps=steps, limit=args.limit, method=args.method)
        keys = [k for k in ("step", "counterfactual", "parametric", "heldout_nll") if k in rows[0]]
        text = "\n".join(["  ".join(f"{k:>14}" for k in keys)] + [
            "  ".join(f"{r[k]:>14.4f}" if isinstance(r[k], float) else f"{r[k]:>14}"
                      for k in keys) for r in rows])
        emit(rows, as_json=args.json, text=text)
        return 0

    def _toy(self, args: argparse.Namespace) -> int:
        from fmlab.context import simulate_toy

        res = simulate_toy(steps=args.steps, lr=args.lr, n_subject_only=args.n_subject_only,
                           n_non_critical=args.n_non_critical, train_value=args.train_value)
        if args.plot:
            from fmlab._plotting import pyplot, save_figure

            plt = pyplot()
            fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
            ax[0].plot(res.steps, res.m_c)
            ax[0].set(xlabel="step", ylabel="M_C")
            ax[1].plot(res.steps, res.theta_c, label="θ_C")
            ax[1].plot(res.steps, res.theta_s, label="θ_S")
            ax[1].set(xlabel="step", ylabel="attention component")
            ax[1].legend()
            save_figure(fig, args.plot)
        text = "\n".join([f"{'step':>5} {'M_C':>7} {'θ_C':>7} {'θ_S':>7}"] + [
            f"{s:>5} {m:7.3f} {c:7.3f} {t:7.3f}"
            for s, m, c, t in zip(res.steps, res.m_c, res.theta_c, res.theta_s, strict=True)]
            + [f"peak step: {res.peak_step}"])
        emit(res.to_dict(), as_json=args.json, text=text)
        return 0

    def _make_set(self, args: argparse.Namespace) -> int:
        from fmlab.context import make_conflict_set

        task = make_conflict_set(args.relation, n=args.n, agree_share=args.agree_share,
                                 seed=args.seed)
        _write_jsonl(args.out, [dict(it) for it in task.items])
        emit({"out": args.out, "n": len(task)}, as_json=args.json,
             text=f"wrote {len(task)} items to {args.out}")
        return 0

    def _mix(self, args: argparse.Namespace) -> int:
        from fmlab.context import make_instruction_mix

        rows = make_instruction_mix(args.n, agree_share=args.agree_share, split=args.split,
                                    seed=args.seed)
        _write_jsonl(args.out, rows)
        emit({"out": args.out, "n": len(rows)}, as_json=args.json,
             text=f"wrote {len(rows)} examples to {args.out}")
        return 0
