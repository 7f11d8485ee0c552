"""ALine-D on a 100-model ensemble over 100,000 ID and 100,000 OOD examples: time and memory.

fmlab's path (byte-compare agreement in blocks + closed-form pairwise solve) against two naive
peers computing the same estimate: a Python loop over the 4,950 model pairs, and a materialised
(n_models, n_models, n) comparison tensor; both solve the pairwise system with ``lstsq``.
Peak memory is measured with tracemalloc (numpy reports its buffers to it).

Run: ``python benchmarks/ood_bench.py [--models 100] [--examples 100000] [--repeats 3]``.
Writes ``benchmarks/results/ood.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from scipy.special import ndtr, ndtri

from fmlab.ood import ALineD


def synthetic_predictions(m: int, n: int, k: int, seed: int) -> tuple[np.ndarray, ...]:
    """Predictions with per-model accuracies spread along a line (cheap to generate)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    acc_id = np.linspace(0.55, 0.95, m)
    acc_ood = ndtr(0.8 * ndtri(acc_id) - 0.3)
    common = rng.random(n)  # shared difficulty: the same examples are hard for every model

    def preds(acc: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
        out = np.empty((m, len(y)), dtype=np.uint8)
        for i in range(m):
            score = 0.7 * u + 0.3 * rng.random(len(y))
            correct = score < np.quantile(score, acc[i])
            wrong = (y + rng.integers(1, k, len(y))) % k
            out[i] = np.where(correct, y, wrong)
        return out

    ood_labels = rng.integers(0, k, n)
    return preds(acc_id, labels, common), labels, preds(acc_ood, ood_labels, rng.random(n)), \
        ood_labels


def _aline_d_from_agreements(agr_id, agr_ood, acc_id, n_id, n_ood):
    m = len(acc_id)
    i, j = np.triu_indices(m, 1)
    z = lambda p, n: ndtri(np.clip(p, 0.5 / n, 1 - 0.5 / n))  # noqa: E731
    x, y = z(agr_id[i, j], n_id), z(agr_ood[i, j], n_ood)
    slope = np.polyfit(x, y, 1)[0]
    za = z(acc_id, n_id)
    rhs = y + slope * (0.5 * (za[i] + za[j]) - x)
    a = np.zeros((len(i), m))
    a[np.arange(len(i)), i] = 0.5
    a[np.arange(len(i)), j] = 0.5
    return ndtr(np.linalg.lstsq(a, rhs, rcond=None)[0])


def peer_pairwise_loop(id_preds, id_labels, ood_preds):
    m = len(id_preds)
    agr = []
    for preds in (id_preds, ood_preds):
        a = np.eye(m)
        for i in range(m):
            for j in range(i + 1, m):
                a[i, j] = a[j, i] = np.mean(preds[i] == preds[j])
        agr.append(a)
    acc = (id_preds == id_labels).mean(1)
    return _aline_d_from_agreements(agr[0], agr[1], acc, id_preds.shape[1], ood_preds.shape[1])


def peer_materialised(id_preds, id_labels, ood_preds):
    agr = [(p[:, None, :] == p[None, :, :]).mean(-1) for p in (id_preds, ood_preds)]  # (m, m, n)
    acc = (id_preds == id_labels).mean(1)
    return _aline_d_from_agreements(agr[0], agr[1], acc, id_preds.shape[1], ood_preds.shape[1])


def fmlab_aline_d(id_preds, id_labels, ood_preds, n_jobs=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ALineD(n_jobs=n_jobs).fit(id_preds, id_labels, ood_preds).ood_accuracy_


def measure(fn, args, repeats):
    times = []
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t)
    gc.collect()
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, min(times), float(np.median(times)), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ood.json"))
    args = parser.parse_args()
    m, n, k = args.models, args.examples, args.classes
    id_p, id_y, ood_p, ood_y = synthetic_predictions(m, n, k, seed=0)
    inputs = (id_p, id_y, ood_p)
    rows = []
    ours, t_min, t_med, peak = measure(fmlab_aline_d, inputs, args.repeats)
    rows.append({"method": "fmlab ALineD (predictions)", "min_s": t_min, "median_s": t_med,
                 "peak_mib": peak / 2**20, "max_abs_diff": 0.0})
    out, t_min, t_med, peak = measure(fmlab_aline_d, (*inputs, 2), args.repeats)
    rows.append({"method": "fmlab ALineD (predictions, n_jobs=2)", "min_s": t_min,
                 "median_s": t_med, "peak_mib": peak / 2**20,
                 "max_abs_diff": float(np.abs(out - ours).max())})
    # probabilities input (float32), the common case: argmax + validation included
    rng = np.random.default_rng(1)
    def to_probs(p):  # noqa: E306
        probs = rng.random((m, n, k), dtype=np.float32) * 0.1
        np.put_along_axis(probs, p[..., None].astype(np.intp), 1.0, axis=-1)
        probs /= probs.sum(-1, keepdims=True)
        return probs
    id_probs, ood_probs = to_probs(id_p), to_probs(ood_p)
    out, t_min, t_med, peak = measure(fmlab_aline_d, (id_probs, id_y, ood_probs), args.repeats)
    rows.append({"method": "fmlab ALineD (float32 probs)", "min_s": t_min, "median_s": t_med,
                 "peak_mib": peak / 2**20, "max_abs_diff": float(np.abs(out - ours).max()),
                 "note": f"inputs themselves {2 * id_probs.nbytes / 2**20:.0f} MiB"})
    out, t_min, t_med, peak = measure(fmlab_aline_d, (id_probs, id_y, ood_probs, 2),
                                      args.repeats)
    rows.append({"method": "fmlab ALineD (float32 probs, n_jobs=2)", "min_s": t_min,
                 "median_s": t_med, "peak_mib": peak / 2**20,
                 "max_abs_diff": float(np.abs(out - ours).max())})
    del id_probs, ood_probs
    for name, fn, reps in (("peer: pairwise Python loop", peer_pairwise_loop, 1),
                           ("peer: materialised (m, m, n) tensor", peer_materialised, 1)):
        out, t_min, t_med, peak = measure(fn, inputs, reps)
        rows.append({"method": name, "min_s": t_min, "median_s": t_med,
                     "peak_mib": peak / 2**20, "max_abs_diff": float(np.abs(out - ours).max())})
    base = rows[0]
    for r in rows:
        r["time_ratio_vs_fmlab"] = r["min_s"] / base["min_s"]
        r["memory_ratio_vs_fmlab"] = r["peak_mib"] / base["peak_mib"]
    # memory linear in examples: fmlab's peak at n/4, n/2, n
    scaling = []
    for frac in (0.25, 0.5, 1.0):
        nn = int(n * frac)
        sub = (id_p[:, :nn], id_y[:nn], ood_p[:, :nn])
        _, t_min, _, peak = measure(fmlab_aline_d, sub, 1)
        scaling.append({"examples": nn, "seconds": t_min, "peak_mib": peak / 2**20})
    true = (ood_p == ood_y).mean(1)
    result = {
        "setup": {"models": m, "examples_id": n, "examples_ood": n, "classes": k,
                  "cpu_count": os.cpu_count(), "python": platform.python_version(),
                  "numpy": np.__version__, "load_avg": os.getloadavg()},
        "rows": rows, "memory_scaling": scaling,
        "aline_d_mae_points_on_benchmark_data": float(np.abs(ours - true).mean() * 100),
        "goal": "ALine-D over 100 models x 100,000 examples under 2 s on 2 cores",
        "goal_met": bool(rows[0]["min_s"] < 2.0),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"ALine-D, {m} models x {n} ID + {n} OOD examples, {k} classes "
          f"(load avg {os.getloadavg()[0]:.1f})")
    print(f"{'method':40s} {'min s':>8s} {'median s':>9s} {'peak MiB':>9s} {'time x':>8s} "
          f"{'mem x':>7s} {'max|diff|':>10s}")
    for r in rows:
        print(f"{r['method']:40s} {r['min_s']:8.3f} {r['median_s']:9.3f} {r['peak_mib']:9.1f} "
              f"{r['time_ratio_vs_fmlab']:8.1f} {r['memory_ratio_vs_fmlab']:7.1f} "
              f"{r['max_abs_diff']:10.2e}")
    print("fmlab peak memory vs examples: " + ", ".join(
        f"{s['examples']}: {s['peak_mib']:.1f} MiB ({s['seconds']:.2f} s)" for s in scaling))
    print(f"goal (< 2 s): {'met' if result['goal_met'] else 'NOT met'}; wrote {args.out}")


if __name__ == "__main__":
    main()
