"""The variants that explain SAM, as data, plus the cheap regularisers as plain loss terms.

Per example the cross-entropy gradient factors into a *logit term* and a *Jacobian*:

.. math::

    \\nabla_w \\ell_i = J_i(w)^\\top r_i(w), \\qquad r_i(w) = \\partial \\ell / \\partial f
    = \\mathrm{softmax}(f(w, x_i)) - e_{y_i}.

SAM evaluates both at ``w + eps``; *logit-only SAM* (L-SAM) only ``r``, *Jacobian-only SAM*
(J-SAM) only ``J`` (Baek, Kolter, Raghunathan 2024). A :class:`SAMVariant` records where each
factor is evaluated, and :func:`variant_step` runs one step of any variant with a :class:`SAM`
optimizer:

- J-SAM backpropagates the surrogate ``sum_i <stopgrad(r_i(w)), f(w + eps, x_i)>`` at ``w + eps``;
- L-SAM backpropagates ``sum_i <stopgrad(r_i(w + eps)), f(w, x_i)>`` at ``w``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fmlab._registry import Registry
from fmlab._validation import check_option
from fmlab.sam._optim import SAM, frozen_bn_stats

__all__ = [
    "VARIANTS",
    "LastLayerPenalty",
    "SAMVariant",
    "feature_norm_penalty",
    "get_variant",
    "list_variants",
    "logit_residual",
    "variant_step",
    "weight_norm_penalty",
]

Where = Literal["w", "w+eps"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SAMVariant:
    """Where a SAM-like step evaluates the logit term and the network Jacobian.

    Args:
        name: Registry name.
        logit_at: ``"w"`` or ``"w+eps"``: where ``r_i = dloss/dlogits`` is evaluated.
        jacobian_at: ``"w"`` or ``"w+eps"``: where ``J_i = dlogits/dw`` is evaluated.
        description: One line for listings.

    References:
        Baek, Kolter, Raghunathan. Why is SAM Robust to Label Noise? ICLR 2024, arXiv 2405.03676.
    """

    name: str
    logit_at: Where
    jacobian_at: Where
    description: str = ""

    def __post_init__(self) -> None:
        check_option(self.logit_at, "logit_at", ("w", "w+eps"), owner="SAMVariant")
        check_option(self.jacobian_at, "jacobian_at", ("w", "w+eps"), owner="SAMVariant")

    @property
    def perturbs(self) -> bool:
        """Whether the step needs the perturbed weights at all (False for plain SGD)."""
        return "w+eps" in (self.logit_at, self.jacobian_at)


VARIANTS: Registry[SAMVariant] = Registry("SAM variant")
for _v in (
    SAMVariant("sgd", "w", "w", "the base optimizer alone: J(w)^T r(w)"),
    SAMVariant("sam", "w+eps", "w+eps", "SAM: J(w+eps)^T r(w+eps)"),
    SAMVariant("logit", "w+eps", "w", "logit-only SAM (L-SAM): J(w)^T r(w+eps)"),
    SAMVariant("jacobian", "w", "w+eps", "Jacobian-only SAM (J-SAM): J(w+eps)^T r(w)"),
):
    VARIANTS.register(_v.name, _v, description=_v.description)


def list_variants(pattern: str | None = None) -> list[str]:
    """Names of the registered SAM variants (``sgd``, ``sam``, ``logit``, ``jacobian``)."""
    return VARIANTS.names(pattern)


def get_variant(name: str | SAMVariant) -> SAMVariant:
    """The :class:`SAMVariant` registered under ``name`` (a variant is returned unchanged)."""
    if isinstance(name, SAMVariant):
        return name
    return VARIANTS.get(name)


def logit_residual(logits: torch.Tensor, targets: torch.Tensor,
                   loss_fn: LossFn | None = None) -> torch.Tensor:
    """``dloss/dlogits`` per example, detached: ``softmax(f) - onehot(y)`` for mean cross-entropy
    (divided by the batch size, as the mean loss gives it).

    Args:
        logits: ``(B, C)`` (or any shape ``loss_fn`` accepts).
        targets: The targets ``loss_fn`` expects.
        loss_fn: Mean-reduced loss ``loss_fn(logits, targets)``; default cross-entropy.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    f = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        (r,) = torch.autograd.grad(loss_fn(f, targets), f)
    return r  # same shape as logits


def variant_step(
    optimizer: SAM,
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    variant: str | SAMVariant = "sam",
    *,
    loss_fn: LossFn | None = None,
    penalty: Callable[[], torch.Tensor] | None = None,
    freeze_bn: bool = True,
    m: int | None = None,
) -> torch.Tensor:
    """One optimization step of a SAM variant on one batch; returns the loss at ``w``.

    ``model(inputs)`` must return logits. The perturbation is the optimizer's (SAM or ASAM, its
    ``rho``, its perturbation scope); the variant decides where the logit term and the Jacobian
    are evaluated (:class:`SAMVariant`). Costs: ``sgd`` 1 forward + 1 backward, ``sam`` and
    ``jacobian`` 2 + 2, ``logit`` 3 + 2.

    Args:
        optimizer: A :class:`SAM` over ``model``'s parameters.
        model: The network; returns logits.
        inputs: A batch of inputs.
        targets: Their targets.
        variant: ``"sgd"``, ``"sam"``, ``"logit"``, ``"jacobian"`` or a :class:`SAMVariant`.
        loss_fn: Mean-reduced loss on logits; default cross-entropy.
        penalty: Optional extra loss term, a callable ``penalty() -> scalar`` evaluated after each
            forward pass that backpropagates (so it can read activations captured by hooks, as
            :class:`LastLayerPenalty` does), e.g. the regularisers of this module.
        freeze_bn: Leave batch-norm running statistics untouched in passes at ``w + eps`` and in
            repeated passes (:func:`frozen_bn_stats`).
        m: m-sharpness: split the batch into chunks of ``m`` examples, give each chunk its own
            ``eps`` (from the chunk's gradient) and average the chunks' perturbed gradients
            (Foret et al. 2021). ``m=1`` is 1-SAM (per-example ``eps``, the variant analysed in
            arXiv 2405.03676); ``None`` (default) is n-SAM, one ``eps`` for the batch. Costs
            ``B/m`` times the passes of smaller batches; with batch norm the running statistics
            are updated by the first chunk only.

    Raises:
        TypeError: If ``optimizer`` is not a :class:`SAM`.
    """
    if not isinstance(optimizer, SAM):
        raise TypeError(
            "The 'optimizer' parameter of variant_step must be a fmlab.sam.SAM instance. Got "
            f"{type(optimizer).__name__}; wrap the base optimizer: SAM(params, torch.optim.SGD, "
            "lr=...)."
        )
    v = get_variant(variant)
    loss_fn = loss_fn or nn.functional.cross_entropy

    def extra() -> torch.Tensor | float:
        return penalty() if penalty is not None else 0.0

    def frozen() -> contextlib.AbstractContextManager[object]:
        return frozen_bn_stats(model) if freeze_bn else contextlib.nullcontext()

    n = len(inputs)
    if m is not None:
        from fmlab._validation import check_int

        m = check_int(m, "m", owner="variant_step", low=1)
    optimizer.zero_grad(set_to_none=True)
    if not v.perturbs or m is None or m >= n:
        loss = _one_chunk(optimizer, model, inputs, targets, v, loss_fn, extra, frozen, 1.0,
                          first=True)
        if v.perturbs:
            optimizer.second_step()
        else:
            optimizer.base_optimizer.step()
        return loss
    # m-sharpness: one eps per chunk of m examples; average the perturbed gradients.
    params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    acc: list[torch.Tensor | None] = [None] * len(params)
    total = torch.zeros(())
    for k, start in enumerate(range(0, n, m)):
        xs, ys = inputs[start:start + m], targets[start:start + m]
        total = total + _one_chunk(optimizer, model, xs, ys, v, loss_fn, extra, frozen,
                                   len(xs) / n, first=k == 0) * (len(xs) / n)
        for i, p in enumerate(params):
            if p.grad is not None:
                acc[i] = p.grad if acc[i] is None else acc[i].add_(p.grad)
        optimizer.zero_grad(set_to_none=True)
    for p, a in zip(params, acc, strict=True):
        p.grad = a
    optimizer.second_step()
    return total


def _one_chunk(
    optimizer: SAM,
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    v: SAMVariant,
    loss_fn: LossFn,
    extra: Callable[[], torch.Tensor | float],
    frozen: Callable[[], contextlib.AbstractContextManager[object]],
    scale: float,
    *,
    first: bool,
) -> torch.Tensor:
    """First pass at w and (for perturbing variants) the pass at w + eps on one chunk; leaves
    the variant's gradient times ``scale`` in ``.grad`` and the weights restored or perturbed."""
    with contextlib.nullcontext() if first else frozen():
        logits = model(inputs)  # (B, C) at w
        loss = loss_fn(logits, targets)
        ((loss + extra()) * scale).backward()
    if not v.perturbs:
        return loss.detach()
    r_w = logit_residual(logits, targets, loss_fn) * scale if v.logit_at == "w" else None
    optimizer.first_step(zero_grad=True)
    try:
        if v.jacobian_at == "w+eps":
            with frozen():
                logits_eps = model(inputs)  # (B, C) at w + eps
                if r_w is None:  # SAM: the full loss at w + eps
                    ((loss_fn(logits_eps, targets) + extra()) * scale).backward()
                else:  # J-SAM: r at w, Jacobian at w + eps
                    ((logits_eps * r_w).sum() + extra() * scale).backward()
        else:  # L-SAM: r at w + eps, Jacobian at w
            with torch.no_grad(), frozen():
                logits_eps = model(inputs)
            r_eps = logit_residual(logits_eps, targets, loss_fn) * scale
            optimizer.unperturb()
            with frozen():
                ((model(inputs) * r_eps).sum() + extra() * scale).backward()
    except BaseException:
        optimizer.unperturb()
        raise
    optimizer.unperturb()
    return loss.detach()


def weight_norm_penalty(weight: torch.Tensor | nn.Module, coef: float = 1.0) -> torch.Tensor:
    """``coef * ||W||_F^2`` of the last layer: the J-SAM regulariser on the output weights.

    In a two-layer linear network ``f = v^T W x``, J-SAM's update equals SGD's plus the gradient
    of a per-example weighted ``||x||^2 ||v||^2 + ||W x||^2``; this term and
    :func:`feature_norm_penalty` are its deep-network analogues.

    Args:
        weight: The last layer (its ``weight``) or the weight tensor itself.
        coef: Multiplier (lambda_1; tune on a log grid, e.g. 1e-4 ... 1e-1).

    References:
        Baek, Kolter, Raghunathan. Why is SAM Robust to Label Noise? arXiv 2405.03676.
    """
    w = weight.weight if isinstance(weight, nn.Module) else weight
    return coef * w.pow(2).sum()


def feature_norm_penalty(features: torch.Tensor, coef: float = 1.0) -> torch.Tensor:
    """``coef * mean_i ||phi(x_i)||_2^2`` of the penultimate features ``(B, d)``.

    Args:
        features: Penultimate activations, shape ``(B, d)`` (flattened beyond the batch axis).
        coef: Multiplier (lambda_2; tune on a log grid, e.g. 1e-4 ... 1e-1).

    References:
        Baek, Kolter, Raghunathan. Why is SAM Robust to Label Noise? arXiv 2405.03676.
    """
    return coef * features.flatten(1).pow(2).sum(1).mean()


class LastLayerPenalty:
    """The J-SAM regularisers of a network's last layer, as one loss term.

    ``penalty() = weight * ||W_last||_F^2 + feature * mean_i ||phi(x_i)||^2`` where ``phi`` is the
    input of ``head`` in the most recent forward pass (captured by a forward pre-hook, so the
    penalty costs no extra forward pass). Add it to the loss: ``loss = ce(model(x), y) +
    penalty()``. Call :meth:`remove` to detach the hook.

    Args:
        head: The last layer (``nn.Linear``) of the network.
        weight: lambda_1, the coefficient of the last-layer weight norm.
        feature: lambda_2, the coefficient of the penultimate-feature norm.

    Raises:
        TypeError: If ``head`` is not an ``nn.Linear``.
        ValueError: If a coefficient is negative.

    References:
        Baek, Kolter, Raghunathan. Why is SAM Robust to Label Noise? arXiv 2405.03676.
    """

    def __init__(self, head: nn.Module, *, weight: float = 0.0, feature: float = 0.0) -> None:
        from fmlab._validation import check_real

        if not isinstance(head, nn.Linear):
            raise TypeError(
                "The 'head' parameter of LastLayerPenalty must be the network's last nn.Linear "
                f"layer. Got {type(head).__name__} instead."
            )
        self.head = head
        self.weight = check_real(weight, "weight", owner="LastLayerPenalty", low=0.0,
                                 closed="left")
        self.feature = check_real(feature, "feature", owner="LastLayerPenalty", low=0.0,
                                  closed="left")
        self._features: torch.Tensor | None = None
        self._hook = head.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._features = args[0]  # (B, d)

    def __call__(self) -> torch.Tensor:
        total = weight_norm_penalty(self.head.weight, self.weight)
        if self.feature:
            if self._features is None:
                raise RuntimeError("LastLayerPenalty() needs a forward pass through the model "
                                   "first; it penalises the features of the last forward pass.")
            total = total + feature_norm_penalty(self._features, self.feature)
        return total

    def remove(self) -> None:
        """Detach the forward hook from ``head``."""
        self._hook.remove()
        self._features = None
