"""The one attack loop shared by every attack in fmlab (GCG on tokens, PGD on pixels, ...).

An attack is three small hooks on a :class:`BaseAttack` subclass; the loop in
:func:`run_attack` owns everything else (budget, best input, loss trace, query count, early stop,
snapshots for resume, progress bar). One step of every attack is::

    proposal = attack.propose(objective, x, buffers, rng)      # candidates (B, *x.shape)
    candidates = attack.project(proposal.candidates, x0, objective)  # constraint; may drop rows
    x, loss, n_queries = attack.select(objective, candidates)  # default: batched argmin

How the two families fill the hooks:

* PGD (continuous). ``propose``: the gradient of the loss at ``x`` (which also reveals its loss)
  and one candidate ``x - step_size * sign(g)``; ``project``: clip to the ε-ball around ``x0`` and
  the valid range; ``select`` (default): a single candidate is taken unscored;
  ``losses``: ``objective(xs)``.
* GCG (discrete). ``propose``: the one-hot token gradient at ``x`` and B random single-token swaps
  from each position's top-k; ``project``: drop candidates whose decode/re-encode round trip
  changes the tokens; ``select`` (default): all B scored in one batched :meth:`losses` call, argmin
  kept; ``losses``: the teacher-forced target NLL with the fixed prefix's KV cache reused.

Writing a new attack
--------------------
Subclass :class:`BaseAttack`; the constructor stores (and checks) hyperparameters only, the
objective arrives at call time: ``attack(objective, x)``. Implement

* ``losses(objective, xs) -> Tensor (B,)``: the exact loss of a batch of inputs, without gradients;
* ``propose(objective, x, buffers, rng) -> Proposal``: candidate next inputs, plus the loss of
  ``x`` when computing the proposal revealed it (a gradient pass does) and how many objective
  evaluations it spent;
* optionally ``project(candidates, x0, objective)`` (the constraint; identity by default; the
  objective is passed for constraints that need it, such as GCG's tokenizer round trip),
  ``init(objective, x0, rng)`` (start point and named tensor buffers such as momentum, which are
  snapshotted), ``is_success(objective, x, loss)`` (early stop test; by default the objective's own
  ``is_success(x)`` if it has one), ``budget()`` (steps, queries, seconds) and ``finalize``.

Register it with ``ATTACKS.register("name", "module:Class")`` (or the ``fmlab.attacks`` entry-point
group for plugins) and check it with :func:`fmlab.testing.attacks.check_attack`.

Conventions of the trace: ``losses[t]`` is the loss of the newest input evaluated in step
``t``: the selected candidate when ``select`` scored candidates (GCG), else the pre-step iterate
whose loss ``propose`` revealed (PGD). The final iterate of a step-only attack is scored once at
the end so that ``best_loss`` and ``x_adv`` always refer to an evaluated input (unless the
attack's ``keeps_best()`` is ``False``: then ``x_adv`` is the last iterate and ``best_loss`` NaN).
``n_queries`` counts objective evaluations of single inputs (a gradient pass counts one; scoring
B candidates counts B).

Snapshots: with ``snapshot_dir`` the loop writes ``state.safetensors`` (tensors: iterate, best
input, start point, buffers, RNG state) and ``state.json`` (step, trace, counters, a fingerprint of
the attack's parameters and start point) into one folder replaced atomically every
``snapshot_every`` steps; a rerun with the same attack, start point and folder resumes where the
killed run stopped and finishes identically to an uninterrupted run. Nothing is ever pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from fmlab._imports import require
from fmlab._registry import Registry
from fmlab._validation import check_int, check_real
from fmlab.base import BaseParams

if TYPE_CHECKING:
    import torch

__all__ = [
    "ATTACKS",
    "AttackResult",
    "BaseAttack",
    "Budget",
    "Proposal",
    "Selection",
    "create_attack",
    "list_attacks",
    "run_attack",
]

ATTACKS: Registry[Any] = Registry("attack", group="attacks")

StopReason = Literal["steps", "queries", "time", "success"]
_SNAPSHOT_VERSION = 1


def list_attacks(pattern: str | None = None) -> list[str]:
    """Names of the registered attacks, optionally filtered by an fnmatch ``pattern``."""
    return ATTACKS.names(pattern)


def create_attack(name: str, **params: Any) -> BaseAttack:
    """Build the attack registered as ``name`` with hyperparameters ``params``.

    Example:
        >>> attack = create_attack("gcg", num_steps=50, search_width=64)  # doctest: +SKIP
    """
    return ATTACKS.create(name, **params)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Budget:
    """When the loop stops at the latest: after ``steps`` steps, ``max_queries`` objective
    evaluations or ``max_time_s`` seconds (checked before each step; a step in flight finishes)."""

    steps: int
    max_queries: int | None = None
    max_time_s: float | None = None

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", owner="Budget", low=0)
        if self.max_queries is not None:
            check_int(self.max_queries, "max_queries", owner="Budget", low=1)
        if self.max_time_s is not None:
            check_real(self.max_time_s, "max_time_s", owner="Budget", low=0)


@dataclass
class Proposal:
    """What ``propose`` returns: candidates ``(B, *x.shape)``, the loss of the current ``x`` if
    the proposal computed it (``None`` otherwise) and the objective evaluations it spent."""

    candidates: torch.Tensor
    loss: float | None = None
    n_queries: int = 0


@dataclass
class Selection:
    """What ``select`` returns: the next iterate, its loss if scored, the evaluations spent."""

    x: torch.Tensor
    loss: float | None
    n_queries: int


@dataclass
class AttackResult:
    """The outcome of an attack run.

    Attributes:
        x_adv: The input with the lowest evaluated loss.
        best_loss: Its loss.
        best_step: The step at which it was evaluated (``-1``: the start point).
        losses: Loss trace, one entry per step (see the module docstring for its convention).
        n_queries: Objective evaluations of single inputs spent in total.
        n_steps: Steps run (including those before a resume).
        success: Whether the success test passed (on the best input or on the iterate that stopped
            the run).
        stop_reason: ``"steps"``, ``"queries"``, ``"time"`` or ``"success"``.
        elapsed_s: Wall time of the loop, summed over resumed runs.
        x_final: The last iterate.
    """

    x_adv: torch.Tensor
    best_loss: float
    best_step: int
    losses: list[float]
    n_queries: int
    n_steps: int
    success: bool
    stop_reason: StopReason
    elapsed_s: float
    x_final: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (tensors as nested lists)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("x_adv", "x_final")}
        out["x_adv"] = self.x_adv.tolist()
        return out


class BaseAttack(BaseParams):
    """Base class of every attack: hyperparameters in the constructor, objective at call time.

    Subclasses set ``name`` and implement :meth:`losses` and :meth:`propose` (and optionally the
    other hooks); see the module docstring of ``fmlab.attacks._core``. Every hook runs inside the
    loop of :func:`run_attack`, in the order ``init`` (once; skipped on resume), then per step
    ``propose`` → ``project`` → ``select`` → ``is_success``, and ``finalize`` once at the end.

    Subclasses that honour the common budget keywords accept ``max_queries`` and ``max_time_s``
    and set ``random_state`` (an int seed) as attributes of the same names.
    """

    name: ClassVar[str] = ""
    #: Parameter holding the number of steps (``"steps"`` for PGD, ``"num_steps"`` for GCG).
    steps_param: ClassVar[str] = "steps"

    # -- hooks --------------------------------------------------------------------------------
    def budget(self) -> Budget:
        """The stopping budget, read from this attack's hyperparameters."""
        return Budget(
            int(getattr(self, self.steps_param)),
            getattr(self, "max_queries", None),
            getattr(self, "max_time_s", None),
        )

    def init(
        self, objective: Any, x0: torch.Tensor, rng: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the start point (projected by the loop) and named tensor buffers.

        Runs once per fresh run (not on resume: the buffers come from the snapshot).
        """
        return x0.clone(), {}

    @abstractmethod
    def propose(
        self,
        objective: Any,
        x: torch.Tensor,
        buffers: dict[str, torch.Tensor],
        rng: torch.Generator,
    ) -> Proposal:
        """Return candidate next inputs (may update ``buffers`` in place)."""

    def project(
        self, candidates: torch.Tensor, x0: torch.Tensor, objective: Any = None
    ) -> torch.Tensor:
        """Map candidates ``(B, *x.shape)`` into the feasible set; may drop infeasible rows."""
        return candidates

    @abstractmethod
    def losses(self, objective: Any, xs: torch.Tensor) -> torch.Tensor:
        """Exact losses ``(B,)`` of a batch of inputs ``xs`` ``(B, *x.shape)``, no gradients."""

    def select(self, objective: Any, candidates: torch.Tensor) -> Selection:
        """Pick the next iterate. One candidate is taken unscored (a gradient step); several are
        scored in one batched :meth:`losses` call and the argmin is kept."""
        if candidates.shape[0] == 1:
            return Selection(candidates[0], None, 0)
        values = self.losses(objective, candidates)  # (B,)
        i = int(values.argmin())
        return Selection(candidates[i], float(values[i]), int(candidates.shape[0]))

    def is_success(self, objective: Any, x: torch.Tensor, loss: float) -> bool:
        """Early-stop test on an evaluated input; default: ``objective.is_success(x)``, if any."""
        test = getattr(objective, "is_success", None)
        return bool(test(x)) if callable(test) else False

    def keeps_best(self) -> bool:
        """Whether the result's ``x_adv`` is the best evaluated input (default), for which the
        loop scores a step-only attack's last iterate once at the end; ``False`` returns the
        last iterate unscored (``best_loss`` NaN) and saves that objective evaluation."""
        return True

    def finalize(self, objective: Any, result: AttackResult) -> AttackResult:
        """Turn the generic result into this attack's own (e.g. decode GCG's best string)."""
        return result

    # -- public -------------------------------------------------------------------------------
    def __call__(
        self,
        objective: Any,
        x: torch.Tensor,
        *,
        success: Callable[[torch.Tensor, float], bool] | None = None,
        snapshot_dir: str | Path | None = None,
        snapshot_every: int = 10,
        resume: bool = True,
        progress: bool | None = None,
    ) -> AttackResult:
        """Attack ``objective`` starting from ``x``; see :func:`run_attack` for the arguments."""
        return run_attack(
            self,
            objective,
            x,
            success=success,
            snapshot_dir=snapshot_dir,
            snapshot_every=snapshot_every,
            resume=resume,
            progress=progress,
        )


# -- the loop ---------------------------------------------------------------------------------
def _fingerprint(attack: BaseAttack, x0: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(type(attack).__qualname__.encode())
    h.update(json.dumps(attack.get_params(deep=False), sort_keys=True, default=repr).encode())
    h.update(str(tuple(x0.shape)).encode() + str(x0.dtype).encode())
    h.update(x0.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class _State:
    step: int
    x: torch.Tensor
    best_x: torch.Tensor
    best_loss: float
    best_step: int
    losses: list[float]
    n_queries: int
    elapsed_s: float
    buffers: dict[str, torch.Tensor]
    success: bool = False
    stop_reason: StopReason | None = None
    x_loss: float | None = None  # loss of the current iterate, when known


def _save_snapshot(
    folder: Path, state: _State, x0: torch.Tensor, rng: torch.Generator, fingerprint: str
) -> None:
    from fmlab._io import atomic_dir

    save_file = require("safetensors.torch", feature="Attack snapshots").save_file

    tensors = {
        "x": state.x,
        "best_x": state.best_x,
        "x0": x0,
        "rng_state": rng.get_state(),
        **{f"buffer.{k}": v for k, v in state.buffers.items()},
    }
    meta = {
        "version": _SNAPSHOT_VERSION,
        "fingerprint": fingerprint,
        "step": state.step,
        "best_loss": state.best_loss,
        "best_step": state.best_step,
        "losses": state.losses,
        "n_queries": state.n_queries,
        "elapsed_s": state.elapsed_s,
        "success": state.success,
        "stop_reason": state.stop_reason,
        "x_loss": state.x_loss,
    }
    with atomic_dir(folder) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                  str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, allow_nan=True))


def _load_snapshot(
    folder: Path, fingerprint: str, rng: torch.Generator, device: torch.device
) -> _State | None:
    load_file = require("safetensors.torch", feature="Attack snapshots").load_file
    meta_path, tensor_path = folder / "state.json", folder / "state.safetensors"
    if not (meta_path.is_file() and tensor_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"The attack snapshot in {folder} is unreadable ({exc}). Delete the folder or pass "
            f"resume=False to start over."
        ) from exc
    if meta.get("version") != _SNAPSHOT_VERSION or meta.get("fingerprint") != fingerprint:
        raise ValueError(
            f"The attack snapshot in {folder} belongs to a different attack, parameters or start "
            f"point. Use another snapshot_dir, or pass resume=False to overwrite it."
        )
    rng.set_state(tensors.pop("rng_state"))
    buffers = {
        k.removeprefix("buffer."): v.to(device)
        for k, v in tensors.items()
        if k.startswith("buffer.")
    }
    return _State(
        step=int(meta["step"]),
        x=tensors["x"].to(device),
        best_x=tensors["best_x"].to(device),
        best_loss=float(meta["best_loss"]),
        best_step=int(meta["best_step"]),
        losses=[float(v) for v in meta["losses"]],
        n_queries=int(meta["n_queries"]),
        elapsed_s=float(meta["elapsed_s"]),
        buffers=buffers,
        success=bool(meta["success"]),
        stop_reason=meta["stop_reason"],
        x_loss=None if meta["x_loss"] is None else float(meta["x_loss"]),
    )


def _make_rng(attack: BaseAttack, device: torch.device) -> torch.Generator:
    import torch

    seed = getattr(attack, "random_state", None)
    rng = torch.Generator(device=device)
    if seed is None:
        rng.seed()
    else:
        rng.manual_seed(int(seed))
    return rng


def run_attack(
    attack: BaseAttack,
    objective: Any,
    x: torch.Tensor,
    *,
    success: Callable[[torch.Tensor, float], bool] | None = None,
    snapshot_dir: str | Path | None = None,
    snapshot_every: int = 10,
    resume: bool = True,
    progress: bool | None = None,
) -> AttackResult:
    """Run ``attack`` on ``objective`` from ``x`` until its budget is spent or it succeeds.

    Args:
        attack: Any :class:`BaseAttack`.
        objective: What the attack's hooks need (a loss callable for PGD, a target-string
            objective for GCG).
        x: The start point (an image tensor, a token-id vector, ...). Not modified.
        success: Early-stop test ``success(x, loss) -> bool`` overriding the attack's own.
        snapshot_dir: Folder for resumable snapshots (``None``: no snapshots).
        snapshot_every: Write a snapshot every this many steps (and at the end).
        resume: Continue from a snapshot found in ``snapshot_dir`` (it must belong to the same
            attack parameters and start point).
        progress: Show a progress bar; ``None`` shows it on a terminal only.

    Returns:
        An :class:`AttackResult` (or the attack's subclass of it, from ``finalize``).

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: bad ``snapshot_every``, or a snapshot from a different run.
    """
    import torch
    from tqdm.auto import tqdm

    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"The start point 'x' of {type(attack).__name__} must be a torch.Tensor. "
            f"Got {type(x).__name__} instead."
        )
    check_int(snapshot_every, "snapshot_every", owner="run_attack", low=1)
    budget = attack.budget()
    x0 = x.detach().clone()
    rng = _make_rng(attack, x0.device)
    folder = Path(snapshot_dir) if snapshot_dir is not None else None
    # hashing the start point costs a pass over it: only snapshots need the fingerprint
    fingerprint = _fingerprint(attack, x0) if folder is not None else ""
    keep_best = attack.keeps_best()
    test = (lambda xx, ll: bool(success(xx, ll))) if success is not None else (
        lambda xx, ll: attack.is_success(objective, xx, ll)
    )

    state = _load_snapshot(folder, fingerprint, rng, x0.device) if folder and resume else None
    if state is None:
        start, buffers = attack.init(objective, x0, rng)
        feasible = attack.project(start.detach()[None], x0, objective)
        if feasible.shape[0] == 0:
            raise ValueError(
                f"The start point violates the constraint of {type(attack).__name__} "
                f"({attack!r}); start from an input its projection accepts."
            )
        start = feasible[0]
        state = _State(0, start, start.clone(), math.inf, -1, [], 0, 0.0, buffers)
        if budget.steps == 0:  # nothing to search: still report the start point's loss
            state.x_loss = float(attack.losses(objective, start[None])[0])
            state.n_queries += 1
            state.best_loss = state.x_loss

    def consider(xx: torch.Tensor, loss: float, step: int) -> None:
        if loss < state.best_loss:
            # without keep_best the answer is the last iterate: no copy of the best one
            state.best_x = xx.detach().clone() if keep_best else xx
            state.best_loss, state.best_step = loss, step

    bar = tqdm(
        total=budget.steps,
        initial=state.step,
        desc=attack.name or type(attack).__name__,
        disable=(not progress) if progress is not None else None,
        leave=False,
    )
    t_start = time.perf_counter() - state.elapsed_s
    try:
        while state.stop_reason is None:
            if state.step >= budget.steps:
                state.stop_reason = "steps"
                break
            if budget.max_queries is not None and state.n_queries >= budget.max_queries:
                state.stop_reason = "queries"
                break
            if budget.max_time_s is not None and time.perf_counter() - t_start >= budget.max_time_s:
                state.stop_reason = "time"
                break
            step = state.step
            with torch.enable_grad():
                proposal = attack.propose(objective, state.x, state.buffers, rng)
            candidates = attack.project(proposal.candidates.detach(), x0, objective)
            if candidates.shape[0] == 0:
                raise RuntimeError(
                    f"{type(attack).__name__}.project rejected every candidate at step {step}; "
                    f"loosen the constraint or widen the search (e.g. search_width)."
                )
            with torch.no_grad():
                chosen = attack.select(objective, candidates)
            state.n_queries += proposal.n_queries + chosen.n_queries
            newest: tuple[torch.Tensor, float, int] | None = None
            if proposal.loss is not None:
                consider(state.x, proposal.loss, step - 1)
                newest = (state.x, proposal.loss, step - 1)
            if chosen.loss is not None:
                consider(chosen.x, chosen.loss, step)
                newest = (chosen.x, chosen.loss, step)
            state.x, state.x_loss = chosen.x.detach(), chosen.loss
            state.step = step + 1
            if newest is not None:
                state.losses.append(newest[1])
                if test(newest[0], newest[1]):
                    # the input that passed the test is the answer, even if another scored lower
                    state.success, state.stop_reason = True, "success"
                    state.best_x, state.best_loss, state.best_step = (
                        newest[0].detach().clone(), newest[1], newest[2]
                    )
            else:
                state.losses.append(math.nan)
            state.elapsed_s = time.perf_counter() - t_start
            if not bar.disable:  # a hidden bar costs nothing, not even the formatting
                bar.set_postfix(loss=f"{state.losses[-1]:.4g}", best=f"{state.best_loss:.4g}",
                                refresh=False)
                bar.update(1)
            if folder is not None and state.step % snapshot_every == 0:
                _save_snapshot(folder, state, x0, rng, fingerprint)
        if (state.x_loss is None and state.stop_reason != "success" and state.step > 0
                and not keep_best):
            # the caller wants the last iterate, unscored (as the textbook PGD returns it)
            state.best_x, state.best_loss, state.best_step = state.x, math.nan, state.step - 1
        elif state.x_loss is None and state.stop_reason != "success":
            # a step-only attack (PGD) never scored its last iterate: score it once
            with torch.no_grad():
                state.x_loss = float(attack.losses(objective, state.x[None])[0])
            state.n_queries += 1
            consider(state.x, state.x_loss, state.step - 1)
            if not state.success and test(state.x, state.x_loss):
                state.success = True
        state.elapsed_s = time.perf_counter() - t_start
        if folder is not None:
            _save_snapshot(folder, state, x0, rng, fingerprint)
    finally:
        bar.close()

    result = AttackResult(
        x_adv=state.best_x,
        best_loss=state.best_loss,
        best_step=state.best_step,
        losses=list(state.losses),
        n_queries=state.n_queries,
        n_steps=state.step,
        success=state.success,
        stop_reason=state.stop_reason or "steps",
        elapsed_s=state.elapsed_s,
        x_final=state.x,
    )
    return attack.finalize(objective, result)
