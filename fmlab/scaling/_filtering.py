"""Data-filtering (quality-quantity) scaling laws: pool utility that decays with repetition.

Notation (Goyal et al. 2024, semantics of the released ``objective.py``): a pool holds ``N_p``
samples per epoch, ``n`` samples have been seen, ``K = floor(n / N_p)``. Parameters: ``a > 0``
scales ``n`` inside the power, ``b < 0`` is the pool's utility, ``tau`` its half-life in
repetitions, ``d`` the irreducible error, normaliser ``1e5``. For pass ``k = 0..K``:
``n_k = a min(N_p (k+1), n) / 1e5`` (end of pass), ``n'_k = a N_p k / 1e5`` (start of pass),
``b_k = b 0.5^(k / tau)``.

- ``variant="utility"`` (effective utility): ``y = (n_0^b + d) prod_{k=1..K} (n_k / n'_k)^(b_k)``.
  With ``d_placement="inside"`` (the released behaviour, default) ``d`` sits before the product, so
  repeats shrink the irreducible term too and the error can exceed 1; ``"outside"`` adds ``d``
  after the product.
- ``variant="data"`` (effective data, after Muennighoff et al. 2023):
  ``n_eff = sum_k (n_k - n'_k) 0.5^(k / tau)``, ``y = n_eff^b + d``.

Predicted accuracy is ``1 - y``. Both are computed in closed form per row: the repetition sum
only depends on ``K`` through a cumulative sum over passes that is built once per ``tau``.

References:
    Goyal, Maini, Lipton, Raghunathan, Kolter 2024, Scaling Laws for Data Filtering, arXiv
    2404.07177. Muennighoff et al. 2023, Scaling Data-Constrained Language Models, arXiv
    2305.16264.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmlab._validation import check_option, check_real
from fmlab.scaling import _fitting as core
from fmlab.scaling._base import BaseLaw, LawParams

__all__ = [
    "DataFilteringLaw",
    "DataFilteringParams",
    "PoolPlan",
    "mixture_error",
    "plan_pools",
    "tmars_preset",
]

NORMALISER = 1e5
VARIANTS = ("utility", "data")
D_PLACEMENTS = ("inside", "outside")
TAU_SCALINGS = ("none", "by_pool_count")


@dataclass(frozen=True)
class DataFilteringParams(LawParams):
    """Constants of :class:`DataFilteringLaw`: shared ``a`` and ``d``; per-pool ``b`` and
    ``tau`` (pool name -> value)."""

    a: float
    d: float
    b: dict[str, float] = field(default_factory=dict)
    tau: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"a": float(self.a), "d": float(self.d), "b": dict(self.b), "tau": dict(self.tau)}


def _repeat_table(tau: np.ndarray, k_max: int) -> np.ndarray:
    """``F[..., m] = sum_{k=1..m} 0.5^(k/tau) log((k+1)/k)`` for ``m = 0..k_max``."""
    k = np.arange(1, max(k_max, 1) + 1, dtype=float)  # (K,)
    terms = np.exp(-np.log(2.0) * k / tau[..., None]) * np.log1p(1.0 / k)  # (..., K)
    table = np.concatenate([np.zeros((*tau.shape, 1)), np.cumsum(terms, axis=-1)], axis=-1)
    return table


def _passes(n: np.ndarray, pool_size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``K = floor(n / N_p)`` (robust to float round-off) and ``r = n / N_p``."""
    r = n / pool_size
    return np.floor(r + 1e-9).astype(int), r


def _log_error(
    n: np.ndarray,
    pool_size: np.ndarray,
    a: np.ndarray,
    d: np.ndarray,
    b: np.ndarray,
    tau: np.ndarray,
    repeat_sum: np.ndarray,
    decay_k: np.ndarray,
    *,
    variant: str,
    d_placement: str,
) -> np.ndarray:
    """Log predicted error from per-row pieces; every array broadcasts to ``(k, R)``.

    ``repeat_sum`` is ``sum_{k=1..K} 0.5^(k/tau) log(n_k / n'_k)`` (utility variant) and
    ``decay_k`` the effective-data sum ``sum_k (n_k - n'_k) 0.5^(k/tau) / N_p`` (data variant).
    """
    if variant == "utility":
        log_n0 = np.log(a * np.minimum(pool_size, n) / NORMALISER)
        if d_placement == "inside":
            return np.log(np.exp(b * log_n0) + d) + b * repeat_sum
        return np.log(np.exp(b * (log_n0 + repeat_sum)) + d)
    n_eff = a * pool_size * decay_k / NORMALISER
    return np.log(np.exp(b * np.log(n_eff)) + d)


def _row_pieces(
    n: np.ndarray, pool_size: np.ndarray, tau: np.ndarray, table: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row repetition sums for decay half-lives ``tau`` broadcast to rows.

    Returns ``(repeat_sum, decay_k)`` (see :func:`_log_error`).
    """
    big_k, r = _passes(n, pool_size)
    rho_k = np.exp(-np.log(2.0) * big_k / tau)  # 0.5^(K/tau)
    with np.errstate(divide="ignore", invalid="ignore"):
        last = np.where(big_k >= 1, np.log(r / np.maximum(big_k, 1)), 0.0)
    if table is None:
        table = _repeat_table(np.asarray(tau, float), int(big_k.max()))
    shape = np.broadcast_shapes(table.shape[:-1], big_k.shape)
    full = np.take_along_axis(
        np.broadcast_to(table, (*shape, table.shape[-1])),
        np.broadcast_to(np.maximum(big_k - 1, 0)[..., None], (*shape, 1)), axis=-1,
    )[..., 0]
    repeat_sum = np.where(big_k >= 1, full + rho_k * last, 0.0)
    # effective data: sum_{k<K} rho^k + (r - K) rho^K with rho = 0.5^(1/tau)
    rho = np.exp(-np.log(2.0) / tau)
    geo = np.where(np.abs(1 - rho) > 1e-12, (1 - rho**big_k) / (1 - rho), big_k)
    decay_k = geo + (r - big_k) * rho_k
    return repeat_sum, decay_k


class DataFilteringLaw(BaseLaw):
    """Per-pool error of a model trained on a data pool seen several times.

    ``fit(X, y)`` takes runs with columns ``pool`` (any label), ``samples_seen`` and optionally
    ``pool_size`` (samples per epoch; default the ``pool_size`` argument) and ``y`` the error
    (e.g. ``1 - zero-shot accuracy``). Each pool gets its own utility ``b`` and half-life ``tau``;
    ``a`` and ``d`` are shared. See the module docstring for the two variants.

    Args:
        variant: ``"utility"`` (effective utility, default) or ``"data"`` (effective data).
        d_placement: ``"inside"`` (released code: ``d`` before the repetition product) or
            ``"outside"``. Only used by the utility variant.
        a: Fix the shared scale ``a`` (the released fits fix it per record); ``None`` fits it.
        d: Irreducible error; fixed at 0.1 by default as in the released scripts.
        fit_d: Fit ``d`` too (then ``d`` is the start value).
        pool_size: Samples per epoch when ``X`` has no ``pool_size`` column (12.8M: a DataComp
            medium bucket).
        (The fitting options are shared by every law; see :class:`~fmlab.scaling.BaseLaw`.
        The released code used a sum of squared errors on the error scale: ``loss="squared",
        space="linear"``.)

    Example:
        >>> law = tmars_preset("utility")
        >>> round(float(law.predict({"pool": ["tmars_top0to10p"], "samples_seen": [12.8e6]})[0]), 6)
        0.930187

    References:
        Goyal et al. 2024, Scaling Laws for Data Filtering, arXiv 2404.07177.
    """

    name = "data_filtering"
    feature_names = ("pool", "samples_seen", "pool_size")
    params_class = DataFilteringParams

    def __init__(
        self,
        *,
        variant: str = "utility",
        d_placement: str = "inside",
        a: float | None = None,
        d: float = 0.1,
        fit_d: bool = False,
        pool_size: float = 12.8e6,
        loss: str = "huber",
        huber_delta: float = 1e-3,
        asymmetry: float = 10.0,
        space: str = "log",
        grid: Mapping[str, Any] | None = None,
        n_starts: int | None = 2000,
        n_polish: int = 4,
        prune: bool = True,
        max_iter: int = 500,
        n_bootstrap: int = 0,
        confidence_level: float = 0.95,
        validation_fraction: float = 0.0,
        validation: str = "random",
        columns: Mapping[str, str] | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.variant = variant
        self.d_placement = d_placement
        self.a = a
        self.d = d
        self.fit_d = fit_d
        self.pool_size = pool_size
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

    # -- pools and columns --------------------------------------------------------------------
    def _check_params(self) -> None:
        super()._check_params()
        owner = type(self).__name__
        check_option(self.variant, "variant", VARIANTS, owner=owner)
        check_option(self.d_placement, "d_placement", D_PLACEMENTS, owner=owner)
        check_real(self.pool_size, "pool_size", owner=owner, low=0)
        check_real(self.d, "d", owner=owner, low=0, closed="left")
        if self.a is not None:
            check_real(self.a, "a", owner=owner, low=0)

    def _columns(self, X: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(pools, samples_seen (n,), pool_size (n,))`` read and checked from ``X``."""
        owner = type(self).__name__
        mapping = dict(self.columns or {})
        col = {f: mapping.get(f, f) for f in self.feature_names}
        if isinstance(X, Mapping) or hasattr(X, "columns"):
            available = [str(c) for c in (X.keys() if isinstance(X, Mapping) else X.columns)]
            missing = [col[f] for f in ("pool", "samples_seen") if col[f] not in available]
            if missing:
                raise ValueError(
                    f"{owner} needs the column(s) {missing} in X; got columns {available}. "
                    "Rename or map them, e.g. columns={'samples_seen': 'n'} "
                    "(CLI: --col samples_seen=n)."
                )
            pools = np.asarray(X[col["pool"]], dtype=object).reshape(-1)
            n = np.asarray(X[col["samples_seen"]], dtype=float).reshape(-1)
            size = (np.asarray(X[col["pool_size"]], dtype=float).reshape(-1)
                    if col["pool_size"] in available else np.full(n.shape, float(self.pool_size)))
        else:
            arr = np.asarray(X, dtype=object)
            if arr.ndim != 2 or arr.shape[1] not in (2, 3):
                raise ValueError(f"X for {owner} must be a DataFrame/dict with columns pool, "
                                 f"samples_seen[, pool_size] or an array with 2-3 columns; got "
                                 f"shape {arr.shape}.")
            pools = arr[:, 0]
            n = arr[:, 1].astype(float)
            size = arr[:, 2].astype(float) if arr.shape[1] == 3 else \
                np.full(n.shape, float(self.pool_size))
        for name, v in (("samples_seen", n), ("pool_size", size)):
            if not np.isfinite(v).all() or (v <= 0).any():
                raise ValueError(f"Column {name!r} for {owner} must hold finite positive counts; "
                                 f"got {v[~(np.isfinite(v) & (v > 0))][0]!r}.")
        return [str(p) for p in pools], n, size

    def pools_of(self, X: Any) -> list[str]:
        """The pool of each run in ``X``, as strings."""
        return self._columns(X)[0]

    def _input_feature_names(self, X: Any) -> None:
        return None  # the pool column is a label, not a numeric feature

    def _select(self, X: Any) -> np.ndarray:
        """``(codes, samples_seen, pool_size)`` per run, ``(n, 3)``; codes index ``pools_``."""
        owner = type(self).__name__
        pools, n, size = self._columns(X)
        codes = np.full(n.shape, -1.0)
        known = getattr(self, "_pool_index", None)
        if known is not None:
            for i, p in enumerate(pools):
                if p not in known:
                    raise ValueError(f"Unknown pool {p!r} for this {owner}; it was fitted on "
                                     f"{list(known)}.")
                codes[i] = known[p]
        return np.column_stack([codes, n, size])

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> DataFilteringLaw:
        """Fit per-pool ``b, tau`` (and the shared ``a``, ``d`` unless fixed) to runs."""
        self._pool_index = None
        self._check_params()
        order: dict[str, int] = {}
        for p in self.pools_of(X):
            order.setdefault(p, len(order))
        self._pool_index = order
        self.pools_ = list(order)
        return super().fit(X, y, sample_weight)  # type: ignore[return-value]

    # -- coordinates --------------------------------------------------------------------------
    def param_specs(self) -> list[core.ParamSpec]:
        specs = []
        if self.a is None:
            specs.append(core.ParamSpec("log_a", tuple(np.log([0.005, 0.02, 0.08])), -12.0, 5.0))
        if self.fit_d:
            specs.append(core.ParamSpec("d", (0.0, float(self.d)), 0.0, 1.0))
        for i in range(len(self.pools_)):
            specs.append(core.ParamSpec(f"b_{i}", (-0.05, -0.15, -0.3), -3.0, -1e-6))
            specs.append(core.ParamSpec(f"log_tau_{i}", tuple(np.log([1.0, 4.0, 16.0])),
                                        np.log(0.05), np.log(1e4)))
        return specs

    def _unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``a (k,1)``, ``d (k,1)``, ``b (k,P)``, ``tau (k,P)`` from internal ``theta (k, .)``."""
        i = 0
        if self.a is None:
            a = np.exp(theta[:, 0:1])
            i = 1
        else:
            a = np.full((theta.shape[0], 1), float(self.a))
        if self.fit_d:
            d = theta[:, i : i + 1]
            i += 1
        else:
            d = np.full((theta.shape[0], 1), float(self.d))
        rest = theta[:, i:]
        return a, d, rest[:, 0::2], np.exp(rest[:, 1::2])

    def _log_predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self._compute(theta, X, jac=False)[0]

    def _log_predict_jac(self, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, jac = self._compute(theta, X, jac=True)
        assert jac is not None
        return out, jac

    def _compute(self, theta: np.ndarray, X: np.ndarray, *, jac: bool
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Log error ``(k, R)`` and, with ``jac``, its analytic Jacobian ``(k, R, P)``.

        Per pool and start, cumulative tables over passes ``k = 1..K_max`` hold the repetition
        sums (and their derivatives in ``log tau``); each row gathers its pool's entry at its
        ``K``. Cost: ``O(starts * pools * K_max + starts * rows)``.
        """
        a, d, b, tau = self._unpack(theta)  # (k,1) (k,1) (k,P) (k,P)
        codes = X[:, 0].astype(int)
        n, size = X[:, 1], X[:, 2]
        big_k, r = _passes(n, size)
        kmax = max(int(big_k.max()), 1)
        ln2 = np.log(2.0)
        kk = np.arange(0, kmax + 1, dtype=float)  # (K+1,)
        z = ln2 * kk / tau[..., None]  # (k, P, K+1): ln2 k / tau
        rho_k = np.exp(-z)  # 0.5^(k/tau)
        rows = np.arange(n.size)

        def gather(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
            return table[:, codes, idx]  # (k, R)

        tb = b[:, codes]  # (k, R)
        rho_row = gather(rho_k, big_k)  # 0.5^(K/tau)
        z_row = gather(z, big_k)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.variant == "utility":
                logk = np.log1p(1.0 / np.maximum(kk, 1.0))
                logk[0] = 0.0
                f_tab = np.cumsum(rho_k * logk, axis=-1)  # F[m] = sum_{k=1..m}
                last = np.where(big_k >= 1, np.log(r / np.maximum(big_k, 1)), 0.0)  # (R,)
                km1 = np.maximum(big_k - 1, 0)
                srep = np.where(big_k >= 1, gather(f_tab, km1) + rho_row * last, 0.0)
                log_n0 = np.log(a * np.minimum(size, n) / NORMALISER)  # (k, R)
                if self.d_placement == "inside":
                    q = np.exp(tb * log_n0)
                    out = np.log(q + d) + tb * srep
                else:
                    q = np.exp(tb * (log_n0 + srep))
                    out = np.log(q + d)
            else:
                h_tab = np.concatenate([np.zeros((*rho_k.shape[:2], 1)),
                                        np.cumsum(rho_k, axis=-1)[..., :-1]], axis=-1)
                decay = gather(h_tab, big_k) + (r - big_k) * rho_row  # sum_{k<K} + partial
                log_neff = np.log(a * size * decay / NORMALISER)
                q = np.exp(tb * log_neff)
                out = np.log(q + d)
            if not jac:
                return out, None
            names = [sp.name for sp in self.param_specs()]
            J = np.zeros((*out.shape, len(names)))
            inv = 1.0 / (q + d)
            off = (1 if self.a is None else 0) + (1 if self.fit_d else 0)
            if self.variant == "utility":
                g_tab = np.cumsum(rho_k * z * logk, axis=-1)
                dsrep = np.where(big_k >= 1, gather(g_tab, km1) + rho_row * z_row * last, 0.0)
                if self.d_placement == "inside":
                    d_loga = tb * q * inv
                    d_b = q * log_n0 * inv + srep
                    d_tau = tb * dsrep
                else:
                    d_loga = tb * q * inv
                    d_b = q * (log_n0 + srep) * inv
                    d_tau = q * tb * dsrep * inv
            else:
                hp_tab = np.concatenate([np.zeros((*rho_k.shape[:2], 1)),
                                         np.cumsum(rho_k * z, axis=-1)[..., :-1]], axis=-1)
                ddecay = gather(hp_tab, big_k) + (r - big_k) * rho_row * z_row
                d_loga = tb * q * inv
                d_b = q * log_neff * inv
                d_tau = q * tb * (ddecay / decay) * inv
            if self.a is None:
                J[..., 0] = d_loga
            if self.fit_d:
                J[..., names.index("d")] = inv
            J[:, rows, off + 2 * codes] = d_b
            J[:, rows, off + 2 * codes + 1] = d_tau
        return out, J

    def _public(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        a, d, b, tau = self._unpack(theta)
        out = {"a": a[:, 0], "d": d[:, 0]}
        for i, p in enumerate(self.pools_):
            out[f"b[{p}]"] = b[:, i]
            out[f"tau[{p}]"] = tau[:, i]
        return out

    def _make_params(self, theta: np.ndarray) -> DataFilteringParams:
        pub = {k: float(v[0]) for k, v in self._public(np.asarray(theta)[None, :]).items()}
        return DataFilteringParams(
            a=pub["a"], d=pub["d"], b={p: pub[f"b[{p}]"] for p in self.pools_},
            tau={p: pub[f"tau[{p}]"] for p in self.pools_},
        )

    def _internal(self, params: Mapping[str, Any]) -> np.ndarray:
        b, tau = dict(params.get("b") or {}), dict(params.get("tau") or {})
        if not b or set(b) != set(tau):
            raise ValueError("DataFilteringLaw parameters need dicts 'b' and 'tau' with the same "
                             "pool names, e.g. {'a': 0.025, 'd': 0.1, 'b': {'p': -0.16}, "
                             "'tau': {'p': 6.7}}.")
        if getattr(self, "pools_", None) is None or set(self.pools_) != set(b):
            self.pools_ = list(b)
            self._pool_index = {p: i for i, p in enumerate(self.pools_)}
        vals: list[float] = []
        if self.a is None:
            vals.append(float(np.log(params["a"])))
        if self.fit_d:
            vals.append(float(params.get("d", self.d)))
        for p in self.pools_:
            vals += [float(b[p]), float(np.log(tau[p]))]
        return np.array(vals)

    def set_fitted_params(self, params: Any) -> DataFilteringLaw:
        d = params.to_dict() if isinstance(params, LawParams) else dict(params)
        if self.a is None and "a" not in d:
            raise ValueError("Give 'a' in the parameters or fix it with DataFilteringLaw(a=...).")
        self._check_params()
        self.pools_ = None
        super().set_fitted_params(d)
        return self

    def _extrapolation_key(self, X: np.ndarray) -> np.ndarray:
        return X[:, 1] / X[:, 2]  # passes over the pool

    def _check_domain(self, X: np.ndarray) -> None:  # validated in _select
        return None

    def predict_accuracy(self, X: Any) -> np.ndarray:
        """``1 - predict(X)``: the predicted accuracy."""
        return 1.0 - self.predict(X)


# --------------------------------------------------------------------------------------------
# presets, mixtures and the pool planner
# --------------------------------------------------------------------------------------------


def _read_param_records() -> list[dict[str, Any]]:
    from fmlab.scaling._data import load_reference_table

    return load_reference_table("tmars-params")


def tmars_preset(variant: str = "utility", *, d_placement: str = "inside") -> DataFilteringLaw:
    """The released T-MARS bucket parameters (ImageNet-1k zero-shot error) as a fitted law.

    ``variant="utility"``: a = 0.025, d = 0.1; ``"data"``: a = 0.022 and d = 0.1 (the record
    stores no d; the released scripts use 0.1). Pools, in file order: ``tmars_top0to10p``,
    ``tmars_top10to20p``, ``tmars_top20to30p``, ``tmars_top30to40p``,
    ``tmars_top0to40p_random25p``.

    References:
        Goyal et al. 2024, arXiv 2404.07177 (``results/parameter_values.jsonl`` of the release).
    """
    check_option(variant, "variant", VARIANTS, owner="tmars_preset")
    wanted = {"utility": "tmars_imagenet1k_utility", "data": "tmars_imagenet1k_data"}[variant]
    rec = next((r for r in _read_param_records() if r.get("id") == wanted), None)
    if rec is None:
        raise ValueError(f"The parameter file has no record {wanted!r}.")
    a = float(rec["best_a"])
    d = float(rec.get("d_value", 0.1))
    law = DataFilteringLaw(variant=variant, d_placement=d_placement, a=a, d=d)
    law.set_fitted_params({
        "a": a, "d": d,
        "b": dict(zip(rec["names"], map(float, rec["b_values"]), strict=True)),
        "tau": dict(zip(rec["names"], map(float, rec["c_values"]), strict=True)),
    })
    return law


def mixture_error(
    law: DataFilteringLaw,
    pools: Sequence[str],
    samples_seen: Any,
    *,
    pool_size: float | None = None,
    tau_scaling: str = "none",
) -> np.ndarray:
    """Predicted error of a uniform mix of ``pools`` after ``samples_seen`` samples.

    ``m`` equal pools mixed uniformly act as one pool of ``m * N_p`` samples with the shared ``a``
    and per-pass utility ``b_k = (1/m) sum_i b_i 0.5^(k / tau'_i)`` (released aggregation).

    Args:
        tau_scaling: ``"none"`` uses ``tau'_i = tau_i`` (the aggregation function of the release);
            ``"by_pool_count"`` uses ``tau'_i = m tau_i`` (what the released best-pool script
            does, unexplained in the paper and README).
        pool_size: Samples per epoch of ONE pool (default: the law's ``pool_size``).

    For ``variant="data"`` the mix (not defined by the release) is fmlab's choice: ``b`` is the
    mean of the ``b_i`` and the effective data the mean of the per-pool effective data.
    """
    law._check_fitted("mixture_error")
    check_option(tau_scaling, "tau_scaling", TAU_SCALINGS, owner="mixture_error")
    pools = list(pools)
    if not pools:
        raise ValueError("mixture_error needs at least one pool.")
    unknown = [p for p in pools if p not in law.params_.b]
    if unknown:
        raise ValueError(f"Unknown pool(s) {unknown}; the law knows {list(law.params_.b)}.")
    n = np.atleast_1d(np.asarray(samples_seen, float))
    if not np.isfinite(n).all() or (n <= 0).any():
        raise ValueError("samples_seen must be finite and positive.")
    m = len(pools)
    size = float(law.pool_size if pool_size is None else pool_size) * m
    sizes = np.full(n.shape, size)
    p = law.params_
    b = np.array([p.b[q] for q in pools])  # (m,)
    tau = np.array([p.tau[q] for q in pools]) * (m if tau_scaling == "by_pool_count" else 1)
    rs, dk = _row_pieces(n[None, :], sizes[None, :], tau[:, None])  # (m, R)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if law.variant == "utility":
            # the mix's repetition term is the mean of b_i * S_i
            log_n0 = np.log(p.a * np.minimum(sizes, n) / NORMALISER)
            b_bar = b.mean()
            rep = np.mean(b[:, None] * rs, axis=0)
            if law.d_placement == "inside":
                return np.exp(np.log(np.exp(b_bar * log_n0) + p.d) + rep)
            return np.exp(b_bar * log_n0 + rep) + p.d
        n_eff = p.a * sizes * dk.mean(axis=0) / NORMALISER
        return np.exp(b.mean() * np.log(n_eff)) + p.d


@dataclass
class PoolPlan:
    """Best pool (or mix) per compute budget: the Pareto frontier of data curation.

    Attributes:
        budgets: Samples seen, ``(n_budgets,)``.
        candidates: Candidate names; ``mixes`` the pools in each.
        errors: Predicted error, ``(n_candidates, n_budgets)``.
        best: Name of the best candidate per budget; ``best_error`` its error.
    """

    budgets: np.ndarray
    candidates: list[str]
    mixes: list[list[str]]
    errors: np.ndarray
    best: list[str]
    best_error: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "budgets": self.budgets.tolist(), "candidates": self.candidates, "mixes": self.mixes,
            "errors": self.errors.tolist(), "best": self.best,
            "best_error": self.best_error.tolist(),
        }


def plan_pools(
    law: DataFilteringLaw,
    budgets: Any,
    *,
    pools: Sequence[str] | None = None,
    mixes: Sequence[Sequence[str]] | None = None,
    tau_scaling: str = "none",
) -> PoolPlan:
    """Pick, per compute budget (samples seen), the pool or mix with the lowest predicted error.

    By default the candidates are the "top-k" mixes: the union of the first ``k`` of ``pools``
    (law order by default, i.e. ranked from best to worst), ``k = 1..len(pools)``, named
    ``top1``, ``top2``, ... Pass ``mixes`` for explicit candidates. The released best-pool script
    leaves out the last (random 25%) pool and uses ``tau_scaling="by_pool_count"``.
    """
    law._check_fitted("plan_pools")
    n = np.atleast_1d(np.asarray(budgets, float))
    if mixes is None:
        pool_list = list(pools) if pools is not None else list(law.params_.b)
        mixes = [pool_list[: k + 1] for k in range(len(pool_list))]
        names = [f"top{k + 1}" for k in range(len(pool_list))]
    else:
        mixes = [list(m) for m in mixes]
        names = ["+".join(m) for m in mixes]
    errors = np.stack([mixture_error(law, m, n, tau_scaling=tau_scaling) for m in mixes])
    idx = np.argmin(errors, axis=0)
    return PoolPlan(budgets=n, candidates=names, mixes=[list(m) for m in mixes], errors=errors,
                    best=[names[i] for i in idx], best_error=errors[idx, np.arange(n.size)])


def _records_from_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
