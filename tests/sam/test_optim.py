"""SAM as a torch optimizer: defining formula, base-optimizer equivalence, the training-loop
companions (weight decay, clipping, accumulation, AMP, batch norm, schedulers) and errors."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from fmlab.sam import SAM, frozen_bn_stats

torch.set_default_dtype(torch.float32)

# optim_db-style table: base optimizer class and its kwargs.
BASES = [
    (torch.optim.SGD, {"lr": 0.1}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}),
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
]


def _mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _batch(seed: int = 1, n: int = 16, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def _closure(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize(("base", "kwargs"), BASES)
def test_rho_zero_equals_base_optimizer_exactly(base, kwargs):
    m1, m2 = _mlp(), _mlp()
    sam = SAM(m1.parameters(), base, rho=0.0, **kwargs)
    ref = base(m2.parameters(), **kwargs)
    for step in range(4):
        x, y = _batch(step)
        sam.step(_closure(m1, sam, x, y))
        ref.step(_closure(m2, ref, x, y))
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)


def _quadratic(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=dtype)
    return a @ a.T + torch.eye(4, dtype=dtype)


@pytest.mark.parametrize("adaptive", [False, True])
def test_step_matches_the_defining_formula_on_a_quadratic(adaptive):
    a = _quadratic()
    w0 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    rho, lr = 0.3, 0.1
    opt = SAM([w], torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr)
    calls = []

    def closure():
        opt.zero_grad()
        loss = 0.5 * w @ a @ w
        loss.backward()
        calls.append(float(loss.detach()))
        return loss

    loss = opt.step(closure)
    g = a @ w0
    t = w0.abs() if adaptive else torch.ones_like(w0)
    eps = rho * t * t * g / (t * g).norm()
    expected = w0 - lr * (a @ (w0 + eps))
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-12)
    assert len(calls) == 2 and float(loss.detach()) == pytest.approx(float(0.5 * w0 @ a @ w0))
    assert calls[1] > calls[0]  # the perturbation ascends


def test_unperturb_restores_weights_bitwise():
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    x, y = _batch()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.first_step()
    assert opt.is_perturbed
    assert not torch.equal(model[0].weight, before["0.weight"])
    opt.unperturb()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def _sam_grad(model, x, y, rho):
    """Reference: gradient of the loss at w + rho g/||g|| (float64)."""
    params = list(model.parameters())
    g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(params, g, strict=True):
            p.add_(rho * gi / norm)
    g_sam = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    with torch.no_grad():
        for p, gi in zip(params, g, strict=True):
            p.sub_(rho * gi / norm)
    return g_sam


def test_weight_decay_acts_on_restored_weights_with_perturbed_gradient():
    model = _mlp(dtype=torch.float64)
    x, y = _batch(dtype=torch.float64)
    w0 = [p.detach().clone() for p in model.parameters()]
    g_sam = _sam_grad(copy.deepcopy(model), x, y, rho=0.2)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, weight_decay=0.3)
    opt.step(_closure(model, opt, x, y))
    for p, p0, g in zip(model.parameters(), w0, g_sam, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * (g + 0.3 * p0), rtol=0, atol=1e-12)


def test_gradient_clipping_rescales_the_perturbed_gradient():
    model = _mlp(dtype=torch.float64)
    x, y = _batch(dtype=torch.float64)
    w0 = [p.detach().clone() for p in model.parameters()]
    g_sam = _sam_grad(copy.deepcopy(model), x, y, rho=0.2)
    total = torch.sqrt(sum((g**2).sum() for g in g_sam))
    max_norm = float(total) / 4
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=1.0)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.first_step()
    nn.functional.cross_entropy(model(x), y).backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.second_step()
    for p, p0, g in zip(model.parameters(), w0, g_sam, strict=True):
        # clip_grad_norm_ scales by max_norm / (total + 1e-6)
        torch.testing.assert_close(p.detach(), p0 - g * max_norm / (total + 1e-6), rtol=0,
                                   atol=1e-12)


def test_gradient_accumulation_equals_the_full_batch_step():
    m_full, m_acc = _mlp(dtype=torch.float64), _mlp(dtype=torch.float64)
    x, y = _batch(n=16, dtype=torch.float64)
    o_full = SAM(m_full.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    o_acc = SAM(m_acc.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    for _ in range(2):
        o_full.step(_closure(m_full, o_full, x, y))
        o_acc.zero_grad()
        for xs, ys in zip(x.chunk(4), y.chunk(4), strict=True):
            (nn.functional.cross_entropy(m_acc(xs), ys) / 4).backward()
        o_acc.first_step()
        for xs, ys in zip(x.chunk(4), y.chunk(4), strict=True):
            (nn.functional.cross_entropy(m_acc(xs), ys) / 4).backward()
        o_acc.second_step()
    for p, q in zip(m_full.parameters(), m_acc.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def _amp_step(model, opt, scaler, x, y):
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    opt.first_step()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    opt.unperturb()
    scaler.step(opt.base_optimizer)
    scaler.update()
    opt.zero_grad()


def test_grad_scaler_recipe_matches_unscaled_sam():
    m_ref, m_amp = _mlp(), _mlp()
    o_ref = SAM(m_ref.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    o_amp = SAM(m_amp.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    for step in range(3):
        x, y = _batch(step)
        o_ref.step(_closure(m_ref, o_ref, x, y))
        _amp_step(m_amp, o_amp, scaler, x, y)
    for p, q in zip(m_ref.parameters(), m_amp.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_grad_scaler_overflow_skips_the_step_and_restores_weights():
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    x, y = _batch()
    x[0, 0] = float("inf")
    _amp_step(model, opt, scaler, x, y)
    assert scaler.get_scale() < 2.0**12
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_autocast_bfloat16_step_runs_and_decreases_loss():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.5)
    x, y = _batch(n=64)

    def closure():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    first = float(opt.step(closure).detach())
    for _ in range(20):
        last = float(opt.step(closure).detach())
    assert last < first
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_frozen_bn_stats_updates_running_statistics_once_per_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    ref = copy.deepcopy(model)
    x, y = _batch(n=32)
    ref(x)  # one forward at w: the statistics one SAM step should record
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.first_step()
    with frozen_bn_stats(model):
        nn.functional.cross_entropy(model(x), y).backward()
    opt.second_step()
    bn, bn_ref = model[1], ref[1]
    assert torch.equal(bn.running_mean, bn_ref.running_mean)
    assert torch.equal(bn.running_var, bn_ref.running_var)
    assert int(bn.num_batches_tracked) == 1 and bn.track_running_stats


def test_state_dict_round_trip_resumes_the_same_trajectory():
    def run(model, opt, steps):
        for s in steps:
            x, y = _batch(s)
            opt.step(_closure(model, opt, x, y))

    m_a = _mlp()
    o_a = SAM(m_a.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    run(m_a, o_a, range(6))

    m_b = _mlp()
    o_b = SAM(m_b.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    run(m_b, o_b, range(3))
    saved_model, saved_opt = copy.deepcopy(m_b.state_dict()), copy.deepcopy(o_b.state_dict())
    assert saved_opt["param_groups"][0]["rho"] == 0.1
    assert "momentum_buffer" in saved_opt["state"][0]

    m_c = _mlp(seed=5)
    m_c.load_state_dict(saved_model)
    o_c = SAM(m_c.parameters(), torch.optim.SGD, rho=0.7, lr=0.3, momentum=0.9)
    o_c.load_state_dict(saved_opt)
    assert o_c.base_optimizer.param_groups is o_c.param_groups
    assert o_c.base_optimizer.param_groups[0]["lr"] == 0.1
    run(m_c, o_c, range(3, 6))
    for p, q in zip(m_a.parameters(), m_c.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lr_scheduler_on_sam_drives_the_base_optimizer():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = _batch()
    opt.step(_closure(model, opt, x, y))
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.5


def test_perturb_false_group_is_stepped_but_not_perturbed():
    model = _mlp(dtype=torch.float64)
    x, y = _batch(dtype=torch.float64)
    body, head = model[0], model[2]
    ref = copy.deepcopy(model)
    # reference: gradient of the loss at (w_body, w_head + eps_head), eps from head grads only
    hp = list(ref[2].parameters())
    g = torch.autograd.grad(nn.functional.cross_entropy(ref(x), y), hp)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(hp, g, strict=True):
            p.add_(0.3 * gi / norm)
    g_ref = torch.autograd.grad(nn.functional.cross_entropy(ref(x), y), list(ref.parameters()))
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM([{"params": body.parameters(), "perturb": False}, {"params": head.parameters()}],
              torch.optim.SGD, rho=0.3, lr=1.0)
    opt.step(_closure(model, opt, x, y))
    for p, p0, gr in zip(model.parameters(), w0, g_ref, strict=True):
        torch.testing.assert_close(p.detach(), p0 - gr, rtol=0, atol=1e-12)


def test_add_param_group_reaches_the_base_optimizer():
    model = _mlp()
    opt = SAM(model[0].parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    opt.add_param_group({"params": model[2].parameters(), "rho": 0.0})
    assert len(opt.base_optimizer.param_groups) == 2
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["rho"] == 0.0


def test_frozen_parameters_without_gradients_are_skipped():
    model = _mlp()
    model[0].weight.requires_grad_(False)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    before = model[0].weight.detach().clone()
    x, y = _batch()
    opt.step(_closure(model, opt, x, y))
    assert torch.equal(model[0].weight, before)


ERRORS = [
    (lambda m: SAM(m.parameters(), torch.optim.SGD, rho=-0.1, lr=0.1), ValueError,
     r"The 'rho' parameter of SAM must be a float in the range \[0, inf\)\. Got -0\.1 instead"),
    (lambda m: SAM(m.parameters(), torch.optim.SGD, rho="0.05", lr=0.1), TypeError,
     r"'rho' parameter of SAM must be a float"),
    (lambda m: SAM(m.parameters(), torch.optim.SGD(m.parameters(), lr=0.1)), TypeError,
     r"must be an optimizer class such as torch.optim.SGD, not an instance \(SGD object\)"),
    (lambda m: SAM(m.parameters(), "sgd", lr=0.1), TypeError,
     r"must be a torch.optim.Optimizer subclass"),
    (lambda m: SAM(m.parameters(), torch.optim.SGD, adaptive="yes", lr=0.1), TypeError,
     r"'adaptive' parameter of SAM must be a bool"),
    (lambda m: SAM(m[0].weight, torch.optim.SGD, lr=0.1), TypeError, r"Got a single tensor"),
    (lambda m: SAM([{"params": m.parameters(), "rho": -1.0}], torch.optim.SGD, lr=0.1),
     ValueError, r"'rho' parameter of SAM \(param group\)"),
]


@pytest.mark.parametrize(("make", "error", "pattern"), ERRORS)
def test_constructor_errors(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make(_mlp())


def test_step_without_closure_explains_the_two_pass_api():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match=re.escape("optimizer.first_step()")):
        opt.step()


def test_call_order_errors():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    x, y = _batch()
    with pytest.raises(RuntimeError, match=r"second_step\(\) was called without first_step"):
        opt.second_step()
    with pytest.raises(RuntimeError, match=r"found no gradients.*Call loss.backward\(\) before"):
        opt.first_step()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.first_step()
    with pytest.raises(RuntimeError, match=r"called twice"):
        opt.first_step()
    with pytest.raises(RuntimeError, match=r"no gradients at the perturbed weights"):
        opt.second_step()
    opt.unperturb()


def test_closure_error_leaves_weights_restored():
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    x, y = _batch()
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("boom")
        return _closure(model, opt, x, y)()

    with pytest.raises(FloatingPointError):
        opt.step(closure)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
