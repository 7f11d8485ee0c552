"""Study ``ood.agreement``: which ensemble diversity gives agreement-on-the-line for a fine-tuned
foundation model, and how well ALine predicts OOD accuracy without labels.

Imports nothing heavy at module level (the study list imports this module).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

from fmlab.studies._base import Claim, Study, StudyContext, StudyResult
from fmlab.studies._claims import NotComputed, Verdict, claim_check, mean_interval
from fmlab.studies._options import Option

__all__ = ["AgreementStudy"]

_ESTIMATORS = ("aline-d", "aline-s", "agreement", "ac", "doc", "atc")
_DIVERSITY = ("head_init", "data_order", "data_subset")
_LINE_TOL = 0.15  # |Δslope| and |Δintercept| (probit units) counted as "the same line"


def _tasks(ctx: StudyContext) -> list[dict[str, Any]]:
    image_shifts = ctx.pick(
        ["corrupt:gaussian_blur:2", "corrupt:jpeg:5", "digits+pad2"],
        ["corrupt:gaussian_blur:2", "corrupt:jpeg:5", "corrupt:elastic:3",
         "corrupt:contrast:3", "rotate:40", "digits+pad2"],
    )
    tasks = [
        {"name": "mnist", "backbone": "efficientnet-lite0", "dataset": "mnist",
         "shifts": image_shifts, "settings": {"resolution": ctx.pick(64, 128)},
         "n_train": ctx.pick(1000, 3000), "n_eval": ctx.pick(500, 1000)},
        {"name": "rotten-tomatoes", "backbone": "all-minilm-l6-v2", "dataset": "rotten-tomatoes",
         "shifts": ["typos:0.3", "pang-lee-polarity"], "settings": {},
         "n_train": ctx.pick(3000, 6000), "n_eval": ctx.pick(500, 1000)},
    ]
    if ctx.option("cnn"):  # from-scratch contrast (Baek et al. 2022)
        tasks.append({"name": "mnist-cnn", "backbone": "cnn", "dataset": "mnist",
                      "shifts": image_shifts, "settings": {"resolution": 28},
                      "n_train": ctx.pick(1000, 3000), "n_eval": ctx.pick(500, 1000)})
    return tasks


class AgreementStudy(Study):
    name = "ood.agreement"
    title = "Agreement-on-the-line for fine-tuned foundation models"
    capability = "ood"
    paper = ("Mehra et al., Predicting the Performance of Foundation Models via "
             "Agreement-on-the-Line, NeurIPS 2024, arXiv 2404.01542")
    summary = (
        "Linear heads on frozen EfficientNet-Lite0 (MNIST) and all-MiniLM-L6-v2 (Rotten "
        "Tomatoes) features, ensembles diversified by random head initialisation, data order or "
        "data subset only, evaluated on real offline shifts (UCI digits, another review corpus) "
        "and generated ones (blur, JPEG, typos); at full scale (or with --option cnn=true) also "
        "small CNNs trained from scratch. Checks that head-init ensembles put probit "
        "accuracy and agreement on one line, that order/subset ensembles do not, and compares "
        "ALine-D/S with AC, DoC, ATC and naive agreement."
    )
    requires = ("torch",)
    options = (
        Option("n_models", int, 30, 50, low=3, help="ensemble members per diversity source"),
        Option("cnn", bool, False, True,
               help="also train small CNNs from scratch (the contrast of Baek et al. 2022)"),
    )

    def run(self, ctx: StudyContext) -> StudyResult:

        from fmlab.exceptions import (
            DataUnavailableError,
            MissingDependencyError,
            ModelUnavailableError,
            ReliabilityWarning,
        )
        from fmlab.ood import create_estimator, diagnose_lines, prediction_errors
        from fmlab.ood._ensemble import load_splits, train_heads, train_small_cnns
        from fmlab.ood._features import extract_features

        seed = ctx.seed_everything()
        n_models = ctx.option("n_models")
        rows: list[dict[str, Any]] = []
        scatter: dict[tuple[str, str], Any] = {}
        skipped: dict[str, str] = {}
        for task in _tasks(ctx):
            try:
                splits = {}
                for spec in task["shifts"]:
                    train, test, shifted = load_splits(
                        task["dataset"], spec, n_train=task["n_train"], n_eval=task["n_eval"],
                        random_state=seed)
                    splits[spec] = shifted
                cnn = task["backbone"] == "cnn"
                feats = {
                    key: extract_features("pixels" if cnn else task["backbone"], split.inputs,
                                          progress=ctx.progress, **task["settings"])
                    for key, split in [("train", train), ("id", test), *splits.items()]
                }
                if cnn:  # small CNNs from scratch read the 28x28 images themselves
                    feats = {k: v.reshape(-1, 28, 28) for k, v in feats.items()}
            except (DataUnavailableError, ModelUnavailableError, MissingDependencyError) as exc:
                # a dataset or model this install lacks: the task is skipped, and every claim
                # names it (any other error is a bug and fails the study)
                skipped[task["name"]] = f"{type(exc).__name__}: {exc}"
                continue
            for diversity in _DIVERSITY:
                trainer = train_small_cnns if cnn else train_heads
                ens = trainer(
                    feats["train"], train.labels,
                    {"id": feats["id"], **{s: feats[s] for s in splits}},
                    n_models=n_models, diversity=diversity, random_state=seed,
                )
                for spec, shifted in splits.items():
                    lines = diagnose_lines(ens.probs["id"], test.labels, ens.probs[spec],
                                           shifted.labels)
                    row: dict[str, Any] = {
                        "task": task["name"], "backbone": task["backbone"], "shift": spec,
                        "diversity": diversity, **_line_fields(lines),
                    }
                    for method in _ESTIMATORS:
                        est = create_estimator(method)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", ReliabilityWarning)
                            est.fit(ens.probs["id"], test.labels, ens.probs[spec])
                        err = prediction_errors(est.ood_accuracy_, lines.ood_accuracy)
                        row[f"mape_{method}"] = err["mape"]
                        row[f"mae_{method}"] = err["mae"]
                        if method == "aline-d":
                            row["label_free_reliable"] = bool(est.reliable_)
                    rows.append(row)
                    scatter[(f"{task['name']}: {spec}", diversity)] = lines
        if not rows:
            raise RuntimeError("No task could run: " + "; ".join(f"{k}: {v}" for k, v in
                                                                  skipped.items()))
        figures = {
            "probit_lines.png": _plot_lines(ctx, scatter),
            "estimator_errors.png": _plot_errors(ctx, rows),
        }
        claims = _claims(rows, skipped)
        metrics = {"n_models": n_models, "seed": seed, "scale": ctx.scale,
                   "line_tolerance": _LINE_TOL, "rows": rows, "skipped_tasks": skipped,
                   "tasks": [{k: v for k, v in t.items()} for t in _tasks(ctx)]}
        tables = {
            "Probit lines per shift and diversity source (slope / intercept)": [
                {"shift": f"{r['task']}: {r['shift']}", "diversity": r["diversity"],
                 "acc slope": round(r["acc_slope"], 3), "agr slope": round(r["agr_slope"], 3),
                 "acc int.": round(r["acc_intercept"], 3),
                 "agr int.": round(r["agr_intercept"], 3),
                 "acc R2": round(r["acc_r2"], 3), "agr R2": round(r["agr_r2"], 3),
                 "mean ID agr.": round(r["mean_id_agreement"], 3),
                 "ID acc": f"{r['id_acc_min']:.2f}-{r['id_acc_max']:.2f}",
                 "OOD acc": f"{r['ood_acc_min']:.2f}-{r['ood_acc_max']:.2f}"}
                for r in rows
            ],
            "MAPE % of each estimator (MAE points in brackets)": [
                {"shift": f"{r['task']}: {r['shift']}", "diversity": r["diversity"],
                 **{m: f"{r['mape_' + m]:.1f} ({r['mae_' + m]:.1f})" for m in _ESTIMATORS},
                 "AGL R2 >= 0.9": r["label_free_reliable"]}
                for r in rows
            ],
        }
        if skipped:
            tables["Skipped tasks"] = [{"task": k, "reason": v} for k, v in skipped.items()]
        return StudyResult(metrics=metrics, claims=claims, figures=figures, tables=tables)


def _line_fields(lines: Any) -> dict[str, Any]:
    acc, agr = lines.accuracy_line, lines.agreement_line
    return {
        "acc_slope": acc.slope, "acc_intercept": acc.intercept, "acc_r2": acc.r2,
        "agr_slope": agr.slope, "agr_intercept": agr.intercept, "agr_r2": agr.r2,
        "slope_gap": lines.slope_gap, "intercept_gap": lines.intercept_gap,
        "line_gap": max(lines.slope_gap, lines.intercept_gap),
        "mean_id_agreement": float(lines.id_agreement.mean()),
        "id_acc_min": float(lines.id_accuracy.min()), "id_acc_max": float(lines.id_accuracy.max()),
        "ood_acc_min": float(lines.ood_accuracy.min()),
        "ood_acc_max": float(lines.ood_accuracy.max()),
    }


_REF = "Section 4 and Figure 2 of arXiv 2404.01542 (qualitative; no numeric targets recovered)"


def _claims(all_rows: list[dict[str, Any]], skipped: dict[str, str]) -> list[Any]:
    """Every claim, from the measured rows; tasks that could not run are named in each."""
    note = ("; tasks skipped (not installed): " + "; ".join(f"{k}: {v}" for k, v in
                                                           skipped.items())) if skipped else ""
    rows = [r for r in all_rows if r["backbone"] != "cnn"]  # the foundation-model claims
    claims = [head_init_on_the_line(rows), *(diversity_off_the_line(rows, d)
                                             for d in ("data_order", "data_subset")),
              aline_beats_baselines(rows)]
    cnn = [r for r in all_rows if r["backbone"] == "cnn"]
    if cnn:
        claims.append(scratch_cnns_on_the_line(cnn))
    if note:
        claims = [replace(c, measured=c.measured + note) for c in claims]
    return claims


def _by(rows: list[dict[str, Any]], diversity: str) -> list[dict[str, Any]]:
    out = [r for r in rows if r["diversity"] == diversity]
    if not out:
        raise NotComputed(f"no {diversity.replace('_', ' ')} ensemble was evaluated")
    return out


@claim_check("With random linear-head initialisation, probit ID-vs-OOD accuracy and agreement "
             "lie on lines with matching slopes (and intercepts).",
             criterion=f"|Δslope| <= {_LINE_TOL} and |Δintercept| <= {_LINE_TOL} on most shifts",
             reference=_REF)
def head_init_on_the_line(rows: list[dict[str, Any]]) -> Verdict:
    import numpy as np

    hi = _by(rows, "head_init")
    match = [r for r in hi if r["slope_gap"] <= _LINE_TOL and r["intercept_gap"] <= _LINE_TOL]
    return Verdict(f"{len(match)}/{len(hi)} shifts within tolerance; slope gaps "
                   + ", ".join(f"{r['shift']} {r['slope_gap']:.2f}" for r in hi)
                   + "; intercept gaps " + ", ".join(f"{r['intercept_gap']:.2f}" for r in hi),
                   len(match) * 2 > len(hi),
                   value=float(np.median([r["slope_gap"] for r in hi])))


def diversity_off_the_line(rows: list[dict[str, Any]], diversity: str) -> Claim:
    """Varying only the data order (or subset) does not give agreement-on-the-line."""
    what = diversity.replace("_", " ")

    @claim_check(f"Varying only the {what} does not give agreement-on-the-line: the agreement "
                 "line departs from the accuracy line.",
                 criterion=f"median line gap > {_LINE_TOL} and > 2x the head-init gap",
                 reference=_REF)
    def check(rows: list[dict[str, Any]]) -> Verdict:
        import numpy as np

        hi_gap = float(np.median([r["line_gap"] for r in _by(rows, "head_init")]))
        rs = _by(rows, diversity)
        gap = float(np.median([r["line_gap"] for r in rs]))
        return Verdict(f"median max(|Δslope|, |Δintercept|) {gap:.2f} vs {hi_gap:.2f} with head "
                       "init; slopes (acc/agr) "
                       + ", ".join(f"{r['shift']} {r['acc_slope']:.2f}/{r['agr_slope']:.2f}"
                                   for r in rs)
                       + "; ALine-D MAE " + ", ".join(f"{r['mae_aline-d']:.1f}" for r in rs),
                       gap > _LINE_TOL and gap > 2 * hi_gap, value=gap)

    return check(rows)


@claim_check("On shifts where agreement-on-the-line holds (head-init ensembles, agreement "
             "R² >= 0.9, judged without labels), ALine-D and ALine-S have lower MAPE than AC, "
             "DoC and ATC.",
             criterion="per reliable shift, min(AC, DoC, ATC) MAPE - max(ALine-D, ALine-S) MAPE; "
                       "the 95% t-interval of its mean over shifts above 0",
             reference="Tables 2-4 of arXiv 2404.01542 (values not recovered)")
def aline_beats_baselines(rows: list[dict[str, Any]]) -> Verdict:
    import numpy as np

    hi = _by(rows, "head_init")
    reliable = [r for r in hi if r["label_free_reliable"]]
    if not reliable:  # never fall back to the unreliable shifts
        raise NotComputed(f"none of the {len(hi)} head-init shifts passes the label-free "
                          "reliability check (agreement R² >= 0.9)")
    mean = {m: float(np.mean([r[f"mape_{m}"] for r in reliable])) for m in _ESTIMATORS}
    margin = [min(r["mape_ac"], r["mape_doc"], r["mape_atc"])
              - max(r["mape_aline-d"], r["mape_aline-s"]) for r in reliable]
    iv = mean_interval(margin)
    return Verdict(f"mean MAPE over {len(reliable)} of {len(hi)} shifts: "
                   + ", ".join(f"{m} {v:.1f}%" for m, v in mean.items())
                   + f"; margin of ALine over the best baseline {iv.format(2)} points",
                   iv.low > 0, value=iv.mean, interval=iv.bounds)


@claim_check("Contrast: for small CNNs trained from scratch, varying only the data order already "
             "gives agreement-on-the-line (the diversity problem is specific to light "
             "fine-tuning of one pretrained model).",
             criterion=f"median max(|Δslope|, |Δintercept|) <= {_LINE_TOL}",
             reference="Baek et al. 2022, arXiv 2206.13089 (ensembles trained from scratch)")
def scratch_cnns_on_the_line(rows: list[dict[str, Any]]) -> Verdict:
    import numpy as np

    cnn = _by(rows, "data_order")
    gap = float(np.median([r["line_gap"] for r in cnn]))
    return Verdict(f"median line gap {gap:.2f}; ALine-D MAE "
                   + ", ".join(f"{r['shift']} {r['mae_aline-d']:.1f}" for r in cnn),
                   gap <= _LINE_TOL, value=gap)


def _plot_lines(ctx: StudyContext, scatter: dict[tuple[str, str], Any]) -> str:
    from fmlab._plotting import pyplot

    plt = pyplot()
    import numpy as np

    from fmlab.ood import probit

    shifts = list(dict.fromkeys(k[0] for k in scatter))
    fig, axes = plt.subplots(len(shifts), len(_DIVERSITY), figsize=(4.2 * len(_DIVERSITY),
                                                                    3.6 * len(shifts)),
                             squeeze=False)
    for r, shift in enumerate(shifts):
        for c, div in enumerate(_DIVERSITY):
            ax = axes[r][c]
            lines = scatter.get((shift, div))
            if lines is None:
                ax.axis("off")
                continue
            shown = _at_most(len(lines.id_agreement), _PAIRS_SHOWN)  # keeps the PNG small
            ax.scatter(probit(lines.id_agreement[shown], lines.eps_id),
                       probit(lines.ood_agreement[shown], lines.eps_ood), s=4, alpha=0.25,
                       color="tab:orange", label="agreement (pairs)")
            xa = probit(lines.id_accuracy, lines.eps_id)
            ax.scatter(xa, probit(lines.ood_accuracy, lines.eps_ood), s=14, color="tab:blue",
                       label="accuracy (models)")
            xs = np.concatenate([xa, probit(lines.id_agreement, lines.eps_id)])
            grid = np.linspace(xs.min(), xs.max(), 20)
            acc, agr = lines.accuracy_line, lines.agreement_line
            ax.plot(grid, acc.predict(grid), color="tab:blue",
                    label=f"acc: {acc.slope:.2f}x{acc.intercept:+.2f}")
            ax.plot(grid, agr.predict(grid), color="tab:orange", ls="--",
                    label=f"agr: {agr.slope:.2f}x{agr.intercept:+.2f}")
            ax.set_title(f"{shift}\n{div}", fontsize=9)
            ax.set_xlabel("probit ID")
            ax.set_ylabel("probit OOD")
            ax.legend(fontsize=7, loc="upper left")
    name = "probit_lines.png"
    ctx.save_figure(fig, name, dpi=80)
    return ("Probit scatter per shift (rows) and diversity source (columns): model accuracies "
            f"(blue) and pairwise agreements (orange; a seeded sample of at most {_PAIRS_SHOWN} "
            "pairs per panel, the lines fit all pairs), with both least-squares lines.")


_PAIRS_SHOWN = 400


def _at_most(n: int, k: int) -> Any:
    """Sorted indices of a seeded sample of at most ``k`` of ``n`` points (all when n <= k)."""
    import numpy as np

    return np.arange(n) if n <= k else np.sort(np.random.default_rng(0).choice(n, k, replace=False))


def _plot_errors(ctx: StudyContext, rows: list[dict[str, Any]]) -> str:
    from fmlab._plotting import pyplot

    plt = pyplot()
    import numpy as np

    fig, axes = plt.subplots(1, len(_DIVERSITY), figsize=(5 * len(_DIVERSITY), 3.8),
                             sharey=True, squeeze=False)
    for c, div in enumerate(_DIVERSITY):
        ax = axes[0][c]
        rs = [r for r in rows if r["diversity"] == div]
        width = 0.8 / len(_ESTIMATORS)
        for k, m in enumerate(_ESTIMATORS):
            ax.bar(np.arange(len(rs)) + k * width, [r[f"mae_{m}"] for r in rs], width,
                   label=m)
        ax.set_xticks(np.arange(len(rs)) + 0.4 - width / 2)
        ax.set_xticklabels([r["shift"].replace("corrupt:", "") for r in rs], rotation=30,
                           fontsize=7, ha="right")
        ax.set_title(div)
        ax.set_yscale("log")
        ax.set_ylabel("MAE (accuracy points, log)")
    axes[0][0].legend(fontsize=7)
    name = "estimator_errors.png"
    ctx.save_figure(fig, name, dpi=80)
    return "Mean absolute error of each estimator's predicted OOD accuracy, per shift."
