"""The shared attack loop, exercised by a continuous (PGD-shaped) and a discrete (GCG-shaped) toy
attack: both are just proposal/projection hooks on the same loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fmlab.attacks import ATTACKS, BaseAttack, Budget, Proposal, create_attack, list_attacks
from fmlab.testing.attacks import check_attack


class SignStep(BaseAttack):
    """PGD-shaped: one gradient-sign candidate, clipped to an L-inf ball and [0, 1]."""

    name = "sign_step"

    def __init__(self, eps=0.3, step_size=0.05, steps=12, random_start=True, random_state=0,
                 max_queries=None, max_time_s=None):
        self.eps, self.step_size, self.steps = eps, step_size, steps
        self.random_start, self.random_state = random_start, random_state
        self.max_queries, self.max_time_s = max_queries, max_time_s

    def init(self, objective, x0, rng):
        if not self.random_start:
            return x0.clone(), {}
        noise = (torch.rand(x0.shape, generator=rng) * 2 - 1) * self.eps
        return x0 + noise, {"momentum": torch.zeros_like(x0)}

    def propose(self, objective, x, buffers, rng):
        x = x.clone().requires_grad_(True)
        loss = objective(x[None])[0]
        (grad,) = torch.autograd.grad(loss, x)
        if "momentum" in buffers:
            buffers["momentum"].mul_(0.5).add_(grad.sign())
            grad = buffers["momentum"]
        return Proposal((x - self.step_size * grad.sign()).detach()[None], float(loss.detach()), 1)

    def project(self, candidates, x0, objective=None):
        return torch.clamp(torch.minimum(torch.maximum(candidates, x0 - self.eps), x0 + self.eps),
                           0, 1)

    def losses(self, objective, xs):
        return objective(xs)


class RandomSwap(BaseAttack):
    """GCG-shaped: a batch of single-position swaps, filtered, scored in one call, argmin kept."""

    name = "random_swap"
    steps_param = "num_steps"

    def __init__(self, num_steps=15, search_width=16, vocab=10, banned=(7,), random_state=0):
        self.num_steps, self.search_width, self.vocab = num_steps, search_width, vocab
        self.banned, self.random_state = banned, random_state

    def propose(self, objective, x, buffers, rng):
        cand = x.repeat(self.search_width, 1)  # (B, L)
        pos = torch.randint(0, x.numel(), (self.search_width,), generator=rng)
        tok = torch.randint(0, self.vocab, (self.search_width,), generator=rng)
        cand[torch.arange(self.search_width), pos] = tok
        return Proposal(cand, None, 0)

    def project(self, candidates, x0, objective=None):
        keep = ~torch.isin(candidates, torch.tensor(self.banned)).any(dim=1)
        return candidates[keep]

    def losses(self, objective, xs):
        return objective(xs)


def quadratic(xs):  # (B, 4) -> (B,), minimum at 0.9 outside the eps-ball around 0.5
    return ((xs - 0.9) ** 2).sum(dim=-1)


TARGET = torch.tensor([3, 1, 4, 1, 5, 9])


def mismatches(xs):  # (B, 6) -> (B,)
    return (xs != TARGET).sum(dim=-1).float()


def test_contract_continuous():
    x0 = torch.full((4,), 0.5)
    check_attack(SignStep(), quadratic, x0,
                 constraint=lambda xa, x: bool((xa - x).abs().max() <= 0.3 + 1e-6))


def test_contract_discrete():
    x0 = torch.zeros(6, dtype=torch.long)
    res = check_attack(RandomSwap(), mismatches, x0,
                       constraint=lambda xa, x: not bool(torch.isin(xa, torch.tensor([7])).any()))
    # GCG-shaped: every step scored its candidates, so the trace has no gaps
    assert not any(math.isnan(v) for v in res.losses)
    assert res.n_queries > res.n_steps


def test_pgd_shaped_step_reaches_ball_edge():
    res = SignStep(steps=30, random_start=False)(quadratic, torch.full((4,), 0.5), progress=False)
    assert torch.allclose(res.x_adv, torch.full((4,), 0.8), atol=1e-6)
    assert res.best_step == 5  # 0.5 + 6 * 0.05 reaches the edge; later iterates do not improve
    assert res.n_queries == 31  # 30 gradient passes + the final scoring


def test_early_stop_on_success():
    res = RandomSwap(num_steps=500)(
        mismatches, torch.zeros(6, dtype=torch.long), success=lambda x, loss: loss == 0,
        progress=False)
    assert res.stop_reason == "success" and res.success and res.n_steps < 500
    assert torch.equal(res.x_adv, TARGET) and res.best_loss == 0


def test_objective_success_hook():
    class Obj:
        def __call__(self, xs):
            return mismatches(xs)

        def is_success(self, x):
            return bool((x == TARGET).sum() >= 3)

    res = RandomSwap(num_steps=500)(Obj(), torch.zeros(6, dtype=torch.long), progress=False)
    assert res.stop_reason == "success" and int((res.x_adv == TARGET).sum()) >= 3


@pytest.mark.parametrize(("kwargs", "reason"), [({"max_queries": 5}, "queries"),
                                                ({"max_time_s": 1e-9}, "time")])
def test_budget_stops(kwargs, reason):
    res = SignStep(steps=100, **kwargs)(quadratic, torch.full((4,), 0.5), progress=False)
    assert res.stop_reason == reason and res.n_steps < 100


def test_zero_steps_scores_start_point():
    res = SignStep(steps=0, random_start=False)(quadratic, torch.full((4,), 0.5), progress=False)
    assert res.n_steps == 0 and res.best_loss == pytest.approx(0.64) and res.n_queries == 1


def test_snapshot_is_safetensors_and_json_and_guarded(tmp_path):
    x0 = torch.full((4,), 0.5)
    SignStep(steps=4)(quadratic, x0, snapshot_dir=tmp_path / "s", progress=False)
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == ["state.json", "state.safetensors"]
    assert json.loads((tmp_path / "s" / "state.json").read_text())["step"] == 4
    # a finished snapshot resumes to the same result without new work
    again = SignStep(steps=4)(quadratic, x0, snapshot_dir=tmp_path / "s", progress=False)
    assert again.n_steps == 4
    with pytest.raises(ValueError, match="different attack, parameters or start point"):
        SignStep(steps=5)(quadratic, x0, snapshot_dir=tmp_path / "s", progress=False)
    fresh = SignStep(steps=5)(quadratic, x0, snapshot_dir=tmp_path / "s", resume=False,
                              progress=False)
    assert fresh.n_steps == 5


def test_project_rejecting_everything_is_a_clear_error():
    with pytest.raises(RuntimeError, match="rejected every candidate.*search_width"):
        RandomSwap(banned=tuple(range(1, 10)))(mismatches, torch.zeros(6, dtype=torch.long),
                                                progress=False)
    with pytest.raises(ValueError, match="start point violates the constraint of RandomSwap"):
        RandomSwap()(mismatches, torch.full((6,), 7), progress=False)


@pytest.mark.parametrize(("kwargs", "err", "msg"), [
    ({"steps": -1}, ValueError, "'steps' parameter of Budget must be an int in the range"),
    ({"steps": 2, "max_queries": 0}, ValueError, "'max_queries'"),
    ({"steps": 2, "max_time_s": -1.0}, ValueError, "'max_time_s'"),
    ({"steps": 1.5}, TypeError, "'steps'"),
])
def test_budget_errors(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        Budget(**kwargs)


def test_bad_start_point_and_snapshot_every():
    with pytest.raises(TypeError, match="start point 'x' of SignStep must be a torch.Tensor"):
        SignStep()(quadratic, [0.5, 0.5], progress=False)
    with pytest.raises(ValueError, match="snapshot_every"):
        SignStep()(quadratic, torch.zeros(4), snapshot_every=0, progress=False)


def test_registry():
    ATTACKS.register("test_sign_step", SignStep, override=True)
    try:
        assert "test_sign_step" in list_attacks("test_*")
        attack = create_attack("test_sign_step", steps=3)
        assert isinstance(attack, SignStep) and attack.steps == 3
        with pytest.raises(KeyError, match="Did you mean: test_sign_step"):
            create_attack("test_sign_stpe")
    finally:
        ATTACKS._entries.pop("test_sign_step")
