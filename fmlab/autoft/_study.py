"""Study ``autoft.shift``: AutoFT against ERM, LP-FT, FLYP and WiSE-FT on emoji style shifts.

Nothing heavy is imported at module level: ``fmlab reproduce --list`` imports this module.
"""

from __future__ import annotations

import math
from typing import Any

from fmlab._validation import check_int, check_real
from fmlab.studies._base import Claim, Study, StudyContext, StudyResult

__all__ = ["ShiftStudy"]

_LABELS = {"zero_shot": "zero-shot", "erm": "ERM", "lp_ft": "LP-FT", "flyp": "FLYP",
           "autoft": "AutoFT", "erm_wise": "WiSE-FT(ERM)", "autoft_wise": "WiSE-FT(AutoFT)"}


def _interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval (0 for one value)."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1)
                                  / math.sqrt(len(v)))


class ShiftStudy(Study):
    """AutoFT on emoji style shifts with the clip-emoji dual encoder."""

    name = "autoft.shift"
    title = "AutoFT: a fine-tuning objective searched on one shift transfers to unseen shifts"
    capability = "autoft"
    paper = ("Choi, Lee, Chen, Zhou, Raghunathan, Finn. AutoFT: Learning an Objective for "
             "Robust Fine-Tuning, arXiv 2401.10220")
    summary = (
        "clip-emoji (EfficientNet-Lite0 image tower + MiniLM text tower, contrastively trained "
        "on Google and Twitter emoji) with a zero-shot head from class captions (9 emoji "
        "categories). Fine-tuned: the top of the image tower (last MBConv block, head conv) and "
        "the image projection; the trunk is frozen and its outputs cached. ID = Google-style "
        "emoji, OOD-validation = 300 Twitter-style images (scores the search), OOD-test = "
        "OpenMoji style and three data-zoo corruptions of held-out Google images, on concepts "
        "no training or validation image shows. AutoFT searches the nine loss weights, lr, wd "
        "and seed with seeded TPE; every method then gets the same fine-tuning budget. Quick: 3 "
        "seeds, 10 trials x 10 inner steps, 80 final steps; full: 5 seeds, 40 x 25, 300.")
    requires = ("torch", "optuna")
    options_help = {
        "seeds": "number of seeds (each: its own concept split, search and runs)",
        "n_trials": "AutoFT trials per seed",
        "inner_steps": "fine-tuning steps per trial",
        "steps": "fine-tuning steps of every final run (the shared budget)",
        "batch_size": "ID batch size",
        "lr": "the baselines' lr (and the centre lr_base of AutoFT's lr range)",
        "weight_decay": "the baselines' weight decay",
        "wise_alpha": "WiSE-FT mixing weight",
        "tune": "top (tower top + projection) or projection",
        "margin": "ID-accuracy margin of the second claim",
    }

    def run(self, ctx: StudyContext) -> StudyResult:
        import torch

        from fmlab.autoft import AutoFT, SearchSpace, evaluate, make_task, run_method

        unknown = sorted(set(ctx.options) - set(self.options_help))
        if unknown:
            raise ValueError(f"Unknown option(s) {unknown} for study {self.name!r}. Valid "
                             f"options are: {tuple(sorted(self.options_help))}.")
        o, opt = self.name, ctx.options
        seeds = check_int(opt.get("seeds", ctx.pick(3, 5)), "seeds", owner=o, low=1)
        n_trials = check_int(opt.get("n_trials", ctx.pick(10, 40)), "n_trials", owner=o, low=1)
        inner = check_int(opt.get("inner_steps", ctx.pick(10, 25)), "inner_steps", owner=o,
                          low=1)
        steps = check_int(opt.get("steps", ctx.pick(80, 300)), "steps", owner=o, low=1)
        batch = check_int(opt.get("batch_size", 64), "batch_size", owner=o, low=1)
        lr = check_real(opt.get("lr", 1e-3), "lr", owner=o, low=0.0)
        wd = check_real(opt.get("weight_decay", 0.1), "weight_decay", owner=o, low=0.0,
                        closed="left")
        alpha = check_real(opt.get("wise_alpha", 0.5), "wise_alpha", owner=o, low=0.0, high=1.0,
                           closed="both")
        margin = check_real(opt.get("margin", 0.02), "margin", owner=o, low=0.0, closed="left")
        tune = opt.get("tune", "top")
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

        rows: list[dict[str, Any]] = []
        curves: list[list[float]] = []
        best_params = []
        description = ""
        for s in ctx.progress(range(seeds), desc="autoft.shift seeds", total=seeds):
            seed = ctx.seed + s
            task = make_task("emoji-shift", seed=seed, tune=tune)
            description = task.description
            ood_names = [k for k in task.tests if k != "id"]
            search = AutoFT(n_trials=n_trials, inner_steps=inner, batch_size=batch,
                            space=SearchSpace(lr_base=lr / 10), random_state=seed,
                            n_startup_trials=max(1, n_trials // 3))
            search.fit(task.model, task.train, task.ood_val, test_data=task.tests)
            values = [t.value if t.value is not None else -math.inf
                      for t in search.study_.trials]
            curves.append([max(values[: i + 1]) for i in range(len(values))])
            best_params.append(search.best_params_.to_dict())
            runs = {m: run_method(m, task.model, task.train, task.id_val, steps=steps,
                                  batch_size=batch, lr=lr, weight_decay=wd, seed=seed,
                                  params=search.best_params_ if m == "autoft" else None)
                    for m in ("zero_shot", "erm", "lp_ft", "flyp", "autoft")}
            from fmlab.autoft import wise_ft

            models = {m: r.model for m, r in runs.items()}
            models["erm_wise"] = wise_ft(models["zero_shot"], models["erm"], alpha)
            models["autoft_wise"] = wise_ft(models["zero_shot"], models["autoft"], alpha)
            for m, net in models.items():
                acc = {k: evaluate(net, d) for k, d in task.tests.items()}
                rows.append({"seed": seed, "method": m, "id": acc["id"],
                             "ood": sum(acc[k] for k in ood_names) / len(ood_names),
                             "ood_val": evaluate(net, task.ood_val),
                             **{f"test_{k}": v for k, v in acc.items()}})

        return self._result(ctx, rows, curves, best_params, description, margin, alpha,
                            dict(seeds=seeds, n_trials=n_trials, inner_steps=inner, steps=steps,
                                 batch_size=batch, lr=lr, weight_decay=wd, tune=tune))

    def _result(self, ctx: StudyContext, rows: list[dict[str, Any]], curves: list[list[float]],
                best_params: list[dict[str, Any]], description: str, margin: float,
                alpha: float, settings: dict[str, Any]) -> StudyResult:
        methods = list(dict.fromkeys(r["method"] for r in rows))
        seeds = sorted({r["seed"] for r in rows})
        get = {(r["seed"], r["method"]): r for r in rows}
        summary = {}
        for m in methods:
            ood = _interval([get[s, m]["ood"] for s in seeds])
            idm = _interval([get[s, m]["id"] for s in seeds])
            summary[m] = {"ood_mean": ood[0], "ood_ci95": ood[1], "id_mean": idm[0],
                          "id_ci95": idm[1]}

        def diff(a: str, b: str, key: str) -> tuple[float, float]:
            return _interval([get[s, a][key] - get[s, b][key] for s in seeds])

        def fmt(d: tuple[float, float]) -> str:
            return f"{100 * d[0]:+.1f} ± {100 * d[1]:.1f} points"

        d_erm, d_flyp = diff("autoft", "erm", "ood"), diff("autoft", "flyp", "ood")
        d_id = diff("autoft", "erm", "id")
        d_wise = diff("autoft_wise", "erm_wise", "ood")
        n = len(seeds)
        ref = "AutoFT abstract and Table 1 (WILDS iWildCam +6.0, FMoW +1.5 OOD), arXiv 2401.10220"
        claims = [
            Claim(claim="AutoFT's OOD-test accuracy beats ERM and FLYP at the same fine-tuning "
                        "budget (OpenMoji style + corruptions; the search saw only Twitter).",
                  measured=f"AutoFT - ERM {fmt(d_erm)}, AutoFT - FLYP {fmt(d_flyp)} "
                           f"(mean ± 95% t-interval over {n} seeds)",
                  holds=bool(d_erm[0] > 0 and d_flyp[0] > 0),
                  criterion="both mean paired differences > 0 (the intervals show whether the "
                            "sign is resolved)", value=min(d_erm[0], d_flyp[0]), reference=ref),
            Claim(claim=f"AutoFT keeps ID accuracy within {100 * margin:.0f} points of ERM.",
                  measured=f"AutoFT - ERM on ID test {fmt(d_id)}",
                  holds=bool(d_id[0] >= -margin), criterion=f"mean difference >= -{margin:g}",
                  value=d_id[0], reference=ref),
            Claim(claim=f"WiSE-FT (alpha {alpha:g}) of AutoFT is at least as robust as WiSE-FT "
                        "of ERM.",
                  measured=f"WiSE-FT(AutoFT) - WiSE-FT(ERM) on OOD test {fmt(d_wise)}",
                  holds=bool(d_wise[0] >= 0), criterion="mean paired difference >= 0",
                  value=d_wise[0], reference=ref),
        ]
        figures = {}
        fig = self._plot_scatter(ctx, summary, methods)
        if fig:
            figures[fig] = ("OOD-test vs ID-test accuracy per method (mean over seeds, 95% "
                            "intervals): the effective-robustness view.")
        fig = self._plot_curves(ctx, curves)
        if fig:
            figures[fig] = "Best OOD-validation accuracy so far over the search's trials."
        table = [{"method": _LABELS.get(m, m), "ID": round(100 * v["id_mean"], 1),
                  "ID ±": round(100 * v["id_ci95"], 1), "OOD": round(100 * v["ood_mean"], 1),
                  "OOD ±": round(100 * v["ood_ci95"], 1)} for m, v in summary.items()]
        return StudyResult(
            metrics={"settings": settings, "model": description, "summary": summary,
                     "runs": rows, "best_so_far": curves, "best_params": best_params,
                     "caveat": "clip-emoji was contrastively trained on Google and Twitter "
                               "emoji, so the OOD-validation style was in its pretraining "
                               "data; OpenMoji and the corruptions were not."},
            claims=claims, figures=figures, tables={"accuracy (%), mean over seeds": table})

    @staticmethod
    def _plot_scatter(ctx: StudyContext, summary: dict[str, Any], methods: list[str]) -> str:
        from fmlab._plotting import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for m in methods:
            v = summary[m]
            ax.errorbar(100 * v["id_mean"], 100 * v["ood_mean"], xerr=100 * v["id_ci95"],
                        yerr=100 * v["ood_ci95"], fmt="o", capsize=3, label=_LABELS.get(m, m))
        ax.set_xlabel("ID test accuracy (%)")
        ax.set_ylabel("OOD test accuracy (%)")
        ax.legend(fontsize=8)
        ctx.save_figure(fig, "ood_vs_id.png")
        return "ood_vs_id.png"

    @staticmethod
    def _plot_curves(ctx: StudyContext, curves: list[list[float]]) -> str:
        from fmlab._plotting import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for i, c in enumerate(curves):
            ax.plot(range(1, len(c) + 1), [100 * x for x in c], marker=".", label=f"seed {i}")
        ax.set_xlabel("trial")
        ax.set_ylabel("best OOD-validation accuracy (%)")
        ax.legend(fontsize=8)
        ctx.save_figure(fig, "best_so_far.png")
        return "best_so_far.png"
