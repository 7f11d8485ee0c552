"""The fused training form of the AutoFT objective (torch imported here, not in ``_losses``).

Two pieces, each equal to the reference terms of :mod:`fmlab.autoft._losses` (tested):

- :class:`LogitTerms`: ce, entropy, dcm and hinge as one autograd node. Its forward shares one
  ``log_softmax`` and one entropy between the terms and computes the closed-form gradient
  ``∂L/∂z`` ``(B, C)`` with the loss (the backward only scales it). At batch sizes of tens and
  a handful of classes each torch op costs more in dispatch than in arithmetic, so the op count
  is what costs: one node of ~30 small ops instead of ~55 forward and backward autograd ops (a
  fifth less CPU per loss and gradient at ``(64, 9)`` logits). ce alone is ``F.cross_entropy``.
- :class:`PenaltyGrad`: the gradient of the four weight penalties, added in place to ``.grad``
  (no autograd graph), with scratch buffers allocated once per run.

On contiguous CPU float32/float64 tensors, with numba installed (the ``hpo`` extra), both run as
one-pass kernels (:mod:`fmlab.autoft._kernels`): the logit terms in a few microseconds instead
of ~30 dispatched ops, the penalties in one pass over the weights instead of seven. The torch
form below is the fallback and the reference the kernels are tested against.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["LogitTerms", "PenaltyGrad", "logit_terms"]

#: Elements per chunk of :meth:`PenaltyGrad.add_`: the passes over one chunk of the weight, its
#: init, its gradient and the scratch buffer (4 x 256 KiB in float32) stay in L2 cache, so only
#: the first pass reads memory.
_CHUNK = 1 << 16

_KERNEL_DTYPES = (torch.float32, torch.float64)


@functools.cache
def _numba() -> Any:
    """:mod:`fmlab.autoft._kernels`, or ``None`` without numba (or with ``FMLAB_NO_NUMBA=1``)."""
    if os.environ.get("FMLAB_NO_NUMBA") == "1":
        return None
    try:
        from fmlab.autoft import _kernels
    except ImportError:  # numba not installed: the torch form
        return None
    except Exception as e:  # e.g. no writable cache directory for the compiled kernels
        warnings.warn(f"fmlab.autoft: the numba kernels are unavailable ({e}); using torch ops "
                      f"(slower). Set NUMBA_CACHE_DIR to a writable directory to use them.",
                      RuntimeWarning, stacklevel=2)
        return None
    return _kernels


def _kernel_ok(*tensors: Any) -> bool:
    return all(t.device.type == "cpu" and t.dtype in _KERNEL_DTYPES for t in tensors)


def _bad_label(label: int, row: int, n_classes: int) -> None:
    raise ValueError(f"`labels` must be class indices in [0, {n_classes}) for logits of "
                     f"{n_classes} classes, but row {row} has label {label}. Fix the labels, or "
                     f"give the model's head one output per class.")


class LogitTerms(torch.autograd.Function):
    """``mean_i [λ_ce·(−log p_iy) + κ_i·H(p_i) + λ_h·Σ_{j≠y} max(0, z_ij − z_iy + 1)]``,
    ``κ_i = λ_entropy + s·λ_dcm·1[argmax z_i ≠ y_i]`` (``s`` the dcm sign), ``p = softmax z``.

    The gradient is closed-form (computed in the forward, scaled by the upstream gradient in the
    backward): with ``a_ij = 1[z_ij − z_iy + 1 ≥ 0]`` (the ``≥`` of autograd's
    ``clamp_min``) and ``e_y`` the one-hot label,

    .. math::
        B·∂L/∂z_i = λ_ce (p_i − e_y) − κ_i p_i ⊙ (\\log p_i + H_i) + λ_h (a_i − e_y Σ_j a_ij)

    (``a_iy = 1``, so the ``j = y`` column gets ``−λ_h Σ_{j≠y} a_ij``; the indicator in κ is
    piecewise constant and has no gradient).
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, y: torch.Tensor, ce: float, entropy: float,
                dcm: float, hinge: float) -> torch.Tensor:
        n = len(z)
        if z.dim() != 2 or y.shape != (n,):
            raise ValueError(f"`logits` must be (B, C) and `labels` (B,), but got logits "
                             f"{tuple(z.shape)} and labels {tuple(y.shape)}. Pass one label "
                             f"per row of logits.")
        terms = _kernel_terms if n and _kernel_ok(z) and _numba() is not None else _torch_terms
        total, gz = terms(z.detach(), y.detach(), ce, entropy, dcm, hinge)
        ctx.save_for_backward(gz)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        (gz,) = ctx.saved_tensors
        return gz * grad, None, None, None, None, None


def _kernel_terms(z: torch.Tensor, y: torch.Tensor, ce: float, entropy: float, dcm: float,
                  hinge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`LogitTerms`' value and ``∂L/∂z`` from the numba kernel (one pass)."""
    zc, yc = z.contiguous(), y.to(torch.int64).contiguous()
    gz = torch.empty_like(zc)
    value, bad = _numba().logit_terms(zc.numpy(), yc.numpy(), float(ce), float(entropy),
                                      float(dcm), float(hinge), gz.numpy())
    if bad >= 0:
        _bad_label(int(yc[bad]), bad, z.shape[1])
    return z.new_tensor(value), gz


def _torch_terms(z: torch.Tensor, y: torch.Tensor, ce: float, entropy: float, dcm: float,
                 hinge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`LogitTerms`' value and ``∂L/∂z`` as torch ops: the loss as sums over the batch,
    its gradient computed with it (fewer ops than a per-example vector and a backward)."""
    n, c = z.shape
    if n and (int(y.min()) < 0 or int(y.max()) >= c):
        row = int(((y < 0) | (y >= c)).nonzero()[0, 0])
        _bad_label(int(y[row]), row, c)
    yc = y.unsqueeze(1)  # (B, 1)
    total = z.new_zeros(())
    col: Any = 0.0  # what the label column of the gradient loses: (B,) or a scalar
    gz: Any = None  # (B, C)
    if ce or entropy or dcm:
        logp = torch.log_softmax(z, dim=-1)  # (B, C)
        p = logp.exp()
        if entropy or dcm:
            neg_h = torch.linalg.vecdot(p, logp)  # (B,) = −H
            if dcm:
                kappa = (z.argmax(-1) != y).to(z.dtype).mul_(dcm).add_(entropy)  # (B,)
                total = total.sub(torch.dot(kappa, neg_h))
                t = (logp - neg_h.unsqueeze(1)).mul_(kappa.unsqueeze(1).neg_())
            else:
                total = total.sub(neg_h.sum(), alpha=entropy)
                t = (logp - neg_h.unsqueeze(1)).mul_(-entropy)
            gz = (t.add_(ce) if ce else t).mul_(p)  # p ⊙ (λ_ce − κ (log p + H))
        else:
            gz = p * ce
        if ce:
            total = total.sub(logp.gather(1, yc).sum(), alpha=ce)
            col = ce
    if hinge:
        m = (z - z.gather(1, yc)).add_(1.0)  # (B, C); the j = y entry is exactly 1
        act = m >= 0
        total = total.add(m.clamp_min_(0.0).sum().sub_(n), alpha=hinge)
        gz = act.to(z.dtype).mul_(hinge) if gz is None else gz.add_(act, alpha=hinge)
        col = act.sum(1, dtype=z.dtype).mul_(hinge).add_(col)
    col = col.unsqueeze(1) if isinstance(col, torch.Tensor) else gz.new_full((n, 1), col)
    gz.scatter_add_(1, yc, col.neg_())
    return total.div_(n), gz.div_(n)


def logit_terms(z: Any, y: Any, *, ce: float = 0.0, entropy: float = 0.0, dcm: float = 0.0,
                hinge: float = 0.0) -> Any:
    """The weighted logit terms (``dcm`` carries its sign) as one autograd node; ce alone goes
    through ``F.cross_entropy`` (the same value, torch's own fused kernel)."""
    if ce and not (entropy or dcm or hinge):
        loss = torch.nn.functional.cross_entropy(z, y)
        return loss if ce == 1.0 else ce * loss
    return LogitTerms.apply(z, y, ce, entropy, dcm, hinge)


class PenaltyGrad:
    """Adds the gradient of ``λ₁Σ|θ|/P + λ₂Σθ²/P + λ₃Σ|θ−θ₀|/P + λ₄Σ(θ−θ₀)²/P`` to ``.grad``.

    With ``d = θ − θ₀``: ``∇ = (λ₁ sign θ + 2λ₂ θ + λ₃ sign d + 2λ₄ d) / P``, the gradient
    autograd gives for these terms (``sign 0 = 0``, as for ``abs``). Built once per run (scratch
    buffer and chunk views made here, not per step); :meth:`add_` runs after ``loss.backward()``
    and before clipping and ``optimizer.step()``.

    Why chunks: the terms are memory-bound elementwise passes (seven for all four: ``d``,
    ``sign d``, ``sign θ`` and four in-place adds). Over a whole weight matrix each pass streams
    it from L3 or memory; over a chunk of :data:`_CHUNK` elements the seven passes reuse what
    the first one brought into L1/L2, several times faster per element on one core, for a few
    microseconds of dispatch per op.

    Args:
        weights: ``{term: λ}``; only the penalty terms are read.
        params: The trainable parameters θ (updated in place by the optimizer).
        init_params: A real copy θ₀ of the pretrained parameters, aligned with ``params``
            (needed by l1init / l2init).
    """

    def __init__(self, weights: Mapping[str, float], params: Iterable[Any],
                 init_params: Iterable[Any] = ()) -> None:
        self.params = list(params)
        n = max(1, sum(p.numel() for p in self.params))
        lam = {t: float(weights.get(t, 0.0)) for t in ("l1zero", "l2zero", "l1init", "l2init")}
        self.l1, self.l2 = lam["l1zero"] / n, lam["l2zero"] / n
        self.l1d, self.l2d = lam["l1init"] / n, lam["l2init"] / n
        self.active = bool(self.params) and any(lam.values())
        init = list(init_params) if self.active and (self.l1d or self.l2d) else []
        if init and len(init) != len(self.params):
            raise ValueError("l1init/l2init need the pretrained parameters (init_params) "
                             "aligned with params.")
        # the one-pass kernel: flat θ₀ (contiguous), the coefficients in each parameter's dtype
        self.kernel = _numba() if self.active and _kernel_ok(*self.params, *init) else None
        if self.kernel is not None:
            self.flat_init = [w0.detach().to(p.dtype).contiguous().reshape(-1).numpy()
                              for w0, p in zip(init, self.params, strict=True)] if init else []
            self.coef = [tuple(p.detach().numpy().dtype.type(a) for a in
                               (self.l1, 2 * self.l2, self.l1d, 2 * self.l2d))
                         for p in self.params]
        # θ₀ flattened once (a copy only when not contiguous), cut into chunk views
        self.init = [w0.detach().reshape(-1).split(_CHUNK) for w0 in init]
        self.bufs = [torch.empty(min(p.numel(), _CHUNK), dtype=p.dtype, device=p.device)
                     for p in self.params] if self.active and (self.l1 or init) else []

    @torch.no_grad()
    def add_(self, value: bool = False) -> float:
        """Add the gradient to each parameter's ``.grad`` (created when ``None``); return the
        penalties' weighted value when ``value`` (a few extra reductions), else 0.0."""
        total = 0.0
        if not self.active:
            return total
        for i, p in enumerate(self.params):
            if p.grad is None:
                p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
            elif not p.grad.is_contiguous():  # e.g. a transposed weight's: flat views need it
                p.grad = p.grad.contiguous()
            add = self._add_kernel if self.kernel is not None and p.is_contiguous() else \
                self._add_chunked
            total += add(i, p, value)
        return total

    def _add_kernel(self, i: int, p: Any, value: bool) -> float:
        """One parameter through the numba kernel: one pass over θ, θ₀ and the gradient."""
        w = p.detach().view(-1).numpy()
        w0 = self.flat_init[i] if self.flat_init else w
        self.kernel.penalty_grad(w, w0, p.grad.view(-1).numpy(), *self.coef[i])
        if not value:
            return 0.0
        s1, s2, s3, s4 = self.kernel.penalty_value(w, w0)
        return self.l1 * s1 + self.l2 * s2 + self.l1d * s3 + self.l2d * s4

    def _add_chunked(self, i: int, p: Any, value: bool) -> float:
        """One parameter as torch ops over cache-sized chunks."""
        total = 0.0
        # (n,) views cut into chunks, all in the same (logical) order
        ws, gs = p.detach().reshape(-1).split(_CHUNK), p.grad.view(-1).split(_CHUNK)
        w0s = self.init[i] if self.init else ws
        buf = self.bufs[i] if self.bufs else None
        for w, w0, g in zip(ws, w0s, gs, strict=True):
            b = None if buf is None else buf[:len(w)]
            if self.init:
                torch.sub(w, w0, out=b)  # d = θ − θ₀
                if value:
                    total += self.l1d * float(b.norm(1)) + self.l2d * float(b.dot(b))
                if self.l2d:
                    g.add_(b, alpha=2 * self.l2d)
                if self.l1d:
                    g.add_(b.sign_(), alpha=self.l1d)  # type: ignore[union-attr]
            if self.l2:
                g.add_(w, alpha=2 * self.l2)
            if self.l1:
                g.add_(torch.sign(w, out=b), alpha=self.l1)
            if value:
                total += self.l1 * float(w.norm(1)) + self.l2 * float(w.dot(w))
        return total
