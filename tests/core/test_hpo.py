"""The shared Optuna layer (fmlab._hpo): storage errors, resume checks, the worker loop, and no
private Optuna attributes anywhere in fmlab."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import optuna
import pytest

from fmlab import _hpo as hpo  # noqa: E402


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_storage_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"'storage' must be a database URL .* Got 'study\.db'"):
        hpo.open_storage("study.db")
    with pytest.raises(ConnectionError, match="folder .* does not exist"):
        hpo.open_storage(f"sqlite:///{tmp_path}/missing/study.db")
    import psycopg  # noqa: F401  (fmlab[hpo]; a missing one fails)
    url = f"postgresql+psycopg://bob:secret@127.0.0.1:{_closed_port()}/db"
    with pytest.raises(ConnectionError, match=r"cannot be reached.*server is running") as err:
        hpo.open_storage(url)
    assert "secret" not in str(err.value) and "bob:***@" in str(err.value)


def test_resume_refuses_a_different_spec(tmp_path) -> None:
    url = hpo.default_storage(str(tmp_path / "s.db"))
    spec = {"space": {"lr": [1e-5, 1e-3], "wd": [0, 1]}, "n_trials": 4}
    hpo.open_study("s", url, spec=spec)
    hpo.open_study("s", url, spec=spec)  # same spec: resumes
    changed = {"space": {"lr": [1e-5, 1e-2], "seed": [0, 10]}, "n_trials": 4}
    with pytest.raises(ValueError, match="different search space") as err:
        hpo.open_study("s", url, spec=changed, what="search space")
    msg = str(err.value)
    assert "space.lr: stored [1e-05, 0.001], given [1e-05, 0.01]" in msg
    assert "space.seed: not stored" in msg and "space.wd: stored [0, 1], not given" in msg
    with pytest.raises(ValueError, match="There is no study 'other'"):
        hpo.open_study("other", url, create=False)
    assert hpo.stored_spec("s", hpo.open_storage(url)) == spec


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_worker_loop_runs_the_plan_and_requeues_a_dead_trial(tmp_path) -> None:
    """A trial left RUNNING by a 'dead' worker (never beating) is failed after the grace period
    and its parameters re-queued once; the loop then runs it and stops when the plan says so."""
    url = hpo.default_storage(str(tmp_path / "w.db"))
    st = hpo.open_storage(url, heartbeat=1, grace_period=1)
    study = hpo.open_study("w", st, sampler=optuna.samplers.RandomSampler(seed=0))
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # claimed, then lost
    seen: list[float] = []

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        seen.append(x)
        return x

    def plan(trials):
        done = hpo.finished_trials(trials)
        if len(done) >= 3:
            return "done"
        running = [t for t in trials if t.state.name == "RUNNING"]
        waiting = [t for t in trials if t.state.name == "WAITING"]
        return "start" if waiting or len(done) + len(running) < 3 else "wait"

    ran = hpo.run_worker(study, objective, plan, storage=st, grace_period=1, poll=0.3)
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 3 and ran == 3
    assert dead.params["x"] in seen  # the dead trial's parameters ran again, exactly once
    assert seen.count(dead.params["x"]) == 1


def test_no_private_optuna_attributes_in_fmlab() -> None:
    """Issue #16: the Optuna layer uses the public API only."""
    root = Path(hpo.__file__).parent
    bad = re.compile(r"\.(_storage|_trial_id|_cached_frozen_trial)\b|study\._")
    hits = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert not hits, hits
