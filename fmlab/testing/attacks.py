"""Contract checks for attacks built on :class:`fmlab.attacks.BaseAttack`.

A third-party attack joins in one line::

    from fmlab.testing.attacks import check_attack
    check_attack(MyAttack(steps=20, random_state=0), objective, x0,
                 constraint=lambda x_adv, x0: (x_adv - x0).abs().max() <= 8 / 255)

Each check raises ``AssertionError`` with a sentence naming the broken promise.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.testing._require import _require

if TYPE_CHECKING:
    import torch

    from fmlab.attacks import AttackResult, BaseAttack

__all__ = ["check_attack"]


class _Killed(Exception):
    """Raised to simulate a run killed after a given number of steps."""


def _fresh(attack: BaseAttack) -> BaseAttack:
    """A new attack from ``attack``'s parameters: scikit-learn's ``clone`` (the parameter
    contract of :class:`fmlab.base.BaseParams`), which also refuses a constructor that changes
    what it stores."""
    from sklearn.base import clone

    try:
        return clone(attack)
    except RuntimeError as exc:
        raise AssertionError(f"{type(attack).__name__} cannot be cloned from get_params(): "
                             f"{exc}") from None


def _same(a: AttackResult, b: AttackResult, what: str) -> None:
    import torch

    _require(
        torch.equal(a.x_adv, b.x_adv), f"{what}: x_adv differs ({a.best_loss} vs {b.best_loss})."
    )
    la = [round(v, 5) for v in a.losses if not math.isnan(v)]
    lb = [round(v, 5) for v in b.losses if not math.isnan(v)]
    _require(la == lb, f"{what}: the loss traces differ:\n{a.losses}\n{b.losses}")
    _require(a.n_queries == b.n_queries, f"{what}: n_queries {a.n_queries} != {b.n_queries}.")


def check_attack(
    attack: BaseAttack,
    objective: Any,
    x: torch.Tensor,
    *,
    constraint: Callable[[torch.Tensor, torch.Tensor], bool] | None = None,
    kill_at: int = 2,
) -> AttackResult:
    """Run the attack contract on ``attack`` against ``objective`` from ``x``.

    Checks: the constructor's parameters round-trip through ``get_params`` (a fresh copy equals the
    original); the input is not modified; the result is consistent (shapes, trace length, best loss
    is the lowest evaluated loss and the loss of ``x_adv``); the best loss is below the start
    point's; ``constraint(x_adv, x)`` holds; two seeded runs agree; a run killed after ``kill_at``
    steps resumes from its snapshot and ends exactly like an uninterrupted run.

    Args:
        attack: A seeded attack (``random_state`` set) with a few steps of budget.
        objective: An objective the attack can lower from ``x`` within its budget.
        x: The start point.
        constraint: Feasibility test of the attack's constraint, e.g. the ε-ball.
        kill_at: Step after which the resumed run is killed (must be below the step budget).

    Returns:
        The result of the first run, for further checks by the caller.
    """
    import torch

    from fmlab.attacks import AttackResult, BaseAttack

    _require(isinstance(attack, BaseAttack), f"{type(attack).__name__} is not a BaseAttack.")
    params = attack.get_params()
    twin = _fresh(attack)
    _require(
        repr(twin) == repr(attack),
        "get_params() does not round-trip: building the attack from its own parameters gives "
        f"{twin!r}, not {attack!r}.",
    )
    x_before = x.clone()
    never: Callable[[torch.Tensor, float], bool] = lambda xx, ll: False  # noqa: E731
    result = attack(objective, x, success=never, progress=False)
    _require(torch.equal(x, x_before), "The attack modified its input tensor in place.")
    _require(
        attack.get_params() == params or repr(attack.get_params()) == repr(params),
        "Running the attack changed its constructor parameters.",
    )
    _require(isinstance(result, AttackResult), f"Got {type(result).__name__}, not an AttackResult.")
    _require(
        result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype,
        f"x_adv has shape {tuple(result.x_adv.shape)} / {result.x_adv.dtype}; the input has "
        f"{tuple(x.shape)} / {x.dtype}.",
    )
    _require(len(result.losses) == result.n_steps, "There must be one trace entry per step.")
    _require(result.n_queries >= result.n_steps, "Every step queries the objective at least once.")
    finite = [v for v in result.losses if not math.isnan(v)]
    _require(
        not finite or result.best_loss <= min(finite) + 1e-6,
        f"best_loss {result.best_loss} is above the lowest traced loss {min(finite)}.",
    )
    with torch.no_grad():
        start_loss = float(attack.losses(objective, x[None])[0])
        adv_loss = float(attack.losses(objective, result.x_adv[None])[0])
    _require(
        math.isclose(adv_loss, result.best_loss, rel_tol=1e-4, abs_tol=1e-5),
        f"best_loss {result.best_loss} is not the loss of x_adv ({adv_loss}).",
    )
    _require(
        result.best_loss < start_loss,
        f"The attack did not lower the loss: {result.best_loss} vs {start_loss} at the start.",
    )
    if constraint is not None:
        _require(constraint(result.x_adv, x), "x_adv violates the attack's constraint.")
        _require(
            constraint(result.x_final, x), "The last iterate violates the attack's constraint."
        )

    again = _fresh(attack)(objective, x, success=never, progress=False)
    _same(result, again, "Two runs with the same random_state")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "snap"
        seen = [0]

        def kill(xx: torch.Tensor, ll: float) -> bool:
            seen[0] += 1
            if seen[0] > kill_at:
                raise _Killed
            return False

        try:
            _fresh(attack)(
                objective, x, success=kill, snapshot_dir=folder, snapshot_every=1, progress=False
            )
        except _Killed:
            pass
        else:
            raise AssertionError(f"kill_at={kill_at} is not below the attack's step budget.")
        _require((folder / "state.json").is_file(), "No snapshot was written before the kill.")
        resumed = _fresh(attack)(
            objective, x, success=never, snapshot_dir=folder, snapshot_every=1, progress=False
        )
        _same(result, resumed, "A killed-and-resumed run and an uninterrupted run")
    return result
