"""Studies: the Chinchilla refit, precision-aware planning and data-filtering planning.

Nothing heavy is imported at module level (the study list imports this module).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmlab.studies._base import CONSISTENCY, Claim, Study, StudyContext, StudyResult
from fmlab.studies._claims import NotComputed, Verdict, claim_check
from fmlab.studies._options import Option

__all__ = ["ChinchillaStudy", "DataFilteringStudy", "PrecisionStudy"]

# Epoch's published replication fit (Besiroglu et al. 2024, arXiv 2404.10102, Table 1 / repo)
_EPOCH = {"E": 1.8172, "alpha": 0.3478, "beta": 0.3658, "A": 482.0, "B": 2085.4,
          "objective": 1.0183e-3}
_HOFFMANN = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}

# Illustrative constants that generate the simulated runs of the precision study's recovery check
# (the paper's fitted constants are not public). Only the fitter is tested with them.
_PREC_TRUTH = {"E": 1.9, "A": 350.0, "alpha": 0.34, "B": 2000.0, "beta": 0.36,
               "gamma_w": 3.6, "gamma_a": 4.4, "gamma_kv": 3.0}

# Released T-MARS law predictions (ImageNet-1k error) for every released pool, N_p = 12.8M, d = 0.1,
# at 1/2/4/6/8/10 epochs (briefs/scaling-laws.md section 4, computed with the released
# objective.py; a = 0.025 for effective utility, 0.022 for effective data).
_TMARS_RELEASED = {
    "utility": {
        "tmars_top0to10p": [0.930187, 0.841630, 0.771824, 0.740767, 0.723433, 0.712710],
        "tmars_top10to20p": [0.964682, 0.890609, 0.829331, 0.800521, 0.783647, 0.772720],
        "tmars_top20to30p": [0.990195, 0.931807, 0.885861, 0.866032, 0.855424, 0.849166],
        "tmars_top30to40p": [1.005862, 0.963113, 0.936032, 0.927670, 0.924481, 0.923143],
        "tmars_top0to40p_random25p": [0.969725, 0.900464, 0.845460, 0.821173, 0.807826,
                                      0.799725],
    },
    "data": {
        "tmars_top0to10p": [0.928026, 0.840861, 0.772050, 0.741308, 0.724173, 0.713665],
        "tmars_top10to20p": [0.960739, 0.887165, 0.827217, 0.799587, 0.783790, 0.773869],
        "tmars_top20to30p": [0.969287, 0.903559, 0.852724, 0.831303, 0.820234, 0.814016],
        "tmars_top30to40p": [1.003913, 0.962301, 0.935295, 0.927030, 0.924076, 0.922967],
        "tmars_top0to40p_random25p": [0.963308, 0.893057, 0.837404, 0.812925, 0.799640,
                                      0.791757],
    },
}
_TMARS_EPOCHS = (1, 2, 4, 6, 8, 10)
_POOL_BUDGETS = (32e6, 64e6, 128e6, 640e6)  # the paper's budgets (samples seen)


class ChinchillaStudy(Study):
    name = "scaling.chinchilla"
    title = "Chinchilla refit on the public runs (replication protocol)"
    capability = "scaling"
    paper = "Hoffmann et al. 2022, arXiv 2203.15556; Besiroglu et al. 2024, arXiv 2404.10102"
    summary = ("Refits L = E + A/N^alpha + B/D^beta to Epoch's 240 extracted Chinchilla runs "
               "(5 highest-loss dropped, Huber 1e-3 on log loss, 4,500-start grid) with the "
               "batched core. Checks that the replication's fit is reproduced (consistency), "
               "then tests with bootstrap refits whether Hoffmann et al.'s published fit is "
               "consistent with the runs and whether compute-optimal training uses about 20 "
               "tokens per parameter.")
    options = (Option("n_bootstrap", int, 200, 4000, low=20,
                      help="bootstrap refits behind the intervals"),)

    def run(self, ctx: StudyContext) -> StudyResult:
        import numpy as np

        from fmlab.scaling import ChinchillaLaw, chinchilla_runs
        from fmlab.scaling._plots import plot_fit

        runs = chinchilla_runs("epoch", drop_highest=5)
        X, y = runs[["n_params", "n_tokens"]], runs["loss"]
        law = ChinchillaLaw(n_bootstrap=ctx.option("n_bootstrap"), random_state=ctx.seed
                            ).fit(X, y)
        p, d = law.params_, law.diagnostics_
        draws = {k: np.asarray(v, float) for k, v in law.bootstrap_params_.items()}
        plot_fit(law, X, y, ctx.figure_path("chinchilla_fit.png"),
                 title="Chinchilla runs and fitted law (bands: 95% bootstrap)")
        fitted = {k: float(getattr(p, k)) for k in _PARAMS}
        claims = [
            replication_reproduced(fitted, float(d.objective)),
            hoffmann_inconsistent(draws, _HOFFMANN),
            tokens_per_param(fitted, draws),
        ]
        table = [{"param": k, "fmlab": fitted[k], "epoch": _EPOCH[k], "hoffmann": _HOFFMANN[k],
                  "ci_low": law.intervals_[k][0], "ci_high": law.intervals_[k][1],
                  "stderr": law.stderr_[k]} for k in _PARAMS]
        return StudyResult(
            metrics={"params": p.to_dict(), "intervals": law.intervals_,
                     "diagnostics": d.to_dict(),
                     "hoffmann_objective": law.objective(X, y, _HOFFMANN),
                     "n_bootstrap_ok": int(draws["E"].size)},
            claims=claims,
            figures={"chinchilla_fit.png": "IsoFLOP profiles: loss vs parameters, one colour per "
                                           "compute budget; lines: fit; bands: 95% bootstrap."},
            tables={"Refit vs Epoch and Hoffmann (95% bootstrap intervals)": table},
        )


_PARAMS = ("E", "A", "alpha", "B", "beta")


@claim_check("The replication's fit is reproduced: E, alpha, beta to ~2e-3; A, B within 5% "
             "(flat valley); objective within 0.1%.", kind=CONSISTENCY,
             criterion="|dE|,|dalpha|,|dbeta| <= 2e-3; |dA|/A,|dB|/B <= 5%; |dobj| <= 0.1%",
             reference="Besiroglu et al. 2024, Table 1")
def replication_reproduced(fitted: Mapping[str, float], objective: float) -> Verdict:
    """The refit's parameters and objective against Epoch's published replication."""
    exp_ok = all(abs(fitted[k] - _EPOCH[k]) <= 2e-3 for k in ("E", "alpha", "beta"))
    ab_ok = all(abs(fitted[k] / _EPOCH[k] - 1) <= 0.05 for k in ("A", "B"))
    rel = objective / _EPOCH["objective"] - 1
    return Verdict(f"E={fitted['E']:.4f} alpha={fitted['alpha']:.4f} beta={fitted['beta']:.4f} "
                   f"A={fitted['A']:.1f} B={fitted['B']:.1f}; objective {objective:.6e} "
                   f"({rel:+.3%})", exp_ok and ab_ok and abs(rel) <= 1e-3, value=objective)


def _log_coords(values: Mapping[str, Any]) -> Any:
    """Parameters in the fit's coordinates (log E, log A, alpha, log B, beta), stacked last."""
    import numpy as np

    return np.stack([np.log(np.asarray(values[k], float)) if k in ("E", "A", "B")
                     else np.asarray(values[k], float) for k in _PARAMS], axis=-1)


@claim_check("Hoffmann et al.'s published fit is not consistent with the extracted runs: it "
             "lies outside the refit's 95% bootstrap region.",
             criterion="Mahalanobis distance of Hoffmann's (log E, log A, alpha, log B, beta) "
                       "from the bootstrap refits > the 95th percentile of the refits' own "
                       "distances",
             reference="Besiroglu et al. 2024, section 3 (Hoffmann's estimates are implausible "
                       "given the data)")
def hoffmann_inconsistent(draws: Mapping[str, Any], published: Mapping[str, float]) -> Verdict:
    """``draws``: bootstrap refits, parameter -> array; ``published``: the fit tested."""
    import numpy as np

    boot = _log_coords(draws)
    if boot.ndim != 2 or boot.shape[0] < 20:
        raise NotComputed(f"{0 if boot.ndim != 2 else boot.shape[0]} bootstrap refits; the "
                          "region needs at least 20 (raise n_bootstrap)")
    mu, cov = boot.mean(0), np.cov(boot, rowvar=False)
    inv = np.linalg.pinv(cov)

    def dist(v: Any) -> Any:
        z = np.atleast_2d(v) - mu
        return np.sqrt(np.einsum("ij,jk,ik->i", z, inv, z))

    q95 = float(np.quantile(dist(boot), 0.95))
    d_pub = float(dist(_log_coords(published))[0])
    lo, hi = np.quantile(boot, 0.025, axis=0), np.quantile(boot, 0.975, axis=0)
    pub = _log_coords(published)
    outside = [k for k, v, a, b in zip(_PARAMS, pub, lo, hi, strict=True) if v < a or v > b]
    return Verdict(f"distance {d_pub:.1f} vs 95th percentile {q95:.1f} over {boot.shape[0]} "
                   f"refits; outside the per-parameter 95% intervals: "
                   f"{', '.join(outside) or 'none'}", d_pub > q95, value=d_pub,
                   interval=(0.0, q95))


_C_CHINCHILLA = 5.76e23  # Chinchilla's own training compute (FLOP)


def _tokens_per_param(E: Any, A: Any, alpha: Any, B: Any, beta: Any, flops: float) -> Any:
    """D_opt / N_opt under C = 6 N D for the law's parameters (arrays broadcast)."""
    import numpy as np

    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n_opt = g * (flops / 6) ** (beta / (alpha + beta))
    return np.asarray((flops / 6) / n_opt**2, float)


@claim_check("Compute-optimal training uses roughly 20 tokens per parameter (at Chinchilla's "
             "budget, 5.76e23 FLOP).",
             criterion="95% bootstrap interval of D_opt/N_opt inside [10, 40]",
             reference="Hoffmann et al. 2022, Table 3; Besiroglu et al. 2024, section 4")
def tokens_per_param(fitted: Mapping[str, float], draws: Mapping[str, Any]) -> Verdict:
    import numpy as np

    point = float(_tokens_per_param(*(fitted[k] for k in _PARAMS), _C_CHINCHILLA))
    boot = _tokens_per_param(*(np.asarray(draws[k], float) for k in _PARAMS), _C_CHINCHILLA)
    boot = boot[np.isfinite(boot)]
    if boot.size < 20:
        raise NotComputed(f"{boot.size} bootstrap refits; an interval needs at least 20")
    lo, hi = (float(x) for x in np.quantile(boot, [0.025, 0.975]))
    return Verdict(f"D/N = {point:.1f} tokens per parameter, 95% interval [{lo:.1f}, {hi:.1f}] "
                   f"over {boot.size} refits", 10 <= lo and hi <= 40, value=point,
                   interval=(lo, hi))


def _precision_grid() -> Any:
    """The paper's grid (N 30M-220M, D 1.5B-26B, 3-16 bits) for the simulated recovery check."""
    import numpy as np

    n = [30e6, 60e6, 110e6, 220e6]
    d = [1.5e9, 3e9, 6e9, 13e9, 26e9]
    bits = [3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0]
    train = []
    for ni in n:
        for di in d:
            for b in bits:  # one component at a time, the others at 16 bits (paper's sweeps)
                for comp in range(3):
                    row = [ni, di, 16.0, 16.0, 16.0]
                    row[2 + comp] = b
                    train.append(row)
                train.append([ni, di, b, b, b])
    return np.array(train)


_BITS = ["w_bits", "a_bits", "kv_bits"]
_TRAIN_COLS = ["n_params", "n_tokens", *_BITS]


def precision_runs(path: str | None = None) -> Any:
    """The measured low-precision runs: ``path`` (a ``runs.csv`` written by the
    ``quant.precision_sweep`` study or ``fmlab sweep``) or, by default, the table fmlab ships
    from a full-scale run of that study (``fmlab/scaling/data/PROVENANCE.md``)."""
    import pandas as pd

    from fmlab.exceptions import DataUnavailableError

    if path is None:
        from importlib.resources import files

        source = files("fmlab.scaling").joinpath("data", "precision_sweep_runs.csv")
        if not source.is_file():
            raise DataUnavailableError(
                "fmlab's table of measured precision-sweep runs is missing from this install; "
                "run 'fmlab reproduce quant.precision_sweep --full' and pass its runs.csv with "
                "--option runs=PATH.")
        with source.open() as fh:
            frame = pd.read_csv(fh)
    else:
        if not Path(path).is_file():
            raise DataUnavailableError(f"No runs table at {path!r}: pass the runs.csv that "
                                       "'fmlab reproduce quant.precision_sweep' writes.")
        frame = pd.read_csv(path)
    need = {*_TRAIN_COLS, "post_bits", "loss", "status"}
    missing = need - set(frame.columns)
    if missing:
        raise ValueError(f"The runs table lacks the columns {sorted(missing)}; it must be a "
                         "quant precision-sweep table (runs.csv).")
    return frame[frame.status == "complete"].reset_index(drop=True)


class PrecisionStudy(Study):
    name = "scaling.precision"
    title = "Precision-aware scaling laws fitted to measured low-precision training runs"
    capability = "scaling"
    paper = "Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330"
    summary = ("Fits the quantized-training law (effective parameter count with per-component "
               "sensitivities gamma_w, gamma_a, gamma_kv) to measured runs: small decoder LMs "
               "that fmlab's quant.precision_sweep trained on this machine with fake-quantized "
               "weights, activations and KV cache (shipped table from a full-scale sweep, or "
               "--option runs=PATH). Scores it on held-out runs against the precision-blind "
               "Chinchilla law fitted to the same runs, and plans the compute-optimal training "
               "precision from the fitted law with a bootstrap interval. Two consistency checks: "
               "the planner agrees with the closed form, and the fitter recovers known constants "
               "from runs simulated on the paper's grid (a recovery check, not a finding).")
    options = (
        Option("runs", str, None, none_ok=True,
               help="runs.csv of a quant precision sweep (null: the table shipped with fmlab)"),
        Option("n_bootstrap", int, 60, 300, low=20, help="bootstrap refits of the law"),
        Option("noise", float, 0.01, low=0.0, high=0.5,
               help="relative noise of the simulated runs (recovery check)"),
        Option("n_seeds", int, 3, 20, low=2,
               help="simulated data sets for the recovery check"),
    )

    def run(self, ctx: StudyContext) -> StudyResult:
        import numpy as np

        from fmlab.scaling import (
            ChinchillaLaw,
            PrecisionLaw,
            optimal_precision,
            optimal_precision_tied,
            parameter_recovery,
        )
        from fmlab.scaling._plots import plot_precision_curves

        claims: list[Claim] = []
        metrics: dict[str, Any] = {}
        heldout_rows: list[dict[str, Any]] = []
        prec = None
        try:  # a missing table, too few runs or a failed fit: the claims say so, nothing hidden
            runs = precision_runs(ctx.option("runs"))
            trained = runs[runs.post_bits.map(np.isinf)].sort_values(_TRAIN_COLS)
            trained = trained.reset_index(drop=True)
            held = np.asarray(trained.index % 3 == 2)  # every third run, as the quant study
            X, y = trained[_TRAIN_COLS], trained.loss.to_numpy(float)
            metrics.update(n_runs=int(len(trained)), n_heldout=int(held.sum()))
            prec = PrecisionLaw(n_bootstrap=ctx.option("n_bootstrap"), random_state=ctx.seed
                                ).fit(X[~held], y[~held])
            blind = ChinchillaLaw(n_bootstrap=0, random_state=ctx.seed).fit(
                X.loc[~held, ["n_params", "n_tokens"]], y[~held])
            p_prec = np.asarray(prec.predict(X[held]), float)
            p_blind = np.asarray(blind.predict(X.loc[held, ["n_params", "n_tokens"]]), float)
            for (_, r), a, b in zip(trained[held].iterrows(), p_prec, p_blind, strict=True):
                heldout_rows.append({**{c: float(r[c]) for c in _TRAIN_COLS},
                                     "loss": float(r.loss), "precision_law": float(a),
                                     "chinchilla": float(b)})
            metrics["precision_fit"] = prec.params_.to_dict()
            metrics["precision_intervals"] = prec.intervals_
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            metrics["fit_error"] = f"{type(exc).__name__}: {exc}"
        claims.append(precision_law_beats_blind(heldout_rows, seed=ctx.seed,
                                                reason=metrics.get("fit_error", "")))
        draws = ({k: np.asarray(prec.bootstrap_params_[k], float)
                  for k in ("gamma_w", "gamma_a", "gamma_kv")} if prec is not None else {})
        claims.append(optimal_precision_in_range(draws, reason=metrics.get("fit_error", "")))
        figures: dict[str, str] = {}
        if prec is not None:
            g = prec.params_
            root = optimal_precision_tied((g.gamma_w, g.gamma_a, g.gamma_kv))
            budgets = [1e15, 1e17, 1e19, 1e21]
            planned = [optimal_precision(prec, c).bits for c in budgets]
            claims.append(planner_matches_closed_form(planned, root))
            metrics["optimal_bits"] = dict(zip(map(str, budgets), planned, strict=True))
            pgrid = np.linspace(2, 16, 141)
            curves = {}
            for c in (1e15, 1e19):
                loss = np.array([_loss_at_compute(g, c, b) for b in pgrid])
                curves[f"C = {c:.0e}"] = (pgrid, loss - loss.min())
            plot_precision_curves(curves, ctx.figure_path("precision_at_fixed_compute.png"),
                                  xlabel="training bits P (weights = activations = KV)",
                                  ylabel="loss - min loss at this budget",
                                  title="Fitted law: loss vs precision at fixed compute",
                                  vlines={f"P* = {root:.2f}": root})
            figures["precision_at_fixed_compute.png"] = (
                "Loss of the fitted law against training precision at two compute budgets "
                "(N and D re-optimised for each P, cost ~ N D P), relative to each budget's "
                "minimum; vertical line: the closed-form optimum.")
        else:
            claims.append(Claim.not_computed("The planner agrees with the closed form.",
                                             metrics["fit_error"], kind=CONSISTENCY))
        if heldout_rows:
            _plot_heldout_precision(ctx, heldout_rows)
            figures["heldout.png"] = ("Held-out runs: loss predicted by the precision law and by "
                                      "the precision-blind Chinchilla law against measured loss.")

        # recovery check on simulated runs (consistency: the fitter, not the paper)
        Xs = _precision_grid()
        rec = parameter_recovery(
            lambda: PrecisionLaw(n_starts=ctx.pick(150, 600), n_polish=2,
                                 n_bootstrap=ctx.pick(30, 200)),
            _PREC_TRUTH, Xs, n_seeds=ctx.option("n_seeds"), noise=ctx.option("noise"),
            random_state=ctx.seed + 100)
        claims.append(recovery_check(rec.to_dict()))
        recovery_rows = [{"param": k, "truth": rec.truth[k], "rel_bias": rec.relative_bias[k],
                          "coverage": rec.coverage[k], "ci_width": rec.interval_width[k]}
                         for k in rec.truth]
        metrics["recovery"] = rec.to_dict()
        return StudyResult(
            metrics=metrics, claims=claims, figures=figures,
            tables={"Held-out runs": heldout_rows,
                    "Recovery of known constants from simulated runs": recovery_rows},
        )


def _loss_at_compute(g: Any, flops: float, bits: float) -> float:
    """The fitted law's loss at compute ``flops`` and tied precision ``bits`` (N, D optimal)."""
    import numpy as np

    m = flops * 16 / (6 * bits)
    feff = np.prod(-np.expm1(-bits / np.array([g.gamma_w, g.gamma_a, g.gamma_kv])))
    a_eff = g.A * feff ** (-g.alpha)
    s = g.alpha + g.beta
    n = (g.alpha * a_eff / (g.beta * g.B)) ** (1 / s) * m ** (g.beta / s)
    return float(g.E + a_eff * n ** (-g.alpha) + g.B * (m / n) ** (-g.beta))


@claim_check("Training precision matters for the loss as the law says: the precision law "
             "(effective parameter count) predicts held-out quantized training runs better than "
             "the precision-blind Chinchilla law fitted to the same runs.",
             criterion="95% paired-bootstrap interval of (blind - precision-law) absolute error "
                       "on held-out runs above 0",
             reference="Kumar et al. 2024, section 4")
def precision_law_beats_blind(rows: list[dict[str, Any]], seed: int = 0,
                              reason: str = "") -> Verdict:
    """``rows``: held-out runs with measured ``loss`` and the two laws' predictions; ``reason``:
    why there are none (a missing table, a failed fit)."""
    import numpy as np

    from fmlab.studies._claims import bootstrap_interval

    if reason:
        raise NotComputed(reason)
    if len(rows) < 5:
        raise NotComputed(f"{len(rows)} held-out runs (a fit needs more measured runs)")
    y = np.array([r["loss"] for r in rows])
    e_law = np.abs(np.array([r["precision_law"] for r in rows]) - y)
    e_blind = np.abs(np.array([r["chinchilla"] for r in rows]) - y)
    iv = bootstrap_interval(e_blind - e_law, seed=seed)
    return Verdict(f"held-out MAE {e_law.mean():.4f} (precision law) vs {e_blind.mean():.4f} "
                   f"(blind) nats on {len(rows)} runs; difference {iv}", iv.low > 0,
                   value=iv.mean, interval=iv.bounds)


@claim_check("The compute-optimal training precision planned from the measured runs lies "
             "between 4 and 16 bits: 16 bits wastes compute, below 4 bits the model must grow "
             "too much.",
             criterion="95% bootstrap interval of P* (tied precision, cost ~ N D P) inside "
                       "[4, 16] bits",
             reference="Kumar et al. 2024, section 5 (about 7-8 bits at their scale)")
def optimal_precision_in_range(draws: Mapping[str, Any], reason: str = "") -> Verdict:
    """``draws``: bootstrap refits' gamma_w, gamma_a, gamma_kv."""
    import numpy as np

    from fmlab.scaling import optimal_precision_tied

    if reason:
        raise NotComputed(reason)
    if not draws or len(draws.get("gamma_a", ())) < 20:
        raise NotComputed("fewer than 20 bootstrap refits of the precision law")
    stars = np.array([optimal_precision_tied((w, a, k)) for w, a, k in
                      zip(draws["gamma_w"], draws["gamma_a"], draws["gamma_kv"], strict=True)])
    stars = stars[np.isfinite(stars)]
    lo, mid, hi = (float(x) for x in np.quantile(stars, [0.025, 0.5, 0.975]))
    return Verdict(f"P* median {mid:.2f} bits, 95% interval [{lo:.2f}, {hi:.2f}] over "
                   f"{stars.size} refits", 4 <= lo and hi <= 16, value=mid, interval=(lo, hi))


@claim_check("The compute-optimal precision planner agrees with the closed form (the root of "
             "sum (P/g)/(e^(P/g)-1) = 1) at every budget.", kind=CONSISTENCY,
             criterion="|P*(C) - root| <= 0.02 bits for every budget C",
             reference="briefs: scaling-laws.md section 3 (derived)")
def planner_matches_closed_form(planned: list[float], root: float) -> Verdict:
    dev = max(abs(p - root) for p in planned)
    return Verdict(f"planned {', '.join(f'{p:.3f}' for p in planned)} vs root {root:.3f}",
                   dev <= 0.02, value=dev)


@claim_check("Recovery check: fitted to runs simulated from known constants on the paper's grid, "
             "the precision law recovers which component is most sensitive, with little bias.",
             kind=CONSISTENCY,
             criterion="gamma_a largest in the mean fit, and |relative bias| <= 10% for every "
                       "gamma",
             reference="simulated runs from illustrative constants (the paper's are not public)")
def recovery_check(rec: Mapping[str, Any]) -> Verdict:
    """``rec``: :meth:`RecoveryResult.to_dict` (truth, relative_bias, coverage, ...)."""
    truth, bias = rec["truth"], rec["relative_bias"]
    est = {k: truth[k] * (1 + bias[k]) for k in ("gamma_w", "gamma_a", "gamma_kv")}
    worst = max(abs(bias[k]) for k in est)
    return Verdict("mean fitted gammas " + ", ".join(f"{k}={v:.2f}" for k, v in est.items())
                   + f" (truth {truth['gamma_w']:g}/{truth['gamma_a']:g}/{truth['gamma_kv']:g});"
                   f" worst relative bias {worst:.1%}",
                   est["gamma_a"] > max(est["gamma_w"], est["gamma_kv"]) and worst <= 0.10,
                   value=worst)


def _plot_heldout_precision(ctx: StudyContext, rows: list[dict[str, Any]]) -> None:
    from fmlab._plotting import pyplot

    y = [r["loss"] for r in rows]
    fig, ax = pyplot().subplots(figsize=(4.6, 4))
    ax.scatter(y, [r["precision_law"] for r in rows], s=18, label="precision law")
    ax.scatter(y, [r["chinchilla"] for r in rows], s=18, marker="x", label="Chinchilla (blind)")
    lo, hi = min(y), max(y)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("measured loss (held-out runs)")
    ax.set_ylabel("predicted loss")
    ax.legend(fontsize=8)
    ctx.save_figure(fig, "heldout.png", dpi=110)


class DataFilteringStudy(Study):
    name = "scaling.data_filtering"
    title = "Data-filtering scaling laws: released law, pool planning, held-out OpenCLIP runs"
    capability = "scaling"
    paper = ("Goyal, Maini, Lipton, Raghunathan, Kolter 2024, Scaling Laws for Data Filtering, "
             "arXiv 2404.07177")
    summary = ("Checks that fmlab's law reproduces the released T-MARS predictions for all five "
               "pools and both variants, and that planning with the released law moves the best "
               "pool from the top 10% to larger pools within the paper's budgets (32M-640M "
               "samples); both are consistency checks. The empirical test uses real OpenCLIP "
               "runs (LAION subsets of 80M, 400M and 2B samples, 3B/13B/34B samples seen): the "
               "repetition-aware law, fitted to each model's 3B and 13B runs, predicts its "
               "held-out 34B runs, against the same law without repetition decay.")
    options = (
        Option("models", list, ["B-32", "B-16", "L-14"], item=str,
               choices=("B-32", "B-16", "L-14"), help="OpenCLIP models to fit (one law each)"),
        Option("n_starts", int, 300, 2000, low=10, help="fit starts per law"),
    )

    def run(self, ctx: StudyContext) -> StudyResult:
        import numpy as np

        from fmlab.scaling import openclip_curves, plan_pools, tmars_preset
        from fmlab.scaling._plots import plot_pool_plan

        epochs = np.array(_TMARS_EPOCHS, float)
        released_rows, plans = [], {}
        for variant in ("utility", "data"):
            law = tmars_preset(variant)
            for pool, want in _TMARS_RELEASED[variant].items():
                got = law.predict({"pool": [pool] * epochs.size, "samples_seen": epochs * 12.8e6})
                released_rows.append({"variant": variant, "pool": pool,
                                      "max_abs_err": float(np.abs(got - want).max())})
            pools = law.pools_[:4]  # the released script leaves out the random-25% pool
            for ts in ("none", "by_pool_count"):
                plan = plan_pools(law, list(_POOL_BUDGETS), pools=pools, tau_scaling=ts)
                plans[(variant, ts)] = plan
        law = tmars_preset("utility")
        dense = plan_pools(law, np.geomspace(1e7, 1e9, 60), pools=law.pools_[:4],
                           tau_scaling="by_pool_count")
        plot_pool_plan(dense, ctx.figure_path("pool_frontier.png"),
                       title="Released T-MARS law: top-k% pools (tau x pool count)")
        plan_rows = [{"variant": v, "tau_scaling": ts,
                      "sizes": [len(p.mixes[p.candidates.index(b)]) for b in p.best],
                      "best": list(p.best)} for (v, ts), p in plans.items()]

        final = _final_checkpoints(openclip_curves())
        heldout = _heldout_fits(final, ctx.option("models"), ctx.option("n_starts"), ctx.seed)
        _plot_heldout(ctx, final, heldout)
        claims = [released_law_reproduced(released_rows), best_pool_shifts(plan_rows),
                  repetition_law_predicts_heldout(heldout["rows"])]
        return StudyResult(
            metrics={"released": released_rows, "plans": {f"{v}/{ts}": p.to_dict()
                                                          for (v, ts), p in plans.items()},
                     "heldout": heldout["rows"], "fits": heldout["params"]},
            claims=claims,
            figures={"pool_frontier.png": "Predicted error of top-k% pools vs samples seen "
                                          "under the released law; dashed: lowest per budget.",
                     "openclip_heldout.png": "OpenCLIP final ImageNet error vs samples seen per "
                                             "unique-pool size; lines: the law with repetition "
                                             "decay (solid) and without (dashed), fitted to the "
                                             "3B and 13B runs; open markers: held-out 34B runs."},
            tables={"OpenCLIP: held-out 34B runs (fitted on 3B and 13B)": heldout["rows"]},
        )


def _final_checkpoints(curves: Any) -> Any:
    """The last checkpoint of every run: one fully trained model per row."""
    last = curves[curves.checkpoint == curves.groupby("run").checkpoint.transform("max")]
    return last.reset_index(drop=True)


_FRESH_POOL = 1e15  # a pool this large is never repeated: the law without repetition decay


def _heldout_fits(final: Any, models: list[str], n_starts: int, seed: int) -> dict[str, Any]:
    """Fit the repetition-aware law and its no-repetition baseline to each model's 3B and 13B
    runs; predict the 34B runs. Returns per-model rows and the fitted parameters."""
    import warnings

    import numpy as np

    from fmlab.exceptions import ReliabilityWarning
    from fmlab.scaling import DataFilteringLaw

    rows, params, laws = [], {}, {}
    for model in models:
        runs = final[final.model == model].reset_index(drop=True)
        X = runs.assign(pool=model)
        train = (runs.total_samples < 34e9).to_numpy()
        y = runs.error.to_numpy()
        row: dict[str, Any] = {"model": model, "n_fit": int(train.sum()),
                               "n_heldout": int((~train).sum())}
        for label, frame in (("decay", X), ("no_decay", X.assign(pool_size=_FRESH_POOL))):
            with warnings.catch_warnings():  # one pool per model, and (baseline) no repetition:
                warnings.simplefilter("ignore", ReliabilityWarning)  # constant by design
                law = DataFilteringLaw(variant="utility", fit_d=True, n_starts=n_starts,
                                       random_state=seed).fit(frame[train], y[train])
            pred = law.predict(frame[~train])
            row[f"mape_{label}"] = float(np.mean(np.abs(pred - y[~train]) / y[~train]))
            params[f"{model}/{label}"] = law.params_.to_dict()
            laws[(model, label)] = law
        rows.append(row)
    return {"rows": rows, "params": params, "laws": laws}


@claim_check("The released law's predictions are reproduced for all five T-MARS pools and both "
             "variants.", kind=CONSISTENCY, criterion="max |error - released| <= 1e-6 per pool",
             reference="released parameter_values.jsonl + objective.py (briefs, section 4)")
def released_law_reproduced(rows: list[dict[str, Any]]) -> Verdict:
    """``rows``: variant, pool, max_abs_err against the released predictions."""
    if not rows:
        raise NotComputed("no pool was compared")
    worst = max(rows, key=lambda r: r["max_abs_err"])
    return Verdict(f"{len(rows)} pool x variant curves; worst {worst['variant']}/{worst['pool']}"
                   f" {worst['max_abs_err']:.1e}", worst["max_abs_err"] <= 1e-6,
                   value=worst["max_abs_err"])


@claim_check("Planning with the released law, the best pool moves from the top 10% to larger, "
             "less filtered pools as compute grows (within the paper's 32M-640M budgets).",
             kind=CONSISTENCY,
             criterion="top 10% alone at 32M, a larger mix at 640M, pool count never falling, "
                       "for both variants and both tau conventions",
             reference="Goyal et al. 2024, Fig. 1 (crossover near 450M samples)")
def best_pool_shifts(rows: list[dict[str, Any]]) -> Verdict:
    """``rows``: variant, tau_scaling, sizes (pools in the best mix per budget), best."""
    if not rows:
        raise NotComputed("no plan")
    ok = [r["sizes"][0] == 1 and r["sizes"][-1] > 1 and r["sizes"] == sorted(r["sizes"])
          for r in rows]
    return Verdict("; ".join(f"{r['variant']}/{r['tau_scaling']}: " + " -> ".join(r["best"])
                             for r in rows), all(ok), value=float(sum(ok)))


@claim_check("Accounting for repetition predicts held-out runs: the law with per-repetition "
             "utility decay, fitted to a model's 3B- and 13B-sample runs, predicts its 34B-sample "
             "runs better than the same law without decay.",
             criterion="held-out MAPE with decay < without decay for every model, and lower on "
                       "average by >= 1 point",
             reference="Goyal et al. 2024, section 3 (utility decays with repetition); the "
                       "OpenCLIP curves are not in the paper")
def repetition_law_predicts_heldout(rows: list[dict[str, Any]]) -> Verdict:
    """``rows``: model, mape_decay, mape_no_decay (held-out mean absolute percentage errors)."""
    import numpy as np

    rows = [r for r in rows if np.isfinite(r.get("mape_decay", np.nan))
            and np.isfinite(r.get("mape_no_decay", np.nan))]
    if not rows:
        raise NotComputed("no model has both held-out errors")
    gain = [100 * (r["mape_no_decay"] - r["mape_decay"]) for r in rows]
    mean = float(np.mean(gain))
    return Verdict(", ".join(f"{r['model']}: {100 * r['mape_decay']:.1f}% vs "
                             f"{100 * r['mape_no_decay']:.1f}%" for r in rows)
                   + f" (mean gain {mean:+.1f} points)", all(g > 0 for g in gain) and mean >= 1,
                   value=mean, interval=(float(min(gain)), float(max(gain))))


def _plot_heldout(ctx: StudyContext, final: Any, heldout: dict[str, Any]) -> None:
    import numpy as np

    from fmlab._plotting import pyplot

    models = [r["model"] for r in heldout["rows"]]
    fig, axes = pyplot().subplots(1, len(models), figsize=(4 * len(models), 3.4), squeeze=False)
    grid = np.geomspace(2e9, 5e10, 60)
    for ax, model in zip(axes[0], models, strict=True):
        runs = final[final.model == model]
        for k, (size, grp) in enumerate(runs.groupby("pool_size")):
            color = f"C{k}"
            fit, held = grp[grp.total_samples < 34e9], grp[grp.total_samples >= 34e9]
            ax.scatter(fit.samples_seen, fit.error, color=color, label=f"{size / 1e6:.0f}M unique")
            ax.scatter(held.samples_seen, held.error, facecolors="none", edgecolors=color, s=50)
            for label, ls, pool_size in (("decay", "-", size), ("no_decay", "--", _FRESH_POOL)):
                law = heldout["laws"][(model, label)]
                frame = {"pool": [model] * grid.size, "samples_seen": grid,
                         "pool_size": np.full(grid.size, pool_size)}
                ax.plot(grid, law.predict(frame), color=color, ls=ls, lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("samples seen")
        ax.set_ylabel("ImageNet zero-shot error")
        ax.set_title(f"OpenCLIP {model}", fontsize=9)
        ax.legend(fontsize=7)
    ctx.save_figure(fig, "openclip_heldout.png", dpi=100)
