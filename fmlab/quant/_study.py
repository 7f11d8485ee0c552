"""Study ``quant.precision_sweep``: the precision-law claims of Kumar et al. (2024) on real
training runs of a small LM on this machine."""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

from fmlab.studies._base import Claim, Study, StudyContext, StudyResult
from fmlab.studies._options import Option

__all__ = ["PrecisionSweepStudy"]

_SENSITIVITY_CLAIM = ("Activations are the most precision-sensitive component: quantizing them "
                      "alone costs more loss than quantizing the weights or the KV cache alone.")
_MIN_EFFECT = 2e-3  # nats: differences below are at one-seed run-to-run noise
_LAW_CLAIM = ("The precision law (N_eff with per-component sensitivities) predicts held-out "
              "runs.")
_PENALTY_CLAIM = ("The precision law predicts the loss cost of quantized training "
                  "(L(P) − L(fp) at the same N and D) on held-out runs.")


class PrecisionSweepStudy(Study):
    """Train small LMs with fake-quantized weights/activations/KV cache at several bit widths and
    token counts, quantize them after training with GPTQ, and check the paper's directions.

    References:
        Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330.
    """

    name: ClassVar[str] = "quant.precision_sweep"
    title: ClassVar[str] = "Precision sweep: quantized training and post-training quantization"
    capability: ClassVar[str] = "quant"
    paper: ClassVar[str] = "Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330"
    summary: ClassVar[str] = (
        "Decoder-only LMs (RMSNorm, RoPE, SwiGLU; 14k-56k non-embedding parameters) trained on "
        "0.25-2.5M tokens of the bundled Wikipedia and news text with weights, activations and "
        "KV cache fake-quantized to 3-8 bits, then quantized after training with GPTQ. Checks "
        "that loss rises as training precision falls, that PTQ degradation grows with tokens "
        "seen, and that models trained in low precision lose less to PTQ; the full scale also "
        "fits the precision law (sensitivities of weights, activations and KV cache) and scores "
        "it on held-out runs. Runs go through the Optuna sweep runner (SQLite, one worker "
        "process per core); the run table is saved as runs.csv."
    )
    requires: ClassVar[tuple[str, ...]] = ("torch", "tokenizers", "optuna", "matplotlib",
                                           "pandas")
    options: ClassVar[tuple[Option, ...]] = (
        Option("n_tokens", list, None, item=int, low=1000, none_ok=True,
               help="training token counts (null: 250k, 800k quick; 1M, 1.6M, 2.5M full)"),
        Option("min_effect", float, _MIN_EFFECT, low=0.0,
               help="smallest loss difference (nats) counted as an effect"),
        Option("runs", str, None, none_ok=True,
               help="analyse this runs.csv (written by an earlier run) instead of training"),
        Option("threads", int, 1, low=1, affects_result=False, help="torch threads per worker"),
        Option("workers", int, min(2, os.cpu_count() or 1), low=1, affects_result=False,
               help="sweep worker processes"),
    )

    def run(self, ctx: StudyContext) -> StudyResult:
        if ctx.option("runs"):
            return self._analyse(ctx, *_read_runs(ctx.option("runs")))
        import torch

        from fmlab.quant._sweep import SweepSpec, run_sweep, write_table

        # Small models train fastest on one thread, so the sweep runs one worker process per
        # core (each with one thread) on the same SQLite study.
        torch.set_num_threads(ctx.option("threads"))
        workers = ctx.option("workers")
        ctx.seed_everything()
        # Tiny models trained on many tokens per parameter: the precision effects live in the
        # capacity-limited regime (D/N of 10-50 here); at D/N of a few they drown in noise.
        # Below about 1M tokens, when a run escapes the early loss plateau varies by up to 0.5
        # nats between seeds, so the full scale (which fits the law) starts at 1M tokens.
        m32 = {"d_model": 32, "n_layers": 2, "n_heads": 4}
        models = ctx.pick([m32], [{"d_model": 24, "n_layers": 2, "n_heads": 4}, m32,
                                  {"d_model": 48, "n_layers": 2, "n_heads": 4}])
        tokens = ctx.option("n_tokens") or ctx.pick([250_000, 800_000],
                                                         [1_000_000, 1_600_000, 2_500_000])
        bits: list[Any] = ctx.pick(
            [None, 8, 4, 3],
            [None, 8, 6, 4, 3, (3, None, None), (None, 3, None), (None, None, 3)],
        )
        post = ctx.pick([3, 4], [3, 4, 6])
        spec = SweepSpec(models=models, n_tokens=[int(t) for t in tokens], train_bits=bits,
                         post_bits=post, seeds=[ctx.seed], ptq_method="gptq",
                         train={"eval_tokens": 32768}, calib_sequences=64)
        db = ctx.out_dir / "sweep.db"
        table = run_sweep(spec, f"sqlite:///{db}", "precision", workers=workers,
                          threads_per_worker=1, heartbeat=30)
        db.unlink(missing_ok=True)
        write_table(table, ctx.out_dir / "runs.csv")
        return self._analyse(ctx, table, spec)

    # -- analysis ---------------------------------------------------------------------------
    def _analyse(self, ctx: StudyContext, table: Any, spec: Any) -> StudyResult:
        import numpy as np

        ok = table[table.status == "complete"]
        trained = ok[ok.post_bits.map(math.isinf)]
        uniform = trained[_uniform(trained)]
        n_max = uniform.n_params.max()
        d_max = uniform.n_tokens.max()
        claims: list[Claim] = []
        # Differences smaller than this are at the run-to-run noise of one-seed tiny runs (two
        # quick sweeps with different token counts flipped signs at ~1e-3 nats), not evidence.
        min_effect = float(ctx.options.get("min_effect", _MIN_EFFECT))
        metrics: dict[str, Any] = {"min_effect_nats": min_effect,
                                   "n_runs": int(len(table[table.post_bits.map(math.isinf)])),
                                   "n_failed": int((table.status == "failed").sum() // 1)}

        # 1. Loss rises as training precision falls (uniform w=a=kv), at the largest N and D.
        sel = uniform[(uniform.n_params == n_max) & (uniform.n_tokens == d_max)]
        by_bits = sel.groupby("w_bits").loss.mean().sort_index(ascending=False)  # fp first
        metrics["loss_by_train_bits"] = {str(k): float(v) for k, v in by_bits.items()}
        losses = by_bits.to_numpy()
        rises = bool(len(losses) >= 2 and losses[-1] > losses[0] + min_effect)
        steps = np.diff(losses)
        claims.append(Claim(
            claim="Loss rises as training precision falls (weights, activations and KV cache "
                  "quantized together).",
            measured=", ".join(f"{_b(k)}: {v:.3f}" for k, v in by_bits.items()),
            holds=rises and bool((steps > -0.02).all()),
            criterion=f"loss at the lowest precision > full precision + {min_effect:g} nats, "
                      "and no step down by more than 0.02 nats as bits fall",
            value=float(losses[-1] - losses[0]) if len(losses) >= 2 else None,
            reference="Fig. 3, arXiv 2411.04330"))

        # 2. PTQ degradation grows with tokens at fixed N (full-precision training).
        ptq = ok[~ok.post_bits.map(math.isinf)]
        fp_ptq = ptq[_full_precision(ptq) & (ptq.n_params == n_max)]
        pmin = min(spec.post_bits)
        curve = fp_ptq[fp_ptq.post_bits == pmin].groupby("n_tokens").delta_ptq.mean()
        metrics["delta_ptq_vs_tokens"] = {
            str(int(p)): {str(int(d)): float(v) for d, v in
                          fp_ptq[fp_ptq.post_bits == p].groupby("n_tokens").delta_ptq.mean()
                          .items()} for p in spec.post_bits}
        grows = bool(len(curve) >= 2 and curve.iloc[-1] > curve.iloc[0] + min_effect)
        claims.append(Claim(
            claim="At fixed N, post-training-quantization degradation grows with the number of "
                  "training tokens.",
            measured=f"δ_PTQ at {pmin} bits: " + ", ".join(
                f"D={int(d):,}: {v:+.4f}" for d, v in curve.items()),
            holds=grows,
            criterion=f"δ_PTQ at the largest D > at the smallest D + {min_effect:g} nats",
            value=float(curve.iloc[-1] - curve.iloc[0]) if len(curve) >= 2 else None,
            reference="Fig. 2, arXiv 2411.04330"))

        # 3. Lower training precision -> smaller PTQ degradation (same P_post, largest N, D).
        top_ptq = ptq[(ptq.n_params == n_max) & (ptq.n_tokens == d_max) & _uniform(ptq)]
        by_train = (top_ptq[top_ptq.post_bits == pmin].groupby("w_bits").delta_ptq.mean()
                    .sort_index(ascending=False))
        metrics["delta_ptq_by_train_bits"] = {str(k): float(v) for k, v in by_train.items()}
        less = bool(len(by_train) >= 2 and by_train.iloc[-1] < by_train.iloc[0] - min_effect)
        claims.append(Claim(
            claim="Models trained in lower precision lose less to the same post-training "
                  "quantization.",
            measured=f"δ_PTQ at {pmin} bits by training precision: " + ", ".join(
                f"{_b(k)}: {v:+.4f}" for k, v in by_train.items()),
            holds=less, criterion="δ_PTQ of the lowest training precision above P_post < "
                                  f"δ_PTQ of the full-precision model - {min_effect:g} nats",
            value=float(by_train.iloc[-1] - by_train.iloc[0]) if len(by_train) >= 2 else None,
            reference="Fig. 5, arXiv 2411.04330"))

        self._component_sensitivity(trained, metrics, claims, min_effect)
        fit = self._fit_laws(trained, metrics, claims)
        figures = self._plots(ctx, uniform, fp_ptq, top_ptq, d_max, n_max)
        if fit is not None:
            figures.update(self._plot_fit(ctx, *fit))
        rows = trained[["n_params", "n_tokens", "w_bits", "a_bits", "kv_bits", "loss"]]
        return StudyResult(metrics=metrics, claims=claims, figures=figures,
                           tables={"training runs (no PTQ)": _records(rows)})

    @staticmethod
    def _component_sensitivity(trained: Any, metrics: dict[str, Any], claims: list[Claim],
                               min_effect: float) -> None:
        """Loss cost of quantizing one component alone (the others in full precision), averaged
        over every (N, D) that has the full-precision run and all three single-component runs."""
        inf = math.inf
        fp = trained[_full_precision(trained)]
        costs: dict[str, list[float]] = {"weights": [], "activations": [], "KV cache": []}
        bits_seen: set[float] = set()
        for (n, d), base in fp.groupby(["n_params", "n_tokens"]):
            at = trained[(trained.n_params == n) & (trained.n_tokens == d)]
            rows = {}
            for comp, col in (("weights", "w_bits"), ("activations", "a_bits"),
                              ("KV cache", "kv_bits")):
                others = [c for c in ("w_bits", "a_bits", "kv_bits") if c != col]
                one = at[~at[col].map(math.isinf) & (at[others[0]] == inf)
                         & (at[others[1]] == inf)]
                if len(one):
                    rows[comp] = (one, float(one[col].min()))
            if len(rows) < 3:
                continue
            for comp, (one, b) in rows.items():
                bits_seen.add(b)
                costs[comp].append(float(one.loss.mean() - base.loss.mean()))
        if not costs["weights"]:
            claims.append(Claim.not_computed(
                _SENSITIVITY_CLAIM, "no (N, D) setting has the full-precision run and all three "
                "single-component runs (the full scale trains them)",
                reference="Sec. 4.1, arXiv 2411.04330"))
            return
        mean = {k: float(sum(v) / len(v)) for k, v in costs.items()}
        metrics["single_component_cost"] = {"bits": sorted(bits_seen), "n_settings":
                                            len(costs["weights"]), "mean_loss_increase": mean}
        worst = max(mean, key=lambda k: mean[k])
        runner_up = max(v for k, v in mean.items() if k != worst)
        bits_txt = "/".join(str(int(b)) for b in sorted(bits_seen))
        claims.append(Claim(
            claim=_SENSITIVITY_CLAIM,
            measured=f"mean loss increase at {bits_txt} bits over {len(costs['weights'])} "
                     "(N, D) settings: " + ", ".join(f"{k} {v:+.4f}" for k, v in mean.items()),
            holds=bool(worst == "activations" and mean[worst] > runner_up + min_effect),
            criterion=f"activations' increase > the next component's + {min_effect:g} nats",
            value=mean["activations"] - runner_up if worst == "activations" else
            mean["activations"] - mean[worst],
            reference="Sec. 4.1, arXiv 2411.04330"))

    @staticmethod
    def _fit_laws(trained: Any, metrics: dict[str, Any], claims: list[Claim]) -> Any:
        """Fit the precision law (b) when there are enough runs and score it on held-out runs
        (every third run); otherwise add its claims as not computed, with the reason. Returns
        ``(data, held, prediction)`` for the plot, or ``None``."""
        import numpy as np

        from fmlab.scaling import create_law

        data = trained.sort_values(["n_params", "n_tokens", "w_bits", "a_bits", "kv_bits"]
                                   ).reset_index(drop=True)
        cols = ["n_params", "n_tokens", "w_bits", "a_bits", "kv_bits"]
        held = np.asarray(data.index % 3 == 2)
        reason = ""
        if (~held).sum() <= 10:
            reason = (f"{int((~held).sum())} training runs to fit 8 parameters (the full scale "
                      "trains enough)")
        else:
            try:
                law = create_law("precision")
                law.fit(data.loc[~held, cols], data.loc[~held, "loss"])
                pred_all = np.asarray(law.predict(data[cols]), dtype=float)
            except (ValueError, RuntimeError, FloatingPointError) as exc:
                reason = f"the fit failed: {type(exc).__name__}: {exc}"
        if reason:
            metrics["precision_law"] = f"not fitted: {reason}"
            for text in (_LAW_CLAIM, _PENALTY_CLAIM):
                claims.append(Claim.not_computed(text, reason,
                                                 reference="Sec. 4, arXiv 2411.04330"))
            return None
        y = data.loss.to_numpy()
        yh, ph = y[held], pred_all[held]
        r2 = 1 - ((yh - ph) ** 2).sum() / max(((yh - yh.mean()) ** 2).sum(), 1e-12)
        mae = float(np.abs(yh - ph).mean())
        params = _params(getattr(law, "params_", None))
        metrics["precision_law"] = {"held_out_r2": float(r2), "held_out_mae": mae,
                                    "n_fit": int((~held).sum()), "n_held_out": int(held.sum()),
                                    "params": params}
        gammas = ""
        if isinstance(params, dict) and "gamma_w" in params:
            gammas = (f"; sensitivities γ_w={params['gamma_w']:.2f}, γ_a={params['gamma_a']:.2f},"
                      f" γ_kv={params['gamma_kv']:.2f} bits (larger = more sensitive)")
        claims.append(Claim(
            claim=_LAW_CLAIM,
            measured=f"held-out R² {r2:.3f}, MAE {mae:.4f} nats on {int(held.sum())} runs"
                     f"{gammas}; fitted {params}",
            holds=bool(r2 > 0.5), criterion="held-out R² > 0.5 (every third run held out)",
            value=float(r2), reference="Sec. 4, arXiv 2411.04330"))
        # The loss varies mostly with N and D; the precision part of the law is tested on the
        # penalty of quantized training, L(N, D, P) - L(N, D, fp), against the measured fp run.
        fp_mask = np.asarray(_full_precision(data))
        fp_loss = data[fp_mask].groupby(["n_params", "n_tokens"]).loss.mean()
        keys = list(zip(data.n_params, data.n_tokens, strict=True))
        has_fp = np.array([k in fp_loss.index for k in keys])
        sel = held & ~fp_mask & has_fp
        if sel.sum() < 3:
            claims.append(Claim.not_computed(
                _PENALTY_CLAIM, f"{int(sel.sum())} held-out quantized runs with a full-precision "
                "run at the same N and D (needs 3)", reference="Sec. 4, arXiv 2411.04330"))
        else:
            fp_cols = data[cols].copy()
            fp_cols[["w_bits", "a_bits", "kv_bits"]] = math.inf
            pen_pred = pred_all - np.asarray(law.predict(fp_cols), dtype=float)
            pen = y - np.array([fp_loss.get(k, np.nan) for k in keys])
            e = pen[sel] - pen_pred[sel]
            pr2 = 1 - (e**2).sum() / max(((pen[sel] - pen[sel].mean()) ** 2).sum(), 1e-12)
            metrics["precision_law"].update(held_out_penalty_r2=float(pr2),
                                            held_out_penalty_mae=float(np.abs(e).mean()),
                                            n_penalty=int(sel.sum()))
            claims.append(Claim(
                claim=_PENALTY_CLAIM,
                measured=f"held-out penalty R² {pr2:.3f}, MAE {np.abs(e).mean():.4f} nats on "
                         f"{int(sel.sum())} quantized runs (measured penalties "
                         f"{pen[sel].min():+.3f} to {pen[sel].max():+.3f})",
                holds=bool(pr2 > 0.5), criterion="held-out penalty R² > 0.5",
                value=float(pr2), reference="Sec. 4, arXiv 2411.04330"))
        return data, held, pred_all

    @staticmethod
    def _plot_fit(ctx: StudyContext, data: Any, held: Any, pred: Any) -> dict[str, str]:
        from fmlab._plotting import pyplot

        y = data.loss.to_numpy()
        fig, ax = pyplot().subplots(figsize=(4.5, 4))
        ax.scatter(y[~held], pred[~held], s=14, c="tab:blue", label="fitted runs")
        ax.scatter(y[held], pred[held], s=22, c="tab:orange", marker="s", label="held-out runs")
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("measured validation loss")
        ax.set_ylabel("precision-law prediction")
        _legend(ax)
        ctx.save_figure(fig, "law_fit.png", dpi=110)
        return {"law_fit.png": "Precision law: predicted against measured loss, fitted and "
                               "held-out runs."}

    @staticmethod
    def _plots(ctx: StudyContext, uniform: Any, fp_ptq: Any, top_ptq: Any,
               d_max: int, n_max: int) -> dict[str, str]:
        bits_axis = "training bits (w = a = kv; 16 = full precision)"
        return {
            **_curves(ctx, "loss_vs_train_bits.png", "Validation loss against training precision.",
                      uniform, ["n_params", "n_tokens"], "w_bits", "loss",
                      lambda k: f"N={int(k[0]):,}, D={int(k[1]):,}", bits_axis,
                      "validation loss (nats/token)"),
            **_curves(ctx, "ptq_vs_tokens.png",
                      "Post-training-quantization degradation against tokens.",
                      fp_ptq, "post_bits", "n_tokens", "delta_ptq",
                      lambda p: f"GPTQ {int(p)} bits", "training tokens D",
                      "δ_PTQ (loss after − before)",
                      title=f"full-precision training, N={int(n_max):,}", logx=True),
            **_curves(ctx, "ptq_vs_train_bits.png", "PTQ degradation against training precision.",
                      top_ptq, "post_bits", "w_bits", "delta_ptq",
                      lambda p: f"GPTQ {int(p)} bits", bits_axis, "δ_PTQ",
                      title=f"N={int(n_max):,}, D={int(d_max):,}"),
        }


def _curves(ctx: StudyContext, name: str, caption: str, frame: Any, by: Any, x: str, y: str,
            label: Any, xlabel: str, ylabel: str, *, title: str | None = None,
            logx: bool = False) -> dict[str, str]:
    """One line per ``by`` group: the mean of ``y`` against ``x`` (full precision drawn at 16)."""
    from fmlab._plotting import pyplot

    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    for key, grp in frame.groupby(by):
        g = grp.groupby(x)[y].mean()
        ax.plot([16 if math.isinf(v) else v for v in g.index], g.to_numpy(), "o-",
                label=label(key))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    _legend(ax)
    ctx.save_figure(fig, name, dpi=110)
    return {name: caption}


def _read_runs(path: str) -> tuple[Any, Any]:
    """A run table written by this study (runs.csv) and the spec fields the analysis reads."""
    from pathlib import Path
    from types import SimpleNamespace

    import pandas as pd

    from fmlab.exceptions import DataUnavailableError

    if not Path(path).is_file():
        raise DataUnavailableError(f"No runs table at {path!r}; pass the runs.csv that "
                                   "'fmlab reproduce quant.precision_sweep' writes.")
    table = pd.read_csv(path)
    post = sorted({int(p) for p in table.post_bits if not math.isinf(p)})
    if not post:
        raise ValueError(f"The runs table {path!r} has no post-training-quantized runs.")
    return table, SimpleNamespace(post_bits=post)


def _uniform(frame: Any) -> Any:
    """Rows trained with one precision for weights, activations and KV cache."""
    return (frame.w_bits == frame.a_bits) & (frame.a_bits == frame.kv_bits)


def _full_precision(frame: Any) -> Any:
    """Rows trained without any quantization."""
    return frame.w_bits.map(math.isinf) & frame.a_bits.map(math.isinf) & frame.kv_bits.map(
        math.isinf)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _b(bits: float) -> str:
    from fmlab._precision import FULL_PRECISION_LABEL

    return FULL_PRECISION_LABEL if math.isinf(bits) else f"{int(bits)}-bit"


def _params(params: Any) -> Any:
    if params is None:
        return None
    if hasattr(params, "_asdict"):
        params = params._asdict()
    elif hasattr(params, "__dataclass_fields__"):
        from dataclasses import asdict

        params = asdict(params)
    if isinstance(params, dict):
        return {k: (round(float(v), 4) if isinstance(v, int | float) else v)
                for k, v in params.items()}
    return str(params)


def _records(frame: Any) -> list[dict[str, Any]]:
    from fmlab._precision import FULL_PRECISION_LABEL

    out = []
    for r in frame.to_dict("records"):
        out.append({k: (FULL_PRECISION_LABEL if isinstance(v, float) and math.isinf(v) else
                        (round(v, 4) if isinstance(v, float) else v)) for k, v in r.items()})
    return out
