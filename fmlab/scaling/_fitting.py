"""The one fitting core behind every scaling law: robust losses, a batched multi-start L-BFGS and
the bootstrap.

Why batched: the replication protocol of Besiroglu et al. (2024) runs L-BFGS from each of 4,500
grid points. A Python loop calling :func:`scipy.optimize.minimize` per start spends nearly all its
time in interpreter overhead on a 240-row problem. Here every start is one row of an ``(S, P)``
array and each objective/gradient evaluation is a single broadcast over ``(S, n)``; the L-BFGS
two-loop recursion and the Armijo backtracking run on all starts at once. Starts are pruned by
successive halving (keep the better half every ``stage_iters`` iterations), and the few best
survivors are polished with scipy's L-BFGS-B at tight tolerances, so the reported optimum is a
fully converged L-BFGS-B solution.

The bootstrap reuses the same machinery: each replicate is one row whose data weights are
multinomial resampling counts, warm-started at the full-data optimum.

References:
    Hoffmann et al. 2022, Training Compute-Optimal Large Language Models, arXiv 2203.15556
    (App. D.2).
    Besiroglu et al. 2024, Chinchilla Scaling: A replication attempt, arXiv 2404.10102.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fmlab.exceptions import ConvergenceWarning

__all__ = [
    "BatchedObjective",
    "FitDiagnostics",
    "MultiStartResult",
    "ParamSpec",
    "batched_lbfgs",
    "bootstrap_refits",
    "multistart_minimize",
    "robust_loss",
]

LossName = Literal["huber", "squared", "asymmetric"]
LOSSES: tuple[str, ...] = ("huber", "squared", "asymmetric")
SPACES: tuple[str, ...] = ("log", "linear")

# fun(theta (k, P), rows (k,) or None) -> (f (k,), grad (k, P))
BatchedObjective = Callable[[np.ndarray, "np.ndarray | None"], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ParamSpec:
    """One fitted coordinate of a law.

    Args:
        name: Name of the internal coordinate (e.g. ``"log_A"``).
        grid: Start values for the multi-start grid, in the internal coordinate.
        lower: Lower bound of the coordinate (``-inf`` for none).
        upper: Upper bound of the coordinate (``inf`` for none).
    """

    name: str
    grid: tuple[float, ...]
    lower: float = -np.inf
    upper: float = np.inf


def robust_loss(
    r: np.ndarray, loss: str = "huber", delta: float = 1e-3, asymmetry: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise robust loss ``rho(r)`` and its derivative ``rho'(r)``.

    ``r`` is the residual observed minus predicted (in log space by default).

    .. math::

        \\text{squared: } \\rho(r) = r^2/2, \\qquad
        \\text{huber: } \\rho(r) = r^2/2 \\text{ if } |r| \\le \\delta
        \\text{ else } \\delta(|r| - \\delta/2)

    ``asymmetric`` is the Huber loss multiplied by ``asymmetry`` where the law over-predicts
    (``r < 0``), so the fit follows the lower envelope of the runs (OLMo-core's option).
    """
    if loss == "squared":
        return 0.5 * r * r, r.copy()
    a = np.abs(r)
    small = a <= delta
    rho = np.where(small, 0.5 * r * r, delta * (a - 0.5 * delta))
    psi = np.clip(r, -delta, delta)
    if loss == "asymmetric":
        w = np.where(r < 0, asymmetry, 1.0)
        rho, psi = rho * w, psi * w
    return rho, psi


def make_objective(
    log_predict_jac: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    y: np.ndarray,
    *,
    loss: str,
    delta: float,
    asymmetry: float,
    space: str,
    weights: np.ndarray,
    max_elements: int = 3_000_000,
) -> BatchedObjective:
    """Build the batched objective ``sum_i w_i rho(t_i - p_i(theta))`` and its gradient.

    Args:
        log_predict_jac: ``theta (k, P) -> (log-prediction (k, n), Jacobian (k, n, P))``.
        y: Observed targets ``(n,)`` (positive).
        space: ``"log"`` fits log targets (residual ``log y - log yhat``), ``"linear"`` raw ones.
        weights: ``(1, n)`` shared weights or ``(R, n)`` per-row weights (bootstrap counts),
            selected by the ``rows`` argument of the returned function.
        max_elements: Evaluate in chunks of starts so that ``k * n * P`` stays below this.
    """
    target = np.log(y) if space == "log" else np.asarray(y, float)

    def one(theta: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            logp, jac = log_predict_jac(theta)  # (k, n), (k, n, P)
            if space == "log":
                r, dp = target - logp, jac
            else:
                p = np.exp(logp)
                r, dp = target - p, p[..., None] * jac
            rho, psi = robust_loss(r, loss, delta, asymmetry)
            f = np.sum(w * rho, axis=1)  # (k,)
            g = -np.matmul((w * psi)[:, None, :], dp)[:, 0]  # (k, P), batched BLAS
        bad = ~np.isfinite(f) | ~np.isfinite(g).all(axis=1)
        f[bad] = np.inf
        g[bad] = 0.0
        return f, g

    n = target.shape[0]

    def fun(theta: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        k, p = theta.shape
        w_all = weights if (weights.shape[0] == 1 or rows is None) else weights[rows]
        chunk = max(1, max_elements // max(1, n * (p + 1)))
        if k <= chunk:
            return one(theta, w_all)
        fs, gs = [], []
        for s in range(0, k, chunk):
            w = w_all if w_all.shape[0] == 1 else w_all[s : s + chunk]
            f, g = one(theta[s : s + chunk], w)
            fs.append(f)
            gs.append(g)
        return np.concatenate(fs), np.concatenate(gs)

    return fun


def finite_difference_jac(
    log_predict: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, rel_step: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference Jacobian of a batched ``log_predict`` in ONE batched call.

    All ``2P`` perturbations of all ``k`` starts are stacked along the start axis, so the cost is a
    single evaluation on ``k * (2P + 1)`` rows. Returns ``(f (k, n), jac (k, n, P))``.
    """
    k, p = theta.shape
    h = rel_step * np.maximum(1.0, np.abs(theta))  # (k, P)
    eye = np.eye(p)
    plus = theta[:, None, :] + h[:, None, :] * eye  # (k, P, P)
    minus = theta[:, None, :] - h[:, None, :] * eye
    stacked = np.concatenate([theta[:, None, :], plus, minus], axis=1).reshape(-1, p)
    out = log_predict(stacked).reshape(k, 2 * p + 1, -1)  # (k, 2P+1, n)
    f0 = out[:, 0]
    jac = (out[:, 1 : p + 1] - out[:, p + 1 :]) / (2 * h[:, :, None])  # (k, P, n)
    # A term that is exactly -inf at both points (e.g. no PTQ) has zero derivative.
    jac = np.where(np.isfinite(jac), jac, 0.0)
    return f0, np.swapaxes(jac, 1, 2)


@dataclass
class _LbfgsOut:
    x: np.ndarray
    f: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    n_evals: int


def batched_lbfgs(
    fun: BatchedObjective,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    max_iter: int = 500,
    memory: int = 10,
    ftol: float = 1e-12,
    gtol: float = 1e-10,
    prune_every: int = 0,
    keep: int = 0,
) -> _LbfgsOut:
    """Projected L-BFGS on every row of ``x0 (S, P)`` at once.

    Each iteration runs the two-loop recursion for all active rows as array operations, then an
    Armijo backtracking line search in which only the rows still searching are re-evaluated.
    Rows stop when the relative decrease falls below ``ftol`` or the projected gradient's
    infinity norm below ``gtol``. With ``prune_every > 0`` the worse half of the active rows is
    dropped every ``prune_every`` iterations until ``keep`` rows remain (successive halving);
    pruned rows keep their last iterate.

    Returns:
        Final iterates ``x (S, P)``, objectives ``f (S,)``, a converged mask, iteration counts and
        the number of batched objective calls.
    """
    x = np.array(x0, dtype=float)
    s_total, p = x.shape
    x = np.clip(x, lower, upper)
    idx = np.arange(s_total)  # original row of each active row
    row_of = (lambda i: None) if rows is None else (lambda i: rows[i])
    f, g = fun(x, row_of(idx))
    n_evals = 1
    out_x, out_f = x.copy(), f.copy()
    converged = np.zeros(s_total, bool)
    n_iter = np.zeros(s_total, int)
    s_hist = np.zeros((memory, s_total, p))
    y_hist = np.zeros((memory, s_total, p))
    rho_hist = np.zeros((memory, s_total))
    n_hist = 0
    head = 0
    alive = np.isfinite(f)
    # dead starts (non-finite objective at the start) are recorded and dropped immediately
    if not alive.all():
        keep_rows = np.flatnonzero(alive)
        x, f, g, idx = x[keep_rows], f[keep_rows], g[keep_rows], idx[keep_rows]
        s_hist, y_hist = s_hist[:, keep_rows], y_hist[:, keep_rows]
        rho_hist = rho_hist[:, keep_rows]
    for it in range(1, max_iter + 1):
        if x.shape[0] == 0:
            break
        # --- two-loop recursion, batched over rows: q (k, P)
        q = g.copy()
        order = [(head - 1 - j) % memory for j in range(min(n_hist, memory))]
        alphas = []
        for j in order:
            a = rho_hist[j] * np.sum(s_hist[j] * q, axis=1)
            q -= a[:, None] * y_hist[j]
            alphas.append(a)
        if order:
            j0 = order[0]
            sy = np.sum(s_hist[j0] * y_hist[j0], axis=1)
            yy = np.sum(y_hist[j0] * y_hist[j0], axis=1)
            gamma = np.where((yy > 0) & (rho_hist[j0] > 0), sy / np.where(yy > 0, yy, 1), 0.0)
            gnorm = np.linalg.norm(g, axis=1)
            gamma = np.where(gamma > 0, gamma, 1.0 / np.maximum(gnorm, 1e-300))
        else:
            gamma = 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-300)
        r = gamma[:, None] * q
        for j, a in zip(reversed(order), reversed(alphas), strict=True):
            b = rho_hist[j] * np.sum(y_hist[j] * r, axis=1)
            r += s_hist[j] * (a - b)[:, None]
        d = -r
        # projected direction: no movement out of the box on active bounds
        d[(x <= lower) & (d < 0)] = 0.0
        d[(x >= upper) & (d > 0)] = 0.0
        slope = np.sum(g * d, axis=1)
        bad = ~(slope < 0)
        if bad.any():  # not a descent direction: fall back to steepest descent
            d[bad] = -g[bad] / np.maximum(np.linalg.norm(g[bad], axis=1), 1e-300)[:, None]
            d[(x <= lower) & (d < 0)] = 0.0
            d[(x >= upper) & (d > 0)] = 0.0
        # --- Armijo backtracking: only rows still searching are evaluated
        t = np.ones(x.shape[0])
        x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
        searching = np.ones(x.shape[0], bool)
        for _ in range(50):
            sidx = np.flatnonzero(searching)
            if sidx.size == 0:
                break
            xt = np.clip(x[sidx] + t[sidx, None] * d[sidx], lower, upper)
            ft, gt = fun(xt, row_of(idx[sidx]))
            n_evals += 1
            dec = np.sum(g[sidx] * (xt - x[sidx]), axis=1)
            ok = np.isfinite(ft) & (ft <= f[sidx] + 1e-4 * np.minimum(dec, 0.0))
            acc = sidx[ok]
            x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
            searching[acc] = False
            t[sidx[~ok]] *= 0.5
        failed = searching  # line search exhausted: treat as converged at x
        # --- history update (skip pairs with non-positive curvature)
        s_vec = x_new - x
        y_vec = g_new - g
        sy = np.sum(s_vec * y_vec, axis=1)
        good = sy > 1e-300
        s_hist[head] = np.where(good[:, None], s_vec, 0.0)
        y_hist[head] = np.where(good[:, None], y_vec, 0.0)
        rho_hist[head] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        head = (head + 1) % memory
        n_hist += 1
        rel = (f - f_new) / np.maximum(np.maximum(np.abs(f), np.abs(f_new)), 1e-300)
        pg = g_new.copy()
        pg[(x_new <= lower) & (pg > 0)] = 0.0
        pg[(x_new >= upper) & (pg < 0)] = 0.0
        done = failed | (rel <= ftol) | (np.max(np.abs(pg), axis=1) <= gtol)
        x, f, g = x_new, f_new, g_new
        n_iter[idx] = it
        out_x[idx], out_f[idx] = x, f
        converged[idx[done & ~failed]] = True
        converged[idx[failed & (rel <= 1e-6)]] = True
        stay = ~done
        if prune_every and it % prune_every == 0 and stay.sum() > keep:
            # successive halving: keep the better half (never fewer than `keep`)
            cand = np.flatnonzero(stay)
            n_keep = max(keep, (cand.size + 1) // 2)
            best = cand[np.argsort(f[cand], kind="stable")[:n_keep]]
            stay = np.zeros_like(stay)
            stay[best] = True
        if not stay.all():
            keep_rows = np.flatnonzero(stay)
            x, f, g, idx = x[keep_rows], f[keep_rows], g[keep_rows], idx[keep_rows]
            s_hist, y_hist = s_hist[:, keep_rows], y_hist[:, keep_rows]
            rho_hist = rho_hist[:, keep_rows]
    return _LbfgsOut(out_x, out_f, converged, n_iter, n_evals)


@dataclass
class MultiStartResult:
    """What :func:`multistart_minimize` returns."""

    x: np.ndarray  # (P,) best internal parameters
    fun: float
    converged: bool
    winning_start: int
    n_starts: int
    n_evals: int
    n_iter: int
    candidates_x: np.ndarray  # (m, P) polished candidates, best first
    candidates_f: np.ndarray  # (m,)
    message: str = ""


def multistart_minimize(
    fun: BatchedObjective,
    starts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    max_iter: int = 500,
    n_polish: int = 8,
    prune: bool = True,
    stage_iters: int = 4,
    polish: bool = True,
) -> MultiStartResult:
    """Minimise ``fun`` from every row of ``starts (S, P)`` and return the best optimum.

    Stage 1: batched projected L-BFGS on all starts (successive halving every ``stage_iters``
    iterations down to ``4 * n_polish`` rows when ``prune``; all starts to convergence otherwise).
    Stage 2: the ``n_polish`` best distinct iterates are polished one by one with scipy's
    L-BFGS-B (``ftol=1e-15``, ``gtol=1e-12``), using the same analytic batched objective.
    """
    from threadpoolctl import threadpool_limits

    # The matrices here are tiny: multi-threaded BLAS only adds spin-up cost (on a loaded 2-core
    # machine it made scipy's L-BFGS-B ~100x slower per iteration), so run single-threaded.
    with threadpool_limits(limits=1):
        return _multistart(fun, starts, lower, upper, max_iter=max_iter, n_polish=n_polish,
                           prune=prune, stage_iters=stage_iters, polish=polish)


def _multistart(
    fun: BatchedObjective, starts: np.ndarray, lower: np.ndarray, upper: np.ndarray, *,
    max_iter: int, n_polish: int, prune: bool, stage_iters: int, polish: bool,
) -> MultiStartResult:
    from scipy.optimize import minimize

    starts = np.atleast_2d(np.asarray(starts, float))
    res = batched_lbfgs(
        fun, starts, lower, upper, max_iter=max_iter,
        prune_every=stage_iters if prune else 0, keep=max(4 * n_polish, 1),
    )
    order = np.argsort(np.where(np.isfinite(res.f), res.f, np.inf), kind="stable")
    order = [i for i in order if np.isfinite(res.f[i])]
    if not order:
        raise RuntimeError(
            "The objective is not finite at any start; check that the data are positive and the "
            "start grid is in the law's domain."
        )
    # distinct candidates: skip iterates within 1e-6 (relative) of one already chosen
    chosen: list[int] = []
    for i in order:
        if all(
            np.max(np.abs(res.x[i] - res.x[j]) / np.maximum(1.0, np.abs(res.x[j]))) > 1e-6
            for j in chosen
        ):
            chosen.append(i)
        if len(chosen) >= max(1, n_polish):
            break
    bounds = [
        (None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    cand_x, cand_f, cand_ok, cand_start = [], [], [], []
    n_evals = res.n_evals
    for i in chosen:
        x0 = res.x[i]
        if polish:
            def scalar(th: np.ndarray) -> tuple[float, np.ndarray]:
                f1, g1 = fun(th[None, :], None)
                return float(f1[0]), g1[0]

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = minimize(
                    scalar, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                    options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": max_iter, "maxcor": 20},
                )
            n_evals += int(out.nfev)
            xf, ff = np.asarray(out.x), float(out.fun)
            # ABNORMAL: the line search hit round-off at an optimum polished to 1e-15
            ok = bool(out.success) or "ABNORMAL" in str(out.message).upper()
            ok = ok and out.nit < max_iter
            if not (ff <= res.f[i]):
                xf, ff = x0, float(res.f[i])
            cand_x.append(xf)
            cand_f.append(ff)
            cand_ok.append(ok)
        else:
            cand_x.append(x0)
            cand_f.append(float(res.f[i]))
            cand_ok.append(bool(res.converged[i]))
        cand_start.append(i)
    k = int(np.argmin(cand_f))
    order2 = np.argsort(cand_f)
    return MultiStartResult(
        x=np.asarray(cand_x[k]), fun=float(cand_f[k]), converged=bool(cand_ok[k]),
        winning_start=int(cand_start[k]), n_starts=int(starts.shape[0]), n_evals=n_evals,
        n_iter=int(res.n_iter.max()), candidates_x=np.asarray(cand_x)[order2],
        candidates_f=np.asarray(cand_f)[order2],
    )


def bootstrap_refits(
    make_fun: Callable[[np.ndarray], BatchedObjective],
    x_hat: np.ndarray,
    n_rows: int,
    n_bootstrap: int,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    base_weights: np.ndarray | None = None,
    random_state: int | None = 0,
    max_iter: int = 200,
    ftol: float = 1e-9,
    gtol: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonparametric bootstrap: refit on ``n_bootstrap`` resamples of the rows, all at once.

    Each replicate is one row of the batched optimiser with multinomial resampling counts as data
    weights, warm-started at the full-data optimum ``x_hat``.

    Returns:
        ``(theta (B, P), objective (B,), converged (B,))``.
    """
    rng = np.random.default_rng(random_state)
    counts = rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_bootstrap).astype(float)
    if base_weights is not None:
        counts = counts * base_weights[None, :]
    fun = make_fun(counts)
    x0 = np.repeat(np.asarray(x_hat, float)[None, :], n_bootstrap, axis=0)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        # replicates start next to their optimum; intervals do not need the 1e-12 polish
        res = batched_lbfgs(fun, x0, lower, upper, rows=np.arange(n_bootstrap), max_iter=max_iter,
                            ftol=ftol, gtol=gtol)
    return res.x, res.f, res.converged


@dataclass
class FitDiagnostics:
    """How a fit went.

    Attributes:
        objective: Final value of the fitting objective (sum of robust losses).
        r2: Coefficient of determination of the predicted loss on the fitted runs (linear scale).
        rmse_log: Root-mean-square residual of log loss on the fitted runs.
        heldout_rmse_log: The same on the held-out runs (``None`` without a validation split).
        heldout_mape: Mean absolute percentage error on the held-out runs.
        n_train / n_heldout: Runs used for fitting / held out.
        n_starts: Number of grid starts. winning_start: index of the start whose polished optimum
            won, with ``winning_start_params`` its internal coordinates.
        n_near_optimal: Polished candidates within 0.01% of the best objective whose parameters
            differ by more than 1% from the winner: a sign of a flat valley.
        converged: Whether the winning optimum satisfied the optimiser's convergence test.
        n_evals: Batched objective evaluations. time_s: wall time of the fit.
        n_bootstrap / bootstrap_failed: Replicates run and how many did not converge.
    """

    objective: float
    r2: float
    rmse_log: float
    n_train: int
    n_starts: int
    winning_start: int
    winning_start_params: dict[str, float]
    converged: bool
    n_evals: int
    n_iter: int
    time_s: float
    n_near_optimal: int = 0
    heldout_rmse_log: float | None = None
    heldout_mape: float | None = None
    n_heldout: int = 0
    n_bootstrap: int = 0
    bootstrap_failed: int = 0
    candidates: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def start_grid(
    specs: Sequence[ParamSpec], n_starts: int | None, random_state: int | None
) -> np.ndarray:
    """The Cartesian grid of the specs' start values; a seeded random subset if ``n_starts`` is
    smaller than the grid (the full grid otherwise)."""
    axes = [np.asarray(s.grid, float) for s in specs]
    sizes = [a.size for a in axes]
    total = int(np.prod(sizes, dtype=float))
    if n_starts is not None and n_starts < total:
        # sample flat indices without materialising the (possibly huge) Cartesian product
        rng = np.random.default_rng(random_state)
        flat = np.sort(rng.choice(total, size=n_starts, replace=False)) if total < 2**62 else \
            rng.integers(0, total, size=n_starts)
        idx = np.unravel_index(flat, sizes)
        mesh = np.column_stack([a[i] for a, i in zip(axes, idx, strict=True)])
    else:
        mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(total, len(specs))
    lower = np.array([s.lower for s in specs])
    upper = np.array([s.upper for s in specs])
    return np.clip(mesh, lower, upper)


def warn_not_converged(owner: str, detail: str) -> None:
    warnings.warn(
        f"{owner} did not converge: {detail}. Increase max_iter, widen the start grid or check the "
        "data for outliers.",
        ConvergenceWarning,
        stacklevel=3,
    )


def timer() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
