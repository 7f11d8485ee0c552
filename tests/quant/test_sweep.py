"""Precision sweeps on Optuna: SQLite in-process, and PostgreSQL with two worker processes, a
killed worker and a restart (no run lost, none run twice)."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmlab.quant import SweepSpec, create_sweep, run_sweep, run_sweep_worker, sweep_table

SCALING_COLUMNS = ["n_params", "n_tokens", "w_bits", "a_bits", "kv_bits", "post_bits", "loss"]

TINY = {"d_model": 32, "n_layers": 1, "n_heads": 2}
TRAIN = {"seq_len": 32, "batch_size": 8, "eval_tokens": 1024}


def _spec(**kw):
    base = dict(models=[TINY], n_tokens=[2048], train_bits=[None, 4], post_bits=[3],
                train=TRAIN, calib_sequences=32, ptq_method="rtn")
    base.update(kw)
    return SweepSpec(**base)


def test_sqlite_sweep_table_nan_and_resume(tmp_path, token_data) -> None:
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    spec = _spec(lrs=[3e-3, 1e4])  # lr=1e4 diverges: recorded as failed, sweep goes on
    create_sweep(spec, url, "s")
    assert run_sweep_worker(url, "s", heartbeat=1, max_runs=1) == 1  # stop after one run ...
    table = run_sweep(spec, url, "s", heartbeat=1)  # ... and resume
    assert set(SCALING_COLUMNS) <= set(table.columns)
    runs = table[table.post_bits == math.inf]
    assert len(runs) == spec.n_grid == 4 and runs.grid_id.is_unique
    failed = runs[runs.status == "failed"]
    assert len(failed) == 2 and (failed.lr == 1e4).all() and failed.loss.isna().all()
    ok = table[(table.status == "complete")]
    assert ok.loss.notna().all()
    # P_post rows only below the training weight precision, with the PTQ delta
    ptq = ok[ok.post_bits == 3]
    assert len(ptq) == 2 and set(ptq.w_bits) == {4.0, math.inf}
    assert ((ptq.loss - ptq.loss_before_ptq - ptq.delta_ptq).abs() < 1e-12).all()
    assert set(runs.w_bits) == {4.0, math.inf}
    # Nothing left to do: another worker exits at once.
    assert run_sweep_worker(url, "s", heartbeat=1) == 0
    with pytest.raises(ValueError, match="different sweep spec"):
        create_sweep(_spec(n_tokens=[999]), url, "s")


ERRORS = [
    ({"ptq_method": "awq"}, ValueError, r"Invalid ptq_method 'awq'"),
    ({"n_tokens": []}, ValueError, r"'n_tokens' axis of SweepSpec is empty"),
    ({"train_bits": [1]}, ValueError, r"'train_bits' parameter of SweepSpec"),
    ({"train_bits": [(4, 4)]}, ValueError, r"one bit width or \(w, a, kv\)"),
    ({"post_bits": [16]}, ValueError, r"'post_bits' parameter of SweepSpec"),
    ({"models": [{"d_model": 30, "n_heads": 4}]}, ValueError, r"divisible by `n_heads`"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), ERRORS)
def test_spec_errors(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        _spec(**kwargs)


def test_bad_storage_url() -> None:
    with pytest.raises(ValueError, match="database URL"):
        create_sweep(_spec(), "sweep.db")


# -- PostgreSQL (the postgres_url fixture lives in tests/conftest.py) ------------------------
def _worker(url: str, log: Path) -> subprocess.Popen:
    code = ("import torch; torch.set_num_threads(1); from fmlab.quant import run_sweep_worker; "
            f"run_sweep_worker({url!r}, 'pg', heartbeat=1, grace_period=3, poll=0.5)")
    # a log file, not a pipe: a full pipe would block a chatty worker
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))  # noqa: SIM115


@pytest.mark.slow
def test_postgres_two_workers_kill_and_resume(postgres_url, token_data, tmp_path) -> None:
    import optuna
    from optuna.trial import TrialState

    spec = _spec(n_tokens=[4096, 8192], train_bits=[None, 4, 3])  # 6 runs
    create_sweep(spec, postgres_url, "pg")
    storage = optuna.storages.RDBStorage(postgres_url)
    victim = _worker(postgres_url, tmp_path / "victim.log")
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the first worker is inside a run
        trials = optuna.load_study(study_name="pg", storage=storage).get_trials()
        if any(t.state == TrialState.RUNNING for t in trials):
            break
        time.sleep(0.2)
    else:
        victim.kill()
        pytest.fail("the worker never started a run")
    time.sleep(1.5)  # let it get into the run (the test also passes when it dies at once)
    victim.send_signal(signal.SIGKILL)  # dies mid-run, its trial stays RUNNING
    victim.wait()
    workers = [_worker(postgres_url, tmp_path / f"w{i}.log") for i in range(2)]
    for i, w in enumerate(workers):
        w.wait(timeout=400)
        assert w.returncode == 0, (tmp_path / f"w{i}.log").read_text()[-2000:]
    table = sweep_table(postgres_url, "pg")
    runs = table[table.post_bits == math.inf]
    assert len(runs) == spec.n_grid and runs.grid_id.is_unique  # none lost, none twice
    assert (runs.status == "complete").all()
    trials = optuna.load_study(study_name="pg", storage=storage).get_trials()
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(killed) == 1 and "rows" not in killed[0].user_attrs  # the dead worker's run
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_sqlite_local_worker_processes(tmp_path, token_data) -> None:
    """``workers=2``: a second process works on the same SQLite study; every grid point runs
    exactly once and both processes take runs."""
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    spec = _spec(n_tokens=[20_000, 30_000], train_bits=[None, 8, 6, 4], post_bits=[])
    table = run_sweep(spec, url, "w", workers=2, threads_per_worker=1, heartbeat=1)
    runs = table[table.post_bits == math.inf]
    assert len(runs) == spec.n_grid == 8 and runs.grid_id.is_unique
    assert (runs.status == "complete").all()
    assert runs.worker.nunique() == 2, runs.worker.value_counts()
    with pytest.raises(ValueError, match="'workers' parameter of run_sweep"):
        run_sweep(spec, url, "w", workers=0)
