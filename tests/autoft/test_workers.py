"""AutoFT across processes on the shared Optuna layer: local worker processes on SQLite, and two
workers on a real PostgreSQL server with one killed mid-trial (nothing lost, nothing run twice,
the same best as one worker running the same trials). Plus the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
import torch

from fmlab.autoft import AutoFT, SearchSpace, best_of, run_autoft_worker  # noqa: E402
from fmlab.cli import main  # noqa: E402

SPACE = SearchSpace(lr_base=1e-3)


def _objectives(n: int, seed: int = 0) -> list[dict]:
    """``n`` fixed objectives (trial parameters) drawn from the space."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        SPACE(t)
        out.append(t.params)
    return out


def _search(url: str, n: int, steps: int, **kw) -> AutoFT:
    return AutoFT(n_trials=n, inner_steps=steps, batch_size=32, space=SPACE, pruner="none",
                  storage=url, study_name="s", random_state=0, heartbeat=1, grace_period=3,
                  **kw)


def _key(params: dict) -> tuple:
    return tuple(sorted((k, round(v, 12)) for k, v in params.items()))


@pytest.mark.slow
def test_sqlite_local_worker_processes(tmp_path) -> None:
    """workers=2 on SQLite: the budget is met exactly, both processes run trials."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    s = _search(url, 6, 60, workers=2).fit_task("toy")
    trials = s.study_.trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 6 and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert len({t.user_attrs["worker"] for t in done}) == 2
    assert run_autoft_worker(url, "s", heartbeat=1) == 0  # nothing left to do


def _worker(url: str, log) -> subprocess.Popen:
    code = ("import torch; torch.set_num_threads(1); from fmlab.autoft import run_autoft_worker;"
            f" run_autoft_worker({url!r}, 's', heartbeat=1, grace_period=3, poll=0.3)")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))  # noqa: SIM115


@pytest.mark.slow
def test_postgres_two_workers_one_killed(postgres_url, tmp_path) -> None:
    torch.set_num_threads(1)
    n, steps = 6, 150
    objectives = _objectives(n)
    study = _search(postgres_url, n, steps).create("toy")
    for p in objectives:
        study.enqueue_trial(p)
    victim = _worker(postgres_url, tmp_path / "victim.log")
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the victim is inside a trial
        if any(t.state.name == "RUNNING" for t in study.get_trials()):
            break
        time.sleep(0.1)
    else:
        victim.kill()
        pytest.fail("the worker never started a trial: "
                    + (tmp_path / "victim.log").read_text()[-2000:])
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)  # dies mid-trial: its trial stays RUNNING
    victim.wait()
    workers = [_worker(postgres_url, tmp_path / f"w{i}.log") for i in range(2)]
    for i, w in enumerate(workers):
        w.wait(timeout=400)
        assert w.returncode == 0, (tmp_path / f"w{i}.log").read_text()[-2000:]
    trials = study.get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].params  # the killed trial ...
    counts = Counter(_key(t.params) for t in done)
    assert sorted(counts) == sorted(_key(p) for p in objectives)  # ... nothing lost
    assert set(counts.values()) == {1}  # ... nothing run twice
    assert _key(failed[0].params) in counts  # its objective ran again, once
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert len({t.user_attrs["worker"] for t in done}) >= 1

    # one worker, the same trials, in this process: the same best
    one = _search(f"sqlite:///{tmp_path / 'one.db'}", n, steps).create("toy")
    for p in objectives:
        one.enqueue_trial(p)
    assert run_autoft_worker(f"sqlite:///{tmp_path / 'one.db'}", "s", heartbeat=1) == n
    assert best_of(one) == best_of(study)


def test_cli_search_best_finetune_and_errors(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["autoft", "search", "--task", "toy", "--trials", "3", "--inner-steps", "5",
            "--lr-base", "1e-3", "--seed", "0"]
    assert main([*args, "--out", "best.json", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 3 and json.loads((tmp_path / "best.json").read_text()) == out[
        "best_params"]
    assert main(["autoft", "best", "--storage", "sqlite:///autoft.db", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["best_params"] == out["best_params"]
    assert main(["autoft", "finetune", "--task", "toy", "--params", "best.json", "--methods",
                 "zero_shot,erm,autoft", "--steps", "10", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["zero_shot", "erm", "autoft"]
    assert all(0 <= r["shift"] <= 1 for r in rows)
    # a resumed search with a different space is refused, naming the difference
    assert main([*args[:-4], "--lr-base", "1e-2"]) == 1
    assert "space.lr_base: stored 0.001, given 0.01" in capsys.readouterr().err
    assert main(["autoft", "work", "--storage", "nowhere.db"]) == 1
    assert "database URL" in capsys.readouterr().err
    assert main(["autoft", "search", "--task", "toi"]) == 1
    assert "Did you mean: toy" in capsys.readouterr().err
    assert main(["autoft", "terms", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 9
