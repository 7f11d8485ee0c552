"""Fine-tuning core shared by AutoFT trials, its final run and every baseline.

A model to fine-tune is a :class:`FineTunable`: an ``encoder`` (image tower or feature MLP) and a
``head`` module; ``forward(x) = head(encoder(x))``. A dual encoder also carries the class-caption
text features (used by the zero-shot head and by the flyp term). One loop, :func:`finetune`, runs
AdamW with the objective's own lr and weight decay (the released code's schedule replaced the
searched lr by the command-line one; here a schedule only *scales* the objective's lr, and warmup
is counted in the run's own steps), reports evaluations to a callback (Optuna's pruner) and stops
on a non-finite loss.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from fmlab._device import eval_mode
from fmlab._validation import check_int, check_option, check_real
from fmlab.autoft._fused import PenaltyGrad
from fmlab.autoft._losses import LossBatch, batch_loss
from fmlab.autoft._space import AutoFTParams

__all__ = ["METRICS", "FineTunable", "FineTuneResult", "TensorData", "ZeroShotHead", "evaluate",
           "finetune", "overlapping_ids", "wise_ft"]

Metric = Literal["accuracy", "macro_f1", "worst_group_accuracy"]
METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "worst_group_accuracy")


@dataclass
class TensorData:
    """A labelled set: inputs ``x`` ``(N, ...)``, labels ``y`` ``(N,)``, optional ``groups``
    ``(N,)`` for worst-group accuracy and ``ids`` ``(N,)`` naming each example (content hashes
    are used when absent)."""

    x: Any
    y: Any
    groups: Any = None
    ids: Any = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"TensorData needs one label per input: got {len(self.x)} inputs "
                             f"and {len(self.y)} labels.")

    def __len__(self) -> int:
        return len(self.y)

    def example_ids(self) -> list[str]:
        if self.ids is not None:
            return [str(i) for i in self.ids]
        import hashlib

        import numpy as np

        x = self.x.detach().cpu().numpy() if hasattr(self.x, "detach") else np.asarray(self.x)
        return [hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest()[:12] for row in x]


def overlapping_ids(a: TensorData, b: TensorData, names: tuple[str, str] = ("ood_val", "test")
                    ) -> None:
    """Refuse two sets that share examples (the OOD-validation set must not touch the test set).

    Raises:
        ValueError: naming how many examples overlap and the first ids.
    """
    shared = sorted(set(a.example_ids()) & set(b.example_ids()))
    if shared:
        raise ValueError(f"The {names[0]} set overlaps the {names[1]} set in {len(shared)} "
                         f"example(s), e.g. ids {shared[:5]}; a search scored on test examples "
                         f"would overstate robustness. Use disjoint sets.")


class ZeroShotHead(nn.Module):
    """The zero-shot head of a dual encoder: ``s · normalize(f) @ normalize(W)ᵀ``, ``W``
    initialised from the class-caption text features (and trainable)."""

    def __init__(self, class_text_features: Any, logit_scale: float = 100.0) -> None:
        super().__init__()
        text = torch.as_tensor(class_text_features, dtype=torch.float32)
        self.weight = nn.Parameter(F.normalize(text.detach().clone(), dim=-1))  # (C, d)
        self.logit_scale = float(logit_scale)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = F.normalize(f, dim=-1)  # (B, d)
        return self.logit_scale * f @ F.normalize(self.weight, dim=-1).T  # (B, C)


class FineTunable(nn.Module):
    """A model to fine-tune: ``forward(x) = head(encoder(x))``.

    Args:
        encoder: Module mapping inputs to features ``(B, d)`` (an image tower, or an MLP on
            cached frozen-backbone features).
        head: Classifier on the features. ``None`` with ``class_text_features`` gives the
            :class:`ZeroShotHead` of a dual encoder.
        class_text_features: ``(C, d)`` text features of the class captions; needed by the flyp
            term (the text tower itself stays frozen).
        logit_scale: CLIP's temperature ``s``.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module | None = None,
                 class_text_features: Any = None, logit_scale: float = 100.0) -> None:
        super().__init__()
        if head is None and class_text_features is None:
            raise ValueError("FineTunable needs a head module or class_text_features (for the "
                             "zero-shot head).")
        text = None if class_text_features is None else torch.as_tensor(
            class_text_features, dtype=torch.float32)
        self.encoder = encoder
        self.head = head if head is not None else ZeroShotHead(text, logit_scale)
        self.register_buffer("class_text_features", text)
        self.logit_scale = float(logit_scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # type: ignore[no-any-return]


def _metric(pred: Any, y: Any, groups: Any, metric: str) -> float:
    import numpy as np

    pred, y = np.asarray(pred), np.asarray(y)
    if metric == "accuracy":
        return float((pred == y).mean())
    if metric == "macro_f1":
        from sklearn.metrics import f1_score

        return float(f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0))
    if groups is None:
        raise ValueError("metric='worst_group_accuracy' needs group labels: give the data "
                         "groups=... (one group id per example).")
    groups = np.asarray(groups)
    return float(min((pred[groups == g] == y[groups == g]).mean() for g in np.unique(groups)))


def evaluate(model: Any, data: TensorData, metric: str = "accuracy", *,
             batch_size: int = 1024) -> float:
    """``metric`` (accuracy, macro_f1, worst_group_accuracy) of ``model`` on ``data``."""
    check_option(metric, "metric", METRICS, owner="evaluate")
    preds = []
    with eval_mode(model):
        for i in range(0, len(data), batch_size):
            preds.append(model(data.x[i:i + batch_size]).argmax(-1))
    pred = torch.cat(preds).cpu().numpy() if preds else []
    y = data.y.cpu().numpy() if hasattr(data.y, "cpu") else data.y
    return _metric(pred, y, data.groups, metric)


@dataclass
class FineTuneResult:
    """What :func:`finetune` returns.

    Attributes:
        model: The fine-tuned model (a copy; the input model is untouched).
        history: ``[(step, value)]`` of the evaluations.
        optimizer: ``{"lr", "weight_decay"}`` of AdamW's param group at the first step.
        lrs: The lr AdamW applied at each step (the objective's lr times the schedule).
        losses: The batch terms' loss per step (the weight penalties, functions of the weights
            alone, act through their gradients and are not re-evaluated each step).
        diverged: Whether the loss became non-finite (training stopped there).
        best_step: The step whose evaluation was best (its weights are the model's, when
            ``keep_best``).
        score: ``metric`` on ``score_data`` of the returned weights (``None`` without it).
        seconds: Wall time.
    """

    model: Any
    history: list[tuple[int, float]] = field(default_factory=list)
    optimizer: dict[str, float] = field(default_factory=dict)
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    diverged: bool = False
    best_step: int | None = None
    score: float | None = None
    seconds: float = 0.0


def finetune(
    model: Any,
    params: AutoFTParams,
    train: TensorData,
    *,
    steps: int,
    batch_size: int = 64,
    eval_data: TensorData | None = None,
    metric: str = "accuracy",
    eval_every: int | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    keep_best: bool = False,
    trainable: Literal["all", "head"] = "all",
    schedule: Literal["constant", "cosine"] = "constant",
    warmup_steps: int = 0,
    clip_grad: float | None = 1.0,
    dcm_sign: Literal["maximize_entropy", "released"] = "maximize_entropy",
    score_data: TensorData | None = None,
) -> FineTuneResult:
    """Fine-tune a copy of ``model`` with the objective ``params`` for ``steps`` AdamW steps.

    Args:
        model: A :class:`FineTunable` (or any module; ``flyp`` needs ``features`` and
            ``class_text_features``).
        params: Loss weights, lr, weight decay and seed.
        train: ID training data; batches are drawn by a generator seeded with ``params.seed``
            (epochs of random permutations).
        steps: Optimizer steps.
        eval_data, metric, eval_every: Evaluate ``metric`` on ``eval_data`` every ``eval_every``
            steps (and after the last step).
        on_eval: Called as ``on_eval(step, value)`` after each evaluation (may raise, e.g.
            :class:`optuna.TrialPruned`).
        keep_best: Return the weights of the best evaluation (the final run's epoch selection).
        trainable: ``"all"`` or ``"head"`` (linear probing).
        schedule: ``"constant"`` or ``"cosine"`` (scales ``params.lr``; never replaces it).
        warmup_steps: Linear warmup, in this run's steps (at most ``steps``: the released code's
            trials of 10-100 steps never left a 500-step warmup, so they never ran at the
            searched lr).
        clip_grad: Gradient-norm clipping (``None``: off).
        dcm_sign: The sign of the dcm term (see :mod:`fmlab.autoft._losses`).
        score_data: A second set scored with ``metric`` at each evaluation (``on_eval``
            receives its value; ``eval_data`` then only picks the step) and on the returned
            weights (``FineTuneResult.score``). An AutoFT trial that runs the final run's
            procedure passes ID validation as ``eval_data`` and OOD validation here.
    """
    o = "finetune"
    check_int(steps, "steps", owner=o, low=0)
    check_int(batch_size, "batch_size", owner=o, low=1)
    check_option(metric, "metric", METRICS, owner=o)
    check_option(trainable, "trainable", ("all", "head"), owner=o)
    check_option(schedule, "schedule", ("constant", "cosine"), owner=o)
    check_int(warmup_steps, "warmup_steps", owner=o, low=0)
    if warmup_steps > steps:
        raise ValueError(f"`warmup_steps <= steps` must hold, but got (warmup_steps="
                         f"{warmup_steps}, steps={steps}): the run would end before reaching "
                         f"its lr. Use a warmup shorter than the run.")
    if clip_grad is not None:
        check_real(clip_grad, "clip_grad", owner=o, low=0.0)
    if params.weights.get("flyp", 0.0) > 0 and getattr(model, "class_text_features",
                                                         None) is None:
        raise ValueError("The 'flyp' loss term needs a dual encoder (a model with "
                         "class_text_features); this model has none. Give flyp weight 0 or use "
                         "SearchSpace().without('flyp').")
    t0 = time.perf_counter()
    torch.manual_seed(params.seed)
    model = copy.deepcopy(model)
    model.train()
    named = [p for p in (model.head if trainable == "head" else model).parameters()
             if p.requires_grad]
    init = [p.detach().clone() for p in named]  # θ₀: a real copy, not an alias
    penalties = PenaltyGrad(params.weights, named, init)  # scratch buffers: once per run
    # torch's fused AdamW (one kernel per step, ~6x less CPU than the per-op loop on a
    # 1280x256 projection) where it applies: floating-point parameters on CPU or CUDA
    fused = bool(named) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                for p in named)
    opt = torch.optim.AdamW(named, lr=params.lr, weight_decay=params.weight_decay,
                            fused=fused or None)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            span = max(1, steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / span))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(params.seed)
    n = len(train)
    order = torch.randperm(n, generator=gen)
    pos = 0
    res = FineTuneResult(model=model,
                         optimizer={"lr": opt.param_groups[0]["lr"] / factor(0),
                                    "weight_decay": opt.param_groups[0]["weight_decay"]})
    has_features = hasattr(model, "features") and hasattr(model, "head")
    text = getattr(model, "class_text_features", None)
    best_val, best_state = -math.inf, None
    every = eval_every or steps

    def do_eval(step: int) -> None:
        nonlocal best_val, best_state
        if eval_data is None:
            return
        value = evaluate(model, eval_data, metric)
        res.history.append((step, value))
        if keep_best and value > best_val:
            best_val, res.best_step = value, step
            best_state = copy.deepcopy(model.state_dict())
        if on_eval is not None:
            on_eval(step, value if score_data is None else evaluate(model, score_data, metric))

    for step in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x, y = train.x[idx], train.y[idx]
        if has_features:
            feats = model.features(x)  # (B, d)
            logits = model.head(feats)  # (B, C)
        else:
            feats, logits = None, model(x)
        batch = LossBatch(logits=logits, labels=y, features=feats, text_features=text,
                          logit_scale=getattr(model, "logit_scale", 100.0), dcm_sign=dcm_sign)
        # the batch terms as one autograd node; the weight penalties' gradients added
        # analytically (no graph): the same gradient as objective_loss, a fraction of the cost
        loss = batch_loss(params.weights, batch)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        penalties.add_()
        loss = loss.detach()
        if not torch.isfinite(loss):
            res.diverged = True
            break
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(named, clip_grad)
        res.lrs.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
        res.losses.append(float(loss))
        if (step + 1) % every == 0 or step + 1 == steps:
            do_eval(step + 1)
    if steps == 0 or res.diverged:
        do_eval(len(res.losses))
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if score_data is not None:
        res.score = evaluate(model, score_data, metric)
    res.seconds = time.perf_counter() - t0
    return res


def wise_ft(zero_shot: Any, finetuned: Any, alpha: float = 0.5) -> Any:
    """WiSE-FT: a copy with ``θ = (1 − α)·θ_zero-shot + α·θ_fine-tuned`` (Wortsman et al.,
    arXiv 2109.01903). ``alpha=0`` is the zero-shot model, ``alpha=1`` the fine-tuned one."""
    alpha = check_real(alpha, "alpha", owner="wise_ft", low=0.0, high=1.0, closed="both")
    out = copy.deepcopy(finetuned)
    zs, ft = zero_shot.state_dict(), finetuned.state_dict()
    if zs.keys() != ft.keys():
        raise ValueError("wise_ft needs two models of the same architecture (state_dict keys "
                         "differ).")
    mixed = {k: ((1 - alpha) * zs[k] + alpha * ft[k]) if torch.is_floating_point(ft[k])
             else ft[k] for k in ft}
    out.load_state_dict(mixed)
    return out
