"""Precision-aware scaling laws (Kumar et al. 2024) and their planners.

Three laws share the Chinchilla terms:

- :class:`PTQLaw`: post-training quantization degradation added to Chinchilla,
  ``L = E + A N^-alpha + B D^-beta + delta_PTQ(N, D, P_post)`` with
  ``delta_PTQ = C_T D^gamma_D N^-gamma_N exp(-P_post / gamma_post)``.
- :class:`PrecisionLaw`: quantized training through an effective parameter count
  ``N_eff = N prod_x (1 - exp(-P_x / gamma_x))`` over weights, activations and KV cache.
- :class:`UnifiedPrecisionLaw`: the two combined; the PTQ term uses ``N_eff`` and a factor
  ``prod_x [1 - exp(-C_x (P_x - P_post))]`` (zero when training already used ``P_post`` bits).

A ``post_bits`` of ``inf`` means "not quantized after training" (no PTQ term).

The exact formulas come from the fmlab brief (a third-party write-up of the paper); the fitted
constants of the paper are not public and are never hard-coded here.

References:
    Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fmlab._validation import check_option, check_real
from fmlab.scaling import _fitting as core
from fmlab.scaling._base import BaseLaw, LawParams
from fmlab.scaling._chinchilla import lse

__all__ = [
    "PTQLaw",
    "PTQParams",
    "PrecisionLaw",
    "PrecisionParams",
    "PrecisionPlan",
    "UnifiedPrecisionLaw",
    "UnifiedPrecisionParams",
    "critical_data_size",
    "optimal_precision",
    "optimal_precision_tied",
    "precision_curve",
]

_COMPONENTS = ("w", "a", "kv")
_LOG_GAMMA_GRID = tuple(np.log([1.0, 2.5, 6.0]))


@dataclass(frozen=True)
class PTQParams(LawParams):
    """Constants of :class:`PTQLaw`."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    C_T: float
    gamma_D: float
    gamma_N: float
    gamma_post: float


@dataclass(frozen=True)
class PrecisionParams(LawParams):
    """Constants of :class:`PrecisionLaw` (``gamma_*``: sensitivity to each component's bits)."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    gamma_w: float
    gamma_a: float
    gamma_kv: float


@dataclass(frozen=True)
class UnifiedPrecisionParams(LawParams):
    """Constants of :class:`UnifiedPrecisionLaw`."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    gamma_w: float
    gamma_a: float
    gamma_kv: float
    C_T: float
    gamma_D: float
    gamma_N: float
    gamma_post: float
    C_w: float
    C_a: float
    C_kv: float


def _log1mexp(z: np.ndarray) -> np.ndarray:
    """``log(1 - exp(-z))`` for ``z >= 0`` (``-inf`` at 0, 0 at inf)."""
    with np.errstate(divide="ignore"):
        return np.log(-np.expm1(-z))


def _z_over_expm1(z: np.ndarray) -> np.ndarray:
    """``z / (exp(z) - 1)``: 1 at z = 0, 0 at z = inf (the derivative of ``_log1mexp``)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = z / np.expm1(z)
    return np.where(z < 1e-12, 1.0, np.where(np.isfinite(out), out, 0.0))


class _PrecisionBase(BaseLaw):
    """Shared pieces: the Chinchilla coordinates and the parameter bookkeeping."""

    _extra: ClassVar[tuple[tuple[str, str, tuple[float, ...], float, float], ...]] = ()
    # (public name, internal name, grid, lower, upper); internal "log_*" means exp() to public

    def __init__(
        self,
        *,
        loss: str = "huber",
        huber_delta: float = 1e-3,
        asymmetry: float = 10.0,
        space: str = "log",
        grid: Mapping[str, Any] | None = None,
        n_starts: int | None = 1000,
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
        below_post: str = "error",
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
        self.below_post = below_post

    def _base_specs(self) -> list[core.ParamSpec]:
        ab = (0.0, 5.0, 10.0, 15.0, 20.0)
        ex = (0.2, 0.5, 1.0)
        specs = [core.ParamSpec("log_A", ab), core.ParamSpec("alpha", ex, 0.0, 5.0),
                 core.ParamSpec("log_B", ab)]
        if not self.tie_exponents:
            specs.append(core.ParamSpec("beta", ex, 0.0, 5.0))
        specs.append(core.ParamSpec("log_E", (-1.0, 0.0, 1.0)))
        return specs

    def param_specs(self) -> list[core.ParamSpec]:
        specs = self._base_specs()
        specs += [core.ParamSpec(internal, grid, lo, hi)
                  for _, internal, grid, lo, hi in self._extra]
        return specs

    def _cols(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Internal coordinates as name -> ``(k, 1)`` columns (beta filled in when tied)."""
        names = [s.name for s in self.param_specs()]
        out = {n: theta[:, i : i + 1] for i, n in enumerate(names)}
        if self.tie_exponents:
            out["beta"] = out["alpha"]
        return out

    def _public(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        c = {k: v[:, 0] for k, v in self._cols(theta).items()}
        pub = {"E": np.exp(c["log_E"]), "A": np.exp(c["log_A"]), "alpha": c["alpha"],
               "B": np.exp(c["log_B"]), "beta": c["beta"]}
        for public, internal, *_ in self._extra:
            pub[public] = np.exp(c[internal]) if internal.startswith("log_") else c[internal]
        return pub

    def _internal(self, params: Mapping[str, float]) -> np.ndarray:
        names = [f for f in self.params_class.__dataclass_fields__]
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"{type(self).__name__} parameters are missing {missing}; "
                             f"expected {names}.")
        p = {k: float(params[k]) for k in names}
        vals = {"log_A": np.log(p["A"]), "alpha": p["alpha"], "log_B": np.log(p["B"]),
                "beta": p["beta"], "log_E": np.log(p["E"])}
        for public, internal, *_ in self._extra:
            vals[internal] = np.log(p[public]) if internal.startswith("log_") else p[public]
        return np.array([vals[s.name] for s in self.param_specs()])

    def _check_bits(self, X: np.ndarray, cols: tuple[int, ...]) -> None:
        for j in cols:
            if (X[:, j] <= 0).any():
                raise ValueError(f"Column {self.feature_names[j]!r} must hold positive bit widths "
                                 f"(inf for unquantized); got {X[X[:, j] <= 0, j][0]!r}.")

    # The laws are log-sum-exps of a few terms u_j; each term knows its derivatives, so the
    # Jacobian is the softmax-weighted sum of the term derivatives (no finite differences).
    @abc.abstractmethod
    def _terms(self, theta: np.ndarray, X: np.ndarray
               ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """The log-sum-exp's terms ``u_j (k, n)``, each with its derivatives by parameter name."""

    def _log_predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out, _ = lse(*(u for u, _ in self._terms(theta, X)))
        return out

    def _log_predict_jac(self, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        names = [sp.name for sp in self.param_specs()]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            terms = self._terms(theta, X)
            out, weights = lse(*(u for u, _ in terms))
            jac = np.zeros((*out.shape, len(names)))  # (k, n, P)
            for (_, du), w in zip(terms, weights, strict=True):
                for name, d in du.items():
                    if self.tie_exponents and name == "beta":
                        name = "alpha"
                    contrib = w * d
                    jac[..., names.index(name)] += np.where(w > 0, contrib, 0.0)
        return out, jac

    def _neff(self, c: dict[str, np.ndarray], X: np.ndarray, bit_cols: tuple[int, ...]
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``log N_eff (k, n)`` and its derivatives w.r.t. ``log_gamma_x``."""
        out = np.log(X[:, 0]) + 0.0 * c["log_A"]
        d: dict[str, np.ndarray] = {}
        for comp, j in zip(_COMPONENTS, bit_cols, strict=True):
            z = X[:, j] / np.exp(c[f"log_gamma_{comp}"])  # (k, n)
            out = out + _log1mexp(z)
            d[f"log_gamma_{comp}"] = -_z_over_expm1(z)
        return out, d

    def _chinchilla_terms(self, c: dict[str, np.ndarray], X: np.ndarray, lneff: np.ndarray,
                          dneff: dict[str, np.ndarray]
                          ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        ld = np.log(X[:, 1])
        one = np.ones_like(lneff)
        du1 = {"log_A": one, "alpha": -lneff}
        du1.update({k: -c["alpha"] * v for k, v in dneff.items()})
        return [
            (c["log_A"] - c["alpha"] * lneff, du1),
            (c["log_B"] - c["beta"] * ld + 0 * lneff, {"log_B": one, "beta": -ld + 0 * lneff}),
            (c["log_E"] + 0 * lneff, {"log_E": one}),
        ]

    def _ptq_term(self, c: dict[str, np.ndarray], X: np.ndarray, lneff: np.ndarray,
                  dneff: dict[str, np.ndarray], post: np.ndarray
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        ld = np.log(X[:, 1]) + 0 * lneff
        inv_post = post / np.exp(c["log_gamma_post"])
        u = c["log_C_T"] - inv_post + c["gamma_D"] * ld - c["gamma_N"] * lneff
        du = {"log_C_T": np.ones_like(u), "log_gamma_post": inv_post + 0 * u, "gamma_D": ld,
              "gamma_N": -lneff}
        du.update({k: -c["gamma_N"] * v for k, v in dneff.items()})
        return u, du

class PTQLaw(_PrecisionBase):
    """Chinchilla plus post-training-quantization degradation.

    .. math::

        L = E + A N^{-\\alpha} + B D^{-\\beta}
            + C_T D^{\\gamma_D} N^{-\\gamma_N} e^{-P_{post}/\\gamma_{post}}

    Features: ``n_params``, ``n_tokens``, ``post_bits`` (``inf``: not quantized). Fitting options
    as in :class:`~fmlab.scaling.ChinchillaLaw` (default ``n_starts=1000`` random grid points);
    ``tie_exponents`` ties ``alpha = beta``.

    References:
        Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330 (PTQ law).
    """

    name = "ptq"
    feature_names = ("n_params", "n_tokens", "post_bits")
    params_class = PTQParams
    _extra = (
        ("C_T", "log_C_T", (-5.0, 0.0, 5.0), -np.inf, np.inf),
        ("gamma_D", "gamma_D", (0.2, 0.5, 1.0), 0.0, 5.0),
        ("gamma_N", "gamma_N", (0.2, 0.5, 1.0), 0.0, 5.0),
        ("gamma_post", "log_gamma_post", tuple(np.log([0.5, 1.0, 2.0])), -5.0, 5.0),
    )

    def _check_domain(self, X: np.ndarray) -> None:
        super()._check_domain(X)
        self._check_bits(X, (2,))

    def _terms(self, theta: np.ndarray, X: np.ndarray
               ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        c = self._cols(theta)
        ln = np.log(X[:, 0]) + 0 * c["log_A"]
        terms = self._chinchilla_terms(c, X, ln, {})
        post = X[:, 2]
        u, du = self._ptq_term(c, X, ln, {}, np.where(np.isposinf(post), 0.0, post))
        terms.append((np.where(np.isposinf(post), -np.inf, u), du))
        return terms


class PrecisionLaw(_PrecisionBase):
    """Quantized training through an effective parameter count.

    .. math::

        N_{eff} = N \\prod_{x \\in \\{w, a, kv\\}} (1 - e^{-P_x/\\gamma_x}), \\qquad
        L = E + A N_{eff}^{-\\alpha} + B D^{-\\beta}

    Features: ``n_params``, ``n_tokens``, ``w_bits``, ``a_bits``, ``kv_bits`` (training bit
    widths; ``inf`` for full precision).

    References:
        Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330 (quantized training).
    """

    name = "precision"
    feature_names = ("n_params", "n_tokens", "w_bits", "a_bits", "kv_bits")
    params_class = PrecisionParams
    _extra = tuple(
        (f"gamma_{x}", f"log_gamma_{x}", _LOG_GAMMA_GRID, -5.0, 5.0) for x in _COMPONENTS
    )

    def _check_domain(self, X: np.ndarray) -> None:
        super()._check_domain(X)
        self._check_bits(X, (2, 3, 4))

    def _terms(self, theta: np.ndarray, X: np.ndarray
               ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        c = self._cols(theta)
        lneff, dneff = self._neff(c, X, (2, 3, 4))
        return self._chinchilla_terms(c, X, lneff, dneff)


class UnifiedPrecisionLaw(_PrecisionBase):
    """Training precision and post-training quantization in one law.

    .. math::

        L = E + A N_{eff}^{-\\alpha} + B D^{-\\beta} + C_T e^{-P_{post}/\\gamma_{post}}
            D^{\\gamma_D} N_{eff}^{-\\gamma_N}
            \\prod_x \\left[1 - e^{-C_x (P_x - P_{post})}\\right]

    Features: ``n_params``, ``n_tokens``, ``w_bits``, ``a_bits``, ``kv_bits``, ``post_bits``.

    Args:
        below_post: What to do when a training precision is below ``post_bits`` (the bracket
            would be negative): ``"error"`` (default) raises; ``"clamp"`` sets ``P_x - P_post``
            to 0, i.e. a model already trained at fewer bits than the PTQ format loses nothing
            more to PTQ.

    References:
        Kumar et al. 2024, Scaling Laws for Precision, arXiv 2411.04330 (unified law).
    """

    name = "unified_precision"
    feature_names = ("n_params", "n_tokens", "w_bits", "a_bits", "kv_bits", "post_bits")
    params_class = UnifiedPrecisionParams
    _extra = (
        *PrecisionLaw._extra,
        *PTQLaw._extra,
        *((f"C_{x}", f"log_C_{x}", tuple(np.log([0.3, 1.0, 3.0])), -6.0, 4.0)
          for x in _COMPONENTS),
    )

    def _check_domain(self, X: np.ndarray) -> None:
        super()._check_domain(X)
        self._check_bits(X, (2, 3, 4, 5))
        check_option(self.below_post, "below_post", ("error", "clamp"), owner=type(self).__name__)
        if self.below_post == "error":
            for j, comp in zip((2, 3, 4), _COMPONENTS, strict=True):
                bad = (X[:, j] < X[:, 5]) & np.isfinite(X[:, 5])  # inf: no PTQ
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise ValueError(
                        f"{comp}_bits ({X[i, j]:g}) is below post_bits ({X[i, 5]:g}) in row {i}; "
                        "the unified law is defined only for training bits >= post_bits. Fix the "
                        "row or pass below_post='clamp'."
                    )

    def _terms(self, theta: np.ndarray, X: np.ndarray
               ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        c = self._cols(theta)
        lneff, dneff = self._neff(c, X, (2, 3, 4))
        terms = self._chinchilla_terms(c, X, lneff, dneff)
        post = X[:, 5]
        no_ptq = np.isposinf(post)
        finite_post = np.where(no_ptq, 0.0, post)
        u, du = self._ptq_term(c, X, lneff, dneff, finite_post)
        for comp, j in zip(_COMPONENTS, (2, 3, 4), strict=True):
            gap = np.maximum(X[:, j] - finite_post, 0.0)  # clamp (checked in _check_domain)
            y = np.exp(c[f"log_C_{comp}"]) * gap  # (k, n)
            u = u + _log1mexp(y)
            du[f"log_C_{comp}"] = _z_over_expm1(y) + 0 * u
        terms.append((np.where(no_ptq, -np.inf, u), du))
        return terms


# --------------------------------------------------------------------------------------------
# planners
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionPlan:
    """A compute-optimal training precision and the matching model and data size."""

    bits: float
    n_params: float
    n_tokens: float
    loss: float
    flops: float


def _fitted(law: Any, kinds: tuple[type, ...], what: str) -> Any:
    if not isinstance(law, kinds):
        names = ", ".join(k.__name__ for k in kinds)
        raise TypeError(f"{what} needs a fitted {names}; got {type(law).__name__}.")
    law._check_fitted(what)
    return law.params_


def critical_data_size(
    law: PTQLaw | UnifiedPrecisionLaw,
    n_params: float,
    post_bits: float,
    *,
    train_bits: float | tuple[float, float, float] = np.inf,
) -> float:
    """Data size beyond which more pretraining makes the post-quantization loss *worse*.

    Minimising ``B D^-beta + C D^gamma_D`` over ``D`` (``C`` collects the PTQ factors) gives

    .. math::

        D^* = \\left[\\frac{\\beta B N^{\\gamma_N} e^{P_{post}/\\gamma_{post}}}
              {\\gamma_D C_T}\\right]^{1/(\\beta + \\gamma_D)}

    For :class:`UnifiedPrecisionLaw`, ``N`` becomes ``N_eff`` (at ``train_bits``, one value or
    ``(w, a, kv)``) and ``C_T`` is multiplied by the bracket product.
    """
    p = _fitted(law, (PTQLaw, UnifiedPrecisionLaw), "critical_data_size")
    n = check_real(n_params, "n_params", owner="critical_data_size", low=0)
    pb = check_real(post_bits, "post_bits", owner="critical_data_size", low=0)
    c_t = p.C_T
    if isinstance(law, UnifiedPrecisionLaw):
        bits = np.broadcast_to(np.asarray(train_bits, float), (3,))
        if (bits < pb).any() and law.below_post == "error":
            raise ValueError(f"train_bits {tuple(bits)} is below post_bits ({pb:g}); the unified "
                             "law is defined only for training bits >= post_bits.")
        g = [p.gamma_w, p.gamma_a, p.gamma_kv]
        cx = [p.C_w, p.C_a, p.C_kv]
        n = n * float(np.prod([-np.expm1(-b / gi) for b, gi in zip(bits, g, strict=True)]))
        c_t = c_t * float(np.prod([-np.expm1(-ci * max(b - pb, 0.0))
                                   for b, ci in zip(bits, cx, strict=True)]))
        if c_t == 0:
            return float("inf")
    num = p.beta * p.B * n**p.gamma_N * np.exp(pb / p.gamma_post)
    return float((num / (p.gamma_D * c_t)) ** (1.0 / (p.beta + p.gamma_D)))


def optimal_precision_tied(gammas: tuple[float, ...] | float) -> float:
    """Root of ``sum_x (P/gamma_x) / (exp(P/gamma_x) - 1) = 1``: the compute-optimal precision
    when ``N``, ``D`` and ``P = P_w = P_a = P_kv`` are all free under ``C ∝ N D P``.

    It maximises ``f(P)/P`` with ``f = prod_x (1 - exp(-P/gamma_x))`` and depends neither on the
    budget nor on ``A, B, alpha, beta``. With one gamma for all three, ``P* = 1.90381 gamma``.
    """
    from scipy.optimize import brentq

    g = np.atleast_1d(np.asarray(gammas, float))
    if g.size == 1:
        g = np.repeat(g, 3)
    if (g <= 0).any():
        raise ValueError(f"gammas must be positive; got {g.tolist()}.")

    def h(p: float) -> float:
        z = p / g
        return float(np.sum(z / np.expm1(z)) - 1.0)

    return float(brentq(h, 1e-6 * g.min(), 100 * g.max(), xtol=1e-12))


def optimal_precision(
    law: PrecisionLaw | UnifiedPrecisionLaw,
    flops: float,
    *,
    n_params: float | None = None,
    bits_range: tuple[float, float] = (1.0, 32.0),
    flops_per_param_token: float = 6.0,
    reference_bits: float = 16.0,
) -> PrecisionPlan:
    """Compute-optimal training precision ``P = P_w = P_a = P_kv`` for a budget.

    Cost model (the paper's, as we read it): ``C = k N D P / P_ref`` with ``k = 6`` FLOPs per
    parameter-token at ``P_ref = 16`` bits, i.e. cost is linear in the bit width. With
    ``n_params=None`` the model size and data are chosen jointly (closed-form Chinchilla split at
    each ``P``) and the optimum is budget-independent (see :func:`optimal_precision_tied`);
    with ``n_params`` fixed, ``D = C P_ref / (k N P)`` and the optimum rises with the budget.
    Any PTQ term of a unified law is ignored (training only).
    """
    from scipy.optimize import minimize_scalar

    p = _fitted(law, (PrecisionLaw, UnifiedPrecisionLaw), "optimal_precision")
    c = check_real(flops, "flops", owner="optimal_precision", low=0)
    lo, hi = (float(b) for b in bits_range)
    if not 0 < lo < hi:
        raise ValueError(f"`0 < bits_range[0] < bits_range[1]` must hold; got {bits_range}.")
    g = np.array([p.gamma_w, p.gamma_a, p.gamma_kv])

    def f_eff(bits: float) -> float:
        return float(np.prod(-np.expm1(-bits / g)))

    def plan(bits: float) -> tuple[float, float, float]:
        m = c * reference_bits / (flops_per_param_token * bits)  # N * D
        if n_params is not None:
            n = float(n_params)
        else:
            a_eff = p.A * f_eff(bits) ** (-p.alpha)
            s = p.alpha + p.beta
            n = (p.alpha * a_eff / (p.beta * p.B)) ** (1 / s) * m ** (p.beta / s)
        d = m / n
        loss = p.E + p.A * (n * f_eff(bits)) ** (-p.alpha) + p.B * d ** (-p.beta)
        return n, d, loss

    grid = np.linspace(lo, hi, 256)
    losses = [plan(b)[2] for b in grid]
    i = int(np.argmin(losses))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(lambda x: plan(x)[2], bounds=(a, b), method="bounded",
                          options={"xatol": 1e-6})
    bits = float(res.x)
    n, d, loss = plan(bits)
    return PrecisionPlan(bits=bits, n_params=n, n_tokens=d, loss=loss, flops=c)


def precision_curve(
    law: PrecisionLaw | UnifiedPrecisionLaw | PTQLaw,
    n_params: float,
    n_tokens: float,
    bits: np.ndarray,
    *,
    kind: str = "train",
    train_bits: float = 16.0,
) -> np.ndarray:
    """Predicted loss versus bit width at fixed ``N`` and ``D``.

    Args:
        kind: ``"train"`` varies ``P_w = P_a = P_kv`` (no PTQ); ``"post"`` varies ``P_post`` (for
            a unified law at ``train_bits``).
    """
    check_option(kind, "kind", ("train", "post"), owner="precision_curve")
    b = np.asarray(bits, float)
    cols: dict[str, Any] = {"n_params": np.full(b.shape, n_params),
                            "n_tokens": np.full(b.shape, n_tokens)}
    if kind == "train":
        for x in _COMPONENTS:
            cols[f"{x}_bits"] = b
        cols["post_bits"] = np.full(b.shape, np.inf)
    else:
        for x in _COMPONENTS:
            cols[f"{x}_bits"] = np.full(b.shape, float(train_bits))
        cols["post_bits"] = b
    X = np.column_stack([cols[f] for f in law.feature_names])
    return law.predict(X)
