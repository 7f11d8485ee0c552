"""AutoFT's loss terms against their formulas, the search space and objective files, and the
released code's defects (brief autoft.md §3) not repeated."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fmlab._paths import shared_dir  # noqa: E402
from fmlab.autoft import (  # noqa: E402
    LOSS_TERMS,
    AutoFTParams,
    LossBatch,
    SearchSpace,
    add_penalty_grads_,
    batch_loss,
    check_loss_weights,
    finetune,
    load_params,
    make_task,
    objective_loss,
)
from fmlab.autoft._finetune import _metric  # noqa: E402
from fmlab.exceptions import UnknownNameError  # noqa: E402

SHARED = shared_dir("autoft", "hparams")


def _batch(seed: int = 0, **kw) -> LossBatch:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    top = z.argmax(1)
    y = torch.where(torch.arange(6) < 3, top, (top + 1) % 4)  # 3 right, 3 wrong
    return LossBatch(logits=z, labels=y, **kw)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_terms_match_their_formulas() -> None:
    b = _batch()
    z, y = b.logits.numpy(), b.labels.numpy()
    p = _softmax(z)
    H = -(p * np.log(p)).sum(1)
    ce = -np.log(p[np.arange(6), y]).mean()
    hinge = np.mean([sum(max(0.0, z[i, j] - z[i, y[i]] + 1) for j in range(4) if j != y[i])
                     for i in range(6)])
    wrong = z.argmax(1) != y
    assert 0 < wrong.sum() < 6  # the dcm check below sees both kinds of example
    expect = {"ce": ce, "hinge": hinge, "entropy": H.mean(), "dcm": -(wrong * H).mean()}
    for name, value in expect.items():
        got = float(LOSS_TERMS.get(name).fn(b))
        assert got == pytest.approx(value, rel=1e-9), name


def test_dcm_sign_is_explicit() -> None:
    """Default: confidence *minimisation* on misclassified examples (entropy maximised, so the
    term is -H); "released" reproduces the released code's +H. Gradient descent on the default
    raises the entropy of a wrong prediction."""
    plus = float(LOSS_TERMS.get("dcm").fn(_batch(dcm_sign="released")))
    minus = float(LOSS_TERMS.get("dcm").fn(_batch()))
    assert minus < 0 < plus and minus == pytest.approx(-plus)
    z = torch.tensor([[3.0, 0.0, 0.0]], requires_grad=True)  # confidently wrong (label 1)
    batch = LossBatch(logits=z, labels=torch.tensor([1]))
    LOSS_TERMS.get("dcm").fn(batch).backward()
    with torch.no_grad():
        after = z - 0.1 * z.grad
    ent = lambda t: float(-(t.softmax(-1) * t.log_softmax(-1)).sum())  # noqa: E731
    assert ent(after) > ent(z.detach())


def test_flyp_is_the_clip_contrastive_loss() -> None:
    g = torch.Generator().manual_seed(1)
    f, text = torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1])
    b = LossBatch(logits=torch.zeros(5, 4), labels=y, features=f, text_features=text,
                  logit_scale=10.0)
    fn = f / f.norm(dim=1, keepdim=True)
    tn = (text / text.norm(dim=1, keepdim=True))[y]
    s = (10.0 * fn @ tn.T).numpy()
    lsm = lambda a: a - np.log(np.exp(a).sum(1, keepdims=True))  # noqa: E731
    expect = 0.5 * (-np.diag(lsm(s)).mean() - np.diag(lsm(s.T)).mean())
    assert float(LOSS_TERMS.get("flyp").fn(b)) == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="needs a dual encoder"):
        LOSS_TERMS.get("flyp").fn(_batch())


def test_weight_norm_terms_and_a_real_init_copy() -> None:
    """l1/l2 of the weights and of their distance from a *copy* of the pretrained weights; the
    released code's init terms were always zero (its copy aliased the live weights)."""
    w = [torch.tensor([1.0, -2.0]), torch.tensor([[3.0]])]
    w0 = [torch.tensor([0.0, -1.0]), torch.tensor([[1.0]])]
    b = LossBatch(logits=torch.zeros(1, 2), labels=torch.tensor([0]), params=w, init_params=w0)
    vals = {n: float(LOSS_TERMS.get(n).fn(b)) for n in ("l1zero", "l2zero", "l1init", "l2init")}
    assert vals == pytest.approx({"l1zero": 6 / 3, "l2zero": 14 / 3, "l1init": 4 / 3,
                                  "l2init": 6 / 3})
    task = make_task("toy")  # after one step, the init-distance terms are non-zero
    res = finetune(task.model, AutoFTParams({"ce": 1.0}, lr=1e-2), task.train, steps=1)
    params = [p.detach() for p in res.model.parameters()]
    init = [p.detach() for p in task.model.parameters()]
    b = LossBatch(logits=torch.zeros(1, 2), labels=torch.tensor([0]), params=params,
                  init_params=init)
    seen = {n: float(LOSS_TERMS.get(n).fn(b)) for n in ("l1init", "l2init")}
    assert seen["l1init"] > 1e-6 and seen["l2init"] > 0
    # ... and inside the loop: a run weighted on l2init alone moves less than ce alone
    run = lambda w: finetune(task.model, AutoFTParams(w, lr=5e-2), task.train, steps=5).model  # noqa: E731
    dist = lambda m: sum(float((p.detach() - q).square().sum())  # noqa: E731
                         for p, q in zip(m.parameters(), init, strict=True))
    assert dist(run({"ce": 1.0, "l2init": 10.0})) < dist(run({"ce": 1.0}))


def test_objective_loss_sums_weighted_terms() -> None:
    b = _batch()
    total, parts = objective_loss({"ce": 1.0, "hinge": 0.5, "entropy": 0.0}, b)
    assert set(parts) == {"ce", "hinge"}
    assert float(total) == pytest.approx(float(parts["ce"] + 0.5 * parts["hinge"]))


def test_metrics() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 0, 2, 1])
    groups = np.array([0, 0, 0, 1, 1, 1])
    assert _metric(pred, y, None, "accuracy") == pytest.approx(4 / 6)
    from sklearn.metrics import f1_score

    assert _metric(pred, y, None, "macro_f1") == pytest.approx(f1_score(y, pred,
                                                                        average="macro"))
    assert _metric(pred, y, groups, "worst_group_accuracy") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="needs group labels"):
        _metric(pred, y, None, "worst_group_accuracy")


# -- the search space and objective files --------------------------------------------------------
def test_released_files_load_and_round_trip(tmp_path) -> None:
    files = sorted(SHARED.glob("*.json")) if SHARED else []
    assert files, "the released AutoFT hparams ship in fmlab/_reference/autoft/hparams"
    for f in files:
        raw = json.loads(f.read_text())
        params = load_params(f)
        assert params.weights["ce"] == 1.0 and params.lr == raw["lr"]
        assert params.weight_decay == raw["wd"] and params.seed == raw["seed"]
        out = params.save(tmp_path / f.name)
        assert json.loads(out.read_text()) == pytest.approx(raw)  # same key format


def test_default_space_is_the_released_one() -> None:
    import optuna

    space = SearchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    p = space(trial)
    assert p.weights["ce"] == 1.0 and "lossw_ce" not in trial.params  # ce fixed, not sampled
    assert sorted(trial.params) == sorted([f"lossw_{t}" for t in space.terms if t != "ce"]
                                          + ["lr", "wd", "seed"])
    d = trial.distributions
    assert (d["lossw_dcm"].low, d["lossw_dcm"].high, d["lossw_dcm"].log) == (1e-4, 10.0, True)
    assert (d["lr"].low, d["lr"].high, d["lr"].log) == pytest.approx((1e-7, 1e-3, True))
    assert (d["wd"].low, d["wd"].high) == (0.0, 1.0) and (d["seed"].low, d["seed"].high) == (0, 10)
    assert "flyp" not in space.without("flyp").terms


BAD = [
    ({"cee": 1.0}, UnknownNameError, r"Unknown loss term 'cee'.*Did you mean: ce"),
    ({"l2int": 1.0}, UnknownNameError, r"Did you mean: l2init"),
    ({"ce": -0.5}, ValueError, r"weight of loss term 'ce' .* >= 0. Got -0.5"),
    ({"ce": math.nan}, ValueError, r"finite float"),
]


@pytest.mark.parametrize(("weights", "error", "match"), BAD)
def test_bad_weights(weights, error, match) -> None:
    with pytest.raises(error, match=match):
        check_loss_weights(weights)
    with pytest.raises(error, match=match):
        AutoFTParams(weights, lr=1e-3)


def test_bad_objective_files(tmp_path) -> None:
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"lossw_ce": 1.0, "lr": 1e-3, "learning_rate": 3}))
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['learning_rate'\]"):
        load_params(f)
    f.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_params(f)


@pytest.mark.parametrize("sign", ["maximize_entropy", "released"])
def test_fused_training_loss_matches_the_terms(sign) -> None:
    """The training loop's fused form (batch terms in one graph, the weight penalties'
    gradients added analytically) gives the loss and gradient of objective_loss."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    w0 = w + 0.3 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g)
    text = torch.randn(5, 5, generator=g, dtype=torch.float64)
    weights = {"ce": 1.0, "dcm": 0.7, "entropy": 0.3, "flyp": 0.4, "hinge": 0.2, "l1init": 2.0,
               "l1zero": 0.5, "l2init": 3.0, "l2zero": 0.25}

    def run(fused: bool):
        p = w.clone().requires_grad_(True)
        f = x @ p  # (7, 5)
        b = LossBatch(logits=3 * f, labels=y, features=f, text_features=text, logit_scale=2.0,
                      params=[p], init_params=[w0], dcm_sign=sign)
        if fused:
            loss = batch_loss(weights, b)
            loss.backward()
            loss = loss.detach() + add_penalty_grads_(weights, [p], [w0])
        else:
            loss, _ = objective_loss(weights, b)
            loss.backward()
        return float(loss.detach()), p.grad

    (ref, g_ref), (got, g_got) = run(False), run(True)
    assert got == pytest.approx(ref, rel=1e-10)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-9, atol=1e-12)
    for drop in ("l1zero", "l1init", "l2init"):  # each subset of penalties, value skipped
        sub = {k: v for k, v in weights.items() if k != drop}
        p = w.clone().requires_grad_(True)
        batch = lambda p=p: LossBatch(logits=3 * (x @ p), labels=y, features=x @ p,  # noqa: E731
                                      text_features=text, logit_scale=2.0, params=[p],
                                      init_params=[w0], dcm_sign=sign)
        objective_loss(sub, batch())[0].backward()
        want, p.grad = p.grad, None
        batch_loss(sub, batch()).backward()
        assert add_penalty_grads_(sub, [p], [w0], value=False) == 0.0
        torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-12)
    assert float(batch_loss({"l2zero": 1.0}, LossBatch(logits=torch.zeros(2, 3),
                                                       labels=torch.tensor([0, 1])))) == 0.0
