"""The searched fine-tuning objective (:class:`AutoFTParams`) and the search space as data.

The released search space (HEAD of the AutoFT code) is the default :class:`SearchSpace`: nine
log-uniform loss weights in ``[1e-4, 10]`` with ce fixed to 1 (not sampled at all, so the best
parameters are the ones the trials used: the released code stored a *sampled* ce weight in
``best_params`` and overwrote it with 1 only inside the trials), a log-uniform learning rate in
``[1e-2, 1e2] · lr_base``, a uniform weight decay in ``[0, 1]`` and an integer seed in ``[0, 10]``.
Any define-by-run function ``space(trial) -> AutoFTParams`` replaces it.

Objectives save as JSON in the released key format: ``lossw_<term>`` for every term, ``seed``,
``lr`` and ``wd``; the released files load as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlab._validation import check_int, check_real
from fmlab.autoft._losses import check_loss_weights, list_loss_terms

__all__ = ["AutoFTParams", "SearchSpace", "load_params"]


@dataclass(frozen=True)
class AutoFTParams:
    """A fine-tuning objective: loss weights, AdamW's lr and weight decay, and a seed.

    Args:
        weights: ``{term: λ}`` over registered loss terms (missing terms weigh 0).
        lr: AdamW learning rate (reaches the optimizer as is; schedules scale it).
        weight_decay: AdamW weight decay.
        seed: Seed of the batch order and of any randomness in the run.
    """

    weights: Mapping[str, float]
    lr: float
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        o = "AutoFTParams"
        object.__setattr__(self, "weights", check_loss_weights(self.weights, owner=o))
        object.__setattr__(self, "lr", check_real(self.lr, "lr", owner=o, low=0.0))
        object.__setattr__(self, "weight_decay", check_real(self.weight_decay, "weight_decay",
                                                            owner=o, low=0.0, closed="left"))
        object.__setattr__(self, "seed", check_int(self.seed, "seed", owner=o, low=0))

    def to_dict(self) -> dict[str, Any]:
        """The released key format: ``lossw_<term>`` for all nine terms, ``seed``, ``lr``,
        ``wd``."""
        out: dict[str, Any] = {f"lossw_{t}": float(self.weights.get(t, 0.0))
                               for t in list_loss_terms()}
        out.update(seed=int(self.seed), lr=float(self.lr), wd=float(self.weight_decay))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AutoFTParams:
        """Read the released key format (unknown keys are refused, with close matches)."""
        d = dict(d)
        missing = [k for k in ("lr",) if k not in d]
        if missing:
            raise ValueError(f"An AutoFT objective needs the key(s) {missing}; got keys "
                             f"{sorted(d)}.")
        weights = {k[len("lossw_"):]: v for k, v in d.items() if k.startswith("lossw_")}
        other = set(d) - {f"lossw_{k}" for k in weights} - {"lr", "wd", "seed"}
        if other:
            raise ValueError(f"Unknown key(s) {sorted(other)} in an AutoFT objective. Keys are "
                             f"lossw_<term> for {list_loss_terms()}, 'lr', 'wd' and 'seed'.")
        return cls(weights=weights, lr=d["lr"], weight_decay=d.get("wd", 0.0),
                   seed=int(d.get("seed", 0)))

    def save(self, path: str | Path) -> Path:
        """Write the objective as JSON (released key format), atomically."""
        from fmlab._io import write_json

        write_json(path, self.to_dict())
        return Path(path)


def load_params(path: str | Path) -> AutoFTParams:
    """Load an objective saved by :meth:`AutoFTParams.save` or a released AutoFT hparams file."""
    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}.") from exc
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold a JSON object with lossw_<term>, lr, wd, seed.")
    return AutoFTParams.from_dict(d)


@dataclass(frozen=True)
class SearchSpace:
    """The search space as data; the defaults are the released one.

    Args:
        terms: Loss terms whose weights are searched (or fixed).
        fixed: Terms with a fixed weight (``{"ce": 1.0}`` fixes the scale).
        weight_range: Log-uniform range of every searched weight.
        lr_base: The base learning rate ``lr₀``.
        lr_factor: The lr is log-uniform in ``[lr_factor[0]·lr₀, lr_factor[1]·lr₀]``.
        weight_decay: Uniform range of the weight decay.
        seed: Integer range of the seed.
    """

    terms: tuple[str, ...] = tuple(sorted(("ce", "dcm", "entropy", "flyp", "hinge", "l1init",
                                           "l1zero", "l2init", "l2zero")))
    fixed: Mapping[str, float] = field(default_factory=lambda: {"ce": 1.0})
    weight_range: tuple[float, float] = (1e-4, 10.0)
    lr_base: float = 1e-5
    lr_factor: tuple[float, float] = (1e-2, 1e2)
    weight_decay: tuple[float, float] = (0.0, 1.0)
    seed: tuple[int, int] = (0, 10)

    def __post_init__(self) -> None:
        o = "SearchSpace"
        check_loss_weights({t: 1.0 for t in self.terms}, owner=o)
        check_loss_weights(self.fixed, owner=o)
        object.__setattr__(self, "terms", tuple(self.terms))
        object.__setattr__(self, "fixed", dict(self.fixed))
        lo, hi = self.weight_range
        check_real(lo, "weight_range[0]", owner=o, low=0.0)
        if not hi > lo:
            raise ValueError(f"`weight_range[0] < weight_range[1]` must hold, but got "
                             f"{self.weight_range}.")
        check_real(self.lr_base, "lr_base", owner=o, low=0.0)
        if not 0 < self.lr_factor[0] <= self.lr_factor[1]:
            raise ValueError(f"`0 < lr_factor[0] <= lr_factor[1]` must hold, but got "
                             f"{self.lr_factor}.")
        if not 0 <= self.weight_decay[0] <= self.weight_decay[1]:
            raise ValueError(f"`0 <= weight_decay[0] <= weight_decay[1]` must hold, but got "
                             f"{self.weight_decay}.")
        if not 0 <= self.seed[0] <= self.seed[1]:
            raise ValueError(f"`0 <= seed[0] <= seed[1]` must hold, but got {self.seed}.")

    def without(self, *terms: str) -> SearchSpace:
        """The same space without some terms (e.g. ``"flyp"`` for a model with no text tower)."""
        from dataclasses import replace

        check_loss_weights({t: 1.0 for t in terms}, owner="SearchSpace.without")
        return replace(self, terms=tuple(t for t in self.terms if t not in terms),
                       fixed={k: v for k, v in self.fixed.items() if k not in terms})

    def __call__(self, trial: Any) -> AutoFTParams:
        """Suggest one objective on an Optuna trial (parameter names in the released format)."""
        lo, hi = self.weight_range
        weights = {t: (self.fixed[t] if t in self.fixed
                       else trial.suggest_float(f"lossw_{t}", lo, hi, log=True))
                   for t in self.terms}
        lr = trial.suggest_float("lr", self.lr_base * self.lr_factor[0],
                                 self.lr_base * self.lr_factor[1], log=True)
        wd = trial.suggest_float("wd", *self.weight_decay)
        seed = trial.suggest_int("seed", *self.seed)
        return AutoFTParams(weights=weights, lr=lr, weight_decay=wd, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return {"terms": list(self.terms), "fixed": dict(self.fixed),
                "weight_range": list(self.weight_range), "lr_base": self.lr_base,
                "lr_factor": list(self.lr_factor), "weight_decay": list(self.weight_decay),
                "seed": list(self.seed)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        return cls(terms=tuple(d["terms"]), fixed=dict(d["fixed"]),
                   weight_range=tuple(d["weight_range"]),  # type: ignore[arg-type]
                   lr_base=float(d["lr_base"]),
                   lr_factor=tuple(d["lr_factor"]),  # type: ignore[arg-type]
                   weight_decay=tuple(d["weight_decay"]),  # type: ignore[arg-type]
                   seed=tuple(d["seed"]))  # type: ignore[arg-type]
