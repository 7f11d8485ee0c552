"""The explaining variants against their defining formulas (arXiv 2405.03676): linear models,
the two-layer linear closed form, autograd identities on a small MLP, and the regularisers."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from fmlab.exceptions import UnknownNameError
from fmlab.sam import (
    SAM,
    LastLayerPenalty,
    SAMVariant,
    feature_norm_penalty,
    get_variant,
    list_variants,
    variant_step,
    weight_norm_penalty,
)

D = torch.float64


def logistic(f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean logistic loss log(1 + exp(-t f)) with labels t in {-1, +1}."""
    return nn.functional.softplus(-t * f).mean()


def _update(model, x, y, variant, *, rho, loss_fn=None):
    """Minus the gradient a variant applies (SGD with lr=1, no momentum)."""
    before = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=1.0)
    variant_step(opt, model, x, y, variant, loss_fn=loss_fn)
    return [b - p.detach() for b, p in zip(before, model.parameters(), strict=True)]


def _linear_data(n=12, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=D)
    t = torch.where(torch.rand(n, 1, generator=g, dtype=D) < 0.5, -1.0, 1.0).to(D)
    return x, t


def _linear(d=4, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, 1, bias=False).to(D)


def test_linear_model_sam_equals_lsam_and_jsam_equals_sgd():
    x, t = _linear_data()
    m = _linear()
    g = {v: _update(copy.deepcopy(m), x, t, v, rho=0.3, loss_fn=logistic)[0]
         for v in list_variants()}
    torch.testing.assert_close(g["jacobian"], g["sgd"], rtol=0, atol=1e-14)
    torch.testing.assert_close(g["logit"], g["sam"], rtol=0, atol=1e-14)
    assert (g["sam"] - g["sgd"]).abs().max() > 1e-3


def test_linear_model_single_example_closed_form_weight():
    """SAM's gradient is -t sigma(-m + rho ||x||) x: the example's weight grows by
    sigma(-m + rho||x||) / sigma(-m) relative to SGD."""
    x, t = _linear_data(n=1)
    m = _linear()
    rho = 0.4
    margin = (t * m(x)).item()
    xn = x.norm().item()
    g_sam = _update(copy.deepcopy(m), x, t, "sam", rho=rho, loss_fn=logistic)[0]
    g_sgd = _update(copy.deepcopy(m), x, t, "sgd", rho=rho, loss_fn=logistic)[0]
    sig = torch.sigmoid
    expected = -t * sig(torch.tensor(-margin + rho * xn, dtype=D)) * x
    torch.testing.assert_close(g_sam, expected, rtol=0, atol=1e-12)
    ratio = (g_sam / g_sgd).mean().item()
    closed = (sig(torch.tensor(-margin + rho * xn, dtype=D))
              / sig(torch.tensor(-margin, dtype=D))).item()
    assert ratio == pytest.approx(closed, rel=1e-9)


def test_two_layer_linear_jsam_equals_sgd_plus_weighted_l2_penalty():
    """f = v^T W x: J-SAM = SGD + grad[(rho/2) sg(sigma(-t f)/||grad f||) (||x||^2||v||^2 +
    ||W x||^2)], exactly."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 7, bias=False), nn.Linear(7, 1, bias=False)).to(D)
    x, t = _linear_data(n=1, d=5, seed=3)
    rho = 0.25
    g_j = _update(copy.deepcopy(net), x, t, "jacobian", rho=rho, loss_fn=logistic)

    ref = copy.deepcopy(net)
    w, v = ref[0].weight, ref[1].weight  # (7, 5), (1, 7)
    f = ref(x)
    wx = x @ w.T  # (1, 7)
    grad_f_norm = torch.sqrt((wx**2).sum() + (v**2).sum() * (x**2).sum())
    c = (torch.sigmoid(-t * f) / grad_f_norm).detach()
    reg = 0.5 * rho * c * ((x**2).sum() * (v**2).sum() + (wx**2).sum())
    expected = torch.autograd.grad(logistic(f, t) + reg.sum(), [w, v])
    for got, want in zip(g_j, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)


def test_variants_match_jacobian_formulas_on_a_small_mlp():
    """SAM: J(w+e)^T r(w+e); L-SAM: J(w)^T r(w+e); J-SAM: J(w+e)^T r(w), with r the mean-CE
    residual (softmax - onehot) / B and J from torch.func.jacrev."""
    model = _mlp()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 4, generator=g, dtype=D), torch.randint(0, 3, (6,), generator=g)
    rho = 0.5
    names = [n for n, _ in model.named_parameters()]
    w = {n: p.detach() for n, p in model.named_parameters()}

    def f(params):
        return functional_call(model, params, (x,))  # (B, C)

    def residual(params):
        logits = f(params)
        return (logits.softmax(1) - nn.functional.one_hot(y, 3)) / len(x)  # (B, C)

    grad = torch.func.grad(lambda p: nn.functional.cross_entropy(f(p), y))(w)
    norm = torch.sqrt(sum((grad[n] ** 2).sum() for n in names))
    w_eps = {n: w[n] + rho * grad[n] / norm for n in names}

    def jtr(params_j, params_r):
        jac = jacrev(f)(params_j)  # name -> (B, C, *shape)
        r = residual(params_r)
        return [torch.einsum("bc,bc...->...", r, jac[n]) for n in names]

    want = {"sam": jtr(w_eps, w_eps), "logit": jtr(w, w_eps), "jacobian": jtr(w_eps, w),
            "sgd": jtr(w, w)}
    for variant, expected in want.items():
        got = _update(copy.deepcopy(model), x, y, variant, rho=rho)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12), variant


def test_variant_step_returns_the_loss_at_w_and_keeps_bn_stats_single():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    expected = nn.functional.cross_entropy(copy.deepcopy(model)(x), y)
    for i, variant in enumerate(["sam", "logit", "jacobian", "sgd"]):
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.0)
        loss = variant_step(opt, model, x, y, variant)
        assert int(model[1].num_batches_tracked) == i + 1
        torch.testing.assert_close(loss, expected.detach())


def test_last_layer_penalty_value_gradient_and_hook():
    torch.manual_seed(0)
    body, head = nn.Sequential(nn.Linear(4, 5), nn.ReLU()), nn.Linear(5, 3)
    model = nn.Sequential(body, head)
    x = torch.randn(8, 4)
    pen = LastLayerPenalty(head, weight=0.1, feature=0.01)
    model(x)
    phi = body(x)
    expected = 0.1 * head.weight.pow(2).sum() + 0.01 * phi.pow(2).sum(1).mean()
    torch.testing.assert_close(pen(), expected)
    torch.testing.assert_close(
        weight_norm_penalty(head, 0.1) + feature_norm_penalty(phi, 0.01), expected)
    pen().backward()
    torch.testing.assert_close(head.weight.grad, 0.2 * head.weight.detach())
    assert body[0].weight.grad is not None  # the feature term reaches the body
    pen.remove()
    assert not head._forward_pre_hooks


def test_penalised_sgd_step_costs_one_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    calls = []
    model[0].register_forward_hook(lambda *a: calls.append(1))
    pen = LastLayerPenalty(model[2], weight=1e-3, feature=1e-3)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    variant_step(opt, model, torch.randn(8, 4), torch.randint(0, 3, (8,)), "sgd", penalty=pen)
    assert len(calls) == 1


ERRORS = [
    (lambda: LastLayerPenalty(nn.ReLU(), weight=1.0), TypeError, r"must be the network's last"),
    (lambda: LastLayerPenalty(nn.Linear(2, 2), weight=-1.0), ValueError,
     r"'weight' parameter of LastLayerPenalty must be a float in the range \[0, inf\)"),
    (lambda: SAMVariant("x", "w", "w + eps"), ValueError,
     r"Invalid jacobian_at 'w \+ eps' for SAMVariant. Valid options are: \('w', 'w\+eps'\)"),
    (lambda: get_variant("jsam"), UnknownNameError, r"Unknown SAM variant 'jsam'"),
    (lambda: variant_step(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1),
                          nn.Linear(2, 2), torch.randn(3, 2), torch.zeros(3, dtype=torch.long)),
     TypeError, r"must be a fmlab.sam.SAM instance. Got SGD"),
]


@pytest.mark.parametrize(("make", "error", "pattern"), ERRORS)
def test_errors(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_registry_lists_the_four_variants():
    assert sorted(list_variants()) == ["jacobian", "logit", "sam", "sgd"]
    v = get_variant("jacobian")
    assert (v.logit_at, v.jacobian_at) == ("w", "w+eps") and v.perturbs
    assert not get_variant("sgd").perturbs


def test_import_fmlab_sam_does_not_import_torch():
    code = "import sys, fmlab.sam; assert 'torch' not in sys.modules; print(fmlab.sam.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "SAM" in out.stdout


def _update_m(model, x, y, variant, *, rho, m, loss_fn=None):
    before = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=1.0)
    variant_step(opt, model, x, y, variant, loss_fn=loss_fn, m=m)
    return [b - p.detach() for b, p in zip(before, model.parameters(), strict=True)]


@pytest.mark.parametrize("variant", ["sam", "jacobian", "logit"])
def test_one_sam_is_the_mean_of_per_example_variant_steps(variant):
    """m=1 (1-SAM): each example gets eps_i from its own gradient; the update is the mean."""
    model = _mlp()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(5, 4, generator=g, dtype=D), torch.randint(0, 3, (5,), generator=g)
    got = _update_m(copy.deepcopy(model), x, y, variant, rho=0.4, m=1)
    per = [_update(copy.deepcopy(model), x[i:i + 1], y[i:i + 1], variant, rho=0.4)
           for i in range(5)]
    for k, a in enumerate(got):
        torch.testing.assert_close(a, sum(p[k] for p in per) / 5, rtol=0, atol=1e-12)
    full = _update_m(copy.deepcopy(model), x, y, variant, rho=0.4, m=5)
    ref = _update(copy.deepcopy(model), x, y, variant, rho=0.4)
    for a, b in zip(full, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_two_layer_linear_one_jsam_equals_sgd_plus_per_example_penalties():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 7, bias=False), nn.Linear(7, 1, bias=False)).to(D)
    x, t = _linear_data(n=6, d=5, seed=4)
    rho = 0.3
    got = _update_m(copy.deepcopy(net), x, t, "jacobian", rho=rho, m=1, loss_fn=logistic)
    ref = copy.deepcopy(net)
    w, v = ref[0].weight, ref[1].weight
    f = ref(x)  # (B, 1)
    wx = x @ w.T  # (B, 7)
    gnorm = torch.sqrt((wx**2).sum(1, keepdim=True) + (v**2).sum() * (x**2).sum(1, keepdim=True))
    c = (torch.sigmoid(-t * f) / gnorm).detach()  # (B, 1)
    reg = 0.5 * rho * c * ((x**2).sum(1, keepdim=True) * (v**2).sum()
                           + (wx**2).sum(1, keepdim=True))
    want = torch.autograd.grad(logistic(f, t) + reg.mean(), [w, v])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
