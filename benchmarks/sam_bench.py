"""SAM step time vs its base optimizer, side by side with pytorch-optimizer's SAM.

Models: a ResNet-18 for 32x32 inputs and a small transformer encoder classifier. Methods, timed
in interleaved rounds on the same model and batches:

- ``base``: SGD (momentum 0.9, weight decay 5e-4), one forward-backward;
- ``penalty``: the same SGD step with :class:`fmlab.sam.LastLayerPenalty` added to the loss;
- ``fmlab_sam``: :class:`fmlab.sam.SAM` via ``step(closure)`` (two forward-backward passes);
- ``pyopt_sam``: ``pytorch_optimizer.SAM`` (PyPI ``pytorch-optimizer``), same two passes.

It also checks that fmlab's SAM and pytorch-optimizer's SAM follow the same trajectory (max
absolute parameter difference after a few steps from the same initialisation), and times the
perturbation alone (first step + restore, no forward/backward), where the two implementations
differ. Writes ``benchmarks/results/sam.json``.

Run: ``python benchmarks/sam_bench.py`` (about 3 minutes on 2 CPU cores);
``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmlab.sam import SAM, LastLayerPenalty, TinyTransformer, resnet18_cifar

RESULTS = Path(__file__).with_name("results") / "sam.json"
HP = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
RHO = 0.05


def _models(args: argparse.Namespace) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    resnet = resnet18_cifar(n_classes=10, width=args.width)
    x_img = torch.randn(args.batch, 3, 32, 32, generator=g)
    y_img = torch.randint(0, 10, (args.batch,), generator=g)
    torch.manual_seed(0)
    tf = TinyTransformer(vocab_size=2000, n_classes=2, d_model=128, n_heads=4, n_layers=4,
                         max_len=64)
    x_tok = torch.randint(0, 2000, (args.batch, 64), generator=g)
    y_tok = torch.randint(0, 2, (args.batch,), generator=g)
    return {
        f"resnet18(width={args.width})": (resnet, x_img, y_img),
        "transformer(d=128, L=4, T=64)": (tf, x_tok, y_tok),
    }


def _make_step(method: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    ce = nn.functional.cross_entropy
    if method in ("base", "penalty"):
        opt = torch.optim.SGD(model.parameters(), **HP)
        pen = LastLayerPenalty(model.head, weight=1e-3, feature=1e-3) if method == "penalty" \
            else None

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = ce(model(x), y)
            if pen is not None:
                loss = loss + pen()
            loss.backward()
            opt.step()

        return step
    if method == "fmlab_sam":
        opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, **HP)

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = ce(model(x), y)
            loss.backward()
            return loss

        return lambda: opt.step(closure)
    if method == "pyopt_sam":
        from pytorch_optimizer import SAM as PyoptSAM

        popt = PyoptSAM(model.parameters(), torch.optim.SGD, rho=RHO, **HP)

        def pclosure() -> torch.Tensor:
            loss = ce(model(x), y)
            loss.backward()
            return loss

        def pstep() -> None:
            popt.zero_grad(set_to_none=True)
            pclosure()
            popt.step(pclosure)

        return pstep
    raise ValueError(method)


def time_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, methods: list[str],
               rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each method, measured in interleaved rounds."""
    models = {m: copy.deepcopy(model) for m in methods}
    fns = {m: _make_step(m, models[m], x, y) for m in methods}
    for m in methods:  # warm-up (allocator, lazy state)
        fns[m]()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(rounds):
        for m in methods:
            t0 = time.perf_counter()
            for _ in range(steps):
                fns[m]()
            times[m].append((time.perf_counter() - t0) / steps)
    return {m: statistics.median(v) for m, v in times.items()}


def perturbation_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int
                      ) -> dict[str, float]:
    """Seconds for the perturbation alone (norm, eps, add, restore) with gradients in place."""
    from pytorch_optimizer import SAM as PyoptSAM

    out = {}
    for name in ("fmlab_sam", "pyopt_sam"):
        m = copy.deepcopy(model)
        cls = SAM if name == "fmlab_sam" else PyoptSAM
        opt = cls(m.parameters(), torch.optim.SGD, rho=RHO, **HP)
        nn.functional.cross_entropy(m(x), y).backward()
        grads = [p.grad.clone() for p in m.parameters()]
        ts = []
        for _ in range(reps):
            for p, g in zip(m.parameters(), grads, strict=True):
                p.grad = g.clone()
            t0 = time.perf_counter()
            opt.first_step(zero_grad=False)
            if name == "fmlab_sam":
                opt.unperturb()
            else:  # pytorch-optimizer restores inside second_step; restore the same way
                with torch.no_grad():
                    for p in m.parameters():
                        p.copy_(opt.state[p].pop("old_p"))
            ts.append(time.perf_counter() - t0)
        out[name] = statistics.median(ts)
    return out


def trajectory_gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Max |param difference| between fmlab's and pytorch-optimizer's SAM after ``steps``."""
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    step_a = _make_step("fmlab_sam", a, x, y)
    step_b = _make_step("pyopt_sam", b, x, y)
    for _ in range(steps):
        step_a()
        step_b()
    with torch.no_grad():
        gap = max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(),
                                                              strict=True))
        moved = max(float((p - q).abs().max()) for p, q in zip(a.parameters(),
                                                                model.parameters(), strict=True))
    return gap if moved > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (few steps)")
    parser.add_argument("--width", type=int, default=16,
                        help="ResNet-18 base width (64 = the original 11M parameters)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=2, help="steps per method and round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, steps = (2, 1) if args.quick else (args.rounds, args.steps)
    methods = ["base", "penalty", "fmlab_sam", "pyopt_sam"]
    report: dict[str, Any] = {"torch": torch.__version__, "threads": args.threads,
                              "batch": args.batch, "rho": RHO, "base": "SGD " + str(HP),
                              "models": {}}
    try:
        from importlib.metadata import version

        import pytorch_optimizer  # noqa: F401

        report["pytorch_optimizer"] = version("pytorch-optimizer")
    except ImportError:
        raise SystemExit("benchmarks/sam_bench.py compares against pytorch-optimizer; install it "
                         "with: pip install --no-deps pytorch-optimizer") from None
    header = (f"{'model':<30} {'base ms':>8} {'penalty':>8} {'fmlab SAM':>10} {'pyopt SAM':>10} "
              f"{'pen/base':>8} {'SAM/base':>8} {'pyopt/base':>10} {'fmlab/pyopt':>11} "
              f"{'traj gap':>9} {'perturb ms fmlab/pyopt':>22}")
    print(header)
    for name, (model, x, y) in _models(args).items():
        model.train()
        t = time_steps(model, x, y, methods, rounds, steps)
        gap = trajectory_gap(model, x, y, steps=3 if args.quick else 5)
        pert = perturbation_time(model, x, y, reps=3 if args.quick else 10)
        row = {
            "n_params": sum(p.numel() for p in model.parameters()),
            "step_s": t,
            "penalty_over_base": t["penalty"] / t["base"],
            "sam_over_base": t["fmlab_sam"] / t["base"],
            "pyopt_over_base": t["pyopt_sam"] / t["base"],
            "fmlab_over_pyopt": t["fmlab_sam"] / t["pyopt_sam"],
            "trajectory_max_abs_diff": gap,
            "perturbation_s": pert,
        }
        report["models"][name] = row
        print(f"{name:<30} {1000 * t['base']:>8.1f} {1000 * t['penalty']:>8.1f} "
              f"{1000 * t['fmlab_sam']:>10.1f} {1000 * t['pyopt_sam']:>10.1f} "
              f"{row['penalty_over_base']:>8.2f} {row['sam_over_base']:>8.2f} "
              f"{row['pyopt_over_base']:>10.2f} {row['fmlab_over_pyopt']:>11.2f} "
              f"{gap:>9.1e} {1000 * pert['fmlab_sam']:>10.2f}/{1000 * pert['pyopt_sam']:<10.2f}",
              flush=True)
    report["goals"] = {"sam_over_base": "<= 2.05", "penalty_over_base": "<= 1.15",
                       "trajectory_max_abs_diff": "<= 1e-6", "fmlab_over_pyopt": "<= 1.0"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
