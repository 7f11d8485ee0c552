"""Projected-gradient attacks on images (PGD, BIM), on the shared attack loop.

The attacked image ``x`` is a float tensor with pixels in [0, 1], shaped ``(3, H, W)`` or a batch
``(B, 3, H, W)`` (norms are taken per image, over the last three dimensions), at the image's own
stored resolution: the victim's resize and normalisation belong inside the objective, so that the
perturbation lives on the pixels the attacker actually controls. An objective maps a batch of
inputs ``(N, *x.shape)`` to losses ``(N,)`` that the attack lowers; it may have
``is_success(x) -> bool`` for early stopping.

One step, with gradient :math:`g = \\nabla_x \\mathcal{L}(x_t)` (and with momentum
:math:`\\mu > 0`, :math:`m_{t} = \\mu m_{t-1} + g / \\lVert g \\rVert_1`, used in place of g):

.. math::

    x_{t+1} = \\Pi_{\\lVert x - x_0 \\rVert_p \\le \\varepsilon,\\ x \\in [0,1]}
        \\big(x_t - \\alpha\\, d(g)\\big), \\qquad
    d(g) = \\operatorname{sign}(g)\\ (L_\\infty), \\quad g / \\lVert g \\rVert_2\\ (L_2).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

from fmlab._validation import check_bool, check_int, check_option, check_real
from fmlab.attacks._core import AttackResult, BaseAttack, Proposal, run_attack

if TYPE_CHECKING:
    import torch

__all__ = ["BIM", "CWA", "PGD", "as_image", "format_eps", "quantize"]


def format_eps(value: float) -> str:
    """A budget as a fraction of the pixel range: ``16/256``, ``16/255``, ``1/100``.

    Denominators 255 and 256 (the two conventions of the literature) are kept as they are.

    Example:
        >>> format_eps(16 / 256), format_eps(16 / 255), format_eps(0.0)
        ('16/256', '16/255', '0')
    """
    if value == 0:
        return "0"
    for den in (256, 255):
        num = value * den
        if abs(num - round(num)) < 1e-6:
            return f"{round(num)}/{den}"
    frac = Fraction(value).limit_denominator(10_000)
    return f"{frac.numerator}/{frac.denominator}"


def as_image(x: Any, name: str = "x") -> torch.Tensor:
    """An image (batch) as a float tensor in [0, 1]: uint8 pixels are divided by 255.

    Raises:
        TypeError: neither uint8 nor floating point. ValueError: floats outside [0, 1], NaN, or
            fewer than 3 dimensions.
    """
    import numpy as np
    import torch

    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.array(x))
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise TypeError(
            f"The image {name!r} must hold uint8 pixels (0-255) or floats in [0, 1]. "
            f"Got dtype {x.dtype} instead."
        )
    if x.ndim < 3:
        raise ValueError(
            f"The image {name!r} must be shaped (C, H, W) or (B, C, H, W). "
            f"Got shape {tuple(x.shape)} instead."
        )
    if x.numel() == 0:
        raise ValueError(f"The image {name!r} is empty (shape {tuple(x.shape)}); pass pixels.")
    lo, hi = torch.aminmax(x.detach())  # one pass; NaN propagates and fails both tests below
    if not (float(lo) >= 0.0 and float(hi) <= 1.0):
        raise ValueError(
            f"The image {name!r} holds floats, which must lie in [0, 1]. Got values in "
            f"[{float(x.nan_to_num().min()):.3g}, {float(x.nan_to_num().max()):.3g}]; "
            f"divide uint8 pixels by 255."
        )
    return x


def _per_image_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm over the last three dims, shaped to broadcast against ``t``."""
    return t.flatten(-3).norm(dim=-1)[..., None, None, None]


class PGD(BaseAttack):
    """Projected gradient descent on images, L∞ or L2, with optional random start and momentum.

    Args:
        eps: Budget ε in (0, 1]: the largest L∞ change of a pixel, or the L2 norm of the change
            per image (pixels in [0, 1]; ``16/256`` in Wu et al.).
        step_size: Step α per iteration (``1/255`` for BIM in Wu et al.).
        steps: Number of gradient steps.
        norm: ``"linf"`` or ``"l2"``.
        random_start: Start from a uniform point of the ε-ball (L∞) or a random direction at a
            uniform radius (L2) instead of the clean image.
        momentum: Decay μ of the L1-normalised gradient accumulator (MI-FGSM); 0 for none.
        max_queries, max_time_s: Optional extra budgets (objective evaluations, seconds).
        random_state: Seed of the random start.
        keep_best: Return the evaluated input with the lowest loss as ``x_adv`` (scoring the last
            iterate costs one extra forward pass); ``False`` returns the last iterate, as the
            textbook PGD (and torchattacks) does, with ``best_loss`` NaN.

    The result's ``x_adv`` is the evaluated input with the lowest loss (or the first one that
    passed the success test; the last iterate with ``keep_best=False``); ``x_final`` is the last
    iterate. Both stay in the ε-ball and in [0, 1]. ``steps=0`` returns the input unchanged.

    Example:
        >>> attack = PGD(eps=16 / 256, step_size=1 / 255, steps=50, random_state=0)
        >>> repr(attack)[:30]  # every parameter, budgets as fractions
        'PGD(eps=16/256, max_queries=No'

    References:
        Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks
        (arXiv:1706.06083); Dong et al., Boosting Adversarial Attacks with Momentum
        (arXiv:1710.06081); Wu et al., Dissecting Adversarial Robustness of Multimodal LM Agents
        (arXiv:2406.12814).
    """

    name: ClassVar[str] = "pgd"
    _default_random_start: ClassVar[bool] = True

    def __init__(
        self,
        eps: float = 16 / 256,
        step_size: float = 1 / 255,
        steps: int = 100,
        *,
        norm: str = "linf",
        random_start: bool | None = None,
        momentum: float = 0.0,
        max_queries: int | None = None,
        max_time_s: float | None = None,
        random_state: int | None = None,
        keep_best: bool = True,
    ) -> None:
        owner = type(self).__name__
        self.eps = check_real(eps, "eps", owner=owner, low=0.0, high=1.0, closed="right")
        self.step_size = check_real(step_size, "step_size", owner=owner, low=0.0)
        self.steps = check_int(steps, "steps", owner=owner, low=0)
        self.norm = check_option(norm, "norm", ("linf", "l2"), owner=owner)
        self.random_start = check_bool(
            self._default_random_start if random_start is None else random_start,
            "random_start", owner=owner,
        )
        self.momentum = check_real(momentum, "momentum", owner=owner, low=0.0, closed="left")
        self.max_queries = max_queries
        self.max_time_s = max_time_s
        self.random_state = random_state
        self.keep_best = check_bool(keep_best, "keep_best", owner=owner)

    def __repr__(self) -> str:
        params = self.get_params(deep=False)
        shown = {k: (format_eps(v) if k in ("eps", "step_size") else repr(v))
                 for k, v in params.items()}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in shown.items())})"

    # -- the loop's hooks ---------------------------------------------------------------------
    def keeps_best(self) -> bool:
        return self.keep_best

    def init(
        self, objective: Any, x0: torch.Tensor, rng: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import torch

        buffers = {"momentum": torch.zeros_like(x0)} if self.momentum > 0 else {}
        if not self.random_start or self.steps == 0:
            return x0.clone(), buffers
        if self.norm == "linf":
            noise = torch.empty_like(x0).uniform_(-self.eps, self.eps, generator=rng)
        else:
            noise = torch.randn(x0.shape, generator=rng, dtype=x0.dtype, device=x0.device)
            radius = torch.rand(noise.shape[:-3] + (1, 1, 1), generator=rng, dtype=x0.dtype,
                                device=x0.device)
            noise = noise / _per_image_norm(noise).clamp_min(1e-12) * radius * self.eps
        return (x0 + noise).clamp(0.0, 1.0), buffers

    def losses(self, objective: Any, xs: torch.Tensor) -> torch.Tensor:
        return objective(xs).detach().reshape(xs.shape[0])

    def propose(
        self,
        objective: Any,
        x: torch.Tensor,
        buffers: dict[str, torch.Tensor],
        rng: torch.Generator,
    ) -> Proposal:
        import torch

        xg = x.detach().requires_grad_(True)
        loss = objective(xg[None]).reshape(())  # scalar: one input
        (grad,) = torch.autograd.grad(loss, xg)
        if not grad.is_contiguous():  # e.g. an expanded gradient of a sum: not writable
            grad = grad.contiguous()
        # from here on the gradient is ours alone (autograd made it): overwritten in place
        if self.momentum > 0:
            l1 = grad.abs().flatten(-3).sum(-1)[..., None, None, None].clamp_min(1e-12)
            momentum = buffers["momentum"].mul_(self.momentum).add_(grad.div_(l1))
            step = momentum.sign() if self.norm == "linf" else (
                momentum / _per_image_norm(momentum).clamp_min(1e-12))
        elif self.norm == "linf":
            step = grad.sign_()
        else:
            step = grad.div_(_per_image_norm(grad).clamp_min(1e-12))
        # x - α·d(g) in one pass (α·sign is exact, so this equals the two-op textbook form)
        candidate = torch.add(x.detach(), step, alpha=-self.step_size)
        return Proposal(candidate[None], float(loss.detach()), 1)

    def project(
        self, candidates: torch.Tensor, x0: torch.Tensor, objective: Any = None
    ) -> torch.Tensor:
        delta = candidates - x0  # the one new tensor; the rest works in place on it
        if self.norm == "linf":
            delta.clamp_(-self.eps, self.eps)
        else:
            delta.mul_((self.eps / _per_image_norm(delta).clamp_min(1e-12)).clamp_(max=1.0))
        return delta.add_(x0).clamp_(0.0, 1.0)

    # -- public ---------------------------------------------------------------------------------
    def __call__(self, objective: Any, x: Any, **kwargs: Any) -> AttackResult:
        """Attack ``objective`` from the image ``x`` (uint8, or float in [0, 1]).

        Keyword arguments are those of :func:`fmlab.attacks.run_attack` (``success``,
        ``snapshot_dir``, ``snapshot_every``, ``resume``, ``progress``).
        """
        return run_attack(self, objective, as_image(x), **kwargs)

    def within_budget(self, x_adv: torch.Tensor, x0: torch.Tensor, *, tol: float = 1e-6) -> bool:
        """Whether ``x_adv`` is in [0, 1] and within ε of ``x0`` in this attack's norm."""
        if float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
            return False
        delta = x_adv - x0
        if self.norm == "linf":
            return float(delta.abs().max()) <= self.eps + tol
        return float(_per_image_norm(delta).max()) <= self.eps * (1 + tol) + tol


class BIM(PGD):
    """The basic iterative method: :class:`PGD` started from the clean image.

    Wu et al.'s captioner attack: ``BIM(eps=16/255, step_size=1/255, steps=4000)`` with an
    early stop on an exact caption match. Same arguments as :class:`PGD`; ``random_start``
    defaults to ``False``.

    References:
        Kurakin et al., Adversarial Examples in the Physical World (arXiv:1607.02533).
    """

    name: ClassVar[str] = "bim"
    _default_random_start: ClassVar[bool] = False



def quantize(x_adv: Any, x0: Any, eps: float | None = None) -> Any:
    """``x_adv`` as uint8 pixels ``(..., 3, H, W)``, rounded without leaving the L∞ ε-ball.

    A perturbation found in float must be stored as an image: plain rounding can move a pixel
    up to half a level beyond ε; here each pixel is clipped to the levels within
    ``floor(255 ε)`` of the clean pixel (``x0`` in [0, 1] or uint8).
    """
    import torch

    clean = as_image(x0, "x0")
    q = torch.round(as_image(x_adv, "x_adv") * 255.0)
    if eps is not None:
        base = torch.round(clean * 255.0)
        k = math.floor(float(eps) * 255.0 + 1e-6)
        q = torch.minimum(torch.maximum(q, base - k), base + k)
    return q.clamp(0, 255).to(torch.uint8)


class CWA(PGD):
    """Common Weakness Attack over an ensemble: an inner pass over the members, an outer sign step.

    Each step visits the members in turn from the current point: member k takes an inner step of
    ``inner_step`` along its momentum of L2-normalised gradients, clipped to the ε-ball; the
    change the whole pass made is then accumulated (L1-normalised) in an outer momentum, and the
    outer step moves ``step_size`` along its sign. The objective must have
    ``member_losses(xs) -> list of (N,)`` (e.g. :class:`~fmlab.attacks.ClipEnsembleObjective`,
    optionally wrapped in :class:`~fmlab.attacks.SpectrumAugmented`, which gives SSA-CWA).

    Args:
        inner_step: Inner step size on L2-normalised gradients (250/255 in Wu et al.'s code).
        momentum: μ of both momenta (1.0 in Wu et al.).
        Others: as :class:`PGD` (``random_start`` defaults to ``False``).

    References:
        Chen et al., Rethinking Model Ensemble in Transfer-based Adversarial Attacks
        (arXiv:2303.09105); Wu et al. (arXiv:2406.12814).
    """

    name: ClassVar[str] = "cwa"
    _default_random_start: ClassVar[bool] = False

    def __init__(
        self,
        eps: float = 16 / 256,
        step_size: float = 16 / 256 / 5,
        steps: int = 100,
        *,
        inner_step: float = 250 / 255,
        norm: str = "linf",
        random_start: bool | None = None,
        momentum: float = 1.0,
        max_queries: int | None = None,
        max_time_s: float | None = None,
        random_state: int | None = None,
    ) -> None:
        super().__init__(eps, step_size, steps, norm=norm, random_start=random_start,
                         momentum=momentum, max_queries=max_queries, max_time_s=max_time_s,
                         random_state=random_state)
        self.inner_step = check_real(inner_step, "inner_step", owner="CWA", low=0.0)

    def init(
        self, objective: Any, x0: torch.Tensor, rng: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import torch

        if not callable(getattr(objective, "member_losses", None)):
            inner = getattr(objective, "objective", None)
            if not callable(getattr(inner, "member_losses", None)):
                raise TypeError(
                    "CWA needs an ensemble objective with member_losses(xs) (such as "
                    f"ClipEnsembleObjective). Got {type(objective).__name__}."
                )
        x, _ = super().init(objective, x0, rng)
        return x, {"outer": torch.zeros_like(x0), "inner": torch.zeros_like(x0),
                   "x0": x0.clone()}

    @staticmethod
    def _members(objective: Any, xs: torch.Tensor) -> list[torch.Tensor]:
        if hasattr(objective, "member_losses"):
            return list(objective.member_losses(xs))
        wrapped = objective.objective  # SpectrumAugmented: average each member over copies
        return _augmented_members(objective, wrapped, xs)

    def propose(
        self,
        objective: Any,
        x: torch.Tensor,
        buffers: dict[str, torch.Tensor],
        rng: torch.Generator,
    ) -> Proposal:
        import torch

        x0 = buffers["x0"]
        inner = x.detach().clone()
        n_members = len(self._members(objective, x.detach()[None]))
        for k in range(n_members):
            xg = inner.requires_grad_(True)
            loss = self._members(objective, xg[None])[k].reshape(())
            (grad,) = torch.autograd.grad(loss, xg)
            buffers["inner"].mul_(self.momentum).add_(
                grad / _per_image_norm(grad).clamp_min(1e-12))
            inner = self.project((inner.detach() - self.inner_step * buffers["inner"])[None],
                                 x0)[0]
        change = inner - x.detach()
        l1 = change.abs().flatten(-3).sum(-1)[..., None, None, None].clamp_min(1e-12)
        buffers["outer"].mul_(self.momentum).add_(change / l1)
        candidate = x.detach() + self.step_size * buffers["outer"].sign()
        with torch.no_grad():
            loss_x = float(objective(x.detach()[None]).reshape(()))
        return Proposal(candidate[None], loss_x, n_members + 1)


def _augmented_members(wrapper: Any, ensemble: Any, xs: torch.Tensor) -> list[torch.Tensor]:
    """Per-member losses averaged over the spectrum-augmented copies of ``wrapper``."""
    sums: list[torch.Tensor] | None = None
    for x_aug in wrapper.copies(xs):
        losses = ensemble.member_losses(x_aug)
        sums = losses if sums is None else [a + b for a, b in zip(sums, losses, strict=True)]
    assert sums is not None
    return [s / wrapper.n for s in sums]
