"""Precision sweeps: a grid over model size N, tokens D, training precisions and P_post, run as an
Optuna study with a :class:`optuna.samplers.GridSampler`.

One machine uses SQLite (``sqlite:///sweep.db``); many machines share one PostgreSQL database
(``postgresql+psycopg://user@host:5432/db``). Every worker runs :func:`run_sweep_worker` against the
same storage and study name.

How runs are neither lost nor run twice:

- Optuna numbers trials atomically in the storage, and the grid sampler maps trial ``k < n_grid``
  to grid point ``k``; each worker therefore claims a distinct grid point.
- A running trial sends a heartbeat. A worker that dies (killed, machine lost) stops beating;
  after ``grace_period`` seconds any worker marks its trial FAILED and re-queues the same grid
  point once more (the shared Optuna layer,
  :mod:`fmlab._hpo`), which the next free worker picks up.
- Two workers can still pick the same free grid point at the same moment (a retry taking a trial
  number, a race at the end); the later trial sees the earlier one and is recorded as PRUNED
  without training.
- A run whose loss turns NaN is recorded as FAILED with ``diverged=True`` and *not* retried: it is
  data (low precision diverged), and the sweep goes on.

The table (:func:`sweep_table`) has one row per (run, P_post) with the columns the scaling laws
read: ``n_params``, ``n_tokens``, ``w_bits``, ``a_bits``, ``kv_bits``, ``post_bits`` (``inf`` =
not quantized after training), ``loss``; ``inf`` training bits mean full precision.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fmlab import _hpo as hpo
from fmlab._precision import bits_label, parse_bits
from fmlab._validation import check_int, check_option

__all__ = ["SweepSpec", "create_sweep", "run_sweep", "run_sweep_worker", "sweep_table",
           "write_table"]


def _bits_label(b: tuple[float, float, float]) -> str:
    return "w{}-a{}-kv{}".format(*(bits_label(x) for x in b))


@dataclass(frozen=True)
class SweepSpec:
    """The grid of a precision sweep (every default visible here).

    Args:
        models: Model sizes as :class:`~fmlab.quant.LMConfig` keyword dicts (the N axis).
        n_tokens: Training token counts (the D axis).
        train_bits: Training precisions as ``(w, a, kv)`` bit widths or a single width for all
            three; ``None`` / ``"fp"`` / ``inf`` / >= 16 means full precision
            (:func:`fmlab._precision.parse_bits`).
        post_bits: Post-training weight bit widths P_post (evaluated after each run, GPTQ or RTN,
            only where below the training weight precision).
        seeds: Seeds (each is its own grid point).
        ptq_method: ``"gptq"`` or ``"rtn"``.
        lrs: Learning rates (a grid axis; one value by default).
        train: Other :class:`~fmlab.quant.TrainConfig` fields (batch_size, seq_len, ...).
        vocab_size: BPE vocabulary size.
        corpora: Text corpora.
        calib_sequences: GPTQ calibration sequences (of ``seq_len`` tokens, from the training
            split, disjoint from the validation text).
    """

    models: Sequence[dict[str, Any]] = ({"d_model": 64, "n_layers": 2, "n_heads": 4},)
    n_tokens: Sequence[int] = (100_000,)
    train_bits: Sequence[Any] = (None,)
    post_bits: Sequence[int] = (4,)
    seeds: Sequence[int] = (0,)
    ptq_method: str = "gptq"
    lrs: Sequence[float] = (3e-3,)
    train: dict[str, Any] = field(default_factory=dict)
    vocab_size: int = 512
    corpora: Sequence[str] = ("wikipedia-sample", "lee-background")
    calib_sequences: int = 64

    def __post_init__(self) -> None:
        o = "SweepSpec"
        check_option(self.ptq_method, "ptq_method", ("gptq", "rtn"), owner=o)
        for name in ("models", "n_tokens", "train_bits", "seeds", "lrs", "post_bits"):
            values = list(getattr(self, name))
            if len(values) == 0 and name != "post_bits":
                raise ValueError(f"The {name!r} axis of SweepSpec is empty; give at least one "
                                 "value.")
            labels = [repr(v) for v in values]
            if len(set(labels)) != len(labels):
                dup = sorted({v for v in labels if labels.count(v) > 1})
                raise ValueError(f"The {name!r} axis of SweepSpec repeats {', '.join(dup)}; each "
                                 "grid point would be trained twice. Give distinct values.")
        for d in self.n_tokens:
            check_int(d, "n_tokens", owner=o, low=1)
        for p in self.post_bits:
            check_int(p, "post_bits", owner=o, low=2, high=15)
        object.__setattr__(self, "train_bits", tuple(self._norm_bits(b) for b in self.train_bits))
        if len(set(self.train_bits)) != len(self.train_bits):
            raise ValueError(f"The 'train_bits' axis of SweepSpec names one precision twice "
                             f"({self.train_bits}; 16, fp and None are all full precision). "
                             "Give distinct values.")
        from fmlab.quant._model import LMConfig

        for m in self.models:
            LMConfig(**m)  # validate early, with LMConfig's messages

    @staticmethod
    def _norm_bits(b: Any) -> tuple[float, float, float]:
        vals = (b, b, b) if not isinstance(b, Sequence) or isinstance(b, str) else tuple(b)
        if len(vals) != 3:
            raise ValueError(f"A train_bits entry must be one bit width or (w, a, kv); got {b!r}.")
        return tuple(parse_bits(v, name="train_bits", owner="SweepSpec")  # type: ignore[return-value]
                     for v in vals)

    def search_space(self) -> dict[str, list[Any]]:
        """The Optuna grid: categorical labels for each axis."""
        return {
            "model": [f"m{i}" for i in range(len(self.models))],
            "n_tokens": [int(d) for d in self.n_tokens],
            "train_bits": [_bits_label(b) for b in self.train_bits],  # type: ignore[arg-type]
            "seed": [int(s) for s in self.seeds],
            "lr": [float(x) for x in self.lrs],
        }

    @property
    def n_grid(self) -> int:
        return (len(self.models) * len(self.n_tokens) * len(self.train_bits) * len(self.seeds)
                * len(self.lrs))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists, floats) that :meth:`from_dict` turns back into the spec."""
        import json

        d = asdict(self)
        d["train_bits"] = [list(b) for b in self.train_bits]
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        d = dict(d)
        d["train_bits"] = [tuple(b) if isinstance(b, list) else b for b in d.get("train_bits",
                                                                                  [None])]
        return cls(**d)


def create_sweep(spec: SweepSpec, storage: str, name: str = "precision-sweep") -> Any:
    """Create (or load) the sweep's Optuna study; stores the spec in the study. Returns it."""
    optuna = hpo.optuna_module()
    return hpo.open_study(name, hpo.open_storage(storage),
                          sampler=optuna.samplers.GridSampler(spec.search_space(), seed=0),
                          spec=spec.to_dict(), what="sweep spec")


def _load(storage: str, name: str, heartbeat: float, grace: float | None
          ) -> tuple[Any, SweepSpec, Any]:
    optuna = hpo.optuna_module()
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        db = storage[len("sqlite:///"):]
        if db and db != ":memory:" and not Path(db).is_file():  # never create an empty database
            raise ValueError(f"The sweep database {db!r} does not exist; create the sweep "
                             "first with 'fmlab sweep create' (or check --storage).")
    st = hpo.open_storage(storage, heartbeat=heartbeat, grace_period=grace)
    stored = hpo.stored_spec(name, st)
    if not stored:
        raise ValueError(f"The Optuna study {name!r} in {storage} was not created by "
                         "'fmlab sweep create' (it stores no sweep spec).")
    spec = SweepSpec.from_dict(stored)
    study = hpo.open_study(name, st, create=False,
                           sampler=optuna.samplers.GridSampler(spec.search_space(), seed=0))
    return study, spec, st


def _diverged(t: Any) -> bool:
    return bool(t.user_attrs.get("diverged"))


def _grid_status(trials: list[Any]) -> tuple[set[int], set[int], int]:
    """(finished grid ids, running grid ids, number of WAITING trials)."""
    from optuna.trial import TrialState

    done = {t.system_attrs.get("grid_id")
            for t in hpo.finished_trials(trials, count_failed=_diverged)
            if t.state != TrialState.PRUNED}
    running = {t.system_attrs.get("grid_id") for t in trials if t.state == TrialState.RUNNING}
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return done - {None}, running - {None}, waiting


def _plan(spec: SweepSpec) -> hpo.Plan:
    def plan(trials: list[Any]) -> Any:
        done, running, waiting = _grid_status(trials)
        if len(done) >= spec.n_grid:
            return "done"
        missing = set(range(spec.n_grid)) - done - running
        return "start" if waiting or missing else "wait"

    return plan


class _Objective:
    def __init__(self, spec: SweepSpec, device: str) -> None:
        self.spec, self.device = spec, device
        self._data: Any = None

    def __call__(self, trial: Any) -> float:
        import optuna

        spec = self.spec
        p = {k: trial.suggest_categorical(k, v) for k, v in spec.search_space().items()}
        if _is_duplicate(trial):
            trial.set_user_attr(hpo.SURPLUS_ATTR, True)  # a race between workers: run it once
            raise optuna.TrialPruned("grid point already done or in progress")
        return self.run(trial, p)

    def run(self, trial: Any, p: dict[str, Any]) -> float:
        import torch

        from fmlab.quant._data import load_token_data
        from fmlab.quant._model import LMConfig, PrecisionConfig
        from fmlab.quant._ptq import quantize_model
        from fmlab.quant._train import TrainConfig, evaluate_loss, train_lm

        spec = self.spec
        if self._data is None:
            self._data = load_token_data(spec.corpora, spec.vocab_size)
        data = self._data
        model_kw = dict(spec.models[int(p["model"][1:])])
        bits = spec.train_bits[spec.search_space()["train_bits"].index(p["train_bits"])]
        w, a, kv = bits  # type: ignore[misc]
        prec = PrecisionConfig.from_bits(*(None if math.isinf(x) else int(x) for x in bits))
        tc = TrainConfig(**{**spec.train, "lr": float(p["lr"])})
        res = train_lm(int(p["n_tokens"]), model_config=LMConfig(**model_kw), precision=prec,
                       train_config=tc, data=data, seed=int(p["seed"]), device=self.device)
        base = {"n_params": res.n_params, "n_tokens": int(p["n_tokens"]), "w_bits": w,
                "a_bits": a, "kv_bits": kv, "seed": int(p["seed"]), "lr": float(p["lr"]),
                "model": p["model"], **{f"cfg_{k}": v for k, v in model_kw.items()},
                "train_loss_final": res.train_losses[-1] if res.train_losses else math.nan,
                "seconds": res.seconds, "worker": f"{socket.gethostname()}:{os.getpid()}"}
        rows = [{**base, "post_bits": math.inf, "ptq_method": "none", "loss": res.val_loss,
                 "loss_before_ptq": res.val_loss, "delta_ptq": 0.0}]
        if not res.diverged:
            T = tc.seq_len
            calib = torch.from_numpy(data.calibration(spec.calib_sequences, T))
            for pb in spec.post_bits:
                if pb >= w:
                    continue
                q = quantize_model(res.model, int(pb), method=spec.ptq_method,  # type: ignore[arg-type]
                                   calibration=calib)
                loss = evaluate_loss(q.model, data, seq_len=T, batch_size=tc.batch_size,
                                     max_tokens=tc.eval_tokens)
                rows.append({**base, "post_bits": float(pb), "ptq_method": spec.ptq_method,
                             "loss": loss, "loss_before_ptq": res.val_loss,
                             "delta_ptq": loss - res.val_loss})
        trial.set_user_attr("rows", _jsonable(rows))
        trial.set_user_attr("diverged", bool(res.diverged))
        return float(res.val_loss)  # NaN → Optuna records the trial as FAILED


def _is_duplicate(trial: Any) -> bool:
    """Whether another trial has finished this grid point, or is running it and came first."""
    from optuna.trial import TrialState

    gid = hpo.own_trial(trial).system_attrs.get("grid_id")
    for t in trial.study.get_trials(deepcopy=False):
        if t.number == trial.number or t.system_attrs.get("grid_id") != gid:
            continue
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and _diverged(t)):
            return True
        if t.state == TrialState.RUNNING and t.number < trial.number:
            return True
    return False


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def conv(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return v

    return [{k: conv(v) for k, v in r.items()} for r in rows]


def run_sweep_worker(
    storage: str,
    name: str = "precision-sweep",
    *,
    heartbeat: float = 10.0,
    grace_period: float | None = None,
    poll: float | None = None,
    device: str = "cpu",
    max_runs: int | None = None,
) -> int:
    """Work on the sweep until every grid point is finished; returns the runs this worker did.

    Start as many workers as you like, on any machines that reach ``storage``. A worker keeps
    waiting while other workers' runs are in flight, so that if one of them dies its run is
    re-queued (after ``grace_period``, default ``2·heartbeat``) and still gets done.

    Args:
        storage: Database URL (SQLite or PostgreSQL).
        name: Study name given to :func:`create_sweep`.
        heartbeat: Seconds between heartbeats of a running trial.
        grace_period: Seconds without a heartbeat after which a run counts as dead.
        poll: Seconds between checks while waiting for others (default ``heartbeat``).
        device: Torch device for training.
        max_runs: Stop after this many runs (for testing and batch schedulers).
    """
    grace = grace_period if grace_period is not None else 2 * heartbeat
    study, spec, st = _load(storage, name, heartbeat, grace)
    return hpo.run_worker(study, _Objective(spec, device), _plan(spec), storage=st,
                          grace_period=grace, poll=poll if poll is not None else heartbeat,
                          max_trials=max_runs)


def run_sweep(spec: SweepSpec, storage: str | None = None, name: str = "precision-sweep", *,
              workers: int = 1, threads_per_worker: int | None = None,
              **worker_kwargs: Any) -> Any:
    """Create the sweep and work on it from this machine; returns :func:`sweep_table`.

    Args:
        spec: The grid.
        storage: Database URL; defaults to an SQLite file in the current directory
            (``fmlab-sweep.db``).
        name: Study name.
        workers: Worker processes on this machine (this process is one of them). Small models
            train fastest with one thread each, so on a ``k``-core machine ``workers=k`` is
            usually best.
        threads_per_worker: Torch threads in each *extra* worker (default: cores / workers).
        **worker_kwargs: Passed to :func:`run_sweep_worker` (``heartbeat``, ``device``, ...).
    """
    check_int(workers, "workers", owner="run_sweep", low=1)
    storage = storage or hpo.default_storage("fmlab-sweep.db")
    create_sweep(spec, storage, name)
    procs = hpo.start_local_workers(run_sweep_worker, (storage, name), workers - 1,
                                    threads=threads_per_worker or max(
                                        1, (os.cpu_count() or 1) // workers),
                                    kwargs=worker_kwargs, label="fmlab-sweep-worker") \
        if workers > 1 else []
    try:
        run_sweep_worker(storage, name, **worker_kwargs)
    finally:
        for proc in procs:
            proc.join()
    hpo.join_local_workers(procs, storage, "call run_sweep again with the same spec to resume.")
    return sweep_table(storage, name)


def sweep_table(storage: str, name: str = "precision-sweep", *,
                include_failed: bool = True) -> Any:
    """The sweep's runs as a pandas DataFrame, one row per (run, P_post).

    Columns: ``n_params, n_tokens, w_bits, a_bits, kv_bits, post_bits, loss`` (the scaling-law
    features and target), ``loss_before_ptq, delta_ptq, ptq_method, seed, lr, model, cfg_*,
    seconds, worker`` (``host:pid`` of the process that ran it), ``status`` (``"complete"`` or
    ``"failed"`` for diverged runs), ``trial``. Runs lost to a dead worker and end-of-sweep
    duplicates never appear.
    """
    import numpy as np
    import pandas as pd
    from optuna.trial import TrialState

    study, _, _ = _load(storage, name, 10, None)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL
                                              and t.user_attrs.get("diverged")):
            if t.state == TrialState.FAIL and not include_failed:
                continue
            status = "complete" if t.state == TrialState.COMPLETE else "failed"
            for r in t.user_attrs.get("rows", []):
                rows.append({**r, "status": status, "trial": t.number,
                             "grid_id": t.system_attrs.get("grid_id")})
    frame = pd.DataFrame(rows)
    for col in ("w_bits", "a_bits", "kv_bits", "post_bits", "loss", "loss_before_ptq",
                "delta_ptq", "train_loss_final"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col].replace({"nan": np.nan, "inf": np.inf}))
    if len(frame):
        frame = frame.sort_values(["n_params", "n_tokens", "w_bits", "a_bits", "kv_bits", "seed",
                                   "post_bits"]).reset_index(drop=True)
    return frame


def write_table(frame: Any, path: str | Path) -> Path:
    """Write a sweep table as CSV or Parquet (by suffix), atomically."""
    from fmlab._io import atomic_write

    path = Path(path)
    if path.suffix == ".parquet":
        with atomic_write(path, "wb") as fh:
            frame.to_parquet(fh, index=False)
    elif path.suffix == ".csv":
        with atomic_write(path) as fh:
            frame.to_csv(fh, index=False)
    else:
        raise ValueError(f"Unsupported table format {path.suffix!r} for {path}; use .csv or "
                         f".parquet.")
    return path
