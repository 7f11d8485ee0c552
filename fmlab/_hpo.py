"""The one Optuna layer of fmlab: storage, resume, heartbeats, workers and re-queueing.

Used by the quant precision sweep (grid sampler) and by AutoFT (TPE), on Optuna's public API only.

- **Storage**: one database URL. SQLite (``sqlite:///study.db``) on one machine; PostgreSQL
  (``postgresql+psycopg://user@host:5432/db``) shared by workers on many machines.
  :func:`open_storage` checks that the database can be reached and says how to fix it if not.
- **Resume**: a study stores its specification (a JSON dict: the grid, the search space) as a user
  attribute. :func:`open_study` re-opens a study with the same name and refuses one whose stored
  specification differs, listing the differences, so a resumed search never mixes two spaces.
- **Heartbeats**: a running trial records a heartbeat every ``heartbeat`` seconds. A worker that
  dies (killed, machine lost) stops beating; after ``grace_period`` seconds a live worker marks its
  trial FAILED and re-queues the same parameters once more as a WAITING trial
  (:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`), which the next free worker runs.
- **Workers**: :func:`run_worker` loops until a caller-supplied *plan* says the study is done. It
  starts a trial when the plan says there is work, and otherwise waits while other workers' trials
  are in flight, failing and re-queueing stale ones (:func:`requeue_stale`), so that work lost to a
  dead worker still gets done. :func:`start_local_workers` runs extra worker processes on this
  machine (one per core is usually best for small models).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fmlab._imports import require

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SPEC_ATTR",
    "SURPLUS_ATTR",
    "Plan",
    "default_storage",
    "describe_difference",
    "finished_trials",
    "join_local_workers",
    "open_storage",
    "open_study",
    "optuna_module",
    "own_trial",
    "requeue_stale",
    "run_worker",
    "start_local_workers",
    "stored_spec",
]

SPEC_ATTR = "fmlab_spec"  # study user attribute holding the JSON specification
SURPLUS_ATTR = "fmlab_surplus"  # user attribute of a trial pruned because others did its work
_FEATURE = "fmlab's Optuna layer (fmlab.quant sweeps, fmlab.autoft)"
_URL_EXAMPLES = "'sqlite:///study.db' or 'postgresql+psycopg://user@host:5432/db'"

#: What a plan tells a worker: stop, start one trial, or wait for others' trials.
Plan = Callable[[list[Any]], Literal["done", "start", "wait"]]


def _optuna() -> Any:
    optuna = require("optuna", feature=_FEATURE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning (heartbeats, retry callback) and its UserWarnings."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def default_storage(filename: str) -> str:
    """An SQLite URL for ``filename`` in the current directory (absolute, so workers agree)."""
    return f"sqlite:///{Path(filename).resolve()}"


def _redact(url: str) -> str:
    """The URL without a password (``user:secret@`` -> ``user:***@``)."""
    scheme, sep, rest = url.partition("://")
    cred, at, host = rest.rpartition("@")
    if at and ":" in cred:
        cred = cred.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{cred}{at}{host}"


def open_storage(url: str, *, heartbeat: float = 10.0, grace_period: float | None = None,
                 max_retry: int = 3) -> Any:
    """An :class:`optuna.storages.RDBStorage` with heartbeats and re-queueing of dead trials.

    Args:
        url: Database URL (SQLite or PostgreSQL; any SQLAlchemy URL Optuna accepts).
        heartbeat: Seconds between heartbeats of a running trial.
        grace_period: Seconds without a heartbeat after which a trial counts as dead (default
            ``2 * heartbeat``).
        max_retry: How many times the parameters of a dead trial are re-queued.

    Raises:
        ValueError: ``url`` is not a database URL.
        ConnectionError: the database cannot be reached (the message names the URL, without its
            password, and the driver's reason).
    """
    _optuna()
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"'storage' must be a database URL such as {_URL_EXAMPLES}. "
                         f"Got {url!r}.")
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:" and not Path(db).parent.exists():
            raise ConnectionError(f"The storage {url!r} cannot be opened: the folder "
                                  f"{str(Path(db).parent)!r} does not exist. Create it or give "
                                  f"another path.")
    elif url.startswith("postgresql"):
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    grace = grace_period if grace_period is not None else 2 * heartbeat
    try:
        with _quiet():
            return RDBStorage(url, heartbeat_interval=max(1, int(heartbeat)),
                              grace_period=max(1, int(grace)),
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                  max_retry=max_retry), **kwargs)
    except ImportError:
        raise
    except Exception as exc:  # sqlalchemy.exc.OperationalError, ArgumentError, ...
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ConnectionError(
            f"The storage {_redact(url)!r} cannot be reached: {reason[0] if reason else exc!r}. "
            f"Check that the database server is running and the host, port, user and database "
            f"name are right (URLs look like {_URL_EXAMPLES}).") from exc


def describe_difference(saved: Any, given: Any, path: str = "") -> list[str]:
    """Lines ``key: stored X, given Y`` for every place two JSON values differ."""
    if isinstance(saved, dict) and isinstance(given, dict):
        out: list[str] = []
        for k in sorted(set(saved) | set(given), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in saved:
                out.append(f"{sub}: not stored, given {json.dumps(given[k])}")
            elif k not in given:
                out.append(f"{sub}: stored {json.dumps(saved[k])}, not given")
            else:
                out.extend(describe_difference(saved[k], given[k], sub))
        return out
    if saved != given:
        return [f"{path or '(spec)'}: stored {json.dumps(saved)}, given {json.dumps(given)}"]
    return []


def _jsonify(spec: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(spec))


def stored_spec(name: str, storage: Any) -> dict[str, Any] | None:
    """The specification stored with study ``name`` (``None`` if the study has none).

    Raises:
        KeyError-derived ValueError: there is no study called ``name`` in ``storage``.
    """
    optuna = _optuna()
    names = [s.study_name for s in optuna.get_all_study_summaries(storage,
                                                                  include_best_trial=False)]
    if name not in names:
        raise ValueError(f"There is no study {name!r} in this storage. Studies there: "
                         f"{names or '(none)'}. Create it first (e.g. 'create' or 'search').")
    study = optuna.load_study(study_name=name, storage=storage)
    return study.user_attrs.get(SPEC_ATTR)


def open_study(name: str, storage: Any, *, sampler: Any = None, pruner: Any = None,
               direction: str = "minimize", spec: dict[str, Any] | None = None,
               create: bool = True, what: str = "specification") -> Any:
    """Create or re-open the study ``name``; refuse to resume one with a different ``spec``.

    Args:
        name: Study name.
        storage: A storage from :func:`open_storage` (or a URL, opened with the defaults).
        sampler, pruner, direction: As in :func:`optuna.create_study`.
        spec: JSON-ready specification (the grid, the search space) stored with a new study and
            compared with the stored one when the study exists.
        create: Create the study if it does not exist (else it must exist).
        what: What ``spec`` is, in words, for the error message (``"search space"``).

    Raises:
        ValueError: the stored specification differs from ``spec`` (every difference is listed).
    """
    optuna = _optuna()
    if isinstance(storage, str):
        storage = open_storage(storage)
    if create:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    pruner=pruner, direction=direction, load_if_exists=True)
    else:
        stored_spec(name, storage)  # a clear error when it is missing
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                  pruner=pruner)
    if spec is not None:
        spec = _jsonify(spec)
        saved = study.user_attrs.get(SPEC_ATTR)
        if saved is None:
            study.set_user_attr(SPEC_ATTR, spec)
        else:
            diff = describe_difference(saved, spec)
            if diff:
                raise ValueError(
                    f"The study {name!r} holds a different {what}; resuming it would mix two "
                    f"searches. Differences:\n  " + "\n  ".join(diff)
                    + f"\nUse a new study name, or the stored {what} to resume it.")
    return study


def own_trial(trial: Any) -> Any:
    """The :class:`~optuna.trial.FrozenTrial` view of the running ``trial`` (with its system
    attributes, e.g. a grid sampler's ``grid_id`` or a retry's ``failed_trial``)."""
    for t in trial.study.get_trials(deepcopy=False):
        if t.number == trial.number:
            return t
    raise RuntimeError(f"Trial {trial.number} is not in its own study.")  # storage corrupted


def _trial_id(study: Any, storage: Any, number: int) -> int:
    sid = storage.get_study_id_from_name(study.study_name)
    return int(storage.get_trial_id_from_study_id_trial_number(sid, number))


def requeue_stale(study: Any, storage: Any, grace: float, seeded: set[int]) -> None:
    """Fail the trials of dead workers, which re-queues their parameters (see the module doc).

    Optuna counts a trial as stale only once it has a heartbeat; a worker killed between claiming
    a trial and its first heartbeat would leave it RUNNING forever. So every trial RUNNING for
    longer than ``grace`` gets one heartbeat from this (waiting) worker, once (``seeded`` remembers
    which): a live trial keeps beating anyway, so this only delays detecting a dead one by at most
    one grace period.
    """
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number in seeded or t.datetime_start is None:
            continue
        if (now - t.datetime_start).total_seconds() > grace:
            storage.record_heartbeat(_trial_id(study, storage, t.number))
            seeded.add(t.number)
    with _quiet():
        fail_stale_trials(study)


def finished_trials(trials: Sequence[Any], *, count_failed: Callable[[Any], bool] | None = None
                    ) -> list[Any]:
    """Trials that used up a slot of the budget: COMPLETE, PRUNED (but not marked
    ``fmlab_surplus``: a worker's race at the end), and FAIL ones ``count_failed`` accepts (e.g.
    diverged runs, which are data). Failures of dead workers are re-queued, so they never count."""
    from optuna.trial import TrialState

    out = []
    for t in trials:
        if t.state == TrialState.COMPLETE:
            out.append(t)
        elif t.state == TrialState.PRUNED and not t.user_attrs.get("fmlab_surplus"):
            out.append(t)
        elif t.state == TrialState.FAIL and count_failed is not None and count_failed(t):
            out.append(t)
    return out


def run_worker(study: Any, objective: Callable[[Any], float], plan: Plan, *, storage: Any,
               grace_period: float, poll: float, max_trials: int | None = None,
               callbacks: Sequence[Any] = ()) -> int:
    """Work on ``study`` until ``plan`` says it is done; return the trials this worker ran.

    Args:
        study: The study (opened on ``storage``).
        objective: Optuna objective; exceptions other than :class:`optuna.TrialPruned`
            propagate (the trial is recorded FAILED first).
        plan: Called with the study's trials before each step; answers ``"done"``, ``"start"``
            (run one trial now) or ``"wait"`` (everything left is in flight elsewhere: wait,
            re-queueing trials of dead workers).
        storage: The storage ``study`` lives on (for heartbeats).
        grace_period: Seconds without a heartbeat after which a trial counts as dead.
        poll: Seconds between checks while waiting.
        max_trials: Stop after this many trials (for tests and batch schedulers).
        callbacks: Passed to :meth:`optuna.Study.optimize`.
    """
    ran = 0
    seeded: set[int] = set()
    while max_trials is None or ran < max_trials:
        step = plan(study.get_trials(deepcopy=False))
        if step == "done":
            break
        if step == "start":
            with _quiet():
                study.optimize(objective, n_trials=1, catch=(), callbacks=list(callbacks))
            ran += 1
        else:
            requeue_stale(study, storage, grace_period, seeded)
            time.sleep(poll)
    return ran


def start_local_workers(target: Callable[..., Any], args: tuple[Any, ...], n: int, *,
                        threads: int | None = None, kwargs: dict[str, Any] | None = None,
                        label: str = "fmlab-worker") -> list[Any]:
    """Start ``n`` worker processes (spawned) that call ``target(*args, **kwargs)`` with
    ``threads`` torch threads each (default: cores / (n + 1), since the caller works too)."""
    import multiprocessing

    threads = threads or max(1, (os.cpu_count() or 1) // (n + 1))
    mp = multiprocessing.get_context("spawn")
    procs = [mp.Process(target=_worker_main, args=(target, args, kwargs or {}, threads),
                        daemon=True,
                        name=f"{label}-{i + 1}") for i in range(n)]
    for p in procs:
        p.start()
    return procs


def _worker_main(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    target(*args, **kwargs)


def join_local_workers(procs: Sequence[Any], storage_url: str, resume_hint: str) -> None:
    """Wait for worker processes; raise naming the ones that failed (finished work is kept)."""
    for p in procs:
        p.join()
    bad = [f"{p.name} (exit code {p.exitcode})" for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"Worker process(es) failed: {', '.join(bad)}. Finished trials are "
                           f"kept in {_redact(storage_url)}; {resume_hint}")


def optuna_module() -> optuna:  # type: ignore[valid-type]
    """Optuna, imported with fmlab's missing-dependency message and its logging quietened."""
    return _optuna()  # type: ignore[no-any-return]
