"""AutoFT's search: the trial's lr and wd reach the optimizer, seeded TPE is reproducible, the
pruner is fed, the best objective is what its trial used, and bad input is refused."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from fmlab.autoft import (  # noqa: E402
    AutoFT,
    AutoFTParams,
    SearchSpace,
    evaluate,
    finetune,
    make_task,
    run_method,
    wise_ft,
)

SPACE = SearchSpace(lr_base=1e-3)


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return make_task("toy")


def _search(task, **kw) -> AutoFT:
    args = dict(n_trials=8, inner_steps=8, batch_size=32, space=SPACE, random_state=0,
                n_startup_trials=4)
    args.update(kw)
    return AutoFT(**args).fit(task.model, task.train, task.ood_val, test_data=task.tests)


def test_trial_lr_and_wd_reach_the_optimizer(task) -> None:
    """Defect 1 of the released code: the searched lr never reached the optimizer."""
    def space(trial):
        p = SPACE(trial)
        return AutoFTParams(p.weights, lr=trial.suggest_float("lr_x", 0.0123, 0.0123),
                            weight_decay=0.345, seed=p.seed)

    s = _search(task, n_trials=2, space=space, pruner="none")
    for t in s.study_.trials:
        assert t.user_attrs["optimizer"] == {"lr": 0.0123, "weight_decay": 0.345}
    res = finetune(task.model, AutoFTParams({"ce": 1.0}, lr=0.02, weight_decay=0.7),
                   task.train, steps=2, schedule="cosine", warmup_steps=1)
    assert res.optimizer == pytest.approx({"lr": 0.02, "weight_decay": 0.7})
    # the lr really acts: ten times the lr moves the weights further
    init = [p.detach().clone() for p in task.model.parameters()]
    dist = lambda lr: sum(float((p.detach() - q).square().sum()) for p, q in zip(  # noqa: E731
        finetune(task.model, AutoFTParams({"ce": 1.0}, lr=lr), task.train, steps=3,
                 clip_grad=None).model.parameters(), init, strict=True))
    assert dist(1e-2) > 10 * dist(1e-4)


def test_seeded_tpe_same_best_params(task, tmp_path) -> None:
    a, b = _search(task), _search(task)
    assert a.best_params_ == b.best_params_ and a.best_value_ == b.best_value_
    c = _search(task, random_state=1)
    assert [t.params for t in c.study_.trials] != [t.params for t in a.study_.trials]
    # the saved best is exactly what its trial used: ce 1.0, never a sampled value
    path = a.save_best(tmp_path / "best.json")
    saved = json.loads(path.read_text())
    assert saved["lossw_ce"] == 1.0 and set(saved) == {
        *(f"lossw_{t}" for t in SearchSpace().terms), "lr", "wd", "seed"}
    complete = [t for t in a.study_.trials if t.state.name == "COMPLETE"]
    assert saved in [t.user_attrs["fmlab_params"] for t in complete
                     if t.value == max(u.value for u in complete)]


def test_pruner_is_fed_by_reports(task) -> None:
    s = _search(task, n_trials=12, inner_steps=8, eval_every=2, n_startup_trials=3)
    trials = s.study_.trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert all(sorted(t.intermediate_values) == [2, 4, 6, 8] for t in complete)
    assert any(t.state.name == "PRUNED" for t in trials)  # the median pruner acted
    assert all(t.value == t.intermediate_values[8] for t in complete)


def test_a_trial_can_be_the_final_run(task) -> None:
    """select='id_val' with the final run's steps, schedule and evaluation: the best trial's
    OOD-validation value is that of run_method('autoft') with its objective (same weights,
    same step picked on ID validation), so the search ranks the runs it hands over."""
    with pytest.raises(ValueError, match="id_val_data"):
        _search(task, n_trials=1, select="id_val")
    s = AutoFT(n_trials=4, inner_steps=20, batch_size=32, space=SearchSpace(lr_base=1e-3),
               eval_every=2, schedule="cosine", select="id_val", pruner="none",
               random_state=0).fit(task.model, task.train, task.ood_val,
                                   id_val_data=task.id_val)
    final = run_method("autoft", task.model, task.train, task.id_val, steps=20, batch_size=32,
                       params=s.best_params_)
    assert evaluate(final.model, task.ood_val) == s.best_value_
    last = finetune(task.model, s.best_params_, task.train, steps=20, batch_size=32,
                    schedule="cosine")
    assert final.best_step is not None
    if final.best_step != 20:  # a picked earlier step is what was scored, not the last one
        assert any(not torch.equal(p, q) for p, q in zip(
            final.model.parameters(), last.model.parameters(), strict=True))


def test_methods_and_wise_ft(task) -> None:
    zs = run_method("zero_shot", task.model, task.train, task.id_val, steps=0)
    erm = run_method("erm", task.model, task.train, task.id_val, steps=20, lr=1e-2)
    assert erm.best_step is not None and erm.id_val >= evaluate(zs.model, task.id_val) - 0.05
    mid = wise_ft(zs.model, erm.model, 0.0)
    for p, q in zip(mid.parameters(), zs.model.parameters(), strict=True):
        assert torch.equal(p, q)
    half = wise_ft(zs.model, erm.model, 0.5)
    p0, p1, ph = (next(m.parameters()) for m in (zs.model, erm.model, half))
    assert torch.allclose(ph, (p0 + p1) / 2)
    lp = run_method("lp_ft", task.model, task.train, task.id_val, steps=10, lr=1e-2)
    flyp = run_method("flyp", task.model, task.train, task.id_val, steps=10, lr=1e-2)
    assert lp.model is not task.model and flyp.params.weights == {"flyp": 1.0}
    with pytest.raises(ValueError, match="needs params="):
        run_method("autoft", task.model, task.train, task.id_val, steps=5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_input(task, tmp_path) -> None:
    from fmlab.autoft import TensorData

    overlap = TensorData(task.ood_val.x[:5], task.ood_val.y[:5], ids=[f"img{i}" for i in range(5)])
    val = TensorData(task.ood_val.x, task.ood_val.y, ids=[f"img{i}" for i in range(128)])
    with pytest.raises(ValueError, match=r"overlaps the test set in 5 example.*'img0'"):
        AutoFT(n_trials=1).fit(task.model, task.train, val, test_data=overlap)
    with pytest.raises(ValueError, match=r"overlaps the shift set in 3"):  # content hashes
        AutoFT(n_trials=1).fit(task.model, task.train, task.ood_val, test_data={
            "shift": TensorData(task.ood_val.x[:3].clone(), task.ood_val.y[:3])})
    import psycopg  # noqa: F401  (fmlab[hpo]; a missing install must fail, not skip)
    with pytest.raises(ConnectionError, match="cannot be reached"):
        _search(task, storage=f"postgresql+psycopg://u@127.0.0.1:{_closed_port()}/db")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _search(task, n_trials=2, storage=url, study_name="s")
    _search(task, n_trials=3, storage=url, study_name="s")  # a larger budget resumes
    with pytest.raises(ValueError, match=r"(?s)different search.*space.lr_base: stored 0.001, "
                                         r"given 0.01"):
        _search(task, n_trials=3, storage=url, study_name="s", space=SearchSpace(lr_base=1e-2))
    with pytest.raises(ValueError, match="'n_trials' parameter of AutoFT"):
        AutoFT(n_trials=0).fit(task.model, task.train, task.ood_val)
    with pytest.raises(ValueError, match="Invalid metric 'f1'"):
        AutoFT(metric="f1").fit(task.model, task.train, task.ood_val)
    with pytest.raises(ValueError, match="needs a dual encoder"):
        from torch import nn

        from fmlab.autoft import FineTunable

        plain = FineTunable(nn.Identity(), nn.Linear(8, 3))
        finetune(plain, AutoFTParams({"flyp": 1.0}, lr=1e-3), task.train, steps=1)
