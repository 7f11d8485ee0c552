"""One training loop for every SAM variant: what the studies and ``fmlab sam train`` run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fmlab._device import eval_mode
from fmlab._validation import check_int, check_option, check_real
from fmlab.sam._optim import SAM
from fmlab.sam._variants import LastLayerPenalty, get_variant, list_variants, variant_step

__all__ = ["ClassifierTrainResult", "images_to_tensor", "train_classifier"]


@dataclass
class ClassifierTrainResult:
    """What :func:`train_classifier` returns.

    Attributes:
        model: The trained network (final weights).
        history: One dict per epoch: ``epoch``, ``train_loss``, ``test_acc`` and, when a noise
            ``y_true`` was given, ``clean_fit`` (accuracy on the clean training examples),
            ``noisy_fit`` (share of flipped examples predicted as their noisy label),
            ``clean_weight`` and ``noisy_weight`` (mean ``||softmax(f) - e_y||``).
        best_test_acc: Highest test accuracy over the epochs (an oracle that peeks at the test
            set, as the papers report it; use ``stopped_test_acc`` for an honest number).
        final_test_acc: Test accuracy after the last epoch.
        best_epoch: Epoch of ``best_test_acc`` (1-based).
        stopped_epoch: With a validation set, the epoch of the highest validation accuracy
            (early stopping without the test set); 0 otherwise.
        stopped_test_acc: Test accuracy at ``stopped_epoch`` (NaN without a validation set).
        step_time: Mean wall-clock seconds per optimization step.
    """

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_test_acc: float = float("nan")
    final_test_acc: float = float("nan")
    best_epoch: int = 0
    step_time: float = float("nan")
    stopped_epoch: int = 0
    stopped_test_acc: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best_test_acc": self.best_test_acc,
                "final_test_acc": self.final_test_acc, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "stopped_test_acc": self.stopped_test_acc,
                "step_time": self.step_time}


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` -> float ``(N, C, H, W)`` in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 127.5 - 1.0
    if x.ndim == 3:
        return x.unsqueeze(1)  # (N, 1, H, W)
    return x.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    correct = 0
    with eval_mode(model):
        for i in range(0, len(x), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / max(len(x), 1)


def _noise_diagnostics(model: nn.Module, x: torch.Tensor, y_noisy: torch.Tensor,
                       y_true: torch.Tensor, flipped: torch.Tensor) -> dict[str, float]:
    """How the model treats clean vs flipped training examples.

    ``clean_fit``: accuracy on clean examples; ``noisy_fit``: share of flipped examples predicted
    as their *noisy* label (memorisation); ``*_weight``: mean per-example logit-term weight
    ``||softmax(f) - e_y||`` (the factor that scales each example's gradient).
    """
    with eval_mode(model):
        logits = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    pred = logits.argmax(1)
    weight = (logits.softmax(1) - nn.functional.one_hot(y_noisy, logits.shape[1])).norm(dim=1)
    clean = ~flipped
    out = {"clean_fit": float((pred[clean] == y_true[clean]).float().mean())}
    if flipped.any():
        out["noisy_fit"] = float((pred[flipped] == y_noisy[flipped]).float().mean())
        out["clean_weight"] = float(weight[clean].mean())
        out["noisy_weight"] = float(weight[flipped].mean())
    return out


def train_classifier(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    method: str = "sgd",
    rho: float = 0.05,
    adaptive: bool = False,
    scope: Literal["all", "last"] = "all",
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    epochs: int = 10,
    batch_size: int = 128,
    weight_penalty: float = 0.0,
    feature_penalty: float = 0.0,
    y_true: torch.Tensor | None = None,
    seed: int = 0,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
) -> ClassifierTrainResult:
    """Train ``model`` with SGD (momentum) or a SAM variant; track test accuracy per epoch.

    Args:
        model: Network returning logits; needs a ``head`` (last ``nn.Linear``) when a penalty is
            used or ``scope="last"``.
        x_train, y_train: Training inputs and (possibly noisy) labels.
        x_test, y_test: Clean test set, evaluated after every epoch.
        method: ``"sgd"``, ``"sam"``, ``"logit"`` (L-SAM) or ``"jacobian"`` (J-SAM).
        rho: SAM radius.
        adaptive: ASAM instead of SAM.
        scope: ``"all"`` perturbs every parameter; ``"last"`` only ``model.head`` (LSAM).
        lr, momentum, weight_decay: The base SGD optimizer's hyperparameters.
        epochs, batch_size: Length of training.
        weight_penalty, feature_penalty: Coefficients of :class:`LastLayerPenalty`.
        y_true: Clean training labels; with them the history tracks clean vs flipped examples.
        seed: Seeds the minibatch order.
        progress: Optional wrapper of the epoch iterator (a progress bar).
        x_val, y_val: A validation set carved from the training data (with its possibly noisy
            labels), evaluated after every epoch; early stopping picks the epoch of the highest
            validation accuracy (``stopped_epoch``), never looking at the test set.

    Returns:
        A :class:`ClassifierTrainResult`.
    """
    check_option(method, "method", list_variants(), owner="train_classifier")
    check_option(scope, "scope", ("all", "last"), owner="train_classifier")
    rho = check_real(rho, "rho", owner="train_classifier", low=0.0, closed="left")
    check_real(lr, "lr", owner="train_classifier", low=0.0)
    check_real(momentum, "momentum", owner="train_classifier", low=0.0, high=1.0, closed="left")
    check_real(weight_decay, "weight_decay", owner="train_classifier", low=0.0, closed="left")
    check_real(weight_penalty, "weight_penalty", owner="train_classifier", low=0.0,
               closed="left")
    check_real(feature_penalty, "feature_penalty", owner="train_classifier", low=0.0,
               closed="left")
    epochs = check_int(epochs, "epochs", owner="train_classifier", low=1)
    batch_size = check_int(batch_size, "batch_size", owner="train_classifier", low=1)
    if scope == "last" or weight_penalty or feature_penalty:
        if not isinstance(getattr(model, "head", None), nn.Linear):
            raise TypeError("train_classifier needs model.head (the last nn.Linear layer) for "
                            "scope='last' or the last-layer penalties.")
    if scope == "last":
        head_ids = {id(p) for p in model.head.parameters()}
        groups: Any = [
            {"params": [p for p in model.parameters() if id(p) not in head_ids], "perturb": False},
            {"params": list(model.head.parameters())},
        ]
    else:
        groups = model.parameters()
    opt = SAM(groups, torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr, momentum=momentum,
              weight_decay=weight_decay)
    penalty = None
    if weight_penalty or feature_penalty:
        penalty = LastLayerPenalty(model.head, weight=weight_penalty, feature=feature_penalty)
    variant = get_variant(method)
    gen = torch.Generator().manual_seed(seed)
    flipped = None
    if y_true is not None:
        flipped = y_true != y_train
        probe = torch.randperm(len(x_train), generator=gen)[:2000]

    result = ClassifierTrainResult(model=model)
    n_steps, t_steps = 0, 0.0
    epoch_iter: Iterable[int] = range(1, epochs + 1)
    if progress is not None:
        epoch_iter = progress(epoch_iter)
    model.train()
    for epoch in epoch_iter:
        order = torch.randperm(len(x_train), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            t0 = time.perf_counter()
            loss = variant_step(opt, model, x_train[idx], y_train[idx], variant, penalty=penalty)
            t_steps += time.perf_counter() - t0
            n_steps += 1
            total += float(loss) * len(idx)
            count += len(idx)
        row = {"epoch": float(epoch), "train_loss": total / count,
               "test_acc": _accuracy(model, x_test, y_test)}
        if x_val is not None and y_val is not None:
            row["val_acc"] = _accuracy(model, x_val, y_val)
        if flipped is not None and y_true is not None:
            row.update(_noise_diagnostics(model, x_train[probe], y_train[probe], y_true[probe],
                                          flipped[probe]))
        result.history.append(row)
    if penalty is not None:
        penalty.remove()
    accs = [r["test_acc"] for r in result.history]
    best = int(np.argmax(accs))
    result.best_test_acc, result.best_epoch = accs[best], best + 1
    result.final_test_acc = accs[-1]
    if x_val is not None and y_val is not None:
        stop = int(np.argmax([r["val_acc"] for r in result.history]))  # first best epoch
        result.stopped_epoch, result.stopped_test_acc = stop + 1, accs[stop]
    result.step_time = t_steps / max(n_steps, 1)
    return result
