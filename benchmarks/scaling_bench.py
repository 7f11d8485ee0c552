"""Chinchilla refit speed: fmlab's batched multi-start core vs a Python loop over scipy.

The peer is what a user would otherwise write (and what the published replication does): a Python
loop calling ``scipy.optimize.minimize(method="L-BFGS-B")`` once per start of the same 4,500-point
grid, on the same data (Epoch's 240 runs) and the same objective (Huber, delta 1e-3, on log loss,
summed). Two peers: numerical gradients (as the replication) and an analytic gradient.

By default the loop runs on a seeded random 10% of the grid and its time is scaled by 10 (the
per-start cost is flat); ``--full`` runs every start. Both peers run with single-threaded BLAS,
which is faster for them on this machine.

Usage: python benchmarks/scaling_bench.py [--full] [--repeats 3]
Writes benchmarks/results/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def _objective_factory(ln, ld, logy, delta=1e-3):
    def terms(x):
        a, alpha, b, beta, e = x
        u = np.stack([a - alpha * ln, b - beta * ld, np.full_like(ln, e)])
        m = u.max(0)
        ex = np.exp(u - m)
        s = ex.sum(0)
        return m + np.log(s), ex / s

    def f(x):
        pred, _ = terms(x)
        r = logy - pred
        ar = np.abs(r)
        return float(np.sum(np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))))

    def fg(x):
        pred, w = terms(x)
        r = logy - pred
        ar = np.abs(r)
        val = float(np.sum(np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))))
        psi = np.clip(r, -delta, delta)
        jac = np.stack([w[0], -w[0] * ln, w[1], -w[1] * ld, w[2]])
        return val, -(jac @ psi)

    return f, fg


def _loop(starts, f, fg, analytic):
    from scipy.optimize import minimize

    best = (np.inf, None)
    for x0 in starts:
        if analytic:
            res = minimize(fg, x0, jac=True, method="L-BFGS-B")
        else:
            res = minimize(f, x0, method="L-BFGS-B")
        if res.fun < best[0]:
            best = (float(res.fun), res.x)
    return best


def _params(x):
    a, alpha, b, beta, e = x
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha),
            "B": float(np.exp(b)), "beta": float(beta)}


def main() -> None:
    from threadpoolctl import threadpool_limits

    from fmlab.scaling import ChinchillaLaw, chinchilla_runs
    from fmlab.scaling import _fitting as core

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="run the loop over all 4,500 starts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-fraction", type=float, default=0.1)
    args = ap.parse_args()

    runs = chinchilla_runs("epoch", drop_highest=5)
    X, y = runs[["n_params", "n_tokens"]], runs["loss"]
    rows = []

    def timed(fn, repeats):
        times, out = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)), float(min(times)), out

    for label, kwargs in [("fmlab batched (successive halving + polish)", {}),
                          ("fmlab batched (all starts to convergence)", {"prune": False})]:
        med, best_t, law = timed(lambda kw=kwargs: ChinchillaLaw(**kw).fit(X, y), args.repeats)
        rows.append({"method": label, "starts": law.diagnostics_.n_starts, "time_s": med,
                     "time_min_s": best_t, "objective": law.diagnostics_.objective,
                     "params": law.params_.to_dict(), "extrapolated": False})
    med, best_t, law = timed(lambda: ChinchillaLaw(n_bootstrap=1000).fit(X, y), 1)
    boot_time = med - rows[0]["time_s"]

    # the peer: same grid, same objective, one scipy call per start
    law0 = ChinchillaLaw()
    specs = law0.param_specs()  # order: log_A, alpha, log_B, beta, log_E
    grid = core.start_grid(specs, None, 0)
    ln, ld = np.log(runs["n_params"].to_numpy()), np.log(runs["n_tokens"].to_numpy())
    f, fg = _objective_factory(ln, ld, np.log(runs["loss"].to_numpy()))
    if args.full:
        sub, scale = grid, 1.0
    else:
        k = int(round(args.loop_fraction * len(grid)))
        sub = grid[np.sort(np.random.default_rng(0).choice(len(grid), k, replace=False))]
        scale = len(grid) / k
    for label, analytic in [("scipy loop, numerical gradient (replication)", False),
                            ("scipy loop, analytic gradient", True)]:
        with threadpool_limits(limits=1):
            t0 = time.perf_counter()
            fun, x = _loop(sub, f, fg, analytic)
            dt = time.perf_counter() - t0
        rows.append({"method": label, "starts": len(sub), "time_s": dt * scale,
                     "time_min_s": dt * scale, "objective": fun, "params": _params(x),
                     "extrapolated": scale != 1.0})

    ours = rows[0]
    print(f"\nChinchilla refit, Epoch data (240 runs), 4,500-start grid, Huber delta=1e-3 on log "
          f"loss; {platform.node()} ({platform.processor() or platform.machine()})\n")
    head = f"{'method':<48} {'starts':>6} {'time (s)':>9} {'ratio':>8} {'objective':>13} " \
           f"{'E':>7} {'alpha':>7} {'beta':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        r["ratio_vs_fmlab"] = r["time_s"] / ours["time_s"]
        r["objective_minus_fmlab"] = r["objective"] - ours["objective"]
        p = r["params"]
        star = "*" if r["extrapolated"] else " "
        print(f"{r['method']:<48} {r['starts']:>6} {r['time_s']:>8.2f}{star} "
              f"{r['ratio_vs_fmlab']:>7.1f}x {r['objective']:>13.8e} {p['E']:>7.4f} "
              f"{p['alpha']:>7.4f} {p['beta']:>7.4f}")
    if not args.full:
        print(f"* loop timed on a seeded {len(sub)}-start subset and scaled x{scale:g} "
              "(run with --full for all starts)")
    print(f"\nbootstrap: 1,000 replicates, batched and warm-started: {boot_time:.2f} s extra")
    same = all(abs(r["objective"] - ours["objective"]) <= 1e-6 * ours["objective"] or
               r["objective"] > ours["objective"] for r in rows)
    print(f"fmlab objective <= every peer's (within 1e-6 relative): {same}")
    out = {"benchmark": "chinchilla_refit", "rows": rows, "bootstrap_1000_s": boot_time,
           "loop_full": bool(args.full), "fmlab_not_worse": same,
           "node": platform.node()}
    path = Path(__file__).parent / "results" / "scaling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
