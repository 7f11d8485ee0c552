"""Contract suite for SAM-style two-pass optimizers: :func:`check_optimizer`."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

from fmlab.testing._require import _require

__all__ = ["check_optimizer"]


def _problem(seed: int) -> tuple[Any, Callable[[int], tuple[Any, Any]]]:
    """A tiny MLP (float64, deterministic) and a batch generator: a smooth regression target."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model = model.double()

    def batch(step: int) -> tuple[Any, Any]:
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(16, 4, generator=g, dtype=torch.float64)  # (B, 4)
        return x, (x**2).sum(1, keepdim=True).sin()  # (B, 1)

    return model, batch


def _closure(
    model: Any, opt: Any, x: Any, y: Any, calls: list[bool] | None = None
) -> Callable[[], Any]:
    import torch

    def closure() -> Any:
        if calls is not None:
            calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def _run(model: Any, opt: Any, batch: Callable[[int], tuple[Any, Any]], steps: range) -> None:
    for s in steps:
        x, y = batch(s)
        opt.step(_closure(model, opt, x, y))


def check_optimizer(
    optimizer_class: Callable[..., Any],
    base_optimizer: Any = None,
    *,
    rho: float = 0.1,
    n_steps: int = 3,
    **kwargs: Any,
) -> None:
    """Check that a SAM-style optimizer keeps the two-pass ``torch.optim`` contract.

    The class is built as ``optimizer_class(params, base_optimizer, rho=rho, **kwargs)``, like
    :class:`fmlab.sam.SAM`. Clauses:

    - it is a ``torch.optim.Optimizer``;
    - ``rho=0`` reproduces the base optimizer's trajectory exactly;
    - ``step(closure)`` runs the closure twice, with gradients enabled even under
      ``torch.no_grad()``, and returns the closure's first loss (at ``w``, before the update);
    - ``step()`` without a closure raises ``TypeError`` explaining the two-pass API;
    - a negative ``rho`` is rejected at construction with a ``ValueError`` naming ``rho``;
    - ``state_dict`` / ``load_state_dict`` resume the same trajectory bit for bit;
    - with ``rho > 0`` the weights differ from the base optimizer's (the perturbation acts).

    Args:
        optimizer_class: The optimizer class (or a factory with the same signature).
        base_optimizer: The base optimizer class (default ``torch.optim.SGD``).
        rho: The perturbation radius for the clauses that need one.
        n_steps: Steps per trajectory.
        **kwargs: Further constructor arguments (the base optimizer's ``lr``, ``momentum``, ...;
            default ``lr=0.05, momentum=0.9``, or ``lr=0.01`` for a base without momentum).

    Raises:
        AssertionError: naming the first clause the optimizer breaks.

    Example:
        >>> from fmlab.sam import SAM
        >>> from fmlab.testing import check_optimizer
        >>> check_optimizer(SAM, adaptive=True)
    """
    import torch

    base = torch.optim.SGD if base_optimizer is None else base_optimizer
    accepted = inspect.signature(base).parameters
    defaults = {"lr": 0.05, "momentum": 0.9} if "momentum" in accepted else {"lr": 0.01}
    kwargs = {**defaults, **kwargs}
    base_kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    name = getattr(optimizer_class, "__name__", repr(optimizer_class))

    def build(model: Any, r: float) -> Any:
        return optimizer_class(model.parameters(), base, rho=r, **kwargs)

    # rho = 0 is the base optimizer
    m_sam, batch = _problem(0)
    m_ref, _ = _problem(0)
    opt = build(m_sam, 0.0)
    _require(isinstance(opt, torch.optim.Optimizer), f"{name} must be a torch.optim.Optimizer.")
    ref = base(m_ref.parameters(), **base_kwargs)
    _run(m_sam, opt, batch, range(n_steps))
    _run(m_ref, ref, batch, range(n_steps))
    for p, q in zip(m_sam.parameters(), m_ref.parameters(), strict=True):
        _require(torch.equal(p, q), f"{name} with rho=0 must step exactly as its base optimizer.")

    # rho > 0 perturbs
    m_pert, _ = _problem(0)
    _run(m_pert, build(m_pert, rho), batch, range(n_steps))
    _require(
        any(
            not torch.equal(p, q)
            for p, q in zip(m_pert.parameters(), m_ref.parameters(), strict=True)
        ),
        f"{name} with rho={rho} must differ from its base optimizer.",
    )

    # the closure contract
    model, _ = _problem(1)
    opt = build(model, rho)
    x, y = batch(0)
    calls: list[bool] = []
    with torch.no_grad():
        loss = opt.step(_closure(model, opt, x, y, calls))
    _require(
        calls == [True, True],
        f"{name}.step(closure) must run the closure twice with gradients enabled (even under "
        f"torch.no_grad()); observed grad modes {calls}.",
    )
    model0, _ = _problem(1)
    expected = torch.nn.functional.mse_loss(model0(x), y)
    _require(
        loss is not None and torch.allclose(torch.as_tensor(loss), expected),
        f"{name}.step(closure) must return the closure's loss at w, before the update.",
    )
    try:
        opt.step()
    except TypeError as exc:
        _require("closure" in str(exc), f"{name}.step() must explain that it needs a closure.")
    else:
        raise AssertionError(f"{name}.step() without a closure must raise TypeError.")
    try:
        build(_problem(0)[0], -0.1)
    except ValueError as exc:
        _require("rho" in str(exc), f"{name}'s error for rho=-0.1 must name 'rho': {exc}")
    else:
        raise AssertionError(f"{name} must reject rho=-0.1 with a ValueError.")

    # state_dict round trip
    m_a, _ = _problem(2)
    o_a = build(m_a, rho)
    _run(m_a, o_a, batch, range(2 * n_steps))
    m_b, _ = _problem(2)
    o_b = build(m_b, rho)
    _run(m_b, o_b, batch, range(n_steps))
    saved_model, saved_opt = copy.deepcopy(m_b.state_dict()), copy.deepcopy(o_b.state_dict())
    m_c, _ = _problem(3)
    m_c.load_state_dict(saved_model)
    o_c = build(m_c, 7 * rho + 1.0)  # loading must restore rho and the base's state
    o_c.load_state_dict(saved_opt)
    _run(m_c, o_c, batch, range(n_steps, 2 * n_steps))
    for p, q in zip(m_a.parameters(), m_c.parameters(), strict=True):
        _require(
            torch.equal(p, q),
            f"{name}: state_dict()/load_state_dict() must resume the same trajectory.",
        )
