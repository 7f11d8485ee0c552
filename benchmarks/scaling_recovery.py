"""Parameter recovery of the precision laws over many seeds: bias and bootstrap CI coverage.

Synthetic runs on the paper's grid (N 30M-220M, D 1.5B-26B, 3-16 bits) are drawn from known
constants with log-normal noise, refitted with bootstrap intervals, and compared with the truth.

Usage: python benchmarks/scaling_recovery.py [--seeds 30] [--noise 0.01] [--bootstrap 200]
Writes benchmarks/results/scaling_recovery.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    from fmlab.scaling import PrecisionLaw, PTQLaw, parameter_recovery
    from fmlab.scaling._study import _PREC_TRUTH, _PTQ_TRUTH, _precision_grid

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--starts", type=int, default=200)
    args = ap.parse_args()
    Xt, Xp = _precision_grid()
    out = {"seeds": args.seeds, "noise": args.noise, "bootstrap": args.bootstrap, "laws": {}}
    for name, make, truth, X in [
        ("ptq", lambda: PTQLaw(n_starts=args.starts, n_polish=2, n_bootstrap=args.bootstrap),
         _PTQ_TRUTH, Xp),
        ("precision", lambda: PrecisionLaw(n_starts=args.starts, n_polish=2,
                                           n_bootstrap=args.bootstrap), _PREC_TRUTH, Xt),
    ]:
        t0 = time.perf_counter()
        res = parameter_recovery(make, truth, X, n_seeds=args.seeds, noise=args.noise)
        out["laws"][name] = res.to_dict() | {"n_runs": int(len(X))}
        print(f"\n{name}: {len(X)} runs x {args.seeds} seeds, noise {args.noise:g} (log-sd), "
              f"{args.bootstrap} bootstrap replicates, {time.perf_counter() - t0:.0f} s")
        print(f"{'param':>11} {'truth':>10} {'rel. bias':>10} {'coverage':>9} {'CI width':>10}")
        for k in truth:
            print(f"{k:>11} {truth[k]:>10.4g} {res.relative_bias[k]:>+10.2%} "
                  f"{res.coverage[k]:>9.2f} {res.interval_width[k]:>10.4g}")
    path = Path(__file__).parent / "results" / "scaling_recovery.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
