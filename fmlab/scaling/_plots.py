"""PNG figures for fitted laws and plans (matplotlib, Agg backend, imported on use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmlab._plotting import pyplot, save_figure

__all__ = ["plot_fit", "plot_pool_plan", "plot_precision_curves"]


def plot_fit(law: Any, X: Any, y: Any, path: str | Path, *, title: str | None = None) -> Path:
    """Observed vs fitted loss: the runs against ``n_params`` (or samples seen), one fitted curve
    per distinct second feature (or pool), with the bootstrap band when available."""
    plt = pyplot()
    y = np.asarray(y, float)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if law.name == "data_filtering":
        xa = law._select(X)
        pools = np.asarray(law.pools_of(X))
        for p in dict.fromkeys(pools):
            m = pools == p
            order = np.argsort(xa[m, 1])
            ax.scatter(xa[m, 1], y[m], s=8, alpha=0.5)
            grid = np.geomspace(xa[m, 1].min(), xa[m, 1].max(), 200)
            frame = {"pool": [p] * grid.size, "samples_seen": grid,
                     "pool_size": np.full(grid.size, xa[m, 2][order][0])}
            ax.plot(grid, law.predict(frame), label=str(p))
        ax.set_xlabel("samples seen")
        ax.set_ylabel("error")
    elif len(law.feature_names) == 2:
        # isoFLOP profiles (C = 6 N D): runs and the fitted curve along each budget
        xa = law._select(X)
        flops = 6 * xa[:, 0] * xa[:, 1]
        key = np.round(np.log10(flops) * 4) / 4
        groups = np.unique(key)
        colors = plt.cm.viridis(np.linspace(0, 1, max(len(groups), 1)))
        has_band = getattr(law, "_boot_theta", None) is not None
        for g, c in zip(groups, colors, strict=False):
            m = key == g
            cmed = float(np.median(flops[m]))
            ax.scatter(xa[m, 0], y[m], s=10, color=c, alpha=0.7)
            grid = np.geomspace(xa[m, 0].min(), xa[m, 0].max(), 60)
            xs = np.column_stack([grid, cmed / (6 * grid)])
            ax.plot(grid, law.predict(xs), color=c, lw=1, label=f"C={cmed:.1e}")
            if has_band:
                lo, hi = law.predict_interval(xs)
                ax.fill_between(grid, lo, hi, color=c, alpha=0.2)
        ax.set_xlabel("parameters N")
        ax.set_ylabel("loss")
    else:
        xa = law._select(X)
        pred = law.predict(xa)
        ax.scatter(y, pred, s=8, alpha=0.6)
        lim = [min(y.min(), pred.min()), max(y.max(), pred.max())]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel("observed")
        ax.set_ylabel("predicted")
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, ncol=2)
    ax.set_xscale("log")
    ax.set_title(title or f"{type(law).__name__} fit")
    return save_figure(fig, path, dpi=120)


def plot_pool_plan(plan: Any, path: str | Path, *, title: str | None = None) -> Path:
    """Predicted error of every candidate pool/mix vs samples seen, with the best per budget."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, err in zip(plan.candidates, plan.errors, strict=True):
        ax.plot(plan.budgets, err, label=name, lw=1)
    ax.plot(plan.budgets, plan.best_error, "k--", lw=2, label="best (frontier)")
    ax.set_xscale("log")
    ax.set_xlabel("samples seen (compute)")
    ax.set_ylabel("predicted error")
    ax.legend(fontsize=7)
    ax.set_title(title or "Best data pool per compute budget")
    return save_figure(fig, path, dpi=120)


def plot_precision_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
                          xlabel: str, ylabel: str = "loss", title: str = "",
                          logx: bool = False, vlines: dict[str, float] | None = None) -> Path:
    """Generic line plot: label -> (x, y)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, (x, yv) in curves.items():
        ax.plot(x, yv, label=label)
    for label, v in (vlines or {}).items():
        ax.axvline(v, ls=":", color="gray")
        ax.text(v, ax.get_ylim()[1], label, rotation=90, va="top", fontsize=7)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)
