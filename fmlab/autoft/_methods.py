"""The final fine-tuning run and the baselines users compare AutoFT with, in one code path.

Every method is a list of :func:`~fmlab.autoft.finetune` stages (data, not copies):

==========  =======================================================================================
zero_shot   no training: the pretrained model with its zero-shot (or given) head
erm         ce only, the same budget, base lr and weight decay
lp_ft       linear probe (head only, ce) for half the budget, then full fine-tuning (ce) (Kumar
            et al., arXiv 2202.10054)
flyp        the flyp contrastive term only (Goyal et al., arXiv 2212.00638); needs a dual encoder
autoft      the searched objective (its loss weights, lr, weight decay, seed)
==========  =======================================================================================

Every run picks its best evaluation step by ID validation (the released final run's epoch
selection), and ``wise_alpha`` adds WiSE-FT interpolation with the pretrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fmlab._validation import check_int, check_option, check_real
from fmlab.autoft._space import AutoFTParams

__all__ = ["METHODS", "MethodResult", "run_method"]

METHODS: tuple[str, ...] = ("zero_shot", "erm", "lp_ft", "flyp", "autoft")


@dataclass
class MethodResult:
    """A fine-tuned (or zero-shot) model and how it was made."""

    method: str
    model: Any
    params: AutoFTParams | None = None
    wise_alpha: float | None = None
    best_step: int | None = None
    id_val: float | None = None
    seconds: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)


def run_method(method: str, model: Any, train: Any, id_val: Any, *, steps: int,
               batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.1,
               params: AutoFTParams | None = None, eval_every: int | None = None,
               metric: str = "accuracy", seed: int | None = None, wise_alpha: float | None = None,
               schedule: str = "cosine") -> MethodResult:
    """Fine-tune ``model`` with ``method`` for ``steps`` steps (the same budget for all).

    Args:
        method: One of :data:`METHODS`.
        model: The pretrained :class:`~fmlab.autoft.FineTunable` (never modified).
        train, id_val: ID training and validation data; the best step by ``metric`` on
            ``id_val`` is kept (evaluated every ``eval_every`` steps, default ``steps // 10``).
        lr, weight_decay: Base optimiser settings of the baselines (autoft uses its own).
        params: The searched objective (``method="autoft"``).
        seed: Seed of every run's batch order. ``None`` (default): 0 for the baselines and the
            searched ``params.seed`` for autoft, so the final run repeats its best trial when
            the trial had the same steps and schedule; an int overrides both (repeats).
        wise_alpha: WiSE-FT mixing weight (``None``: none).
        schedule: ``"cosine"`` or ``"constant"`` (scales each stage's lr).
    """
    import time

    from fmlab.autoft._finetune import finetune, wise_ft

    o = "run_method"
    check_option(method, "method", METHODS, owner=o)
    check_int(steps, "steps", owner=o, low=0)
    if wise_alpha is not None:
        check_real(wise_alpha, "wise_alpha", owner=o, low=0.0, high=1.0, closed="both")
    t0 = time.perf_counter()
    if method == "zero_shot":
        import copy

        return MethodResult(method, copy.deepcopy(model).eval(), seconds=0.0)
    every = eval_every or max(1, steps // 10)
    common = dict(batch_size=batch_size, eval_data=id_val, metric=metric, eval_every=every,
                  keep_best=True, schedule=schedule)
    if method == "autoft":
        if params is None:
            raise ValueError("run_method('autoft') needs params= (the searched objective, e.g. "
                             "AutoFT(...).fit(...).best_params_ or load_params(path)).")
        if seed is not None:
            params = AutoFTParams(weights=params.weights, lr=params.lr,
                                  weight_decay=params.weight_decay, seed=seed)
        stages = [(params, "all", steps)]
    else:
        weights = {"flyp": 1.0} if method == "flyp" else {"ce": 1.0}
        base = AutoFTParams(weights=weights, lr=lr, weight_decay=weight_decay, seed=seed or 0)
        if method == "lp_ft":
            lp = AutoFTParams(weights={"ce": 1.0}, lr=lr * 10, weight_decay=0.0, seed=seed or 0)
            stages = [(lp, "head", steps // 2), (base, "all", steps - steps // 2)]
        else:
            stages = [(base, "all", steps)]
    current, history, best_step = model, [], None
    for p, trainable, n in stages:
        res = finetune(current, p, train, steps=n, trainable=trainable,  # type: ignore[arg-type]
                       **common)  # type: ignore[arg-type]
        current = res.model
        history += res.history
        best_step = res.best_step
    if wise_alpha is not None:
        current = wise_ft(model, current, wise_alpha)
    from fmlab.autoft._finetune import evaluate

    score = evaluate(current, id_val, metric) if id_val is not None else None
    return MethodResult(method, current, params=stages[-1][0], wise_alpha=wise_alpha,
                        best_step=best_step, id_val=score, seconds=time.perf_counter() - t0,
                        history=history)
