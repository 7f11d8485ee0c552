"""Benchmarks of fmlab.autoft, side by side in one run (python benchmarks/autoft_bench.py).

1. Loss-library overhead per fine-tuning step: fmlab's ``finetune`` step with ce alone, with all
   nine terms but flyp, and with all nine, against a plain PyTorch loop (cross-entropy + AdamW,
   what a user would write) and against the unfused path (every term on its own through
   autograd, ``objective_loss``). Goal: the eight terms without flyp within 1.2x of ce alone.
2. Search throughput: trials per hour of one worker, and the search's cost as a multiple of one
   full fine-tuning run (``--final-steps`` steps).
3. Two worker processes against one on a real PostgreSQL server (started here): the same fixed
   trials (enqueued), trials per hour of each. Goal: >= 1.8x with two workers on 2 cores.

Timings are medians over interleaved repeats (1) or single runs (2, 3). Writes
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
import time
from pathlib import Path

import torch

# the study's task without its test corruptions (the benchmarks never look at the tests)
EMOJI = {"tune": "projection", "corruptions": []}
TOY = {"n_train": 2048, "dim": 64}


def _task(name: str):
    from fmlab.autoft import make_task

    return make_task(name, **(EMOJI if name == "emoji-shift" else TOY))


def bench_loss_overhead(task, batch_size: int, steps: int, repeats: int) -> dict:
    import torch.nn.functional as F

    from fmlab.autoft import AutoFTParams, finetune

    all_terms = {"ce": 1.0, "dcm": 0.1, "entropy": 0.1, "hinge": 0.1, "l1init": 0.1,
                 "l1zero": 0.1, "l2init": 0.1, "l2zero": 0.1}
    with_flyp = {**all_terms, "flyp": 0.1}

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
            loss, _ = objective_loss(all_terms, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    fns = {"plain_torch_ce": plain, "fmlab_ce": fm({"ce": 1.0}),
           "fmlab_8_terms_no_flyp": fm(all_terms), "unfused_8_terms_no_flyp": unfused}
    if getattr(task.model, "class_text_features", None) is not None:
        fns["fmlab_9_terms"] = fm(with_flyp)
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) / steps * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    return {"ms_per_step": ms,
            "ratio_8_terms_vs_plain_ce": ms["fmlab_8_terms_no_flyp"] / ms["plain_torch_ce"],
            "ratio_8_terms_vs_fmlab_ce": ms["fmlab_8_terms_no_flyp"] / ms["fmlab_ce"],
            "ratio_fmlab_ce_vs_plain_ce": ms["fmlab_ce"] / ms["plain_torch_ce"],
            "ratio_unfused_8_terms_vs_fmlab_ce": ms["unfused_8_terms_no_flyp"] / ms["fmlab_ce"],
            **({"ratio_9_terms_vs_plain_ce": ms["fmlab_9_terms"] / ms["plain_torch_ce"]}
               if "fmlab_9_terms" in ms else {}),
            "goal": "8 terms without flyp <= 1.2x ce alone"}


def bench_search(task, n_trials: int, inner: int, final_steps: int, batch_size: int) -> dict:
    from fmlab.autoft import AutoFT, SearchSpace, run_method

    t0 = time.perf_counter()
    # the study's search settings (median pruner, a third of the trials random)
    s = AutoFT(n_trials=n_trials, inner_steps=inner, batch_size=batch_size, random_state=0,
               space=SearchSpace(lr_base=1e-4), n_startup_trials=max(1, n_trials // 3)
               ).fit(task.model, task.train, task.ood_val)
    search = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_method("autoft", task.model, task.train, task.id_val, steps=final_steps,
               batch_size=batch_size, params=s.best_params_)
    final = time.perf_counter() - t0
    return {"n_trials": n_trials, "inner_steps": inner, "search_seconds": search,
            "trials_per_hour": n_trials / search * 3600, "final_steps": final_steps,
            "final_run_seconds": final, "search_cost_x_final_run": search / final}


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
    from fmlab.autoft import AutoFT, SearchSpace
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
            study = AutoFT(n_trials=n_trials, inner_steps=inner, batch_size=batch_size,
                           space=SearchSpace(lr_base=1e-4), pruner="none", storage=url,
                           study_name=name, heartbeat=5).create(task_name, **opts)
            for p in objectives:
                study.enqueue_trial(p)
            code = ("import torch; torch.set_num_threads(1); "
                    "from fmlab.autoft import run_autoft_worker; "
                    f"run_autoft_worker({url!r}, {name!r}, heartbeat=5, poll=0.2)")
            # the workers build the task first; the clock starts at the first trial
            procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(workers)]
            for p in procs:
                p.wait()
            trials = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
            start = min(t.datetime_start for t in trials)
            end = max(t.datetime_complete for t in trials)
            secs = (end - start).total_seconds()
            out[name] = {"trials": len(trials), "seconds": secs,
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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--inner-steps", type=int, default=20)
    ap.add_argument("--final-steps", type=int, default=200)
    ap.add_argument("--worker-trials", type=int, default=12)
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
        print(json.dumps(res["loss_overhead"], indent=2))
    if "search" not in skip:
        res["search"] = bench_search(task, args.trials, args.inner_steps, args.final_steps,
                                     args.batch_size)
        print(json.dumps(res["search"], indent=2))
    if "workers" not in skip:
        res["workers"] = bench_workers(args.task, args.worker_trials, args.inner_steps,
                                       args.batch_size)
        print(json.dumps(res["workers"], indent=2))
    res["machine"]["load_avg_end"] = os.getloadavg()
    out = Path(__file__).parent / "results" / "autoft.json"
    out.parent.mkdir(exist_ok=True)
    # sections run separately (--skip) are merged into the file, each with its own machine load
    old = json.loads(out.read_text()) if out.exists() else {}
    old = old if old.get("task") == args.task else {}
    for k in ("loss_overhead", "search", "workers"):
        if k in res:
            res[k]["load_avg"] = [res["machine"]["load_avg_start"], res["machine"]["load_avg_end"]]
    old.update(res)
    out.write_text(json.dumps(old, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
