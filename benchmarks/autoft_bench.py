"""Benchmarks of fmlab.autoft, side by side in one run (python benchmarks/autoft_bench.py).

1. Loss-library overhead per fine-tuning step: fmlab's ``finetune`` step with ce alone, with all
   nine terms but flyp, and with all nine, against a plain PyTorch loop (cross-entropy + AdamW,
   what a user would write) and against the unfused path (every term on its own through
   autograd, ``objective_loss``) and fmlab's own loop on its torch fallback (no numba: the
   logit terms and penalties as torch ops). Goal: the eight terms without flyp within 1.2x of
   ce alone.
   Two configurations of the study's task: the image projection over cached features (what the
   study tunes: a 1280x256 linear map, so a step is a few memory passes over its weights) and
   the tower top (last MBConv block + head conv + projection over cached trunk maps). Then
   where the projection step's CPU time goes (forward, loss, backward, weight penalties, AdamW),
   ce alone against the 8 terms.
2. Search throughput in the study's configuration (each trial = the final run: ``--final-steps``
   steps, cosine schedule, step picked on ID validation, median pruner): trials per hour of one
   worker, and the search's cost as a multiple of one ERM run of the same steps.
3. Two worker processes against one on a real PostgreSQL server (started here): the same fixed
   trials (enqueued), trials per hour of each, each worker on one thread. Goal: >= 1.8x with two
   workers on 2 cores.

Timings are medians over interleaved repeats (1; wall and this process's CPU time, with ratios
also as medians of ratios paired within a repeat: the shared machine's load moves absolute times
by 2-3x between minutes) or single runs (2, 3). Writes
``benchmarks/results/autoft.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# the study's task without its test corruptions (the benchmarks never look at the tests)
EMOJI = {"tune": "projection", "corruptions": []}
TOY = {"n_train": 2048, "dim": 64}
# the eight loss terms without flyp, each at weight 0.1 beside ce
ALL_TERMS = {"ce": 1.0, "dcm": 0.1, "entropy": 0.1, "hinge": 0.1, "l1init": 0.1, "l1zero": 0.1,
             "l2init": 0.1, "l2zero": 0.1}


def _task(name: str, tune: str = "projection"):
    from fmlab.autoft import make_task

    return make_task(name, **({**EMOJI, "tune": tune} if name == "emoji-shift" else TOY))


def bench_loss_overhead(task, batch_size: int, steps: int, repeats: int) -> dict:
    import torch.nn.functional as F

    from fmlab.autoft import AutoFTParams, finetune

    with_flyp = {**ALL_TERMS, "flyp": 0.1}

    def fm(weights):
        return lambda: finetune(task.model, AutoFTParams(weights, lr=1e-4), task.train,
                                steps=steps, batch_size=batch_size, clip_grad=None)

    def plain():
        import copy

        model = copy.deepcopy(task.model).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(0, len(task.train), (batch_size,), generator=g)
            loss = F.cross_entropy(model(task.train.x[idx]), task.train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def unfused():  # every term on its own through autograd (objective_loss), the old path
        import copy

        from fmlab.autoft import LossBatch, objective_loss

        model = copy.deepcopy(task.model).train()
        params = [p for p in model.parameters() if p.requires_grad]
        init = [p.detach().clone() for p in params]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(0, len(task.train), (batch_size,), generator=g)
            f = model.features(task.train.x[idx])
            b = LossBatch(logits=model.head(f), labels=task.train.y[idx], features=f,
                          text_features=model.class_text_features, params=params,
                          init_params=init)
            loss, _ = objective_loss(ALL_TERMS, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def no_numba(f):  # fmlab's loop on its torch fallback (what runs without numba)
        from fmlab.autoft import _fused

        def run():
            kernels, _fused._numba = _fused._numba, lambda: None
            try:
                f()
            finally:
                _fused._numba = kernels
        return run

    fns = {"plain_torch_ce": plain, "fmlab_ce": fm({"ce": 1.0}),
           "fmlab_8_terms_no_flyp": fm(ALL_TERMS),
           "fmlab_8_terms_no_flyp_without_numba": no_numba(fm(ALL_TERMS)),
           "unfused_8_terms_no_flyp": unfused}
    if getattr(task.model, "class_text_features", None) is not None:
        fns["fmlab_9_terms"] = fm(with_flyp)
    for f in fns.values():
        f()
    # wall and CPU time (the machine is shared: CPU time of this process is the steadier
    # figure); ratios are medians of ratios paired within one interleaved repeat
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            times[k].append((time.perf_counter() - t0) / steps * 1e3)
            cpu[k].append((time.process_time() - c0) / steps * 1e3)

    def paired(num: str, den: str, t: dict[str, list[float]]) -> float:
        return statistics.median(a / b for a, b in zip(t[num], t[den], strict=True))

    ms = {k: statistics.median(v) for k, v in times.items()}
    return {"ms_per_step": ms,
            "cpu_ms_per_step": {k: statistics.median(v) for k, v in cpu.items()},
            "repeats": repeats,
            "ratio_8_terms_vs_plain_ce": ms["fmlab_8_terms_no_flyp"] / ms["plain_torch_ce"],
            "ratio_8_terms_vs_fmlab_ce": ms["fmlab_8_terms_no_flyp"] / ms["fmlab_ce"],
            "ratio_fmlab_ce_vs_plain_ce": ms["fmlab_ce"] / ms["plain_torch_ce"],
            "ratio_unfused_8_terms_vs_fmlab_ce": ms["unfused_8_terms_no_flyp"] / ms["fmlab_ce"],
            "ratio_8_terms_without_numba_vs_fmlab_ce":
                ms["fmlab_8_terms_no_flyp_without_numba"] / ms["fmlab_ce"],
            **({"ratio_9_terms_vs_plain_ce": ms["fmlab_9_terms"] / ms["plain_torch_ce"]}
               if "fmlab_9_terms" in ms else {}),
            "paired_ratio_8_terms_vs_fmlab_ce_wall": paired("fmlab_8_terms_no_flyp", "fmlab_ce",
                                                            times),
            "paired_ratio_8_terms_vs_fmlab_ce_cpu": paired("fmlab_8_terms_no_flyp", "fmlab_ce",
                                                           cpu),
            "paired_ratio_8_terms_vs_plain_ce_cpu": paired("fmlab_8_terms_no_flyp",
                                                           "plain_torch_ce", cpu),
            "paired_ratio_8_terms_without_numba_vs_fmlab_ce_cpu": paired(
                "fmlab_8_terms_no_flyp_without_numba", "fmlab_ce", cpu),
            "goal": "8 terms without flyp <= 1.2x ce alone"}


def bench_step_sections(task, batch_size: int, steps: int, repeats: int) -> dict:
    """Where a step's CPU time goes (this thread's CPU time, medians over steps of interleaved
    runs): forward, loss, backward, weight penalties, AdamW, for ce alone and the 8 terms; the
    step of ``finetune`` written out with the same pieces (batch_loss, PenaltyGrad)."""
    import copy

    from fmlab.autoft import LossBatch, batch_loss
    from fmlab.autoft._fused import PenaltyGrad

    parts = ("forward", "loss", "backward", "penalties", "adamw")
    out: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        for name, weights in (("ce", {"ce": 1.0}), ("8_terms_no_flyp", ALL_TERMS)):
            acc = out.setdefault(name, {k: [] for k in parts})
            model = copy.deepcopy(task.model).train()
            params = [p for p in model.parameters() if p.requires_grad]
            pen = PenaltyGrad(weights, params, [p.detach().clone() for p in params])
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)  # finetune's
            g = torch.Generator().manual_seed(0)
            for _ in range(steps):
                t = [time.thread_time()]
                idx = torch.randint(0, len(task.train), (batch_size,), generator=g)
                f = model.features(task.train.x[idx])
                logits = model.head(f)
                t.append(time.thread_time())
                loss = batch_loss(weights, LossBatch(logits=logits, labels=task.train.y[idx]))
                t.append(time.thread_time())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                t.append(time.thread_time())
                pen.add_()
                t.append(time.thread_time())
                opt.step()
                float(loss.detach())
                t.append(time.thread_time())
                for k, a, b in zip(parts, t, t[1:], strict=False):
                    acc[k].append((b - a) * 1e3)
    res = {name: {k: statistics.median(v) for k, v in acc.items()} for name, acc in out.items()}
    for r in res.values():
        r["total"] = sum(r.values())
    return {"cpu_ms_per_step": res,
            "extra_ms_8_terms": {k: res["8_terms_no_flyp"][k] - res["ce"][k]
                                 for k in (*parts, "total")}}


def _study_search(n_trials: int, steps: int, batch_size: int, **kw):
    """The study's search: each trial is the final run (steps, cosine, step picked on ID
    validation) scored on OOD validation; median pruner; a third of the trials random."""
    from fmlab.autoft import AutoFT, SearchSpace

    return AutoFT(n_trials=n_trials, inner_steps=steps, batch_size=batch_size,
                  space=SearchSpace(lr_base=1e-4), schedule="cosine", select="id_val",
                  eval_every=max(1, steps // 10), n_startup_trials=max(1, n_trials // 3), **kw)


def bench_search(task, n_trials: int, final_steps: int, batch_size: int) -> dict:
    from fmlab.autoft import run_method

    t0, c0 = time.perf_counter(), time.process_time()
    s = _study_search(n_trials, final_steps, batch_size, random_state=0).fit(
        task.model, task.train, task.ood_val, id_val_data=task.id_val)
    search, search_cpu = time.perf_counter() - t0, time.process_time() - c0
    pruned = sum(t.state.name == "PRUNED" for t in s.study_.trials)
    t0, c0 = time.perf_counter(), time.process_time()
    run_method("erm", task.model, task.train, task.id_val, steps=final_steps,
               batch_size=batch_size, lr=1e-3)
    erm, erm_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"n_trials": n_trials, "pruned": pruned, "steps_per_trial": final_steps,
            "search_seconds": search, "search_cpu_seconds": search_cpu,
            "trials_per_hour_1_worker": n_trials / search * 3600,
            "erm_run_seconds": erm, "erm_run_cpu_seconds": erm_cpu,
            "search_cost_x_erm_run_wall": search / erm,
            "search_cost_x_erm_run_cpu": search_cpu / erm_cpu}


def _objectives(n: int) -> list[dict]:
    import optuna

    from fmlab.autoft import SearchSpace

    space = SearchSpace(lr_base=1e-4)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        t = study.ask()
        space(t)
        out.append(t.params)
    return out


def bench_workers(task_name: str, n_trials: int, inner: int, batch_size: int) -> dict:
    from fmlab.testing._postgres import postgres_missing, postgres_server

    reason = postgres_missing()
    if reason:
        return {"skipped": reason}
    opts = EMOJI if task_name == "emoji-shift" else TOY
    objectives = _objectives(n_trials)
    out = {}
    with postgres_server() as url:
        for workers in (1, 2):
            name = f"w{workers}"
            study = _study_search(n_trials, inner, batch_size, pruner="none", storage=url,
                                  study_name=name, heartbeat=5).create(task_name, **opts)
            for p in objectives:
                study.enqueue_trial(p)
            # each worker builds the task first (memoised in the process), then waits at a
            # barrier, so the clock (first trial start to last trial end) holds only work
            ready = Path(tempfile.mkdtemp(prefix="autoft-bench-"))
            code = "\n".join([
                "import os, time, torch", "torch.set_num_threads(1)",
                "from fmlab.autoft import make_task, run_autoft_worker",
                f"make_task({task_name!r}, **{opts!r})",
                f"open(os.path.join({str(ready)!r}, str(os.getpid())), 'w').close()",
                f"while len(os.listdir({str(ready)!r})) < {workers}:", "    time.sleep(0.05)",
                f"run_autoft_worker({url!r}, {name!r}, heartbeat=5, poll=0.2)"])
            procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(workers)]
            for p in procs:
                p.wait()
            trials = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
            start = min(t.datetime_start for t in trials)
            end = max(t.datetime_complete for t in trials)
            secs = (end - start).total_seconds()
            out[name] = {"trials": len(trials), "seconds": secs,
                         "load_avg_after": os.getloadavg(),
                         "trials_per_hour": len(trials) / secs * 3600,
                         "workers_used": len({t.user_attrs["worker"] for t in trials})}
    out["speedup_2_vs_1"] = out["w2"]["trials_per_hour"] / out["w1"]["trials_per_hour"]
    out["goal"] = ">= 1.8x"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="emoji-shift", help="emoji-shift (clip-emoji) or toy")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50, help="steps per timing (overhead)")
    ap.add_argument("--repeats", type=int, default=15,
                    help="interleaved repeats of the projection overhead timings")
    ap.add_argument("--trials", type=int, default=15, help="trials of the search benchmark")
    ap.add_argument("--final-steps", type=int, default=100,
                    help="steps of every run (the study's quick budget; a trial is a run)")
    ap.add_argument("--worker-trials", type=int, default=12)
    ap.add_argument("--top-steps", type=int, default=20,
                    help="steps per timing of the tower-top overhead configuration")
    ap.add_argument("--top-repeats", type=int, default=5,
                    help="interleaved repeats of the tower-top overhead timings")
    ap.add_argument("--skip", default="", help="comma list of: overhead,search,workers")
    args = ap.parse_args()
    torch.set_num_threads(1)  # per process: the worker comparison gives each worker one core
    skip = set(args.skip.split(","))
    task = _task(args.task)
    res: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "torch": torch.__version__, "threads": 1,
                             "load_avg_start": os.getloadavg()},
                 "task": args.task}
    if "overhead" not in skip:
        res["loss_overhead"] = bench_loss_overhead(task, args.batch_size, args.steps,
                                                   args.repeats)
        res["loss_overhead"]["config"] = "image projection (1280x256) over cached features"
        print(json.dumps(res["loss_overhead"], indent=2))
        if args.task == "emoji-shift":
            res["loss_overhead_tower_top"] = bench_loss_overhead(
                _task(args.task, "top"), args.batch_size, args.top_steps, args.top_repeats)
            res["loss_overhead_tower_top"]["config"] = ("tower top: last MBConv block + head "
                                                        "conv + projection, cached trunk maps")
            print(json.dumps(res["loss_overhead_tower_top"], indent=2))
        res["loss_overhead_sections"] = bench_step_sections(task, args.batch_size, args.steps,
                                                            max(3, args.repeats // 2))
        print(json.dumps(res["loss_overhead_sections"], indent=2))
    if "search" not in skip:
        res["search"] = bench_search(task, args.trials, args.final_steps, args.batch_size)
        print(json.dumps(res["search"], indent=2))
    if "workers" not in skip:
        res["workers"] = bench_workers(args.task, args.worker_trials, args.final_steps,
                                       args.batch_size)
        print(json.dumps(res["workers"], indent=2))
    res["machine"]["load_avg_end"] = os.getloadavg()
    out = Path(__file__).parent / "results" / "autoft.json"
    out.parent.mkdir(exist_ok=True)
    # sections run separately (--skip) are merged into the file, each with its own machine load
    old = json.loads(out.read_text()) if out.exists() else {}
    old = old if old.get("task") == args.task else {}
    for k in ("loss_overhead", "loss_overhead_tower_top", "loss_overhead_sections", "search",
              "workers"):
        if k in res:
            res[k]["load_avg"] = [res["machine"]["load_avg_start"], res["machine"]["load_avg_end"]]
    old.update(res)
    out.write_text(json.dumps(old, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
