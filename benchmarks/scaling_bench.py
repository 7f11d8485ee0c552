"""Chinchilla refit speed: fmlab's batched multi-start core vs a Python loop over scipy.

The peer is what a user would otherwise write (and what the published replication does): a Python
loop calling ``scipy.optimize.minimize(method="L-BFGS-B")`` once per start of the same 4,500-point
grid, on the same data (Epoch's 240 runs) and the same objective (Huber, delta 1e-3, on log loss,
summed). Two peers: numerical gradients (as the replication) and an analytic gradient.

By default the loop runs on a seeded random 10% of the grid and its time is scaled by 10 (the
per-start cost is flat); ``--full`` runs every start. Both peers run with single-threaded BLAS,
which is faster for them on this machine.

A second comparison runs the PyPI package ``chinchilla`` (0.2.0; BFGS per start in long double
over a multiprocessing pool on all cores) with the same Huber-on-log-loss objective passed as its
``loss_fn``, on a 243-start grid (3 values per axis; its full-grid time is extrapolated), against
fmlab on the same grid. The package needs seaborn, attrdictx, ordinal and ruamel.yaml; install it
outside the project, e.g. ``pip install --target /tmp/cc chinchilla==0.2.0`` (plus those), and
pass ``--chinchilla-path /tmp/cc``. Skipped when it cannot be imported.

Usage: python benchmarks/scaling_bench.py [--full] [--repeats 3] [--chinchilla-path DIR]
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


def _package_comparison(path, runs, full_grid):
    """Time the PyPI ``chinchilla`` package and fmlab on the same 243-start grid and loss."""
    import os
    import sys
    import tempfile

    from fmlab.scaling import ChinchillaLaw

    if path:
        sys.path.insert(0, path)
    try:
        import pandas as pd
        from chinchilla import Chinchilla
    except ImportError:  # the peer package is optional: its row is skipped
        return None

    def huber_log(y_true, y_pred, delta=1e-3):
        r = np.log(y_true) - np.log(y_pred)
        a = np.abs(r)
        return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))

    grid = {"e": [-1.0, 0.0, 1.0], "a": [0.0, 10.0, 20.0], "b": [0.0, 10.0, 20.0],
            "alpha": [0.0, 1.0, 2.0], "beta": [0.0, 1.0, 2.0]}
    X, y = runs[["n_params", "n_tokens"]], runs["loss"]
    with tempfile.TemporaryDirectory() as tmp:
        proj = os.path.join(tmp, "proj")
        os.makedirs(proj)
        pd.DataFrame({"C": 6 * runs.n_params * runs.n_tokens, "N": runs.n_params,
                      "D": runs.n_tokens, "loss": runs.loss}).to_csv(
            os.path.join(proj, "df.csv"), index=False)
        cc = Chinchilla(proj, param_grid=grid, loss_fn=huber_log, log_level=40)
        t0 = time.perf_counter()
        cc.fit(parallel=True)
        t_pkg = time.perf_counter() - t0
    law = ChinchillaLaw(grid={"log_E": grid["e"], "log_A": grid["a"], "log_B": grid["b"],
                              "alpha": grid["alpha"], "beta": grid["beta"]})
    pkg_params = {"E": float(cc.E), "A": float(cc.A), "alpha": float(cc.alpha),
                  "B": float(cc.B), "beta": float(cc.beta)}
    pkg_obj = law.objective(X, y, pkg_params)  # the package minimises the mean; same optimum
    t0 = time.perf_counter()
    law.fit(X, y)
    t_ours = time.perf_counter() - t0
    return {"starts": 243, "package_time_s": t_pkg, "fmlab_time_s": t_ours,
            "ratio": t_pkg / t_ours, "package_objective": pkg_obj,
            "fmlab_objective": law.diagnostics_.objective, "package_params": pkg_params,
            "fmlab_params": law.params_.to_dict(),
            "package_full_grid_s_extrapolated": t_pkg * full_grid / 243}


def main() -> None:
    from threadpoolctl import threadpool_limits

    from fmlab.scaling import ChinchillaLaw, chinchilla_runs
    from fmlab.scaling import _fitting as core

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="run the loop over all 4,500 starts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-fraction", type=float, default=0.1)
    ap.add_argument("--chinchilla-path", default=None,
                    help="folder holding the PyPI 'chinchilla' package (pip install --target)")
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
    # bootstrap alone: 1,000 replicates warm-started at the optimum, one batched run
    fitted = ChinchillaLaw().fit(X, y)
    xa, ya = X.to_numpy(float), y.to_numpy(float)
    specs0 = fitted.param_specs()
    lo, hi = np.array([s.lower for s in specs0]), np.array([s.upper for s in specs0])
    t0 = time.perf_counter()
    core.bootstrap_refits(lambda W: fitted._objective_for(xa, ya, W), fitted.theta_, len(ya),
                          1000, lo, hi, random_state=0)
    boot_time = time.perf_counter() - t0

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

    package = _package_comparison(args.chinchilla_path, runs, len(grid))
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
    if package:
        print("\nvs PyPI 'chinchilla' 0.2.0, same Huber-on-log-loss objective, "
              f"{package['starts']}-start grid (3 values per axis):")
        print(f"  chinchilla package: {package['package_time_s']:.2f} s (x{package['ratio']:.1f}), "
              f"objective {package['package_objective']:.8e}; full 4,500-start grid "
              f"~{package['package_full_grid_s_extrapolated']:.0f} s (extrapolated)")
        print(f"  fmlab:              {package['fmlab_time_s']:.2f} s, objective "
              f"{package['fmlab_objective']:.8e}")
    else:
        print("\n(PyPI 'chinchilla' not importable: pass --chinchilla-path to compare)")
    out = {"benchmark": "chinchilla_refit", "rows": rows, "bootstrap_1000_s": boot_time,
           "chinchilla_package": package,
           "loop_full": bool(args.full), "fmlab_not_worse": same,
           "node": platform.node()}
    path = Path(__file__).parent / "results" / "scaling.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
