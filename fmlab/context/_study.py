"""Study ``context.inversion``: context reliance over instruction tuning of a small LM, with the
mitigations and the §5 toy beside it.

Imports nothing heavy at module top (the study list imports this module).
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np

from fmlab.studies._base import Claim, Study, StudyContext, StudyResult

_REF = ("Goyal et al. 2025, arXiv 2410.10796: Fig. 1/2 (reliance ~30% -> ~60% -> ~35% on "
        "Llama-2-7B + TULU), §4 (filtering keeps reliance stable), §5 Theorem 1")
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262}


def seed_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (axis 0)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = _T975.get(len(v) - 1, 1.96) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def _fmt(t: tuple[float, float, float], pct: bool = True) -> str:
    k = 100.0 if pct else 1.0
    return f"{k * t[0]:+.1f} [{k * t[1]:+.1f}, {k * t[2]:+.1f}]"


class InversionStudy(Study):
    """Counterfactual reliance over instruction tuning (LoRA) of SmolLM2-135M, seeds, mitigations,
    and the one-layer attention toy."""

    name: ClassVar[str] = "context.inversion"
    title: ClassVar[str] = ("Context-parametric inversion: reliance on a contradicting context "
                            "over instruction tuning")
    capability: ClassVar[str] = "context"
    paper: ClassVar[str] = ("Goyal, Baek, Kolter, Raghunathan 2025, Context-Parametric Inversion: "
                            "Why Instruction Finetuning May Not Actually Improve Context Reliance, "
                            "arXiv 2410.10796 (ICLR 2025)")
    summary: ClassVar[str] = (
        "SmolLM2-135M-Instruct is LoRA-tuned on an instruction mix generated offline (reading "
        "comprehension whose context agrees with real country facts or states facts about "
        "invented entities, closed-book facts, WordNet definitions and cloze), with several seeds. "
        "Every k steps it is probed on CF_Capitals (log-likelihood choice between the "
        "context's answer and the real one) and on held-out instructions (target NLL). Full "
        "scale adds context-critical filtering, counterfactual augmentation and query/key-only "
        "tuning. The §5 toy runs beside it. Claims come from the seed intervals of the curves.")
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers", "peft", "matplotlib")

    def run(self, ctx: StudyContext) -> StudyResult:
        from fmlab.context._mix import (
            counterfactual_augment,
            filter_context_critical,
            make_instruction_mix,
        )
        from fmlab.context._tasks import get_task
        from fmlab.context._toy import simulate_toy
        from fmlab.context._train import (
            FinetuneConfig,
            ReliabilityTracker,
            finetune,
            no_context_nll,
        )
        from fmlab.models import load_causal_lm

        ctx.seed_everything()
        o = ctx.options
        model_name = str(o.get("model", "smollm2-135m-instruct"))
        n_seeds = int(o.get("seeds", 3))
        steps = int(o.get("steps", ctx.pick(12, 120)))
        every = int(o.get("eval_every", ctx.pick(4, 10)))
        n_mix = int(o.get("n_mix", ctx.pick(256, 1024)))
        n_probe = int(o.get("n_probe", ctx.pick(24, 96)))
        n_held = int(o.get("n_heldout", ctx.pick(16, 64)))
        agree_share = float(o.get("agree_share", 0.75))
        conditions = tuple(o.get("conditions", ctx.pick(
            ("baseline",), ("baseline", "filtered", "augmented", "qk_only"))))
        cfg = FinetuneConfig(
            steps=steps, eval_every=every, batch_size=int(o.get("batch_size", 8)),
            lr=float(o.get("lr", 1e-3)), lora_rank=int(o.get("lora_rank", 8)),
            last_layers=o.get("last_layers", ctx.pick(6, None)),
            max_length=int(o.get("max_length", 96)))

        t_start = time.perf_counter()
        # -- the toy (seconds) --------------------------------------------------------------
        toy = {"baseline": simulate_toy(lr=5.0, steps=25),
               "with S points": simulate_toy(lr=5.0, steps=25, n_subject_only=10),
               "C+S filtered": simulate_toy(lr=5.0, steps=25, n_non_critical=0)}
        exact = simulate_toy(steps=2)

        # -- the LM ----------------------------------------------------------------------------
        model, tok = load_causal_lm(model_name, dtype=o.get("dtype"))
        mix = make_instruction_mix(n_mix, agree_share=agree_share, seed=ctx.seed)
        held = make_instruction_mix(n_held, agree_share=agree_share, seed=ctx.seed,
                                    split="heldout")
        probe = get_task("cf_capitals").subset(n_probe, seed=ctx.seed)
        tracker = ReliabilityTracker([probe], held, limit=None, method="loglikelihood",
                                     every=every)
        base_row = {"step": 0, **tracker.measure(model, tok)}

        def callback(step: int, m: Any, t: Any) -> dict[str, Any] | None:
            return dict(base_row) if step == 0 else tracker(step, m, t)

        datasets: dict[str, Any] = {"baseline": mix}
        if "filtered" in conditions:
            nll = no_context_nll(model, tok, mix)
            datasets["filtered"] = filter_context_critical(mix, nll, 0.25)
        if "augmented" in conditions:
            datasets["augmented"] = counterfactual_augment(mix, 0.1, seed=ctx.seed)
        datasets["qk_only"] = mix
        curves: dict[str, dict[str, np.ndarray]] = {}
        timing: dict[str, float] = {"train_s": 0.0, "track_s": 0.0}
        for cond in conditions:
            runs = []
            for s in ctx.progress(range(n_seeds), desc=f"context.inversion {cond}"):
                c = FinetuneConfig(**{**cfg.__dict__, "seed": ctx.seed + s,
                                      "params": "qk" if cond == "qk_only" else "all"})
                res = finetune(model, tok, datasets[cond], c, callbacks=[callback])
                timing["train_s"] += res.train_seconds
                timing["track_s"] += res.callback_seconds
                runs.append(res.history)
                del res
            keys = [k for k in runs[0][0] if k != "step"]
            curves[cond] = {"step": np.asarray([r["step"] for r in runs[0]], dtype=float)}
            for k in keys:
                curves[cond][k] = np.asarray([[r.get(k, np.nan) for r in h] for h in runs])
        wall = time.perf_counter() - t_start

        # -- claims ----------------------------------------------------------------------------
        base = curves["baseline"]
        cf = base["counterfactual"]  # (seeds, points)
        mean_curve = cf.mean(0)
        peak = int(np.argmax(mean_curve))
        rise = seed_interval(cf[:, peak] - cf[:, 0])
        fall = seed_interval(cf[:, peak] - cf[:, -1])
        held_gain = seed_interval(base["heldout_nll"][:, peak] - base["heldout_nll"][:, -1])
        steps_arr = base["step"]
        rises = peak > 0 and rise[1] > 0
        falls = peak < len(mean_curve) - 1 and fall[1] > 0
        d_c, d_s = np.diff(exact.theta_c), np.diff(exact.theta_s)
        claims = [
            Claim(claim="[consistency check, the §5 toy on its constructed example] gradient "
                        "descent first moves attention towards the shared context direction and "
                        "away from the subject direction, then the signs flip, and M_C rises then "
                        "falls (Proposition 1, Theorem 1).",
                  measured=(f"Δθ_C {d_c[0]:+.2f} then {d_c[1]:+.2f}; Δθ_S {d_s[0]:+.2f} then "
                            f"{d_s[1]:+.2f}; M_C {exact.m_c[0]:.3f} -> {exact.m_c[1]:.3f} -> "
                            f"{exact.m_c[2]:.3f}"),
                  holds=bool(exact.m_c[1] > exact.m_c[0] and exact.m_c[1] > exact.m_c[2]
                             and exact.theta_c[1] > 0 and exact.theta_s[1] < 0
                             and exact.theta_c[2] < exact.theta_c[1]
                             and exact.theta_s[2] > exact.theta_s[1]),
                  criterion="the four signs and the two M_C inequalities", value=exact.m_c[1],
                  reference=_REF),
            Claim(claim="[consistency check, toy] removing the C+S (non-critical) points removes "
                        "the fall; adding S points lowers the early peak (Proposition 2).",
                  measured=(f"filtered M_C final {toy['C+S filtered'].m_c[-1]:.3f} vs peak "
                            f"{toy['C+S filtered'].m_c.max():.3f}; baseline peak "
                            f"{toy['baseline'].m_c.max():.3f} -> final "
                            f"{toy['baseline'].m_c[-1]:.3f}; with S points peak "
                            f"{toy['with S points'].m_c.max():.3f}"),
                  holds=bool(toy["C+S filtered"].m_c[-1] >= toy["C+S filtered"].m_c.max() - 1e-9
                             and toy["baseline"].m_c[-1] < toy["baseline"].m_c.max()
                             and toy["with S points"].m_c.max() < toy["baseline"].m_c.max()),
                  criterion="monotone without C+S points; lower peak with S points",
                  reference=_REF),
            Claim(claim=f"[{ctx.scale} scale] counterfactual accuracy rises early in instruction "
                        f"tuning ({model_name}, {n_seeds} seeds).",
                  measured=(f"step 0 -> step {int(steps_arr[peak])} (peak of the seed mean): "
                            f"{_fmt(rise)} points (95% seed interval); curve "
                            + " ".join(f"{100 * v:.1f}" for v in mean_curve)),
                  holds=bool(rises), criterion="peak after step 0 and interval of the rise > 0",
                  value=rise[0], reference=_REF),
            Claim(claim=f"[{ctx.scale} scale] after its peak, counterfactual accuracy falls "
                        f"(the inversion).",
                  measured=(f"peak step {int(steps_arr[peak])} -> last step "
                            f"{int(steps_arr[-1])}: drop {_fmt(fall)} points" + (
                                "" if falls else "; the fall does not appear at this scale")),
                  holds=bool(falls),
                  criterion="peak before the last step and interval of the drop > 0",
                  value=fall[0], reference=_REF),
            Claim(claim=f"[{ctx.scale} scale] the held-out instruction metric keeps improving "
                        f"after the reliance peak.",
                  measured=f"held-out target NLL, peak step -> last: {_fmt(held_gain, False)} "
                           f"nats/token (positive = better)",
                  holds=bool(held_gain[1] > 0), criterion="interval of the NLL decrease > 0",
                  value=held_gain[0], reference=_REF),
        ]
        mitigation_rows = []
        for cond, cur in curves.items():
            c2 = cur["counterfactual"]
            pk = int(np.argmax(c2.mean(0)))
            mitigation_rows.append({
                "condition": cond, "n_train": len(datasets[cond]),
                "start": round(float(c2[:, 0].mean()), 4),
                "peak": round(float(c2.mean(0)[pk]), 4), "peak_step": int(cur["step"][pk]),
                "final": round(float(c2[:, -1].mean()), 4),
                "drop_after_peak": _fmt(seed_interval(c2[:, pk] - c2[:, -1])),
                "heldout_nll_final": round(float(cur["heldout_nll"][:, -1].mean()), 4)})
        if "filtered" in curves:
            f_fall = curves["filtered"]["counterfactual"]
            pk = int(np.argmax(f_fall.mean(0)))
            ff = seed_interval(f_fall[:, pk] - f_fall[:, -1])
            diff = seed_interval((cf[:, peak] - cf[:, -1]) - (f_fall[:, pk] - f_fall[:, -1]))
            claims.append(Claim(
                claim=f"[{ctx.scale} scale] context-critical filtering (drop the 25% of reading "
                      f"examples with the lowest no-context perplexity) flattens the fall.",
                measured=f"drop after peak: filtered {_fmt(ff)} vs baseline {_fmt(fall)}; "
                         f"difference {_fmt(diff)} points",
                holds=bool(diff[1] > 0), criterion="interval of (baseline drop - filtered drop) "
                                                   "> 0", value=diff[0], reference=_REF))

        figures = self._plot(ctx, curves, toy)
        metrics = {
            "model": model_name, "seeds": n_seeds, "steps": steps, "eval_every": every,
            "n_mix": n_mix, "n_probe": len(probe), "n_heldout": n_held,
            "agree_share": agree_share, "finetune": cfg.__dict__, "conditions": list(conditions),
            "curves": {c: {k: np.asarray(v).tolist() for k, v in cur.items()}
                       for c, cur in curves.items()},
            "toy": {k: {"m_c": v.m_c.tolist(), "theta_c": v.theta_c.tolist(),
                        "theta_s": v.theta_s.tolist()} for k, v in toy.items()},
            "timing": {**timing, "wall_s": wall,
                       "tracking_share": timing["track_s"] / max(timing["train_s"]
                                                                 + timing["track_s"], 1e-9)},
        }
        return StudyResult(metrics=metrics, claims=claims, figures=figures,
                           tables={"Conditions (seed means)": mitigation_rows})

    @staticmethod
    def _plot(ctx: StudyContext, curves: dict[str, dict[str, np.ndarray]],
              toy: dict[str, Any]) -> dict[str, str]:
        from fmlab._plotting import pyplot

        plt = pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for cond, cur in curves.items():
            x = cur["step"]
            for ax, key, scale in ((axes[0], "counterfactual", 100.0),
                                   (axes[1], "heldout_nll", 1.0)):
                vals = cur[key] * scale
                stats = [seed_interval(vals[:, j]) for j in range(vals.shape[1])]
                mean = np.asarray([s[0] for s in stats])
                ax.plot(x, mean, marker="o", label=cond)
                if vals.shape[0] > 1:
                    ax.fill_between(x, [s[1] for s in stats], [s[2] for s in stats], alpha=0.2)
        axes[0].set(xlabel="fine-tuning step", ylabel="counterfactual accuracy (%)",
                    title="LM: reliance on a contradicting context")
        axes[1].set(xlabel="fine-tuning step", ylabel="held-out target NLL (nats/token)",
                    title="LM: held-out instructions")
        for name, res in toy.items():
            axes[2].plot(res.steps, res.m_c, label=name)
        axes[2].set(xlabel="gradient step", ylabel="M_C (context share)",
                    title="§5 toy: one-layer attention")
        for ax in axes:
            ax.legend(fontsize=8)
        ctx.save_figure(fig, "inversion_curves.png")
        return {"inversion_curves.png": "Left: counterfactual accuracy over LoRA steps, seed mean "
                "with 95% seed interval; middle: held-out instruction NLL; right: the toy's "
                "M_C over gradient steps (baseline, with S points, C+S filtered)."}
