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
:func:`batch_loss` sums the terms of the logits in one per-example vector ``(B,)`` that shares
one ``log_softmax`` and one entropy, and :func:`add_penalty_grads_` adds the *analytic*
gradients of the four weight penalties to ``.grad`` with a few ``torch._foreach_*`` passes
(``∇Σ|θ|/P = sign θ / P``, ``∇Σθ²/P = 2θ / P``, the same around ``θ₀``), as AdamW applies weight
decay without building an autograd graph for it.
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

    ce, entropy, dcm and hinge become one per-example vector ``(B,)`` built from one
    ``log_softmax`` (``λ_ce·(−log p_y) + (λ_entropy + sign·λ_dcm·1[wrong])·H + λ_hinge·hinge``)
    and one mean; flyp is added as is. The weight penalties (:data:`PENALTY_TERMS`) are left
    out: see :func:`add_penalty_grads_`. Equals :func:`objective_loss` without the penalties.
    """

    w = {n: float(v) for n, v in weights.items() if v != 0.0}
    z, y = batch.logits, batch.labels  # (B, C), (B,)
    per = z.new_zeros(len(z))  # (B,)
    if "ce" in w:
        per = per - w["ce"] * batch.log_probs().gather(1, y[:, None]).squeeze(1)
    if "entropy" in w or "dcm" in w:
        coef: Any = w.get("entropy", 0.0)
        if "dcm" in w:
            sign = -1.0 if batch.dcm_sign == "maximize_entropy" else 1.0
            wrong = (z.argmax(-1) != y).to(z.dtype)  # (B,)
            coef = coef + (sign * w["dcm"]) * wrong
        per = per + coef * batch.entropies()
    if "hinge" in w:
        zy = z.gather(1, y[:, None])  # (B, 1)
        # the j = y entry of the margins is exactly max(0, 1) = 1: subtract it, no mask needed
        per = per + w["hinge"] * ((z - zy + 1.0).clamp_min(0.0).sum(1) - 1.0)
    total = per.mean()
    if "flyp" in w:
        total = total + w["flyp"] * _flyp(batch)
    return total


def add_penalty_grads_(weights: Mapping[str, float], params: Any, init_params: Any = (), *,
                       value: bool = True) -> Any:
    """Add the gradients of the weighted penalties (l1/l2 of ``θ`` and of ``θ − θ₀``, each
    divided by ``P``) to each parameter's ``.grad`` in place; return their weighted value.

    Call it after ``loss.backward()`` and before gradient clipping and ``optimizer.step()``: the
    result is the gradient of ``batch_loss + Σ λ_j·L_j`` over the penalties, with no autograd
    graph for them. The penalties are memory-bound passes over every weight, so the count of
    passes is what costs: ``∇ = λ₁·sign θ + λ₂·sign(θ−θ₀) + 2(λ₃+λ₄)·θ − 2λ₄·θ₀`` (over ``P``)
    takes at most seven ``torch._foreach_*`` passes for all four terms; ``value=False`` skips
    the two or four extra passes that only compute the value (returns 0.0).
    """
    import torch

    lam = {t: float(weights.get(t, 0.0)) for t in PENALTY_TERMS}
    params = [p for p in params]
    if not params or not any(lam.values()):
        return 0.0
    if (lam["l1init"] or lam["l2init"]) and len(init_params) != len(params):
        raise ValueError("l1init/l2init need the pretrained parameters (init_params) aligned "
                         "with params.")
    n = max(1, sum(p.numel() for p in params))
    init = list(init_params)

    def dot(a: Any, b: Any) -> Any:
        return sum(torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b, strict=True))

    with torch.no_grad():
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        total: Any = 0.0
        diff = torch._foreach_sub(params, init) if lam["l1init"] or (
            value and lam["l2init"]) else None
        if lam["l1zero"]:
            sign = torch._foreach_sign(params)
            torch._foreach_add_(grads, sign, alpha=lam["l1zero"] / n)
            if value:  # Σ|θ| = <sign θ, θ>, cheaper than a 1-norm kernel
                total = total + lam["l1zero"] / n * dot(sign, params)
        if lam["l1init"]:
            sign = torch._foreach_sign(diff)
            torch._foreach_add_(grads, sign, alpha=lam["l1init"] / n)
            if value:
                total = total + lam["l1init"] / n * dot(sign, diff)
        if lam["l2zero"] or lam["l2init"]:
            torch._foreach_add_(grads, params, alpha=2 * (lam["l2zero"] + lam["l2init"]) / n)
            if lam["l2init"]:
                torch._foreach_add_(grads, init, alpha=-2 * lam["l2init"] / n)
            if value:
                total = (total + lam["l2zero"] / n * dot(params, params)
                         + (lam["l2init"] / n * dot(diff, diff) if lam["l2init"] else 0.0))
    return total
