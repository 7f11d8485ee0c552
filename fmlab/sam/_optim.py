"""Sharpness-aware minimization as a ``torch.optim.Optimizer`` wrapping any base optimizer.

One step is two forward-backward passes:

1. gradients ``g`` at the current weights ``w`` (the first pass, done by the caller or the closure);
   :meth:`SAM.first_step` saves ``w`` and moves to ``w + eps``;
2. gradients at ``w + eps`` (the second pass); :meth:`SAM.second_step` restores ``w`` exactly and
   lets the base optimizer step with the perturbed gradient.

The SAM object shares ``param_groups`` and ``state`` with its base optimizer, so a learning-rate
scheduler built on the SAM object drives the base optimizer, and ``state_dict`` holds both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from fmlab._validation import check_bool, check_real

__all__ = ["SAM", "frozen_bn_stats"]

_TWO_PASS_HELP = (
    "SAM needs two forward-backward passes per step. Either pass a closure that clears the "
    "gradients, computes the loss, calls backward() and returns the loss: "
    "optimizer.step(closure); or run the passes yourself: loss.backward(); "
    "optimizer.first_step(); loss_fn(model(x), y).backward(); optimizer.second_step()."
)


def _group_by_device_dtype(
    params: list[torch.Tensor], *others: list[torch.Tensor]
) -> dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]]:
    """Bucket aligned tensor lists by (device, dtype), as the ``torch._foreach_*`` ops need."""
    buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
    for i, p in enumerate(params):
        bucket = buckets.setdefault((p.device, p.dtype), [[] for _ in range(1 + len(others))])
        bucket[0].append(p)
        for j, other in enumerate(others):
            bucket[j + 1].append(other[i])
    return buckets


class SAM(Optimizer):
    r"""Sharpness-aware minimization (SAM) and adaptive SAM (ASAM) around a base optimizer.

    Minimizes :math:`\max_{\|\epsilon\|_2 \le \rho} L(w + \epsilon)` to first order:

    .. math::

        \hat\epsilon = \rho \, \frac{T_w^2\, g}{\|T_w\, g\|_2 + \delta}, \qquad
        g_{\mathrm{SAM}} = \nabla L(w + \hat\epsilon), \qquad
        w \leftarrow \mathrm{base\_step}(w, g_{\mathrm{SAM}})

    with :math:`g = \nabla L(w)`, :math:`T_w = I` for SAM and :math:`T_w = |w|` (elementwise) for
    ASAM (``adaptive=True``), and :math:`\delta` = ``perturb_eps``. The norm runs over every
    parameter of the groups with ``perturb=True``; with ``rho=0`` the step is the base optimizer's
    step exactly.

    Per-group options (in ``defaults`` and overridable per param group): ``rho``, ``adaptive``
    and ``perturb``. A group with ``perturb=False`` is stepped but not perturbed, which gives
    *last-layer SAM* (LSAM, Springer et al. 2024): put the body in a ``perturb=False`` group.

    Which gradient is used where:

    - weight decay, momentum and the learning rate are the base optimizer's and act on the
      restored weights ``w`` with the perturbed gradient;
    - gradient clipping belongs between the second backward and :meth:`second_step` (it then
      rescales the perturbed gradient); the perturbation itself is invariant to rescaling ``g``;
    - gradient accumulation: accumulate the first pass over micro-batches, call
      :meth:`first_step`, accumulate the second pass, call :meth:`second_step`;
    - mixed precision (``torch.amp.GradScaler``): ``eps`` does not depend on the loss scale. Call
      ``first_step()`` on the scaled gradients (a non-finite first-pass gradient skips the
      perturbation), then after the second backward ``optimizer.unperturb()``,
      ``scaler.step(optimizer.base_optimizer)``, ``scaler.update()``;
    - DDP: run the first pass under ``model.no_sync()`` so each worker perturbs with its *local*
      gradient (m-sharpness with m = the local batch, as in Foret et al.); the second pass is
      synchronised, so every worker applies the same all-reduced perturbed gradient and the
      replicas stay identical. Without ``no_sync`` the first pass is all-reduced too and all
      workers share one ``eps`` (n-SAM over the global batch).

    Args:
        params: Parameters or param-group dicts, as for any torch optimizer.
        base_optimizer: The base optimizer *class*, e.g. ``torch.optim.SGD``. It is built on the
            same param groups with ``**base_kwargs``.
        rho: Radius of the perturbation ball (``>= 0``). 0.05 is the usual SAM value, about 2.0
            for ASAM.
        adaptive: ASAM: scale the perturbation elementwise by ``|w|`` (Kwon et al. 2021).
        perturb_eps: Added to the gradient norm to avoid division by zero.
        **base_kwargs: Hyperparameters of the base optimizer (``lr``, ``momentum``,
            ``weight_decay``, ...).

    Raises:
        TypeError: If ``base_optimizer`` is an optimizer instance or not an optimizer class.
        ValueError: If ``rho`` is negative.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = opt.step(closure)  # loss at w, before the update

    References:
        Foret, Kleiner, Mobahi, Neyshabur. Sharpness-Aware Minimization for Efficiently Improving
        Generalization. ICLR 2021, arXiv 2010.01412.
        Kwon, Kim, Park, Choi. ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
        Learning of Deep Neural Networks. ICML 2021, arXiv 2102.11600.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[Optimizer] = torch.optim.SGD,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        perturb_eps: float = 1e-12,
        **base_kwargs: Any,
    ) -> None:
        if isinstance(base_optimizer, Optimizer):
            raise TypeError(
                "The 'base_optimizer' parameter of SAM must be an optimizer class such as "
                f"torch.optim.SGD, not an instance ({type(base_optimizer).__name__} object). "
                "Pass the class and its hyperparameters as keyword arguments: "
                "SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)."
            )
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer)):
            raise TypeError(
                "The 'base_optimizer' parameter of SAM must be a torch.optim.Optimizer subclass "
                f"such as torch.optim.SGD. Got {base_optimizer!r} of type "
                f"{type(base_optimizer).__name__} instead."
            )
        if issubclass(base_optimizer, SAM):
            raise TypeError(
                "The 'base_optimizer' parameter of SAM must be a plain torch.optim.Optimizer "
                f"subclass such as torch.optim.SGD; got {base_optimizer.__name__}, a SAM "
                "optimizer itself. SAM wraps the optimizer that takes the second step."
            )
        if base_optimizer is torch.optim.LBFGS:
            raise TypeError(
                "The 'base_optimizer' parameter of SAM cannot be torch.optim.LBFGS: it "
                "re-evaluates the loss through its own closure, which would step from the "
                "perturbed weights. Use a first-order optimizer such as torch.optim.SGD or "
                "torch.optim.AdamW."
            )
        if isinstance(params, torch.Tensor):
            raise TypeError(
                "The 'params' parameter of SAM must be an iterable of tensors or of param-group "
                "dicts, e.g. model.parameters(). Got a single tensor; wrap it in a list."
            )
        rho = check_real(rho, "rho", owner="SAM", low=0.0, closed="left")
        adaptive = check_bool(adaptive, "adaptive", owner="SAM")
        self.perturb_eps = check_real(perturb_eps, "perturb_eps", owner="SAM", low=0.0,
                                      closed="left")
        defaults = dict(rho=rho, adaptive=adaptive, perturb=True, **base_kwargs)
        super().__init__(params, defaults)
        for group in self.param_groups:
            check_real(group["rho"], "rho", owner="SAM (param group)", low=0.0, closed="left")
            check_bool(group["adaptive"], "adaptive", owner="SAM (param group)")
            check_bool(group["perturb"], "perturb", owner="SAM (param group)")
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        # One set of groups and state: schedulers, add_param_group and state_dict see both.
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self._stage = "idle"  # "idle" -> first_step -> "perturbed" -> unperturb -> "restored"
        self._stepped: list[torch.Tensor] = []

    # ------------------------------------------------------------------ the two passes
    @property
    def is_perturbed(self) -> bool:
        """Whether the weights currently sit at ``w + eps`` (between first and second step)."""
        return self._stage == "perturbed"

    def _perturbable(self) -> list[tuple[dict[str, Any], list[torch.Tensor]]]:
        out = []
        for group in self.param_groups:
            if group["perturb"]:
                out.append((group, [p for p in group["params"] if p.grad is not None]))
        return out

    @torch.no_grad()
    def _grad_norm(self, groups: list[tuple[dict[str, Any], list[torch.Tensor]]]) -> torch.Tensor:
        """``||T_w g||_2`` over all perturbed parameters, as a 0-d tensor."""
        norms: list[torch.Tensor] = []
        for group, params in groups:
            if not params:
                continue
            grads = [p.grad for p in params]
            for (_dev, _dtype), (ps, gs) in _group_by_device_dtype(params, grads).items():
                if group["adaptive"]:
                    gs = torch._foreach_mul(gs, torch._foreach_abs(ps))
                norms.extend(torch._foreach_norm(gs))
        if not norms:
            return torch.zeros((), dtype=torch.float32)
        device = norms[0].device
        # float32 at least (fp16/bf16 norms would overflow), float64 when the parameters are.
        dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
        # sqrt(sum of squared per-tensor norms), in this order so the result is bitwise
        # reproducible against other foreach implementations.
        return torch.stack([n.to(device, dtype) for n in norms]).square().sum().sqrt()

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Save ``w`` and move to ``w + eps`` using the gradients currently in ``.grad``.

        Args:
            zero_grad: Clear the gradients afterwards (set them to None), so the second backward
                pass starts fresh. Keep the default unless you know why.

        Raises:
            RuntimeError: If the weights are already perturbed, or no parameter has a gradient.
        """
        if self._stage == "perturbed":
            raise RuntimeError(
                "SAM.first_step() was called twice without second_step() (or unperturb()) in "
                "between; the weights are already at w + eps."
            )
        groups = self._perturbable()
        if not any(params for _, params in groups) and any(
            g["perturb"] and g["rho"] > 0 for g in self.param_groups
        ):
            raise RuntimeError(
                "SAM.first_step() found no gradients: no perturbed parameter has a .grad. Call "
                "loss.backward() before first_step(); parameters that should not be perturbed "
                "belong in a param group with perturb=False."
            )
        self._stepped = [p for _, params in groups for p in params]
        norm = self._grad_norm(groups)
        # A non-finite norm (overflow under a GradScaler) skips the perturbation for this step;
        # the scaler then skips the step itself.
        finite = bool(torch.isfinite(norm))
        for group, params in groups:
            if not params:
                continue
            scale = group["rho"] / (norm + self.perturb_eps) if finite else None
            grads = [p.grad for p in params]
            for (_dev, _dtype), (ps, gs) in _group_by_device_dtype(params, grads).items():
                # One vectorised copy of w (x * 1.0 is bitwise x), restored by unperturb().
                for p, w in zip(ps, torch._foreach_mul(ps, 1.0), strict=True):
                    self.state[p]["sam_w"] = w
                if scale is None or group["rho"] == 0:
                    continue
                if group["adaptive"]:
                    eps = torch._foreach_mul(ps, ps)  # T_w^2 = w^2
                    torch._foreach_mul_(eps, gs)
                else:
                    eps = torch._foreach_mul(gs, 1.0)
                torch._foreach_mul_(eps, scale.to(device=ps[0].device, dtype=ps[0].dtype))
                torch._foreach_add_(ps, eps)
        self._stage = "perturbed"
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def unperturb(self) -> None:
        """Restore the saved weights ``w`` exactly (bitwise), keeping the current gradients.

        Needed only when something other than :meth:`second_step` performs the update (a
        ``GradScaler``) or when the second pass must run at ``w`` (logit-only SAM).
        """
        if self._stage != "perturbed":
            return
        for group in self.param_groups:
            params = [p for p in group["params"] if "sam_w" in self.state.get(p, {})]
            if not params:
                continue
            saved = [self.state[p].pop("sam_w") for p in params]
            for (_d, _t), (ps, ws) in _group_by_device_dtype(params, saved).items():
                torch._foreach_copy_(ps, ws)
        self._stage = "restored"

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` and let the base optimizer step with the gradients at ``w + eps``.

        Raises:
            RuntimeError: If :meth:`first_step` was not called, or no perturbed parameter got a
                gradient in the second pass.
        """
        if self._stage == "idle":
            raise RuntimeError(
                "SAM.second_step() was called without first_step(). " + _TWO_PASS_HELP
            )
        if self._stepped and all(p.grad is None for p in self._stepped):
            raise RuntimeError(
                "SAM.second_step() found no gradients at the perturbed weights: call "
                "loss.backward() on the loss recomputed after first_step() before second_step()."
            )
        self.unperturb()
        self.base_optimizer.step()
        self._stage = "idle"
        self._stepped = []
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One full SAM step. ``closure`` runs twice: at ``w`` and at ``w + eps``.

        The closure must clear the gradients, compute the loss, call ``backward()`` and return
        the loss (the torch contract, as for LBFGS). Returns the loss at ``w``, before the update.

        Raises:
            TypeError: If no closure is given (the two passes cannot be run without one).
        """
        if closure is None:
            raise TypeError("SAM.step() requires a closure. " + _TWO_PASS_HELP)
        with torch.enable_grad():
            loss = closure()
        self.first_step(zero_grad=True)
        try:
            with torch.enable_grad():
                closure()
        except BaseException:
            self.unperturb()
            raise
        self.second_step()
        return loss

    # ------------------------------------------------------------------ state
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state of SAM and its base optimizer (they share one state)."""
        super().load_state_dict(state_dict)
        self.base_optimizer.param_groups = self.param_groups
        self.base_optimizer.state = self.state
        perturbed = [p for g in self.param_groups for p in g["params"]
                     if "sam_w" in self.state.get(p, {})]
        self._stage = "perturbed" if perturbed else "idle"
        self._stepped = perturbed

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group to SAM and its base optimizer."""
        super().add_param_group(param_group)
        base = getattr(self, "base_optimizer", None)
        if base is not None and base.param_groups is self.param_groups:
            # Let the base fill in its own defaults on the same dict.
            group = self.param_groups.pop()
            base.add_param_group(group)

    def __repr__(self) -> str:
        return f"SAM(base_optimizer={type(self.base_optimizer).__name__}, " + (
            super().__repr__().split("(", 1)[1]
        )


_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Leave batch-norm running statistics untouched inside the block (for the perturbed pass).

    Batch norm layers still normalise with the statistics of the current batch in training mode,
    exactly as in the first pass, but ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` are not updated, so one SAM step updates them once, with the
    statistics at ``w`` (not at ``w + eps``). This is exact, unlike setting ``momentum=0``, which
    still advances ``num_batches_tracked`` (and changes cumulative averaging with
    ``momentum=None``).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
        >>> with frozen_bn_stats(net):
        ...     _ = net(torch.randn(4, 2))
        >>> int(net[1].num_batches_tracked)
        0
    """
    saved = []
    for m in model.modules():
        if isinstance(m, _BN_TYPES) and m.track_running_stats:
            saved.append(m)
            m.track_running_stats = False
    try:
        yield model
    finally:
        for m in saved:
            m.track_running_stats = True
