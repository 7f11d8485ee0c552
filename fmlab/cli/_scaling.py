"""``fmlab scaling``: fit scaling laws to a table of runs, predict, and plan."""

from __future__ import annotations

import argparse
from typing import Any

from fmlab._validation import InputFile, Int, OutputFile, Real
from fmlab.cli._base import Command, UsageError, emit, parse_options

_TABLES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".json", ".jsonl")

_EPILOG = """Examples:
  fmlab scaling laws
  fmlab scaling fit chinchilla runs.csv --col n_params=N --col n_tokens=D --target loss \\
      --bootstrap 200 --json --save law.json --plot fit.png
  fmlab scaling fit ptq runs.parquet --option n_starts=500
  fmlab scaling predict law.json --set n_params=7e9 --set n_tokens=1.4e12
  fmlab scaling predict law.json new_runs.csv --json
  fmlab scaling plan compute-optimal law.json --flops 1e21,1e23
  fmlab scaling plan critical-data ptq_law.json --n-params 1e8 --post-bits 4
  fmlab scaling plan precision precision_law.json --flops 1e21 [--n-params 1e8]
  fmlab scaling plan pools --preset tmars-utility --budgets 32e6,128e6,640e6 --plot pareto.png
"""


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"Invalid {flag} {item!r}: expected FEATURE=COLUMN, e.g. "
                             f"{flag} n_params=N.")
        if key in out:
            raise UsageError(f"{flag} names {key!r} twice ({out[key]!r} and {value!r}).")
        out[key] = value
    return out


class ScalingCommand(Command):
    name = "scaling"
    help = "Fit scaling laws (Chinchilla, precision, data filtering), predict and plan."
    epilog = _EPILOG

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        sub.add_parser("laws", help="list the laws")

        fit = sub.add_parser("fit", help="fit a law to a table of runs (CSV/Parquet/JSON)",
                             formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
        fit.add_argument("law", help="law name (see 'fmlab scaling laws')")
        fit.add_argument("file", type=InputFile(*_TABLES),
                         help="runs table: .csv, .tsv, .parquet, .json or .jsonl")
        fit.add_argument("--col", action="append", metavar="FEATURE=COLUMN",
                         help="map a law feature to a column of the file (repeatable)")
        fit.add_argument("--target", default=None,
                         help="target column (default: 'loss', or 'error' for data_filtering)")
        fit.add_argument("--loss", default=None, choices=("huber", "squared", "asymmetric"))
        fit.add_argument("--delta", type=Real(0), default=None, help="Huber delta")
        fit.add_argument("--n-starts", type=Int(1), default=None,
                         help="random subset of the grid")
        fit.add_argument("--bootstrap", type=Int(0), default=0, help="bootstrap replicates")
        fit.add_argument("--seed", type=Int(0), default=0)
        fit.add_argument("--drop-highest", type=Int(0), default=0,
                         help="drop this many highest-target runs first (5 in the Epoch protocol)")
        fit.add_argument("--option", action="append", metavar="KEY=VALUE",
                         help="any other law argument, e.g. tie_exponents=true")
        fit.add_argument("--save", type=OutputFile(".json"), default=None,
                         help="write the fitted law as JSON")
        fit.add_argument("--plot", type=OutputFile(".png"), default=None,
                         help="write a PNG of data and fitted curves")
        fit.add_argument("--json", action="store_true", help="print JSON")

        pred = sub.add_parser("predict", help="predict with a saved law")
        pred.add_argument("model", type=InputFile(".json"), help="JSON written by 'fit --save'")
        pred.add_argument("file", nargs="?", default=None, type=InputFile(*_TABLES),
                          help="runs table to predict")
        pred.add_argument("--set", action="append", metavar="FEATURE=VALUE",
                          help="one run given on the command line (repeatable)")
        pred.add_argument("--col", action="append", metavar="FEATURE=COLUMN")
        pred.add_argument("--json", action="store_true")

        plan = sub.add_parser("plan", help="plan with a saved law")
        plan.add_argument("kind", choices=("compute-optimal", "critical-data", "precision",
                                           "pools"))
        plan.add_argument("model", nargs="?", default=None, type=InputFile(".json"),
                          help="JSON written by 'fit --save'")
        plan.add_argument("--flops", type=Real(0).list(), default=None)
        plan.add_argument("--n-params", type=Real(0), default=None)
        plan.add_argument("--post-bits", type=Real(0), default=None)
        plan.add_argument("--train-bits", type=Real(0, allow_inf=True), default=float("inf"),
                          help="training precision in bits (inf = full precision)")
        plan.add_argument("--preset", default=None, choices=("tmars-utility", "tmars-data"))
        plan.add_argument("--budgets", type=Real(0).list(), default=None, help="samples seen")
        plan.add_argument("--pools", default=None, help="comma-separated pools, best first")
        plan.add_argument("--tau-scaling", default="none", choices=("none", "by_pool_count"))
        plan.add_argument("--plot", type=OutputFile(".png"), default=None)
        plan.add_argument("--json", action="store_true")

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "action", None)
        if action is None:
            return super().run(args)
        return int(getattr(self, f"_{action}")(args))

    # -- actions --------------------------------------------------------------------------------
    def _laws(self, args: argparse.Namespace) -> int:
        from fmlab.scaling import LAWS

        rows = [{"name": e.name, "description": e.description} for e in LAWS.entries()]
        text = "\n".join(f"{r['name']:<18} {r['description']}" for r in rows)
        emit(rows, as_json=False, text=text)
        return 0

    def _fit(self, args: argparse.Namespace) -> int:
        import math

        from fmlab.scaling import create_law, get_law, read_runs

        get_law(args.law)  # unknown names fail first, with suggestions
        frame = read_runs(args.file)
        target = args.target or ("error" if args.law == "data_filtering" else "loss")
        if target not in frame.columns:
            raise ValueError(f"Target column {target!r} not in {args.file}; columns are "
                             f"{list(frame.columns)}. Pick one with --target.")
        _check_numeric(frame, [target], args.file)
        if args.drop_highest:
            if args.drop_highest >= len(frame):
                raise UsageError(f"--drop-highest {args.drop_highest} would drop every one of "
                                 f"the {len(frame)} runs in {args.file}.")
            frame = frame.sort_values(target, kind="stable").iloc[: len(frame) - args.drop_highest]
        kwargs: dict[str, Any] = parse_options(args.option)
        kwargs["columns"] = _pairs(args.col, "--col") or None
        kwargs["random_state"] = args.seed
        kwargs["n_bootstrap"] = args.bootstrap
        if args.loss:
            kwargs["loss"] = args.loss
        if args.delta is not None:
            kwargs["huber_delta"] = args.delta
        if args.n_starts is not None:
            kwargs["n_starts"] = args.n_starts
        law = create_law(args.law, **kwargs)
        law.fit(frame, frame[target])
        if args.save:
            law.save(args.save)
        if args.plot:
            from fmlab.scaling._plots import plot_fit

            plot_fit(law, frame, frame[target], args.plot)
        out = law.to_dict()
        out["intervals"] = {k: list(v) for k, v in law.intervals_.items()}
        out["n_runs"] = int(len(frame))

        def clean(o: Any) -> Any:
            if isinstance(o, float) and not math.isfinite(o):
                return None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [clean(v) for v in o]
            return o

        emit(clean(out), as_json=args.json, text=law.summary())
        return 0

    def _predict(self, args: argparse.Namespace) -> int:
        import pandas as pd

        from fmlab.scaling import load_law, read_runs

        law = load_law(args.model)
        if args.file:
            frame = read_runs(args.file)
        elif args.set:
            values = _pairs(args.set, "--set")
            row: dict[str, Any] = {}
            for k, v in values.items():
                if k == "pool":
                    row[k] = [v]
                    continue
                try:
                    row[k] = [Real(0, allow_inf=k.endswith("bits")).parse(v)]
                except ValueError as exc:
                    raise UsageError(f"argument --set {k}={v}: {exc}") from None
            frame = pd.DataFrame(row)
            law.columns = None  # --set uses the law's own feature names
        else:
            raise UsageError("Give a runs file or --set FEATURE=VALUE for each feature "
                             f"({', '.join(law.feature_names)}).")
        if args.col:
            law.columns = _pairs(args.col, "--col")
        pred = law.predict(frame)
        frame = frame.assign(prediction=pred)
        emit(frame.to_dict(orient="records"), as_json=args.json, text=frame.to_string(index=False))
        return 0

    def _plan(self, args: argparse.Namespace) -> int:
        from dataclasses import asdict

        from fmlab import scaling

        law = None
        if args.kind == "pools" and args.preset:
            law = scaling.tmars_preset(args.preset.split("-")[1])
        elif args.model:
            law = scaling.load_law(args.model)
        if law is None:
            raise ValueError(f"plan {args.kind} needs a saved law (MODEL.json)"
                             + (" or --preset" if args.kind == "pools" else "") + ".")
        if args.kind == "compute-optimal":
            if not hasattr(law, "compute_optimal"):
                raise ValueError("plan compute-optimal needs a 'chinchilla' law.")
            rows = [asdict(a) for a in law.compute_optimal(_need(args.flops, "--flops"))]
        elif args.kind == "critical-data":
            d = scaling.critical_data_size(
                law, _need(args.n_params, "--n-params"), _need(args.post_bits, "--post-bits"),
                train_bits=args.train_bits)
            rows = [{"n_params": args.n_params, "post_bits": args.post_bits,
                     "critical_tokens": d}]
        elif args.kind == "precision":
            rows = [asdict(scaling.optimal_precision(law, c, n_params=args.n_params))
                    for c in _need(args.flops, "--flops")]
        else:
            pools = args.pools.split(",") if args.pools else None
            budgets = args.budgets or [32e6, 64e6, 128e6, 640e6]
            plan = scaling.plan_pools(law, budgets, pools=pools, tau_scaling=args.tau_scaling)
            if args.plot:
                import numpy as np

                from fmlab.scaling._plots import plot_pool_plan

                dense = scaling.plan_pools(
                    law, np.geomspace(min(budgets), max(budgets), 60), pools=pools,
                    tau_scaling=args.tau_scaling)
                plot_pool_plan(dense, args.plot)
            rows = [{"samples_seen": b, "best": n, "error": float(e)}
                    for b, n, e in zip(plan.budgets.tolist(), plan.best, plan.best_error,
                                       strict=True)]
        text = "\n".join("  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in r.items()) for r in rows)
        emit(rows, as_json=args.json, text=text)
        return 0


def _check_numeric(frame: Any, columns: list[str], file: str) -> None:
    """Name the file, column and row of the first value that is not a number."""
    import pandas as pd

    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise ValueError(f"Column {col!r} of {file} must hold numbers; row {i + 1} has "
                             f"{frame[col].iloc[i]!r}.")


def _need(value: Any, flag: str) -> Any:
    if value is None:
        raise UsageError(f"This plan needs {flag}.")
    return value
