"""``BaseLaw``: the scikit-learn estimator every scaling law derives from.

A law defines its features (named input columns), its internal coordinates
(:class:`~fmlab.scaling._fitting.ParamSpec`), a batched log-prediction and the map from internal
coordinates to its named parameter dataclass. Everything else (validation, the robust multi-start
fit, bootstrap intervals, diagnostics, prediction, saving) lives here once.
"""

from __future__ import annotations

import abc
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import RegressorMixin

from fmlab._validation import check_int, check_option, check_real
from fmlab.base import BaseEstimator
from fmlab.exceptions import ReliabilityWarning
from fmlab.scaling import _fitting as core

__all__ = ["BaseLaw", "LawParams"]

_COMMON_DOC = """
        loss: Robust loss on the residuals: ``"huber"`` (default), ``"squared"`` or
            ``"asymmetric"`` (Huber with over-predictions weighted by ``asymmetry``).
        huber_delta: Huber threshold (in log-loss units when ``space="log"``).
        asymmetry: Weight of over-predictions for ``loss="asymmetric"``.
        space: ``"log"`` fits log targets (default), ``"linear"`` the raw targets.
        grid: Start values per internal coordinate, overriding the law's default grid, e.g.
            ``{"alpha": [0, 0.5, 1]}``. See ``law.param_specs()`` for the coordinates.
        n_starts: Use a seeded random subset of this many grid points (``None``: the full grid).
        n_polish: How many of the best distinct batched optima are polished with scipy L-BFGS-B.
        prune: Successive halving of the starts during the batched stage (``False`` runs every
            start to convergence, as the replication protocol does; slower, same optimum here).
        max_iter: Iteration limit of the batched L-BFGS.
        n_bootstrap: Bootstrap replicates for confidence intervals (0: none).
        confidence_level: Coverage of the percentile intervals in ``intervals_``.
        validation_fraction: Fraction of runs held out of the fit and scored in ``diagnostics_``.
        validation: ``"random"`` or ``"extrapolate"`` (hold out the runs with the largest product
            of the first two features, i.e. compute for N and D).
        columns: Map from this law's feature names to the column names in ``X`` (DataFrames).
        random_state: Seed for the start subset, the validation split and the bootstrap."""


@dataclass(frozen=True)
class LawParams:
    """Base of the named parameter dataclasses (``ChinchillaParams`` and friends)."""

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) if np.isscalar(v) else v for k, v in asdict(self).items()}


class BaseLaw(RegressorMixin, BaseEstimator):
    """Base class of the scaling laws: a scikit-learn regressor with a robust multi-start fit.

    Subclasses set :attr:`feature_names`, :attr:`params_class` and :attr:`name`, and implement
    :meth:`param_specs`, :meth:`_log_predict` and :meth:`_public`; optionally
    :meth:`_log_predict_jac` (analytic Jacobian; default: batched central differences),
    :meth:`_check_domain` and :meth:`_internal` (public params to internal coordinates).

    Fitted attributes: ``params_`` (the named dataclass), ``theta_`` (internal coordinates),
    ``intervals_`` / ``stderr_`` / ``bootstrap_params_`` (with ``n_bootstrap > 0``),
    ``diagnostics_`` (:class:`FitDiagnostics`), ``n_features_in_`` and, for DataFrames,
    ``feature_names_in_``.
    """

    name: ClassVar[str] = ""
    feature_names: ClassVar[tuple[str, ...]] = ()
    params_class: ClassVar[type[LawParams]] = LawParams
    _fitted_attr = "theta_"
    _fit_call = "fit() (or set_fitted_params())"

    # -- hooks ------------------------------------------------------------------------------
    @abc.abstractmethod
    def param_specs(self) -> list[core.ParamSpec]:
        """Internal coordinates with their default start grids and bounds."""

    @abc.abstractmethod
    def _log_predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Batched log-prediction: ``theta (k, P)``, ``X (n, F)`` -> ``(k, n)``."""

    def _log_predict_jac(self, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return core.finite_difference_jac(lambda t: self._log_predict(t, X), theta)

    @abc.abstractmethod
    def _public(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Named public parameters from internal coordinates ``(k, P)`` -> name: ``(k,)``."""

    @abc.abstractmethod
    def _internal(self, params: Mapping[str, float]) -> np.ndarray:
        """Internal coordinates ``(P,)`` from named public parameters."""

    def _extrapolation_key(self, X: np.ndarray) -> np.ndarray:
        """What ``validation="extrapolate"`` holds out the largest of (default: ``N * D``)."""
        return X[:, 0] * X[:, 1]

    def _make_params(self, theta: np.ndarray) -> LawParams:
        """The named parameter dataclass for internal coordinates ``theta (P,)``."""
        pub = self._public(np.asarray(theta, float)[None, :])
        return self.params_class(**{k: float(v[0]) for k, v in pub.items()})

    def _check_domain(self, X: np.ndarray) -> None:
        """Raise a ValueError naming the problem when ``X`` is outside the law's domain."""
        for j, col in enumerate(self.feature_names[:2]):
            if (X[:, j] <= 0).any():
                bad = X[X[:, j] <= 0, j][0]
                raise ValueError(
                    f"Column {col!r} must be positive for {type(self).__name__}; got {bad!r}. "
                    "Parameter and token counts are absolute numbers (e.g. 7e9), not logs."
                )

    # -- validation -------------------------------------------------------------------------
    def _check_params(self) -> None:
        owner = type(self).__name__
        check_option(self.loss, "loss", core.LOSSES, owner=owner)
        check_option(self.space, "space", core.SPACES, owner=owner)
        check_real(self.huber_delta, "huber_delta", owner=owner, low=0)
        check_real(self.asymmetry, "asymmetry", owner=owner, low=0)
        if self.n_starts is not None:
            check_int(self.n_starts, "n_starts", owner=owner, low=1)
        check_int(self.n_polish, "n_polish", owner=owner, low=1)
        check_int(self.max_iter, "max_iter", owner=owner, low=1)
        check_int(self.n_bootstrap, "n_bootstrap", owner=owner, low=0)
        check_real(self.confidence_level, "confidence_level", owner=owner, low=0, high=1)
        check_real(self.validation_fraction, "validation_fraction", owner=owner, low=0, high=1,
                   closed="left")
        check_option(self.validation, "validation", ("random", "extrapolate"), owner=owner)
        if self.grid is not None and not isinstance(self.grid, Mapping):
            raise TypeError(f"The 'grid' parameter of {owner} must be a dict of coordinate -> "
                            f"start values or None. Got {type(self.grid).__name__} instead.")

    def _select(self, X: Any) -> np.ndarray:
        """Pick this law's feature columns out of ``X`` as a float array ``(n, F)``."""
        owner = type(self).__name__
        feats = self.feature_names
        mapping = dict(self.columns or {})
        unknown = set(mapping) - set(feats)
        if unknown:
            raise ValueError(f"columns= maps unknown feature(s) {sorted(unknown)} for {owner}; "
                             f"its features are {list(feats)}.")
        if isinstance(X, Mapping) or hasattr(X, "columns"):
            available = [str(c) for c in (X.keys() if isinstance(X, Mapping) else X.columns)]
            wanted = [mapping.get(f, f) for f in feats]
            missing = [w for w in wanted if w not in available]
            if missing:
                import difflib

                hints = []
                for m in missing:
                    close = difflib.get_close_matches(m, available, n=1, cutoff=0.4)
                    hints.append(f"{m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                raise ValueError(
                    f"{owner} needs the column(s) {', '.join(hints)} in X; got columns "
                    f"{available}. Rename them or map them, e.g. "
                    f"columns={{{feats[0]!r}: 'N'}} (CLI: --col {feats[0]}=N)."
                )
            cols = [np.asarray(X[w]) for w in wanted]
            try:
                arr = np.column_stack([np.asarray(c, dtype=float) for c in cols])
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"The feature columns of X for {owner} must be numeric: {exc}") from None
        else:
            try:
                arr = np.asarray(X, dtype=float)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"X for {owner} must be array-like of numbers or a DataFrame with "
                                f"columns {list(feats)}: {exc}") from None
            if arr.ndim == 1:
                raise ValueError(f"X for {owner} must be 2-D with columns {list(feats)}; got a 1-D "
                                 f"array of shape {arr.shape}. Reshape it, e.g. X.reshape(1, -1).")
            if arr.ndim != 2 or arr.shape[1] != len(feats):
                raise ValueError(f"X for {owner} must have {len(feats)} column(s) "
                                 f"{list(feats)}; got shape {arr.shape}.")
        bad = ~np.isfinite(arr)
        # +inf is meaningful in bit-width columns (no quantization); NaN never is
        allowed_inf = np.array([f.endswith("bits") for f in feats])
        bad &= ~(np.isposinf(arr) & allowed_inf[None, :])
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"X for {owner} has {int(bad.sum())} NaN/inf value(s); first in "
                             f"column {feats[j]!r} row {i}: {arr[i, j]!r}. Drop or fix these runs.")
        self._check_domain(arr)
        return arr

    def _input_feature_names(self, X: Any) -> np.ndarray | None:
        """The column names :meth:`_select` reads from ``X`` (for ``feature_names_in_``), or
        ``None`` when ``X`` has no column names."""
        if isinstance(X, Mapping) or hasattr(X, "columns"):
            mapping = dict(self.columns or {})
            return np.asarray([mapping.get(f, f) for f in self.feature_names], dtype=object)
        return None

    def _check_y(self, y: Any, n: int) -> np.ndarray:
        owner = type(self).__name__
        arr = np.asarray(y, dtype=float).reshape(-1) if not hasattr(y, "to_numpy") else \
            np.asarray(y.to_numpy(), dtype=float).reshape(-1)
        if arr.shape[0] != n:
            raise ValueError(f"y has {arr.shape[0]} values but X has {n} rows for {owner}.")
        if not np.isfinite(arr).all():
            raise ValueError(f"y for {owner} has {int((~np.isfinite(arr)).sum())} NaN/inf value(s)"
                             "; drop those runs before fitting.")
        if self.space == "log" and (arr <= 0).any():
            raise ValueError(f"y for {owner} must be positive to fit in log space; got min "
                             f"{arr.min():.4g}. Use space='linear' for signed targets.")
        return arr

    # -- fitting ----------------------------------------------------------------------------
    def _specs_with_grid(self) -> list[core.ParamSpec]:
        specs = self.param_specs()
        grid = dict(self.grid or {})
        names = [s.name for s in specs]
        unknown = set(grid) - set(names)
        if unknown:
            raise ValueError(f"grid= names unknown coordinate(s) {sorted(unknown)} for "
                             f"{type(self).__name__}; its coordinates are {names}.")
        out = []
        for s in specs:
            if s.name in grid:
                values = tuple(float(v) for v in np.atleast_1d(grid[s.name]))
                if not values:
                    raise ValueError(f"grid[{s.name!r}] is empty; give at least one start value.")
                s = core.ParamSpec(s.name, values, s.lower, s.upper)
            out.append(s)
        return out

    def _objective_for(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray
                       ) -> core.BatchedObjective:
        return core.make_objective(
            lambda th: self._log_predict_jac(th, X), y, loss=self.loss, delta=self.huber_delta,
            asymmetry=self.asymmetry, space=self.space, weights=weights,
        )

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row indices ``(train, held_out)`` of the runs ``X (n, F)`` (``validation_fraction``)."""
        n = X.shape[0]
        if not self.validation_fraction:
            return np.arange(n), np.arange(0)
        n_hold = max(1, int(round(self.validation_fraction * n)))
        if self.validation == "random":
            perm = np.random.default_rng(self.random_state).permutation(n)
            return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])
        order = np.argsort(self._extrapolation_key(X), kind="stable")
        return np.sort(order[:-n_hold]), np.sort(order[-n_hold:])

    def _check_weights(self, sample_weight: Any, n: int) -> np.ndarray:
        if sample_weight is None:
            return np.ones(n)
        w = np.asarray(sample_weight, float).reshape(-1)
        if w.shape[0] != n or (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("sample_weight must hold one finite non-negative weight per run.")
        return w

    def _check_n_runs(self, n_runs: int, n_train: int, n_par: int) -> None:
        owner = type(self).__name__
        if n_runs <= n_par:
            raise ValueError(
                f"{owner} has {n_par} free parameters but got only {n_runs} "
                f"run(s); fitting needs more runs than parameters."
            )
        if n_train <= n_par:
            raise ValueError(f"After holding out {n_runs - n_train} run(s) only {n_train} remain "
                             f"for {n_par} parameters; lower validation_fraction.")

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> BaseLaw:
        """Fit the law to runs ``X`` (features, see :attr:`feature_names`) and targets ``y``.

        The steps, each a method that takes and returns its data: validate
        (:meth:`_check_params`, :meth:`_select`, :meth:`_check_y`), split off held-out runs
        (:meth:`_split`), optimise from many starts (:meth:`_optimize`), describe the fit
        (:meth:`_diagnose`) and bootstrap the intervals (:meth:`_bootstrap`).

        Returns:
            self, with ``params_``, ``diagnostics_`` and (with ``n_bootstrap``) ``intervals_``.

        Raises:
            ValueError: missing columns, non-finite or non-positive inputs, fewer runs than
                parameters, or inputs outside the law's domain.
        """
        clock = core.timer()
        self._check_params()
        Xa = self._select(X)  # (n, F)
        ya = self._check_y(y, Xa.shape[0])  # (n,)
        w = self._check_weights(sample_weight, Xa.shape[0])  # (n,)
        specs = self._specs_with_grid()
        train, hold = self._split(Xa)
        self._check_n_runs(Xa.shape[0], train.size, len(specs))
        Xt, yt, wt = Xa[train], ya[train], w[train]
        starts = core.start_grid(specs, self.n_starts, self.random_state)  # (S, P)
        res = self._optimize(specs, starts, Xt, yt, wt)
        self.theta_ = res.x
        self.params_ = self._make_params(res.x)
        self.n_features_in_ = len(self.feature_names)
        names_in = self._input_feature_names(X)
        if names_in is not None:
            self.feature_names_in_ = names_in
        elif "feature_names_in_" in vars(self):
            del self.feature_names_in_
        diag = self._diagnose(res, specs, starts, Xt, yt)
        if hold.size:
            self._score_heldout(diag, res.x, Xa[hold], ya[hold])
        self._bootstrap(diag, res.x, specs, Xt, yt, wt)
        diag.time_s = clock()
        self.diagnostics_ = diag
        self._warn_identifiability(Xt, yt, diag, np.asarray(starts[res.winning_start]), res.x)
        if not res.converged:
            core.warn_not_converged(type(self).__name__,
                                    f"the best optimum (objective {res.fun:.6g}) failed the "
                                    "convergence test")
        return self

    def _warn_identifiability(self, Xt: np.ndarray, yt: np.ndarray, diag: Any,
                              start: np.ndarray, theta: np.ndarray) -> None:
        """ReliabilityWarnings for fits whose parameters the data cannot pin down: a feature or
        the target without spread, an undefined R², parameters that never left their start."""
        name = type(self).__name__
        problems = []
        for j, col in enumerate(self.feature_names[: Xt.shape[1]]):
            v = Xt[:, j]
            if np.all(v == v[0]):
                problems.append(f"column {col!r} has no spread (every run has {v[0]:g}), so its "
                                "exponent is not identified; vary it across runs")
        if np.all(yt == yt[0]):
            problems.append(f"the target is constant ({yt[0]:g}) in every run")
        if not np.isfinite(diag.r2):
            problems.append("R² is undefined")
        if theta.shape == start.shape and np.allclose(theta, start, rtol=1e-7, atol=1e-10):
            problems.append("the parameters never left their start values")
        if problems:
            warnings.warn(f"{name}: the fit is not identifiable: " + "; ".join(problems) + ".",
                          ReliabilityWarning, stacklevel=3)

    @staticmethod
    def _bounds(specs: Sequence[core.ParamSpec]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([s.lower for s in specs]), np.array([s.upper for s in specs])

    def _optimize(self, specs: Sequence[core.ParamSpec], starts: np.ndarray, X: np.ndarray,
                  y: np.ndarray, w: np.ndarray) -> core.MultiStartResult:
        """The robust multi-start minimisation of the objective on runs ``(X, y, w)``."""
        lower, upper = self._bounds(specs)
        fun = self._objective_for(X, y, w[None, :])
        return core.multistart_minimize(
            fun, starts, lower, upper, max_iter=self.max_iter, n_polish=self.n_polish,
            prune=self.prune,
        )

    def _diagnose(self, res: core.MultiStartResult, specs: Sequence[core.ParamSpec],
                  starts: np.ndarray, X: np.ndarray, y: np.ndarray) -> core.FitDiagnostics:
        """Goodness of fit on the training runs and how well-determined the optimum is."""
        pred = np.exp(self._log_predict(res.x[None, :], X)[0])  # (n,)
        ss_res = float(np.sum((y - pred) ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        rl = np.log(y) - np.log(pred) if (y > 0).all() else y - pred
        near = 0
        for cx, cf in zip(res.candidates_x[1:], res.candidates_f[1:], strict=True):
            close_f = cf <= res.fun * (1 + 1e-4) + 1e-300
            far_x = np.max(np.abs(cx - res.x) / np.maximum(1.0, np.abs(res.x))) > 1e-2
            near += int(close_f and far_x)
        return core.FitDiagnostics(
            objective=res.fun, r2=1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            rmse_log=float(np.sqrt(np.mean(rl**2))), n_train=int(X.shape[0]),
            n_starts=res.n_starts, winning_start=res.winning_start,
            winning_start_params=dict(zip([s.name for s in specs],
                                          map(float, starts[res.winning_start]), strict=True)),
            converged=res.converged, n_evals=res.n_evals, n_iter=res.n_iter, time_s=0.0,
            n_near_optimal=near, candidates=[float(c) for c in res.candidates_f],
        )

    def _score_heldout(self, diag: core.FitDiagnostics, theta: np.ndarray, X: np.ndarray,
                       y: np.ndarray) -> None:
        """Fill ``diag``'s held-out scores from the runs ``(X, y)`` left out of the fit."""
        pred = np.exp(self._log_predict(theta[None, :], X)[0])  # (n_hold,)
        diag.heldout_rmse_log = float(np.sqrt(np.mean((np.log(y) - np.log(pred)) ** 2)))
        diag.heldout_mape = float(np.mean(np.abs(pred - y) / np.abs(y)))
        diag.n_heldout = int(X.shape[0])

    def _bootstrap(self, diag: core.FitDiagnostics, theta: np.ndarray,
                   specs: Sequence[core.ParamSpec], X: np.ndarray, y: np.ndarray,
                   w: np.ndarray) -> None:
        """Set ``intervals_``, ``stderr_``, ``bootstrap_params_`` from ``n_bootstrap`` refits."""
        self.intervals_, self.stderr_, self.bootstrap_params_ = {}, {}, {}
        self._boot_theta = None
        if not self.n_bootstrap:
            return
        lower, upper = self._bounds(specs)
        th, _, ok = core.bootstrap_refits(
            lambda W: self._objective_for(X, y, W), theta, X.shape[0], self.n_bootstrap,
            lower, upper, base_weights=w, random_state=self.random_state,
            max_iter=min(self.max_iter, 200),
        )
        self._boot_theta = th
        q = (1 - self.confidence_level) / 2
        for k, v in self._public(th).items():
            v = np.asarray(v, float)
            self.bootstrap_params_[k] = v
            self.intervals_[k] = (float(np.quantile(v, q)), float(np.quantile(v, 1 - q)))
            self.stderr_[k] = float(np.std(v, ddof=1)) if v.size > 1 else float("nan")
        diag.n_bootstrap = int(self.n_bootstrap)
        diag.bootstrap_failed = int((~ok).sum())

    # -- prediction -------------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        """Predicted loss for each row of ``X``: shape ``(n,)``."""
        self._check_fitted()
        Xa = self._select(X)
        return np.exp(self._log_predict(np.asarray(self.theta_)[None, :], Xa)[0])

    def predict_interval(self, X: Any, confidence_level: float | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap percentile band ``(lower (n,), upper (n,))`` of the prediction."""
        self._check_fitted("predict_interval")
        if getattr(self, "_boot_theta", None) is None:
            raise ValueError(f"{type(self).__name__} was fitted with n_bootstrap=0; refit with "
                             "n_bootstrap > 0 (e.g. 200) to get prediction intervals.")
        level = self.confidence_level if confidence_level is None else confidence_level
        check_real(level, "confidence_level", low=0, high=1)
        Xa = self._select(X)
        preds = np.exp(self._log_predict(self._boot_theta, Xa))  # (B, n)
        q = (1 - level) / 2
        return np.quantile(preds, q, axis=0), np.quantile(preds, 1 - q, axis=0)

    def objective(self, X: Any, y: Any, params: Mapping[str, float] | LawParams | None = None
                  ) -> float:
        """The fitting objective at ``params`` (default: the fitted ones) on runs ``(X, y)``."""
        self._check_params()
        Xa = self._select(X)
        ya = self._check_y(y, Xa.shape[0])
        if params is None:
            self._check_fitted("objective")
            theta = np.asarray(self.theta_)
        else:
            theta = self._internal(params.to_dict() if isinstance(params, LawParams) else params)
        fun = self._objective_for(Xa, ya, np.ones((1, Xa.shape[0])))
        return float(fun(theta[None, :], None)[0][0])

    def _checked_internal(self, d: dict[str, Any], where: str) -> np.ndarray:
        """``_internal(d)`` with messages naming ``where``, the key and the fix: every parameter
        present, a finite number, and inside the law's domain (no NaN predictions later)."""
        names = [f.name for f in fields(self.params_class)]
        def leaves(v: Any) -> list[Any]:
            if isinstance(v, Mapping):
                return [x for u in v.values() for x in leaves(u)]
            if isinstance(v, (list, tuple, np.ndarray)):
                return [x for u in v for x in leaves(u)]
            return [v]

        for k, v in d.items():
            vals = leaves(v)
            if not all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool)
                       and np.isfinite(float(x)) for x in vals):
                raise ValueError(f"{where}: parameter {k!r} must be a finite number; got {v!r}.")
        try:
            theta = np.asarray(self._internal(d), dtype=float)
        except KeyError as exc:
            raise ValueError(f"{where}: parameter {exc.args[0]!r} is missing; a "
                             f"{type(self).__name__} needs {', '.join(names)}.") from None
        specs = self.param_specs()
        bad = [f"{sp.name}={t:.4g}" for sp, t in zip(specs, theta, strict=False)
               if not (np.isfinite(t) and sp.lower <= t <= sp.upper)]
        if bad or not np.isfinite(theta).all():
            shown = ", ".join(f"{k}={d[k]!r}" for k in names if k in d)
            raise ValueError(f"{where}: the parameters ({shown}) are outside the domain of "
                             f"{type(self).__name__} ({', '.join(bad) or 'non-finite'}); scales "
                             "such as E, A and B must be positive.")
        return theta

    def set_fitted_params(self, params: Mapping[str, float] | LawParams, *,
                          where: str = "set_fitted_params") -> BaseLaw:
        """Use given parameters (e.g. a preset or published values) without fitting."""
        d = params.to_dict() if isinstance(params, LawParams) else dict(params)
        self.theta_ = self._checked_internal(d, where)
        self.params_ = self._make_params(self.theta_)
        self.n_features_in_ = len(self.feature_names)
        self.intervals_, self.stderr_, self.bootstrap_params_ = {}, {}, {}
        self._boot_theta = None
        return self

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description: law name, constructor arguments and fitted state."""
        self._check_fitted("to_dict")
        out: dict[str, Any] = {
            "law": self.name,
            "init": {k: v for k, v in self.get_params().items()},
            "params": self.params_.to_dict(),
            "intervals": {k: list(v) for k, v in self.intervals_.items()},
            "stderr": dict(self.stderr_),
        }
        if hasattr(self, "diagnostics_"):
            out["diagnostics"] = self.diagnostics_.to_dict()
        return out

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        from fmlab._io import write_json

        write_json(path, self.to_dict())

    def summary(self) -> str:
        """A short human-readable table of the fitted parameters and intervals."""
        self._check_fitted("summary")
        lines = [f"{type(self).__name__} ({self.name})"]
        for f in fields(self.params_):
            v = getattr(self.params_, f.name)
            if not np.isscalar(v):
                continue
            ci = self.intervals_.get(f.name)
            ci_txt = f"  [{ci[0]:.5g}, {ci[1]:.5g}]" if ci else ""
            lines.append(f"  {f.name:>10} = {float(v):.6g}{ci_txt}")
        if hasattr(self, "diagnostics_"):
            d = self.diagnostics_
            lines.append(f"  objective = {d.objective:.6g}  R2 = {d.r2:.4f}  rmse(log) = "
                         f"{d.rmse_log:.4g}  starts = {d.n_starts}  converged = {d.converged}  "
                         f"time = {d.time_s:.2f}s")
            if d.heldout_rmse_log is not None:
                lines.append(f"  held-out: rmse(log) = {d.heldout_rmse_log:.4g}  MAPE = "
                             f"{d.heldout_mape:.4g}  ({d.n_heldout} runs)")
        return "\n".join(lines)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.target_tags.positive_only = True
        return tags


def load_law(source: str | Path | Mapping[str, Any]) -> BaseLaw:
    """Re-create a fitted law from :meth:`BaseLaw.to_dict` output or a JSON file of it."""
    from fmlab.scaling._registry import create_law

    if isinstance(source, Mapping):
        d = dict(source)
    else:
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"No fitted-law file at {str(p)!r}; write one with "
                                    "'fmlab scaling fit ... --save FILE' or law.save(FILE).")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"The law file {str(p)!r} is not JSON written by law.save() "
                             f"({exc}).") from None
    where = "the saved law" if isinstance(source, Mapping) else f"The law file {str(source)!r}"
    if not isinstance(d, dict) or "law" not in d or not isinstance(d.get("params"), dict):
        raise ValueError(f"{where} needs the keys 'law' and 'params' (a mapping), as written by "
                         "'fmlab scaling fit --save' or law.save().")
    init = d.get("init") or {}
    if not isinstance(init, dict):
        raise ValueError(f"{where}: 'init' must be a mapping of constructor arguments.")
    try:
        law = create_law(d["law"], **init)
    except TypeError as exc:
        raise ValueError(f"{where}: 'init' has an argument the law does not take ({exc}).") \
            from None
    law.set_fitted_params(d["params"], where=where)
    law.intervals_ = {k: tuple(v) for k, v in (d.get("intervals") or {}).items()}
    law.stderr_ = dict(d.get("stderr") or {})
    return law


def _as_sequence(x: Any) -> Sequence[Any]:
    return x if isinstance(x, (list, tuple)) else [x]
