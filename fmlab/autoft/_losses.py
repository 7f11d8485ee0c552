"""AutoFT's nine loss terms as data: a registry of :class:`LossTerm` entries and one weighted sum.

Notation: ``z`` the logits ``(B, C)``, ``y`` the labels ``(B,)``, ``θ`` the trainable parameters,
``θ₀`` a real copy of the pretrained parameters (cloned, never an alias of the live ones: the
released code's init-distance terms were always zero because its "copy" aliased the weights),
``P`` the number of trainable parameters, ``H(p) = -Σ_c p_c log p_c``.

=========  ====================================================================================
term       definition
=========  ====================================================================================
ce         ``mean_i CE(z_i, y_i)``
hinge      ``mean_i Σ_{j≠y_i} max(0, z_ij − z_iy_i + 1)`` (multi-class, margin 1)
entropy    ``mean_i H(softmax z_i)``
dcm        ``sign · (1/B) Σ_i 1[argmax z_i ≠ y_i] · H(softmax z_i)``: confidence minimisation on
           the misclassified examples. ``sign = −1`` (the default, ``dcm_sign="maximize_entropy"``)
           *raises* their entropy, i.e. lowers their confidence, which is what DCM (Choi et al.)
           means; ``sign = +1`` (``"released"``) is what the released AutoFT code did (adding the
           entropy, which makes the wrong predictions *more* confident).
flyp       CLIP's symmetric contrastive loss between the normalised image features ``f_i`` and the
           normalised class-caption text features ``t_{y_i}`` of each example's class:
           ``½[CE(s·F·Tᵀ_y, arange B) + CE(s·T_y·Fᵀ, arange B)]``, ``s`` the logit scale.
           Needs a dual encoder (``model.class_text_features``).
l1zero     ``Σ|θ| / P``
l2zero     ``Σθ² / P``
l1init     ``Σ|θ − θ₀| / P``
l2init     ``Σ(θ − θ₀)² / P``
=========  ====================================================================================

The objective is ``Σ_j λ_j · L_j`` over the terms with a non-zero weight.

:func:`objective_loss` evaluates each term on its own (the reference, and what returns each
term's value). The fine-tuning loop uses the fused form, which must match it (tested):
:func:`batch_loss` makes ce, entropy, dcm and hinge one autograd node with a closed-form
backward that shares one ``log_softmax`` and one entropy, and :func:`add_penalty_grads_` adds
the *analytic* gradients of the four weight penalties to ``.grad`` (``∇Σ|θ|/P = sign θ / P``,
``∇Σθ²/P = 2θ / P``, the same around ``θ₀``) in one pass over the weights, as AdamW applies
weight decay without building an autograd graph for it (:mod:`fmlab.autoft._fused`; numba
kernels on CPU when installed, torch ops otherwise).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fmlab._registry import Registry

__all__ = ["LOSS_TERMS", "PENALTY_TERMS", "LossBatch", "LossTerm", "add_penalty_grads_",
           "batch_loss", "check_loss_weights", "list_loss_terms", "objective_loss"]

#: The terms that depend on the weights only (their gradient is added analytically in training).
PENALTY_TERMS: tuple[str, ...] = ("l1init", "l1zero", "l2init", "l2zero")

DcmSign = Literal["maximize_entropy", "released"]


@dataclass
class LossBatch:
    """What the loss terms read for one batch.

    Attributes:
        logits: ``(B, C)``.
        labels: ``(B,)`` int64.
        features: ``(B, d)`` image features before the head (for flyp), or ``None``.
        text_features: ``(C, d)`` class-caption text features (for flyp), or ``None``.
        logit_scale: CLIP's temperature ``s`` (for flyp).
        params: The trainable parameters θ.
        init_params: A real copy θ₀ of the pretrained parameters, aligned with ``params``.
        dcm_sign: ``"maximize_entropy"`` (default) or ``"released"`` (see the module doc).
    """

    logits: Any
    labels: Any
    features: Any = None
    text_features: Any = None
    logit_scale: float = 100.0
    params: Any = ()
    init_params: Any = ()
    dcm_sign: DcmSign = "maximize_entropy"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def log_probs(self) -> Any:
        """``log_softmax(z)`` ``(B, C)``, computed once per batch (ce, entropy, dcm share it)."""
        if "logp" not in self._cache:
            import torch

            self._cache["logp"] = torch.log_softmax(self.logits, dim=-1)
        return self._cache["logp"]

    def entropies(self) -> Any:
        """``H(softmax z_i)`` ``(B,)``, computed once per batch."""
        if "H" not in self._cache:
            logp = self.log_probs()
            self._cache["H"] = -(logp.exp() * logp).sum(-1)
        return self._cache["H"]

    def norms(self, init: bool) -> tuple[Any, Any]:
        """``(Σ|d|, Σd²)`` over all parameters, ``d = θ − θ₀`` (``init``) or ``θ``; one fused
        pass (``torch._foreach_*``, as ``clip_grad_norm_`` does) shared by l1 and l2."""
        key = "init" if init else "zero"
        if key not in self._cache:
            import torch

            params = list(self.params)
            if not params:
                zero = self.logits.new_zeros(())
                self._cache[key] = (zero, zero)
            else:
                if init:
                    if len(self.init_params) != len(params):
                        raise ValueError("l1init/l2init need the pretrained parameters "
                                         "(init_params) aligned with params.")
                    params = torch._foreach_sub(params, list(self.init_params))
                l1 = torch.stack(torch._foreach_norm(params, 1)).sum()
                l2 = torch.stack(torch._foreach_norm(params, 2)).square().sum()
                self._cache[key] = (l1, l2)
        return self._cache[key]  # type: ignore[no-any-return]

    @property
    def n_params(self) -> int:
        return max(1, sum(p.numel() for p in self.params))


@dataclass(frozen=True)
class LossTerm:
    """One loss term: its name, the function of a :class:`LossBatch`, and what it needs."""

    name: str
    fn: Callable[[LossBatch], Any]
    formula: str
    needs_text: bool = False


def _ce(b: LossBatch) -> Any:
    import torch.nn.functional as F

    return F.nll_loss(b.log_probs(), b.labels)  # = cross_entropy(z, y), sharing log_softmax


def _hinge(b: LossBatch) -> Any:
    import torch

    z = b.logits  # (B, C)
    zy = z.gather(1, b.labels[:, None])  # (B, 1)
    margins = (z - zy + 1.0).clamp_min(0.0)  # (B, C); the j = y entry is exactly 1
    mask = torch.ones_like(z).scatter_(1, b.labels[:, None], 0.0)
    return (margins * mask).sum(1).mean()


def _entropy_term(b: LossBatch) -> Any:
    return b.entropies().mean()


def _dcm(b: LossBatch) -> Any:
    wrong = (b.logits.argmax(-1) != b.labels).to(b.logits.dtype)  # (B,)
    sign = -1.0 if b.dcm_sign == "maximize_entropy" else 1.0
    return sign * (wrong * b.entropies()).mean()


def _flyp(b: LossBatch) -> Any:
    import torch
    import torch.nn.functional as F

    if b.features is None or b.text_features is None:
        raise ValueError("The 'flyp' loss term needs a dual encoder: a model with "
                         "class_text_features (class-caption text features) and features(). "
                         "Give flyp weight 0 or drop it from the search space.")
    f = F.normalize(b.features, dim=-1)  # (B, d)
    t = F.normalize(b.text_features, dim=-1)[b.labels]  # (B, d): each image's class caption
    sim = b.logit_scale * f @ t.T  # (B, B)
    target = torch.arange(len(f), device=f.device)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))


def _norm_term(kind: str, init: bool) -> Callable[[LossBatch], Any]:
    def fn(b: LossBatch) -> Any:
        l1, l2 = b.norms(init)
        return (l1 if kind == "l1" else l2) / b.n_params

    return fn


LOSS_TERMS: Registry[LossTerm] = Registry("AutoFT loss term", group="autoft_loss_terms")
for _t in (
    LossTerm("ce", _ce, "mean_i CE(z_i, y_i)"),
    LossTerm("dcm", _dcm, "sign * mean_i 1[argmax z_i != y_i] H(softmax z_i); sign -1 by default"),
    LossTerm("entropy", _entropy_term, "mean_i H(softmax z_i)"),
    LossTerm("flyp", _flyp, "CLIP contrastive loss, image features vs class-caption features",
             needs_text=True),
    LossTerm("hinge", _hinge, "mean_i sum_{j != y_i} max(0, z_ij - z_iy_i + 1)"),
    LossTerm("l1init", _norm_term("l1", True), "sum |theta - theta_0| / P"),
    LossTerm("l1zero", _norm_term("l1", False), "sum |theta| / P"),
    LossTerm("l2init", _norm_term("l2", True), "sum (theta - theta_0)^2 / P"),
    LossTerm("l2zero", _norm_term("l2", False), "sum theta^2 / P"),
):
    LOSS_TERMS.register(_t.name, _t, description=_t.formula)


def list_loss_terms(pattern: str | None = None) -> list[str]:
    """Names of the registered loss terms (``"l*"``: fnmatch)."""
    return LOSS_TERMS.names(pattern)


def check_loss_weights(weights: Mapping[str, Any], *, owner: str = "AutoFT") -> dict[str, float]:
    """Validate ``{term: weight}``: known terms (close matches suggested), finite weights >= 0."""
    if not isinstance(weights, Mapping):
        raise TypeError(f"The loss weights of {owner} must be a mapping {{term: weight}}. Got "
                        f"{type(weights).__name__} instead.")
    out: dict[str, float] = {}
    for name, w in weights.items():
        if name not in LOSS_TERMS:
            close = difflib.get_close_matches(str(name), LOSS_TERMS.names(), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            from fmlab.exceptions import UnknownNameError

            raise UnknownNameError(f"Unknown loss term {name!r} in the loss weights of "
                                   f"{owner}.{hint}\nAvailable: {', '.join(LOSS_TERMS.names())}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"The weight of loss term {name!r} of {owner} must be a finite float "
                             f">= 0. Got {w!r} instead; a negative weight would reward the term.")
        out[str(name)] = float(w)
    return out


def objective_loss(weights: Mapping[str, float], batch: LossBatch) -> tuple[Any, dict[str, Any]]:
    """``Σ_j λ_j · L_j(batch)`` over the terms with a non-zero weight.

    Returns:
        The total (a scalar tensor) and the unweighted value of each term used (tensors).
    """
    parts = {n: LOSS_TERMS.get(n).fn(batch) for n, w in weights.items() if w != 0.0}
    total = sum((weights[n] * v for n, v in parts.items()), batch.logits.new_zeros(()))
    return total, parts


def batch_loss(weights: Mapping[str, float], batch: LossBatch) -> Any:
    """``Σ_j λ_j · L_j`` over the terms of the batch (ce, hinge, entropy, dcm, flyp), fused.

    ce, entropy, dcm and hinge are one autograd node that shares one ``log_softmax`` and one
    entropy and has a closed-form backward (:class:`fmlab.autoft._fused.LogitTerms`; ce alone is
    ``F.cross_entropy``); flyp is added as is. The weight penalties (:data:`PENALTY_TERMS`) are
    left out: see :func:`add_penalty_grads_`. Equals :func:`objective_loss` without the
    penalties, value and gradient (tested).
    """
    from fmlab.autoft._fused import logit_terms

    w = {n: float(v) for n, v in weights.items() if v != 0.0}
    z, y = batch.logits, batch.labels  # (B, C), (B,)
    sign = -1.0 if batch.dcm_sign == "maximize_entropy" else 1.0
    lam = {"ce": w.get("ce", 0.0), "entropy": w.get("entropy", 0.0),
           "dcm": sign * w.get("dcm", 0.0), "hinge": w.get("hinge", 0.0)}
    total = logit_terms(z, y, **lam) if any(lam.values()) else z.new_zeros(())
    if "flyp" in w:
        total = total + w["flyp"] * _flyp(batch)
    return total


def add_penalty_grads_(weights: Mapping[str, float], params: Any, init_params: Any = (), *,
                       value: bool = True) -> Any:
    """Add the gradients of the weighted penalties (l1/l2 of ``θ`` and of ``θ − θ₀``, each
    divided by ``P``) to each parameter's ``.grad`` in place; return their weighted value.

    Call it after ``loss.backward()`` and before gradient clipping and ``optimizer.step()``: the
    result is the gradient of ``batch_loss + Σ λ_j·L_j`` over the penalties, with no autograd
    graph for them (``∇ = (λ₁ sign θ + 2λ₂ θ + λ₃ sign(θ−θ₀) + 2λ₄ (θ−θ₀)) / P``).
    ``value=False`` skips the reductions that only compute the value (returns 0.0). A training
    loop calls it every step: build one :class:`fmlab.autoft._fused.PenaltyGrad` instead, which
    allocates its scratch buffers once (what :func:`~fmlab.autoft.finetune` does).
    """
    from fmlab.autoft._fused import PenaltyGrad

    return PenaltyGrad(weights, params, init_params).add_(value)
