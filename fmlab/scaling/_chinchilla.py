"""The Chinchilla law ``L = E + A N^-alpha + B D^-beta`` and compute-optimal allocation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmlab._validation import check_real
from fmlab.scaling import _fitting as core
from fmlab.scaling._base import BaseLaw, LawParams

__all__ = ["ChinchillaLaw", "ChinchillaParams", "ComputeAllocation"]

_AB_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_EXP_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
_E_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)


@dataclass(frozen=True)
class ChinchillaParams(LawParams):
    """Fitted constants of ``L = E + A/N^alpha + B/D^beta``."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float


@dataclass(frozen=True)
class ComputeAllocation:
    """Compute-optimal model size and data for a FLOP budget (``C = 6 N D``)."""

    flops: float
    n_params: float
    n_tokens: float
    loss: float
    tokens_per_param: float


def lse(*terms: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Log-sum-exp of broadcastable terms and the softmax weight of each (for Jacobians)."""
    m = terms[0]
    for t in terms[1:]:
        m = np.maximum(m, t)
    m = np.where(np.isfinite(m), m, 0.0)
    ex = [np.exp(t - m) for t in terms]
    s = ex[0]
    for e in ex[1:]:
        s = s + e
    inv = 1.0 / s
    return m + np.log(s), [e * inv for e in ex]


class ChinchillaLaw(BaseLaw):
    """The Chinchilla scaling law fitted with the robust multi-start core.

    .. math::

        L(N, D) = E + A N^{-\\alpha} + B D^{-\\beta}, \\qquad
        \\log \\hat L = \\mathrm{LSE}(a - \\alpha \\log N,\\; b - \\beta \\log D,\\; e)

    with ``a = log A``, ``b = log B``, ``e = log E``. The defaults are the replication protocol
    of Besiroglu et al. (2024): Huber loss with ``delta = 1e-3`` on log loss, summed over runs,
    L-BFGS from the grid ``alpha, beta in {0, 0.5, ..., 2}``, ``e in {-1, -0.5, ..., 1}``,
    ``a, b in {0, 5, ..., 25}`` (4,500 starts). Features: ``n_params`` (N), ``n_tokens`` (D).

    Args:
        tie_exponents: Fit one exponent ``alpha = beta`` (as in some replications).
        (The fitting options are shared by every law; see :class:`~fmlab.scaling.BaseLaw`.)

    Example:
        >>> import numpy as np
        >>> N = np.repeat([1e8, 3e8, 1e9, 3e9], 4); D = np.tile([2e9, 6e9, 2e10, 6e10], 4)
        >>> true = ChinchillaLaw().set_fitted_params(
        ...     dict(E=1.8, A=400.0, alpha=0.34, B=2000.0, beta=0.37))
        >>> X = np.column_stack([N, D]); y = true.predict(X)
        >>> law = ChinchillaLaw(n_starts=300).fit(X, y)
        >>> round(law.params_.alpha, 2), round(law.params_.E, 2)
        (0.34, 1.8)

    References:
        Hoffmann et al. 2022, arXiv 2203.15556; Besiroglu et al. 2024, arXiv 2404.10102.
    """

    name = "chinchilla"
    feature_names = ("n_params", "n_tokens")
    params_class = ChinchillaParams

    def __init__(
        self,
        *,
        loss: str = "huber",
        huber_delta: float = 1e-3,
        asymmetry: float = 10.0,
        space: str = "log",
        grid: Mapping[str, Any] | None = None,
        n_starts: int | None = None,
        n_polish: int = 4,
        prune: bool = True,
        max_iter: int = 500,
        n_bootstrap: int = 0,
        confidence_level: float = 0.95,
        validation_fraction: float = 0.0,
        validation: str = "random",
        columns: Mapping[str, str] | None = None,
        random_state: int | None = 0,
        tie_exponents: bool = False,
    ) -> None:
        self.loss = loss
        self.huber_delta = huber_delta
        self.asymmetry = asymmetry
        self.space = space
        self.grid = grid
        self.n_starts = n_starts
        self.n_polish = n_polish
        self.prune = prune
        self.max_iter = max_iter
        self.n_bootstrap = n_bootstrap
        self.confidence_level = confidence_level
        self.validation_fraction = validation_fraction
        self.validation = validation
        self.columns = columns
        self.random_state = random_state
        self.tie_exponents = tie_exponents

    def param_specs(self) -> list[core.ParamSpec]:
        specs = [core.ParamSpec("log_A", _AB_GRID), core.ParamSpec("alpha", _EXP_GRID)]
        specs.append(core.ParamSpec("log_B", _AB_GRID))
        if not self.tie_exponents:
            specs.append(core.ParamSpec("beta", _EXP_GRID))
        specs.append(core.ParamSpec("log_E", _E_GRID))
        return specs

    def _split_theta(self, theta: np.ndarray) -> tuple[np.ndarray, ...]:
        cols = [theta[:, i : i + 1] for i in range(theta.shape[1])]  # each (k, 1)
        if self.tie_exponents:
            a, al, b, e = cols
            return a, al, b, al, e
        return tuple(cols)

    def _log_predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        a, al, b, be, e = self._split_theta(theta)
        out, _ = lse(a - al * np.log(X[:, 0]), b - be * np.log(X[:, 1]), e)
        return out

    def _log_predict_jac(self, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The hot loop of the 4,500-start fit: a 3-term log-sum-exp written with in-place
        # operations (no (k, n, 3) stack, few temporaries). Shapes: (k, n) unless noted.
        a, al, b, be, e = self._split_theta(theta)  # each (k, 1)
        ln, ld = np.log(X[:, 0]), np.log(X[:, 1])  # (n,)
        u1 = a - al * ln
        u2 = b - be * ld
        m = np.maximum(u1, u2)
        np.maximum(m, e, out=m)
        u1 -= m
        np.exp(u1, out=u1)  # e1
        u2 -= m
        np.exp(u2, out=u2)  # e2
        e3 = np.exp(e - m)
        s = u1 + u2
        s += e3
        out = np.log(s)
        out += m
        np.reciprocal(s, out=s)
        u1 *= s  # softmax weights w1, w2, w3
        u2 *= s
        e3 *= s
        k, n = out.shape
        jac = np.empty((k, n, theta.shape[1]))
        jac[..., 0] = u1
        np.multiply(u1, -ln, out=jac[..., 1])
        jac[..., 2] = u2
        if self.tie_exponents:
            jac[..., 1] -= u2 * ld
            jac[..., 3] = e3
        else:
            np.multiply(u2, -ld, out=jac[..., 3])
            jac[..., 4] = e3
        return out, jac

    def _public(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        a, al, b, be, e = (c[:, 0] for c in self._split_theta(theta))
        return {"E": np.exp(e), "A": np.exp(a), "alpha": al, "B": np.exp(b), "beta": be}

    def _internal(self, params: Mapping[str, float]) -> np.ndarray:
        p = {k: float(params[k]) for k in ("E", "A", "alpha", "B", "beta")}
        if self.tie_exponents:
            return np.array([np.log(p["A"]), p["alpha"], np.log(p["B"]), np.log(p["E"])])
        return np.array([np.log(p["A"]), p["alpha"], np.log(p["B"]), p["beta"], np.log(p["E"])])

    def compute_optimal(self, flops: float | np.ndarray) -> ComputeAllocation | list[Any]:
        """Compute-optimal ``N`` and ``D`` for a FLOP budget under ``C = 6 N D``.

        .. math::

            G = (\\alpha A / (\\beta B))^{1/(\\alpha+\\beta)},\\;
            N_{opt} = G (C/6)^{\\beta/(\\alpha+\\beta)},\\;
            D_{opt} = G^{-1} (C/6)^{\\alpha/(\\alpha+\\beta)}

        Returns:
            One :class:`ComputeAllocation`, or a list of them for an array of budgets.
        """
        self._check_fitted("compute_optimal")
        p = self.params_
        arr = np.atleast_1d(np.asarray(flops, float))
        for c in arr:
            check_real(float(c), "flops", owner="compute_optimal", low=0)
        s = p.alpha + p.beta
        g = (p.alpha * p.A / (p.beta * p.B)) ** (1 / s)
        n = g * (arr / 6) ** (p.beta / s)
        d = (arr / 6) ** (p.alpha / s) / g
        loss = p.E + p.A / n**p.alpha + p.B / d**p.beta
        out = [ComputeAllocation(float(c), float(ni), float(di), float(li), float(di / ni))
               for c, ni, di, li in zip(arr, n, d, loss, strict=True)]
        return out[0] if np.ndim(flops) == 0 else out
