"""Named fine-tuning tasks: everything a search needs, rebuilt from a name and options, so that
``fmlab autoft work`` on another machine reconstructs the same task from the study alone.

A task factory returns a :class:`FineTuneTask`; register new ones with
``TASKS.register("name", "module:function")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fmlab._registry import Registry

__all__ = ["TASKS", "FineTuneTask", "make_task", "toy_task"]


@dataclass
class FineTuneTask:
    """A pretrained model and its data splits.

    Attributes:
        model: The pretrained :class:`~fmlab.autoft.FineTunable` (never modified).
        train: ID training data.
        ood_val: The small OOD-validation set that scores the search's trials.
        id_val: ID validation data (picks the final run's epoch).
        tests: Test sets by name (ID test and the OOD-test shifts), never seen by the search.
        description: What the model and the shifts are, in words.
    """

    model: Any
    train: Any
    ood_val: Any
    id_val: Any = None
    tests: dict[str, Any] = field(default_factory=dict)
    description: str = ""


TASKS: Registry[Any] = Registry("autoft task", group="autoft_tasks")


def make_task(name: str, **options: Any) -> FineTuneTask:
    """Build the registered task ``name`` with ``options``."""
    return TASKS.get(name)(**options)  # type: ignore[no-any-return]


def toy_task(seed: int = 0, n_train: int = 256, n_val: int = 128, dim: int = 8,
             n_classes: int = 3) -> FineTuneTask:
    """A seconds-scale synthetic task for tests and examples.

    Class prototypes in ``R^dim``; a small MLP encoder (fixed random init) is the "pretrained"
    tower and the encoded prototypes are the class-caption text features (so every loss term,
    flyp included, applies). ID data are noisy prototypes; the OOD-validation shift adds one
    offset, the OOD-test shift another offset and a scaling.
    """
    import torch
    from torch import nn

    from fmlab.autoft._finetune import FineTunable, TensorData

    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(n_classes, dim, generator=g) * 1.5

    def sample(n: int, offset: Any, scale: float, k: int) -> TensorData:
        gk = torch.Generator().manual_seed(seed * 1000 + k)
        y = torch.randint(0, n_classes, (n,), generator=gk)
        x = scale * protos[y] + offset + 1.2 * torch.randn(n, dim, generator=gk)
        return TensorData(x, y, groups=y.clone())

    zero = torch.zeros(dim)
    shift_val = torch.randn(dim, generator=g) * 0.8
    shift_test = torch.randn(dim, generator=g) * 0.8
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(dim, 32), nn.Tanh(), nn.Linear(32, 16))
    with torch.no_grad():
        text = encoder(protos)
    model = FineTunable(encoder, class_text_features=text, logit_scale=10.0)
    return FineTuneTask(
        model=model, train=sample(n_train, zero, 1.0, 1), ood_val=sample(n_val, shift_val, 1.0, 2),
        id_val=sample(n_val, zero, 1.0, 3),
        tests={"id": sample(n_val, zero, 1.0, 4), "shift": sample(n_val, shift_test, 0.7, 5)},
        description="synthetic prototypes, MLP encoder, zero-shot head from encoded prototypes")


TASKS.register("toy", toy_task)
TASKS.register("emoji-shift", "fmlab.autoft._emoji:emoji_shift_task",
               description="clip-emoji fine-tuned on one emoji style; OOD: other styles, "
                           "corruptions")
