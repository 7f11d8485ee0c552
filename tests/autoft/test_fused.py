"""The fused training form of the AutoFT objective (one autograd node for the logit terms, the
weight penalties' analytic gradient) against the reference terms through autograd, on both of
its backends: the numba kernels and the torch ops they replace."""

from __future__ import annotations

import itertools

import pytest
import torch

import fmlab.autoft._finetune as _finetune
import fmlab.autoft._fused as _fused
from fmlab.autoft import AutoFTParams, LossBatch, batch_loss, finetune, make_task, objective_loss
from fmlab.autoft._fused import PenaltyGrad
from fmlab.testing import require_or_skip

LOGIT = ("ce", "dcm", "entropy", "hinge")
PENALTY = ("l1init", "l1zero", "l2init", "l2zero")
SUBSETS = [s for r in range(1, 5) for s in itertools.combinations(LOGIT, r)]


@pytest.fixture(params=["numba", "torch"], autouse=True)
def backend(request, monkeypatch) -> str:
    """Every test runs on the numba kernels and on the torch fallback."""
    if request.param == "numba":
        if _fused._numba() is None:  # CI installs the hpo extra: a skip there is a failure
            require_or_skip("numba (the hpo extra) is not installed")
    else:
        monkeypatch.setattr(_fused, "_numba", lambda: None)
    return request.param


def test_the_kernels_run_when_numba_is_installed(backend, monkeypatch) -> None:
    """The numba runs of these tests exercise the kernels, not the fallback."""
    calls: list[str] = []
    if backend == "numba":
        from fmlab.autoft import _kernels

        for name in ("logit_terms", "penalty_grad"):
            orig = getattr(_kernels, name)
            monkeypatch.setattr(_kernels, name,
                                lambda *a, _o=orig, _n=name: calls.append(_n) or _o(*a))
    z, y = _logits("random", torch.float32)
    z.requires_grad_(True)
    batch_loss({"ce": 1.0, "hinge": 0.5}, LossBatch(logits=z, labels=y)).backward()
    w = torch.randn(300, 7, requires_grad=True)
    pen = PenaltyGrad({"l1zero": 1.0, "l2init": 1.0}, [w], [w.detach().clone()])
    pen.add_()
    assert (pen.kernel is not None) == (backend == "numba")
    assert calls == (["logit_terms", "penalty_grad"] if backend == "numba" else [])


def _logits(kind: str, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    if kind == "ties":  # integer logits: hinge margins exactly 0 and argmax ties occur
        z = torch.randint(-2, 3, (24, 5), generator=g).to(dtype)
    else:
        z = (torch.randn(24, 5, generator=g) * 3).to(dtype)
    return z, torch.randint(0, 5, (24,), generator=g)


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("sign", ["maximize_entropy", "released"])
@pytest.mark.parametrize("terms", SUBSETS, ids="+".join)
def test_logit_terms_value_and_gradient_equal_autograd(terms, sign, kind) -> None:
    z0, y = _logits(kind)
    weights = {t: w for t, w in zip(LOGIT, (1.0, 0.7, 0.3, 0.45), strict=True) if t in terms}
    out = []
    for fused in (False, True):
        z = z0.clone().requires_grad_(True)
        b = LossBatch(logits=z, labels=y, dcm_sign=sign)
        loss = batch_loss(weights, b) if fused else objective_loss(weights, b)[0]
        loss.backward()
        out.append((loss.detach(), z.grad))
    (ref, g_ref), (got, g_got) = out
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-12)


def test_logit_terms_in_float32_and_an_upstream_gradient() -> None:
    z0, y = _logits("random", torch.float32)
    weights = {"ce": 1.0, "dcm": 0.2, "entropy": 0.1, "hinge": 0.3}
    grads = []
    for fused in (False, True):
        z = z0.clone().requires_grad_(True)
        b = LossBatch(logits=z, labels=y)
        loss = batch_loss(weights, b) if fused else objective_loss(weights, b)[0]
        (2.5 * loss).backward()  # the backward scales by the upstream gradient
        grads.append(z.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def _params(monkeypatch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Three parameters, one non-contiguous, split into several chunks with a remainder; some
    weights exactly 0 and some exactly at their init (sign 0, as autograd's ``abs``)."""
    monkeypatch.setattr(_fused, "_CHUNK", 10)
    g = torch.Generator().manual_seed(1)
    ws = [torch.randn(13, 7, generator=g, dtype=torch.float64),
          torch.randn(7, 4, generator=g, dtype=torch.float64).t(),  # (4, 7), non-contiguous
          torch.randn(3, generator=g, dtype=torch.float64)]
    init = [w + 0.5 * torch.randn(w.shape, generator=g, dtype=torch.float64) for w in ws]
    ws[0][0, :5] = 0.0
    init[0][1, :4] = ws[0][1, :4]
    init[2][:] = ws[2]
    return [w.requires_grad_(True) for w in ws], init


def test_penalty_gradient_and_value_equal_autograd(monkeypatch) -> None:
    ws, init = _params(monkeypatch)
    assert not ws[1].is_contiguous()
    weights = {"l1init": 2.0, "l1zero": 0.5, "l2init": 3.0, "l2zero": 0.25}
    for sub in [dict.fromkeys(s, 0.0) for r in range(4) for s in
                itertools.combinations(PENALTY, r)]:
        lam = {**weights, **sub}  # every subset of the four switched off
        ref, _ = objective_loss(lam, LossBatch(logits=torch.zeros(1, 2), labels=torch.zeros(
            1, dtype=torch.long), params=ws, init_params=init))
        if ref.requires_grad:
            ref.backward()
        want = [None if w.grad is None else w.grad.clone() for w in ws]
        for w in ws:
            w.grad = None
        got = PenaltyGrad(lam, ws, init).add_(value=True)
        assert got == pytest.approx(float(ref.detach()), rel=1e-12, abs=1e-15)
        for w, g in zip(ws, want, strict=True):
            torch.testing.assert_close(w.grad, torch.zeros_like(w) if g is None else g,
                                       rtol=1e-12, atol=1e-15)
            w.grad = None


def test_penalty_adds_to_existing_grads_and_reuses_its_buffers(monkeypatch) -> None:
    ws, init = _params(monkeypatch)
    pen = PenaltyGrad({"l1init": 1.0, "l1zero": 1.0, "l2init": 1.0, "l2zero": 1.0}, ws, init)
    bufs = [b.data_ptr() for b in pen.bufs]
    for w in ws:
        w.grad = torch.ones_like(w)
    assert pen.add_() == 0.0  # value skipped
    first = [w.grad.clone() for w in ws]
    for w in ws:
        w.grad = torch.ones_like(w)
    pen.add_()
    assert [b.data_ptr() for b in pen.bufs] == bufs
    for w, g in zip(ws, first, strict=True):
        torch.testing.assert_close(w.grad, g)
        assert not torch.equal(g, torch.ones_like(g))


def test_zero_weights_add_nothing() -> None:
    z0, y = _logits("random")
    full = {"ce": 1.0, "dcm": 0.7, "entropy": 0.3, "hinge": 0.45}
    for t in LOGIT:
        runs = []
        for weights in ({**full, t: 0.0}, {k: v for k, v in full.items() if k != t}):
            z = z0.clone().requires_grad_(True)
            loss = batch_loss(weights, LossBatch(logits=z, labels=y))
            loss.backward()
            runs.append((loss.detach(), z.grad))
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    w = torch.randn(4, 3, requires_grad=True)
    w.grad = torch.randn(4, 3)
    before = w.grad.clone()
    assert PenaltyGrad(dict.fromkeys(PENALTY, 0.0), [w], [w.detach() + 1]).add_(True) == 0.0
    assert torch.equal(w.grad, before)


def test_finetune_steps_equal_the_reference_objective(monkeypatch) -> None:
    """Whole runs: the loop's fused objective (penalty buffers built once, reused each step)
    gives the weights of the same run with every term through autograd."""
    task = make_task("toy", n_train=128)
    params = AutoFTParams({"ce": 1.0, "dcm": 0.3, "entropy": 0.2, "hinge": 0.4, "l1init": 0.5,
                           "l1zero": 0.1, "l2init": 2.0, "l2zero": 0.3}, lr=3e-2,
                          weight_decay=0.1, seed=2)
    fused = finetune(task.model, params, task.train, steps=6, batch_size=32).model

    ctx: dict = {}

    class Reference:  # records θ and θ₀; the penalties go through objective_loss instead
        def __init__(self, weights, params, init) -> None:
            ctx.update(params=params, init=init)

        def add_(self, value: bool = False) -> float:
            return 0.0

    def reference_loss(weights, batch):
        batch.params, batch.init_params = ctx["params"], ctx["init"]
        return objective_loss(weights, batch)[0]

    monkeypatch.setattr(_finetune, "PenaltyGrad", Reference)
    monkeypatch.setattr(_finetune, "batch_loss", reference_loss)
    ref = finetune(task.model, params, task.train, steps=6, batch_size=32).model
    moved = False
    for (k, a), (_, b) in zip(fused.state_dict().items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
        moved |= not torch.equal(a, task.model.state_dict()[k])
    assert moved


def test_float32_runs_agree_across_backends(backend, monkeypatch) -> None:
    """A float32 run with all eight terms: the kernels (float64 row sums, one rounding per
    update) and the torch ops give the same weights to float32 precision."""
    task = make_task("toy", n_train=128)
    params = AutoFTParams({"ce": 1.0, "dcm": 0.3, "entropy": 0.2, "hinge": 0.4, "l1init": 0.5,
                           "l1zero": 0.1, "l2init": 2.0, "l2zero": 0.3}, lr=3e-2, seed=4)
    first = finetune(task.model, params, task.train, steps=8, batch_size=32).model
    monkeypatch.setattr(_fused, "_numba", lambda: None)
    second = finetune(task.model, params, task.train, steps=8, batch_size=32).model
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(),
                              strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("label", [-1, 5])
def test_a_label_outside_the_classes_is_refused(label) -> None:
    """Both backends name the row and the label (the kernel reads nothing out of bounds)."""
    z, y = _logits("random")
    y[7] = label
    with pytest.raises(ValueError, match=rf"\[0, 5\).*row 7 has label {label}\."):
        batch_loss({"ce": 1.0, "hinge": 0.2}, LossBatch(logits=z, labels=y))
    with pytest.raises(ValueError, match=r"`labels` \(B,\)"):
        batch_loss({"ce": 1.0, "hinge": 0.2}, LossBatch(logits=z, labels=y[:-1]))
