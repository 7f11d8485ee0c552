"""Study ``context.inversion``: context reliance over instruction tuning of a small LM, with the
mitigations and the §5 toy beside it.

Measured rows: one per (condition, seed, evaluation step) with the counterfactual accuracy on the
probe, its parametric accuracy and the held-out instruction NLL. Claims are pure functions of the
rows. The peak of the reliance curve is chosen *leave one seed out*: seed ``s`` is judged at the
step where the other seeds' mean curve peaks, so picking the peak does not manufacture a rise or
a fall out of noise.

Imports nothing heavy at module top (the study list imports this module).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from fmlab.studies._base import CONSISTENCY, Study, StudyContext, StudyResult
from fmlab.studies._claims import NotComputed, Verdict, claim_check, mean_interval
from fmlab.studies._options import Option

_REF = ("Goyal et al. 2025, arXiv 2410.10796: Fig. 1/2 (reliance ~30% -> ~60% -> ~35% on "
        "Llama-2-7B + TULU), §4 (filtering keeps reliance stable), §5 Theorem 1")
CONDITIONS = ("baseline", "filtered", "augmented", "qk_only")


# -- claim functions (pure functions of the rows) ------------------------------------------------
def _curve_or_none(rows: Sequence[dict[str, Any]], cond: str, key: str) -> tuple[Any, Any]:
    sel = [r for r in rows if r["condition"] == cond]
    if not sel:
        return None, None
    steps = sorted({r["step"] for r in sel})
    seeds = sorted({r["seed"] for r in sel})
    table = {(r["seed"], r["step"]): r[key] for r in sel}
    return np.asarray(steps), np.asarray([[table.get((s, t), np.nan) for t in steps]
                                          for s in seeds], dtype=float)


def _curves(rows: Sequence[dict[str, Any]], condition: str, key: str
            ) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values of shape (seeds, steps)) of one condition."""
    steps, vals = _curve_or_none(rows, condition, key)
    if steps is None:
        raise NotComputed(f"no runs of condition {condition!r}")
    if len(steps) < 3:
        raise NotComputed(f"{len(steps)} evaluation steps; a rise and a fall need at least 3")
    if vals.shape[0] < 2:
        raise NotComputed("one seed; intervals need at least 2")
    return steps, vals


def _loo_peaks(cf: np.ndarray) -> np.ndarray:
    """For each seed, the step index where the mean curve of the *other* seeds peaks."""
    n = cf.shape[0]
    return np.asarray([int(np.nanargmax(np.nanmean(np.delete(cf, s, 0), 0))) for s in range(n)])


def _rise_fall(rows: Sequence[dict[str, Any]], condition: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    steps, cf = _curves(rows, condition, "counterfactual")
    peaks = _loo_peaks(cf)
    idx = np.arange(cf.shape[0])
    return steps, peaks, cf[idx, peaks] - cf[:, 0], cf[idx, peaks] - cf[:, -1]


@claim_check("Counterfactual accuracy (reliance on a contradicting context) rises early in "
             "instruction tuning.",
             criterion="per seed, reliance at the peak of the other seeds' mean curve minus "
                       "step 0; its 95% interval over seeds above 0", reference=_REF)
def reliance_rises(rows: Sequence[dict[str, Any]]) -> Verdict:
    steps, peaks, rise, _ = _rise_fall(rows, "baseline")
    iv = mean_interval(100 * rise)
    return Verdict(f"step 0 -> peak (steps {sorted({int(steps[p]) for p in peaks})}): "
                   f"{iv.format(3)} points", bool(iv.low > 0), value=iv.mean,
                   interval=iv.bounds)


@claim_check("After its peak, counterfactual accuracy falls while tuning continues (the "
             "inversion).",
             criterion="per seed, reliance at the peak of the other seeds' mean curve minus the "
                       "last step; its 95% interval over seeds above 0", reference=_REF)
def reliance_falls(rows: Sequence[dict[str, Any]]) -> Verdict:
    steps, peaks, _, fall = _rise_fall(rows, "baseline")
    iv = mean_interval(100 * fall)
    note = "" if iv.low > 0 else "; the fall does not appear at this scale"
    return Verdict(f"peak -> last step {int(steps[-1])}: drop {iv.format(3)} points{note}",
                   bool(iv.low > 0), value=iv.mean, interval=iv.bounds)


@claim_check("The held-out instruction metric keeps improving after the reliance peak.",
             criterion="per seed, held-out target NLL at the peak minus at the last step; its "
                       "95% interval over seeds above 0", reference=_REF)
def heldout_improves(rows: Sequence[dict[str, Any]]) -> Verdict:
    _, cf = _curves(rows, "baseline", "counterfactual")
    _, nll = _curves(rows, "baseline", "heldout_nll")
    peaks = _loo_peaks(cf)
    gain = nll[np.arange(len(peaks)), peaks] - nll[:, -1]
    iv = mean_interval(gain)
    return Verdict(f"NLL decrease peak -> last: {iv.format(3)} nats/token", bool(iv.low > 0),
                   value=iv.mean, interval=iv.bounds)


@claim_check("Context-critical filtering (drop the 25% of reading examples answerable without "
             "their context) flattens the fall.",
             criterion="mean drop after the peak: baseline minus filtered, 95% interval over "
                       "seeds above 0", reference=_REF)
def filtering_flattens(rows: Sequence[dict[str, Any]]) -> Verdict:
    _, _, _, base = _rise_fall(rows, "baseline")
    _, _, _, filt = _rise_fall(rows, "filtered")
    n = min(len(base), len(filt))
    iv = mean_interval(100 * (base[:n] - filt[:n]))
    return Verdict(f"drop baseline {100 * base.mean():+.1f}, filtered {100 * filt.mean():+.1f} "
                   f"points; difference {iv.format(3)}", bool(iv.low > 0), value=iv.mean,
                   interval=iv.bounds)


@claim_check("In the §5 toy on its constructed example, gradient descent first moves attention "
             "towards the shared context direction and away from the subject direction, then "
             "the signs flip, and M_C rises then falls (Proposition 1, Theorem 1).",
             kind=CONSISTENCY, criterion="the four signs and both M_C inequalities",
             reference=_REF)
def toy_theorem(toy: dict[str, dict[str, list[float]]]) -> Verdict:
    ex = toy.get("exact")
    if not ex or len(ex["m_c"]) < 3:
        raise NotComputed("the toy's first two steps were not run")
    tc, ts, m = ex["theta_c"], ex["theta_s"], ex["m_c"]
    ok = (tc[1] > tc[0] and ts[1] < ts[0] and tc[2] < tc[1] and ts[2] > ts[1]
          and m[1] > m[0] and m[1] > m[2])
    return Verdict(f"Δθ_C {tc[1] - tc[0]:+.2f} then {tc[2] - tc[1]:+.2f}; Δθ_S "
                   f"{ts[1] - ts[0]:+.2f} then {ts[2] - ts[1]:+.2f}; M_C {m[0]:.3f} -> "
                   f"{m[1]:.3f} -> {m[2]:.3f}", bool(ok), value=m[1])


@claim_check("In the toy, removing the C+S (non-critical) points removes the fall, and adding "
             "memorised S points lowers the peak (Proposition 2).", kind=CONSISTENCY,
             criterion="monotone M_C without C+S points; lower peak with S points",
             reference=_REF)
def toy_filtering(toy: dict[str, dict[str, list[float]]]) -> Verdict:
    try:
        base, filt, spts = (np.asarray(toy[k]["m_c"]) for k in
                            ("baseline", "C+S filtered", "with S points"))
    except KeyError as exc:
        raise NotComputed(f"toy run {exc} missing") from None
    ok = (np.all(np.diff(filt) > -1e-9) and base[-1] < base.max() and spts.max() < base.max())
    return Verdict(f"filtered final {filt[-1]:.3f} (peak {filt.max():.3f}); baseline peak "
                   f"{base.max():.3f} -> final {base[-1]:.3f}; with S points peak "
                   f"{spts.max():.3f}", bool(ok), value=float(base.max() - base[-1]))


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
        "Every k steps it is probed on CF_Capitals (log-likelihood choice between the context's "
        "answer and the real one) and on held-out instructions (target NLL). LoRA tunes the last "
        "4 layers; the 26 frozen layers below run once per sequence (FrozenPrefix, exact). Full "
        "scale adds the three mitigations: context-critical filtering, counterfactual "
        "augmentation and query/key-only tuning (--set conditions=... picks them). The §5 toy "
        "runs beside it. Quick: 8 steps "
        "(batch 8, 80 tokens), probe at steps 0, 4, 8 on 16 items, 3 seeds: too short to expect "
        "the inversion; full: 40 steps, probe every 8 steps on 48 items, 3 seeds, baseline and "
        "each mitigation.")
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers", "peft", "matplotlib")
    options = (
        Option("model", str, "smollm2-135m-instruct",
               help="causal LM to tune: zoo name, 'hf:' id or folder"),
        Option("seeds", int, 3, low=1, help="seeds per condition (intervals need 2 or more)"),
        Option("steps", int, 8, 40, low=2, help="LoRA steps per run"),
        Option("eval_every", int, 4, 8, low=1, help="probe every this many steps (k)"),
        Option("n_mix", int, 64, 384, low=16, help="training examples generated"),
        Option("n_probe", int, 16, 48, low=4, help="CF_Capitals items in the reliance probe"),
        Option("n_heldout", int, 8, 24, low=4, help="held-out instruction examples"),
        Option("agree_share", float, 0.75, low=0.0, high=1.0,
               help="share of reading examples whose context agrees with real facts"),
        Option("lr", float, 1e-3, low=0.0, help="AdamW learning rate"),
        Option("lora_rank", int, 8, low=1, help="LoRA rank"),
        Option("last_layers", int, 4, low=1, none_ok=True,
               help="LoRA on the last N layers only (null: all layers)"),
        Option("batch_size", int, 8, low=1, help="examples per step"),
        Option("max_length", int, 80, 96, low=16, help="tokens per example (prompt + target)"),
        Option("conditions", list, ["baseline"], list(CONDITIONS), item=str,
               choices=CONDITIONS, help="baseline and the mitigations to run"),
    )

    def run(self, ctx: StudyContext) -> StudyResult:
        from fmlab.context._lm import FrozenPrefix
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
        o = ctx.option
        conditions = list(o("conditions"))
        if "baseline" not in conditions:
            conditions.insert(0, "baseline")
        every = o("eval_every")
        cfg = FinetuneConfig(steps=o("steps"), eval_every=every, batch_size=o("batch_size"),
                             lr=o("lr"), lora_rank=o("lora_rank"), last_layers=o("last_layers"),
                             max_length=o("max_length"))
        t_start = time.perf_counter()
        cpu_start = time.process_time()

        # -- the toy (seconds) -------------------------------------------------------------
        toy_runs = {"baseline": simulate_toy(lr=5.0, steps=25),
                    "with S points": simulate_toy(lr=5.0, steps=25, n_subject_only=10),
                    "C+S filtered": simulate_toy(lr=5.0, steps=25, n_non_critical=0),
                    "exact": simulate_toy(steps=2)}
        toy = {k: {"m_c": v.m_c.tolist(), "theta_c": v.theta_c.tolist(),
                   "theta_s": v.theta_s.tolist()} for k, v in toy_runs.items()}

        # -- the LM ------------------------------------------------------------------------
        model, tok = load_causal_lm(o("model"))
        mix = make_instruction_mix(o("n_mix"), agree_share=o("agree_share"), seed=ctx.seed)
        held = make_instruction_mix(o("n_heldout"), agree_share=o("agree_share"), seed=ctx.seed,
                                    split="heldout")
        probe = get_task("cf_capitals").subset(o("n_probe"), seed=ctx.seed)
        # the layers below the tuned ones never change: their states are computed once per
        # sequence and shared by every run, step and probe (exact; most of the cost saved)
        n_layers = int(model.config.num_hidden_layers)
        prefix = (FrozenPrefix(model, n_layers - o("last_layers"))
                  if o("last_layers") is not None and o("last_layers") < n_layers else None)
        tracker = ReliabilityTracker([probe], held, limit=None, method="loglikelihood",
                                     every=every, prefix=prefix)
        base_row = {"step": 0, **tracker.measure(model, tok)}  # step 0 is the same for all runs

        def callback(step: int, m: Any, t: Any) -> dict[str, Any] | None:
            return dict(base_row) if step == 0 else tracker(step, m, t)

        datasets: dict[str, list[dict[str, Any]]] = {"baseline": mix, "qk_only": mix}
        if "filtered" in conditions:
            datasets["filtered"] = filter_context_critical(
                mix, no_context_nll(model, tok, mix, prefix=prefix), 0.25)
        if "augmented" in conditions:
            datasets["augmented"] = counterfactual_augment(mix, 0.1, seed=ctx.seed)
        rows: list[dict[str, Any]] = []
        timing = {"train_s": 0.0, "track_s": 0.0, "tokens": 0}
        for cond in conditions:
            for s in ctx.progress(range(o("seeds")), desc=f"context.inversion {cond}"):
                c = FinetuneConfig(**{**cfg.__dict__, "seed": ctx.seed + s,
                                      "params": "qk" if cond == "qk_only" else "all"})
                res = finetune(model, tok, datasets[cond], c, callbacks=[callback],
                               prefix=prefix or False)
                timing["train_s"] += res.train_seconds
                timing["track_s"] += res.callback_seconds
                timing["tokens"] += res.n_tokens
                rows += [{"condition": cond, "seed": s, "n_train": len(datasets[cond]), **h}
                         for h in res.history]
                del res

        claims = [toy_theorem(toy), toy_filtering(toy), reliance_rises(rows),
                  reliance_falls(rows), heldout_improves(rows), filtering_flattens(rows)]
        table = []
        for cond in conditions:
            sel = [r for r in rows if r["condition"] == cond]
            steps = sorted({r["step"] for r in sel})
            for t in steps:
                at = [r for r in sel if r["step"] == t]
                table.append({"condition": cond, "step": t,
                              "counterfactual": round(float(np.mean(
                                  [r["counterfactual"] for r in at])), 4),
                              "heldout_nll": round(float(np.mean(
                                  [r["heldout_nll"] for r in at])), 4)})
        figures = self._plot(ctx, rows, conditions, toy_runs)
        wall = time.perf_counter() - t_start
        metrics = {
            "rows": rows, "toy": toy, "n_probe": len(probe), "finetune": cfg.__dict__,
            "timing": {**timing, "wall_s": wall, "cpu_s": time.process_time() - cpu_start,
                       "tracking_share": timing["track_s"] / max(
                           timing["train_s"] + timing["track_s"], 1e-9)},
        }
        return StudyResult(metrics=metrics, claims=claims, figures=figures,
                           tables={"Reliance and held-out NLL (seed means)": table})

    @staticmethod
    def _plot(ctx: StudyContext, rows: Sequence[dict[str, Any]], conditions: list[str],
              toy: dict[str, Any]) -> dict[str, str]:
        from fmlab._plotting import pyplot

        plt = pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for cond in conditions:
            for ax, key, scale in ((axes[0], "counterfactual", 100.0),
                                   (axes[1], "heldout_nll", 1.0)):
                steps, vals = _curve_or_none(rows, cond, key)
                if steps is None:
                    continue
                vals = vals * scale
                mean = vals.mean(0)
                ax.plot(steps, mean, marker="o", label=cond)
                if vals.shape[0] > 1:
                    sd = vals.std(0, ddof=1) / np.sqrt(vals.shape[0])
                    ax.fill_between(steps, mean - 2 * sd, mean + 2 * sd, alpha=0.2)
        axes[0].set(xlabel="fine-tuning step", ylabel="counterfactual accuracy (%)",
                    title="LM: reliance on a contradicting context")
        axes[1].set(xlabel="fine-tuning step", ylabel="held-out target NLL (nats/token)",
                    title="LM: held-out instructions")
        for name, res in toy.items():
            if name != "exact":
                axes[2].plot(res.steps, res.m_c, label=name)
        axes[2].set(xlabel="gradient step", ylabel="M_C (context share)",
                    title="§5 toy: one-layer attention")
        for ax in axes:
            ax.legend(fontsize=8)
        ctx.save_figure(fig, "inversion_curves.png")
        return {"inversion_curves.png": "Left: counterfactual accuracy on the CF_Capitals probe "
                "over LoRA steps, seed mean with ±2 standard errors; middle: held-out instruction "
                "target NLL; right: the toy's M_C over gradient steps (baseline, with S points, "
                "C+S points removed)."}
