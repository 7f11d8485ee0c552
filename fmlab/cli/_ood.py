"""``fmlab ood``: predict OOD accuracy without labels; build ensembles on zoo backbones."""

from __future__ import annotations

import argparse
from typing import Any

from fmlab._validation import InputFile, Int, OutputFile, Real
from fmlab.cli._base import Command, UsageError, emit


def _npz_path(spec: str) -> str:
    return spec.rpartition(":")[0] if ".npz:" in spec else spec

_DEFAULT_METHODS = "aline-d,aline-s,agreement,ac,doc,atc"


class OODCommand(Command):
    name = "ood"
    help = "Label-free OOD accuracy prediction (agreement-on-the-line) and ensemble building."
    epilog = (
        "Examples:\n"
        "  fmlab ood predict --from ens/                      # folder with id_probs.npy, ...\n"
        "  fmlab ood predict id_probs.npy id_labels.npy ood_probs.npy --json\n"
        "  fmlab ood predict outputs.npz:id outputs.npz:y outputs.npz:ood --method aline-d\n"
        "  fmlab ood ensemble --backbone efficientnet-lite0 --dataset mnist \\\n"
        "      --ood corrupt:contrast:3 --n-models 20 --resolution 64 --out ens/\n"
        "  fmlab ood ensemble --backbone all-minilm-l6-v2 --dataset rotten-tomatoes "
        "--ood typos:0.3 --out rt/"
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        p = sub.add_parser(
            "predict", help="predict each model's OOD accuracy from probability files",
            description="Reads probabilities (n_models, n, n_classes) as .npy, .npz[:key] or "
            "Parquet (long table: model, example, one column per class) and prints every "
            "model's predicted OOD accuracy per method, with the agreement-line diagnostics.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Example:\n  fmlab ood predict --from ens/ --method aline-d,atc --json",
        )
        p.add_argument("files", nargs="*", metavar="FILE",
                       type=InputFile(".npy", ".npz", ".parquet", ".pq", spec=_npz_path),
                       help="ID_PROBS ID_LABELS OOD_PROBS (unless --from is given)")
        p.add_argument("--from", dest="source", metavar="DIR_OR_NPZ",
                       type=InputFile(".npz", allow_dir=True),
                       help="folder or .npz with id_probs, id_labels, ood_probs[, ood_labels]")
        p.add_argument("--ood-labels", metavar="FILE",
                       type=InputFile(".npy", ".npz", ".parquet", ".pq", spec=_npz_path),
                       help="OOD labels, to report the true accuracy and MAPE/MAE")
        p.add_argument("--method", default=_DEFAULT_METHODS,
                       help="comma-separated estimators (default: %(default)s)")
        p.add_argument("--eps", type=Real(0, 0.5), default=None,
                       help="probit clipping constant for ALine (default: 0.5/n)")
        p.add_argument("--min-r2", type=Real(None, 1, closed="right"), default=0.9,
                       help="agreement-line R^2 below which ALine is flagged unreliable")
        p.add_argument("--json", action="store_true", help="print JSON")

        e = sub.add_parser(
            "ensemble", help="fine-tune heads on a zoo backbone and write probability files",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Example:\n  fmlab ood ensemble --backbone efficientnet-lite0 --dataset mnist "
            "--ood digits --n-models 20 --resolution 64 --out ens/\n"
            "  fmlab ood predict --from ens/",
        )
        e.add_argument("--backbone", required=True,
                       help="backbone name, or several comma-separated (efficientnet-lite0, "
                            "all-minilm-l6-v2, smollm2-135m-instruct, pixels; cnn = small "
                            "CNNs trained from scratch)")
        e.add_argument("--dataset", required=True, help="zoo dataset (mnist, rotten-tomatoes)")
        e.add_argument("--ood", required=True,
                       help="shift: corrupt:NAME:SEVERITY, rotate:DEG, typos:RATE, or a dataset")
        e.add_argument("--diversity", default="head_init",
                       help="head_init, data_order, data_subset, a+b, or all (default: "
                            "%(default)s)")
        e.add_argument("--n-models", type=Int(1), default=20)
        e.add_argument("--n-train", type=Int(2), default=2000)
        e.add_argument("--n-eval", type=Int(1), default=1000)
        e.add_argument("--resolution", type=Int(8, 1024), default=None,
                       help="image side for EfficientNet features (default 224)")
        e.add_argument("--hidden", type=Int(0), default=0, help="hidden width of an MLP head")
        e.add_argument("--seed", type=Int(0), default=0)
        e.add_argument("--out", type=OutputFile(folder=True), required=True,
                       help="output folder")
        e.add_argument("--dry-run", action="store_true", help="print the resolved settings only")
        e.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace) -> int:
        if getattr(args, "action", None) == "predict":
            return self._predict(args)
        if getattr(args, "action", None) == "ensemble":
            return self._ensemble(args)
        return super().run(args)

    # -- predict ---------------------------------------------------------------------------------
    def _predict(self, args: argparse.Namespace) -> int:
        import warnings

        import numpy as np

        from fmlab.exceptions import ReliabilityWarning
        from fmlab.ood import create_estimator, list_estimators, prediction_errors
        from fmlab.ood._files import load_array, load_outputs
        from fmlab.ood._inputs import check_labels

        methods = [m.strip() for m in args.method.split(",") if m.strip()]
        if not methods:
            raise UsageError(f"argument --method: no estimator named in {args.method!r}; "
                             f"choose from {', '.join(list_estimators())}.")
        for m in methods:
            if m not in list_estimators():
                create_estimator(m)  # raises UnknownNameError with suggestions
        if args.source:
            if args.files:
                raise UsageError("Give either --from or three FILE arguments, not both.")
            arrays = load_outputs(args.source)
        elif len(args.files) == 3:
            names = ("id_probs", "id_labels", "ood_probs")
            arrays = {k: load_array(f, what=k) for k, f in zip(names, args.files, strict=True)}
        else:
            raise UsageError(
                f"Expected three files ID_PROBS ID_LABELS OOD_PROBS (or --from DIR); got "
                f"{len(args.files)}."
            )
        where = (f"--from {args.source}" if args.source else
                 ", ".join(f"{k}={f}" for k, f in zip(("id_probs", "id_labels", "ood_probs"),
                                                        args.files, strict=True)))
        if args.ood_labels:
            arrays["ood_labels"] = load_array(args.ood_labels, what="ood_labels")
        if "ood_labels" in arrays:
            ood = np.asarray(arrays["ood_probs"])
            where = args.ood_labels or f"{args.source} (ood_labels)"
            check_labels(arrays["ood_labels"], f"ood_labels from {where}", owner="ood predict",
                         n_examples=ood.shape[1] if ood.ndim >= 2 else -1,
                         n_classes=ood.shape[2] if ood.ndim == 3 else None,
                         examples_of="ood_probs")
        predictions: dict[str, Any] = {}
        diagnostics: dict[str, Any] = {}
        notes: list[str] = []
        for m in methods:
            params = {"eps": args.eps, "min_r2": args.min_r2} if m.startswith("aline") else {}
            est = create_estimator(m, **params)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ReliabilityWarning)
                try:
                    est.fit(arrays["id_probs"], arrays["id_labels"], arrays["ood_probs"])
                except ValueError as exc:  # name the files the arrays came from
                    raise ValueError(f"{exc} (read from {where})") from exc
            notes += [str(w.message) for w in caught if issubclass(w.category,
                                                                    ReliabilityWarning)]
            predictions[m] = est.ood_accuracy_
            if hasattr(est, "agreement_line_"):
                diagnostics[m] = {**est.agreement_line_.to_dict(), "reliable": est.reliable_,
                                  "n_clipped": est.n_clipped_}
        id_acc = est.id_accuracy_
        result: dict[str, Any] = {
            "n_models": int(len(id_acc)),
            "id_accuracy": id_acc,
            "predicted_ood_accuracy": predictions,
            "agreement_line": diagnostics,
            "warnings": sorted(set(notes)),
        }
        true = None
        if "ood_labels" in arrays:
            ood_pred = np.asarray(arrays["ood_probs"])
            ood_pred = ood_pred.argmax(-1) if ood_pred.ndim == 3 else ood_pred
            true = (ood_pred == np.asarray(arrays["ood_labels"])[None]).mean(1)
            result["true_ood_accuracy"] = true
            result["errors"] = {m: prediction_errors(p, true) for m, p in predictions.items()}
        emit(result, as_json=args.json, text=_predict_table(result, methods, true))
        return 0

    # -- ensemble --------------------------------------------------------------------------------
    def _ensemble(self, args: argparse.Namespace) -> int:
        backbones = [b.strip() for b in args.backbone.split(",") if b.strip()]
        _check_ensemble_args(args, backbones)  # names and specs, before anything loads
        settings = {"resolution": args.resolution} if args.resolution else {}
        config = {"backbone": backbones, "dataset": args.dataset, "ood": args.ood,
                  "diversity": args.diversity, "n_models": args.n_models,
                  "n_train": args.n_train, "n_eval": args.n_eval, "feature_settings": settings,
                  "hidden": args.hidden, "random_state": args.seed, "out": args.out}
        if args.dry_run:
            emit(config, as_json=args.json, text="\n".join(f"{k}: {v}" for k, v in
                                                            config.items()))
            return 0
        from fmlab.ood import build_ensemble

        ens = build_ensemble(
            backbones, args.dataset, ood=args.ood, n_models=args.n_models,
            diversity=args.diversity, n_train=args.n_train, n_eval=args.n_eval,
            feature_settings=settings, random_state=args.seed, hidden=args.hidden,
        )
        paths = ens.save(args.out)
        acc_id, acc_ood = ens.accuracy("id"), ens.accuracy("ood")
        summary = {"out": args.out, "files": {k: str(v) for k, v in paths.items()},
                   "n_models": ens.n_models, "id_accuracy": [float(acc_id.min()),
                                                             float(acc_id.max())],
                   "ood_accuracy": [float(acc_ood.min()), float(acc_ood.max())], **config}
        text = (f"wrote {ens.n_models} models to {args.out}/ (id_probs.npy, id_labels.npy, "
                f"ood_probs.npy, ood_labels.npy)\nID accuracy {acc_id.min():.3f}-"
                f"{acc_id.max():.3f}, OOD accuracy {acc_ood.min():.3f}-{acc_ood.max():.3f}\n"
                f"next: fmlab ood predict --from {args.out}")
        emit(summary, as_json=args.json, text=text)
        return 0


def _check_ensemble_args(args: argparse.Namespace, backbones: list[str]) -> None:
    from fmlab.data import list_datasets
    from fmlab.ood import list_backbones
    from fmlab.ood._ensemble import _parse_diversity, check_ood_spec

    known = [*list_backbones(), "cnn"]
    bad = [b for b in backbones if b not in known]
    if not backbones or bad:
        raise UsageError(f"argument --backbone: unknown backbone(s) {bad or [args.backbone]}; "
                         f"choose from {', '.join(known)}.")
    if args.dataset not in list_datasets():
        raise UsageError(f"argument --dataset: unknown dataset {args.dataset!r}; see "
                         "'fmlab data list'.")
    for flag, check, value in (("--ood", check_ood_spec, args.ood),
                               ("--diversity", _parse_diversity, args.diversity)):
        try:
            check(value)
        except ValueError as exc:
            raise UsageError(f"argument {flag}: {exc}") from None


def _predict_table(result: dict[str, Any], methods: list[str], true: Any) -> str:
    cols = ["model", "id_acc", *methods] + (["true"] if true is not None else [])
    rows = [cols]
    for i, acc in enumerate(result["id_accuracy"]):
        row = [str(i), f"{acc:.4f}", *(f"{result['predicted_ood_accuracy'][m][i]:.4f}"
                                        for m in methods)]
        if true is not None:
            row.append(f"{true[i]:.4f}")
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    for m, d in result["agreement_line"].items():
        lines.append(f"{m}: agreement line slope {d['slope']:.3f}, intercept "
                     f"{d['intercept']:.3f}, R^2 {d['r2']:.3f} -> "
                     f"{'reliable' if d['reliable'] else 'UNRELIABLE'}")
    for m, e in result.get("errors", {}).items():
        lines.append(f"{m}: MAPE {e['mape']:.2f}%  MAE {e['mae']:.2f} points")
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)
