"""``fmlab autoft``: search the fine-tuning objective (one machine or many), join a search,
read its best objective, fine-tune and compare methods."""

from __future__ import annotations

import argparse
from typing import Any

from fmlab._validation import InputFile, Int, OutputFile, Real
from fmlab.cli._base import Command, add_action, emit, parse_options

_EPILOG = """Examples:
  fmlab autoft terms
  fmlab autoft search --task toy --trials 30 --inner-steps 20 --seed 0 --out best.json
  # many machines: start the search once, then join it from anywhere that reaches the database
  fmlab autoft search --task toy --storage postgresql+psycopg://user@db:5432/fmlab --workers 2
  fmlab autoft work --storage postgresql+psycopg://user@db:5432/fmlab
  fmlab autoft best --storage sqlite:///autoft.db --out best.json
  fmlab autoft finetune --task toy --params best.json --methods zero_shot,erm,autoft --steps 200"""


class AutoFTCommand(Command):
    name = "autoft"
    help = "AutoFT: search the fine-tuning objective on a small OOD-validation set (Optuna)."
    epilog = _EPILOG

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        add_action(sub, "terms", "list the loss terms and their formulas")
        s = add_action(sub, "search", "search the objective on a named task")
        s.add_argument("--task", default="toy", help="registered task (see TASKS), e.g. toy")
        s.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="task option, repeatable (e.g. seed=1)")
        s.add_argument("--storage", default=None,
                       help="sqlite:///autoft.db or postgresql+psycopg://user@host:port/db "
                            "(default: sqlite:///autoft.db in this folder)")
        s.add_argument("--name", default="autoft", help="study name (an existing one resumes)")
        s.add_argument("--workers", type=Int(1), default=1, help="worker processes here")
        s.add_argument("--trials", type=Int(1), default=50, help="trial budget (all workers)")
        s.add_argument("--inner-steps", type=Int(1), default=20)
        s.add_argument("--batch-size", type=Int(1), default=64)
        s.add_argument("--lr-base", type=Real(0), default=1e-5,
                       help="lr is log-uniform in [1e-2, 1e2] x this")
        s.add_argument("--without", default="", help="loss terms to leave out, e.g. flyp")
        s.add_argument("--metric", default="accuracy",
                       choices=("accuracy", "macro_f1", "worst_group_accuracy"))
        s.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
        s.add_argument("--pruner", default="median", choices=("median", "none"))
        s.add_argument("--seed", type=Int(0), default=0, help="sampler seed")
        s.add_argument("--heartbeat", type=Real(0), default=10.0)
        s.add_argument("--out", type=OutputFile(".json"), default=None,
                       help="write the best objective (JSON)")
        w = add_action(sub, "work", "join a search started with 'search' and work until done")
        w.add_argument("--storage", required=True)
        w.add_argument("--name", default="autoft")
        w.add_argument("--heartbeat", type=Real(0), default=10.0)
        b = add_action(sub, "best", "the best objective of a search (released JSON format)")
        b.add_argument("--storage", required=True)
        b.add_argument("--name", default="autoft")
        b.add_argument("--out", type=OutputFile(".json"), default=None)
        f = add_action(sub, "finetune", "fine-tune with methods and compare on the task's tests")
        f.add_argument("--task", default="toy")
        f.add_argument("--option", action="append", metavar="KEY=VALUE")
        f.add_argument("--params", type=InputFile(".json"), default=None,
                       help="objective JSON (for method autoft)")
        f.add_argument("--methods", default="zero_shot,erm,autoft")
        f.add_argument("--steps", type=Int(0), default=200)
        f.add_argument("--batch-size", type=Int(1), default=64)
        f.add_argument("--lr", type=Real(0), default=1e-3, help="baselines' lr")
        f.add_argument("--weight-decay", type=Real(0, closed="left"), default=0.1,
                       help="baselines' weight decay")
        f.add_argument("--wise-alpha", type=Real(0, 1, closed="both"), default=None,
                       help="WiSE-FT mixing weight")
        f.add_argument("--metric", default="accuracy",
                       choices=("accuracy", "macro_f1", "worst_group_accuracy"))
        f.add_argument("--seed", type=Int(0), default=None,
                       help="seed of every run's batch order (default: 0 for the baselines, "
                            "the searched seed for autoft)")

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "action", None)
        if action is None:
            raise SystemExit("fmlab autoft: no action given; see 'fmlab autoft --help'")
        return int(getattr(self, f"_{action}")(args))

    def _terms(self, args: argparse.Namespace) -> int:
        from fmlab.autoft import LOSS_TERMS

        rows = [{"name": e.name, "formula": e.description} for e in LOSS_TERMS.entries()]
        emit(rows, as_json=args.json,
             text="\n".join(f"{r['name']:<8} {r['formula']}" for r in rows))
        return 0

    def _search(self, args: argparse.Namespace) -> int:
        from fmlab import _hpo as hpo
        from fmlab.autoft import AutoFT, SearchSpace

        space = SearchSpace(lr_base=args.lr_base)
        drop = [t.strip() for t in args.without.split(",") if t.strip()]
        if drop:
            space = space.without(*drop)
        search = AutoFT(n_trials=args.trials, inner_steps=args.inner_steps,
                        batch_size=args.batch_size, space=space, metric=args.metric,
                        sampler=args.sampler, pruner=args.pruner, random_state=args.seed,
                        storage=args.storage or hpo.default_storage("autoft.db"),
                        study_name=args.name, workers=args.workers, heartbeat=args.heartbeat)
        search.fit_task(args.task, **parse_options(args.option))
        if args.out:
            search.save_best(args.out)
        return self._show(search.best_value_, search.best_params_, args, len(
            search.study_.trials))

    def _show(self, value: float, params: Any, args: argparse.Namespace, n: int) -> int:
        d = params.to_dict()
        out = {"best_value": value, "best_params": d, "trials": n}
        emit(out, as_json=args.json,
             text=f"best OOD-validation value {value:.4f} after {n} trial(s)\n"
                  + "\n".join(f"  {k:<14} {v:.4g}" for k, v in d.items())
                  + (f"\nwrote {args.out}" if getattr(args, "out", None) else ""))
        return 0

    def _work(self, args: argparse.Namespace) -> int:
        from fmlab.autoft import run_autoft_worker

        n = run_autoft_worker(args.storage, args.name, heartbeat=args.heartbeat)
        emit({"trials": n}, as_json=args.json, text=f"this worker ran {n} trial(s)")
        return 0

    def _best(self, args: argparse.Namespace) -> int:
        from fmlab import _hpo as hpo
        from fmlab.autoft import best_of

        study = hpo.open_study(args.name, hpo.open_storage(args.storage), create=False)
        value, params = best_of(study)
        if args.out:
            params.save(args.out)
        return self._show(value, params, args, len(study.trials))

    def _finetune(self, args: argparse.Namespace) -> int:
        from fmlab.autoft import evaluate, load_params, make_task, run_method

        task = make_task(args.task, **parse_options(args.option))
        params = load_params(args.params) if args.params else None
        rows = []
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            res = run_method(method, task.model, task.train, task.id_val, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, params=params, metric=args.metric,
                             seed=args.seed, wise_alpha=args.wise_alpha)
            row = {"method": method, **{name: evaluate(res.model, data, args.metric)
                                        for name, data in task.tests.items()}}
            rows.append(row)
        cols = list(rows[0]) if rows else []
        text = "  ".join(f"{c:>10}" for c in cols) + "\n" + "\n".join(
            "  ".join(f"{r[c]:>10.4f}" if isinstance(r[c], float) else f"{r[c]:>10}"
                      for c in cols) for r in rows)
        emit(rows, as_json=args.json, text=text)
        return 0
