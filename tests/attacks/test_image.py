"""PGD and BIM on images: the shared attack contract, budgets, norms and bad input."""

from __future__ import annotations

import pytest
import torch

from fmlab.attacks import BIM, PGD, create_attack, format_eps
from fmlab.attacks._objectives import ClassifierObjective, SpectrumAugmented, edit_similarity
from fmlab.testing.attacks import check_attack


class Quadratic:
    """Loss ||x - t||² towards a target image t, with its own resize inside the graph."""

    def __init__(self, target):
        self.target = target

    def __call__(self, xs):  # (N, [B,] 3, H, W) -> (N,)
        small = torch.nn.functional.interpolate(xs.reshape(-1, *xs.shape[-3:]), size=4,
                                                mode="bilinear", antialias=True)
        return (small - self.target).pow(2).reshape(xs.shape[0], -1).sum(-1)


@pytest.fixture()
def image():
    return torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def objective():
    return Quadratic(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("attack", [
    PGD(eps=16 / 256, step_size=1 / 255, steps=6, random_state=0),
    PGD(eps=0.5, step_size=0.1, steps=6, norm="l2", random_state=0),
    PGD(eps=16 / 256, step_size=2 / 255, steps=6, momentum=1.0, random_state=0),
    BIM(eps=16 / 255, step_size=1 / 255, steps=6, random_state=0),
], ids=["pgd-linf", "pgd-l2", "mi-fgsm", "bim"])
def test_image_attacks_pass_the_attack_contract(attack, objective, image):
    result = check_attack(attack, objective, image,
                          constraint=lambda xa, x0: attack.within_budget(xa, x0))
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_never_leaves_the_ball_or_the_pixel_range_even_with_huge_steps(norm, objective):
    x0 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # a batch
    x0[0, 0, 0, 0], x0[1, 1, 1, 1] = 0.0, 1.0  # pixels at the range's edges
    attack = PGD(eps=0.1, step_size=5.0, steps=4, norm=norm, random_state=3)
    result = attack(objective, x0, progress=False)
    for x in (result.x_adv, result.x_final):
        assert attack.within_budget(x, x0)
        assert x.min() >= 0 and x.max() <= 1
    if norm == "l2":  # per image, not per batch
        per_image = (result.x_final - x0).flatten(1).norm(dim=1)
        assert (per_image <= 0.1 + 1e-6).all() and (per_image > 0.05).all()


def test_zero_steps_returns_the_input_unchanged(objective, image):
    for attack in (PGD(steps=0, random_state=0), BIM(steps=0)):
        result = attack(objective, image, progress=False)
        assert torch.equal(result.x_adv, image) and torch.equal(result.x_final, image)


def test_keep_best_false_returns_the_last_iterate_and_saves_the_final_scoring(objective, image):
    kept = PGD(eps=0.1, step_size=0.05, steps=5, random_state=0)(objective, image, progress=False)
    last = PGD(eps=0.1, step_size=0.05, steps=5, random_state=0, keep_best=False)(
        objective, image, progress=False)
    assert torch.equal(last.x_adv, last.x_final) and torch.equal(last.x_final, kept.x_final)
    assert last.n_queries == kept.n_queries - 1 and last.best_loss != last.best_loss  # NaN
    assert kept.best_loss == pytest.approx(float(objective(kept.x_adv[None])[0]))
    with pytest.raises(TypeError, match="keep_best"):
        PGD(keep_best="no")


def _textbook_pgd(model, images, labels, eps, alpha, steps, seed):
    """Madry et al.'s L-inf PGD written out the way torchattacks 3.5.1 writes it (mean
    cross-entropy ascended, uniform random start from a generator seeded with ``seed``)."""
    adv = images + torch.empty_like(images).uniform_(
        -eps, eps, generator=torch.Generator().manual_seed(seed))
    adv = adv.clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad = True
        cost = torch.nn.functional.cross_entropy(model(adv), labels)
        (grad,) = torch.autograd.grad(cost, adv)
        adv = adv.detach() + alpha * grad.sign()
        delta = torch.clamp(adv - images, min=-eps, max=eps)
        adv = torch.clamp(images + delta, min=0, max=1).detach()
    return adv


def test_pgd_equals_the_textbook_loop_bit_for_bit():
    # the benchmark against torchattacks relies on this: same start, same steps, same bits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 7 * 7, 5)).eval()
    model.requires_grad_(False)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = model(images).argmax(-1)
    eps, alpha, steps = 8 / 255, 2 / 255, 7
    want = _textbook_pgd(model, images, labels, eps, alpha, steps, seed=5)
    got = PGD(eps=eps, step_size=alpha, steps=steps, random_state=5, keep_best=False)(
        ClassifierObjective(model, labels), images, success=lambda x, loss: False,
        progress=False)
    assert torch.equal(got.x_adv, want) and torch.equal(got.x_final, want)
    assert not torch.equal(want, images.clamp(0, 1))  # the attack did move
    kept = PGD(eps=eps, step_size=alpha, steps=steps, random_state=5)(
        ClassifierObjective(model, labels), images, success=lambda x, loss: False,
        progress=False)
    assert torch.equal(kept.x_final, want)  # keep_best changes the answer picked, not the path


def test_bim_starts_from_the_clean_image_and_pgd_from_a_random_point(objective, image):
    assert BIM().random_start is False and PGD().random_start is True
    assert create_attack("bim", steps=3).random_start is False
    assert isinstance(create_attack("pgd", steps=3), PGD)


def test_uint8_images_are_taken_as_pixels(objective):
    x8 = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    result = BIM(eps=4 / 255, steps=2)(objective, x8, progress=False)
    assert result.x_adv.dtype == torch.float32
    assert (result.x_adv - x8.float() / 255).abs().max() <= 4 / 255 + 1e-6


def test_eps_is_shown_as_a_fraction():
    assert format_eps(16 / 256) == "16/256" and format_eps(16 / 255) == "16/255"
    assert format_eps(0.25) == "64/256" and format_eps(0.001) == "1/1000"
    assert "eps=16/256" in repr(PGD(eps=16 / 256)) and "step_size=1/255" in repr(PGD())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"eps": 0.0}, ValueError, r"'eps' parameter of PGD must be a float in the range \(0, 1\]"),
    ({"eps": 1.5}, ValueError, r"Got 1.5 instead"),
    ({"eps": -0.1}, ValueError, r"'eps'"),
    ({"eps": "8/255"}, TypeError, r"'eps'.*of type str"),
    ({"step_size": 0}, ValueError, r"'step_size'"),
    ({"steps": -1}, ValueError, r"'steps'"),
    ({"norm": "l1"}, ValueError, r"Invalid norm 'l1' for PGD. Valid options are: \('linf', 'l2'\)"),
    ({"momentum": -1.0}, ValueError, r"'momentum'"),
])
def test_bad_hyperparameters_are_rejected_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        PGD(**kwargs)


@pytest.mark.parametrize("x, error, match", [
    (torch.full((3, 4, 4), 1.5), ValueError, r"must lie in \[0, 1\].*divide uint8 pixels by 255"),
    (torch.full((3, 4, 4), -0.1), ValueError, r"must lie in \[0, 1\]"),
    (torch.full((3, 4, 4), float("nan")), ValueError, r"must lie in \[0, 1\]"),
    (torch.ones(3, 4, 4, dtype=torch.int32), TypeError, r"uint8 pixels .* or floats in \[0, 1\]"),
    (torch.ones(4, 4), ValueError, r"shaped \(C, H, W\)"),
    (torch.ones(3, 0, 4), ValueError, r"'x' is empty \(shape \(3, 0, 4\)\)"),
    (torch.tensor([[[0.5, float("nan")]]] * 3), ValueError, r"must lie in \[0, 1\]"),
])
def test_bad_images_get_a_clear_error(x, error, match, objective):
    with pytest.raises(error, match=match):
        PGD(steps=1)(objective, x, progress=False)


def test_early_stop_on_success_and_classifier_objective():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(2, 3, 8, 8)
    labels = model(x).argmax(-1)
    objective = ClassifierObjective(model, labels)
    result = PGD(eps=1.0, step_size=0.2, steps=200, random_state=0)(objective, x, progress=False)
    assert result.success and result.stop_reason == "success" and result.n_steps < 200
    assert (model(result.x_adv).argmax(-1) != labels).all()


def test_the_classifier_success_test_reuses_the_gradient_pass_forward():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = torch.rand(2, 3, 8, 8)
    labels = net(x).argmax(-1)
    calls.clear()
    objective = ClassifierObjective(net, labels)
    result = BIM(eps=1e-4, step_size=1e-5, steps=5)(objective, x, progress=False)
    assert not result.success and result.n_steps == 5
    assert len(calls) == 5 + 1  # one gradient pass per step, one final scoring; no test passes
    # asked about another input, or about the same tensor changed in place, it runs the model
    y = x.clone()
    objective(y[None])
    y.add_(0.0)  # an in-place change (even a null one) bumps the version: no reuse
    n = len(calls)
    assert objective.is_success(y) is False and len(calls) == n + 1
    assert objective.is_success(torch.ones(2, 3, 8, 8)) in (True, False) and len(calls) == n + 2
    # the reused answer equals a fresh forward
    far = PGD(eps=1.0, step_size=0.2, steps=200, random_state=0)(objective, x, progress=False)
    assert far.success and (net(far.x_adv).argmax(-1) != labels).all()


def test_spectrum_augmentation_is_seeded_and_lowers_the_loss(objective, image):
    ssa = SpectrumAugmented(objective, n=4, sigma=4 / 255, random_state=0)
    a = BIM(eps=0.2, step_size=0.02, steps=5)(ssa, image, progress=False)
    b = BIM(eps=0.2, step_size=0.02, steps=5)(SpectrumAugmented(objective, n=4, sigma=4 / 255),
                                              image, progress=False)
    assert torch.equal(a.x_final, b.x_final)
    assert objective(a.x_final[None]) < objective(image[None])


def test_edit_similarity():
    assert edit_similarity("hot dog", "hot dog") == 1.0
    assert edit_similarity("abc", "xyz") == 0.0
    assert edit_similarity("hot dog", "hot dig") == pytest.approx(1 - 1 / 7)


class ToyCaptioner:
    """Captions an image by its nearest prototype (mean colour); loss = distance to a caption's
    prototype. Small, differentiable and honest about what it says."""

    names = ("red", "green", "blue")

    class tokenizer:  # noqa: N801 - the captioner protocol's attribute name
        def __new__(cls, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    def _colour(self, images):
        return images.reshape(images.shape[0], 3, -1).mean(-1)  # (N, 3)

    def caption_loss(self, images, texts, reduction="none"):
        protos = torch.eye(3)[[self.names.index(t) if t in self.names else 0 for t in texts]]
        return (self._colour(images) - protos).pow(2).sum(-1)

    def generate(self, images, max_new_tokens=16):
        return [self.names[int(i)] for i in self._colour(images).argmax(-1)]


def test_captioner_objective_decodes_every_k_steps_and_stops_on_the_target():
    from fmlab.attacks import CaptionerObjective

    x = torch.zeros(3, 6, 6)
    x[0] = 0.6  # a red image
    objective = CaptionerObjective(ToyCaptioner(), "blue", decode_every=3)
    result = BIM(eps=0.5, step_size=0.05, steps=60)(objective, x, progress=False)
    assert result.success and result.stop_reason == "success"
    calls = [r.call for r in objective.history]
    assert calls == list(range(1, calls[-1] + 1, 3))  # decoded on calls 1, 4, 7, ...
    assert objective.history[0].caption == "red" and objective.history[-1].exact
    assert objective.best_record.caption == "blue"
    assert ToyCaptioner().generate(objective.best_image[None]) == ["blue"]
    assert (objective.best_image - x).abs().max() <= 0.5 + 1e-6


def test_a_target_longer_than_the_captioner_can_say_is_refused():
    from fmlab.attacks import CaptionerObjective

    with pytest.raises(ValueError, match=r"is 20 tokens long; the captioner decodes at most 16"):
        CaptionerObjective(ToyCaptioner(), " ".join(["blue"] * 20))
    with pytest.raises(ValueError, match="non-empty str"):
        CaptionerObjective(ToyCaptioner(), "  ")


def test_quantize_keeps_the_budget_in_pixel_levels():
    from fmlab.attacks import quantize

    x0 = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    x_adv = (x0 + 16 / 256 * torch.randn(3, 16, 16).sign()).clamp(0, 1)
    q = quantize(x_adv, x0, eps=16 / 256)
    assert q.dtype == torch.uint8
    diff = (q.int() - torch.round(x0 * 255).int()).abs()
    assert diff.max() <= 15  # floor(255 * 16/256) = 15 levels
    assert torch.equal(quantize(x0, x0, eps=0.1), torch.round(x0 * 255).to(torch.uint8))


class ToyDualEncoder:
    """Images -> a fixed linear map of their mean colour; texts -> a fixed vector per word."""

    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(3, 8, generator=g)
        self.words = {w: torch.randn(8, generator=g) for w in ("red", "green", "blue")}

    def encode_images(self, images):
        return images.reshape(images.shape[0], 3, -1).mean(-1) @ self.proj

    def encode_texts(self, texts):
        return torch.stack([sum(v for w, v in self.words.items() if w in t) for t in texts])


def test_clip_ensemble_objective_sums_members_and_averages_templates():
    from fmlab.attacks import ClipEnsembleObjective

    members = [ToyDualEncoder(0), ToyDualEncoder(1)]
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    pos = ClipEnsembleObjective(members, "blue", templates=("{}", "a photo of {}"))
    both = ClipEnsembleObjective(members, "blue", "red", templates=("{}",))
    per = pos.member_losses(x)
    assert len(per) == 2 and torch.allclose(pos(x), per[0] + per[1])
    t = torch.nn.functional.normalize(members[0].words["blue"], dim=0)
    z = torch.nn.functional.normalize(members[0].encode_images(x), dim=-1)
    assert torch.allclose(per[0], -(z @ t))
    assert not torch.allclose(both(x), pos(x))  # the t- term counts
    result = PGD(eps=0.3, step_size=0.02, steps=20, random_state=0)(both, x[0], progress=False)
    assert both(result.x_adv[None]) < both(x)
    with pytest.raises(ValueError, match=r"exactly once"):
        ClipEnsembleObjective(members, "blue", templates=("no slot",))
    with pytest.raises(ValueError, match="at least one encoder"):
        ClipEnsembleObjective([], "blue")


class ToyTrunkEncoder(ToyDualEncoder):
    """A ToyDualEncoder split as trunk (mean colour, counted) + head (its own projection)."""

    calls = 0

    def __init__(self, seed, key="rgb-mean"):
        super().__init__(seed)
        self.key = key

    def image_trunk(self, images):
        ToyTrunkEncoder.calls += 1
        return images.reshape(images.shape[0], 3, -1).mean(-1)

    def image_head(self, h):
        return h @ self.proj

    def image_trunk_key(self):
        return self.key


def test_members_sharing_a_trunk_run_it_once_with_the_same_losses_and_gradients():
    from fmlab.attacks import ClipEnsembleObjective

    shared = ClipEnsembleObjective([ToyTrunkEncoder(0), ToyTrunkEncoder(1)], "blue", "red")
    alone = ClipEnsembleObjective([ToyTrunkEncoder(0, None), ToyTrunkEncoder(1, None)], "blue",
                                  "red")
    x = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    ToyTrunkEncoder.calls = 0
    xs = x.clone().requires_grad_(True)
    loss = shared(xs)
    assert ToyTrunkEncoder.calls == 1
    (g_shared,) = torch.autograd.grad(loss.sum(), xs)
    xa = x.clone().requires_grad_(True)
    (g_alone,) = torch.autograd.grad(alone(xa).sum(), xa)
    assert torch.allclose(loss, alone(x)) and torch.allclose(g_shared, g_alone)


def test_one_concept_per_picture_equals_separate_attacks():
    from fmlab.attacks import ClipEnsembleObjective

    members = [ToyDualEncoder(0), ToyDualEncoder(1)]
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    batched = ClipEnsembleObjective(members, ["blue", "green"])
    one = [ClipEnsembleObjective(members, c) for c in ("blue", "green")]
    assert torch.allclose(batched(x[None]), one[0](x[:1]) + one[1](x[1:]))
    attack = PGD(eps=0.2, step_size=0.02, steps=4, random_start=False)
    res = attack(batched, x, progress=False)
    for i in range(2):
        assert torch.allclose(res.x_final[i], attack(one[i], x[i], progress=False).x_final)
    with pytest.raises(ValueError, match="2 concepts, one per picture, but the attacked batch "
                                         "holds 3"):
        batched(torch.rand(1, 3, 3, 6, 6))


def test_captioner_objective_attacks_a_batch_towards_one_caption_per_picture():
    from fmlab.attacks import CaptionerObjective

    x = torch.zeros(2, 3, 6, 6)
    x[0, 0], x[1, 1] = 0.6, 0.6  # a red and a green picture
    objective = CaptionerObjective(ToyCaptioner(), ["blue", "red"], decode_every=2)
    result = BIM(eps=0.5, step_size=0.05, steps=60)(objective, x, progress=False)
    assert result.success
    assert [r.caption for r in objective.best_records] == ["blue", "red"]
    assert ToyCaptioner().generate(torch.stack(objective.best_images)) == ["blue", "red"]
    first = objective.first_exact()
    assert all(f is not None for f in first) and max(first) == objective.history[-1].call
    with pytest.raises(ValueError, match="2 targets, one per picture"):
        objective(torch.zeros(1, 3, 3, 6, 6))


def test_cwa_passes_the_contract_on_an_ensemble_and_refuses_a_single_objective(objective, image):
    from fmlab.attacks import CWA, ClipEnsembleObjective

    ensemble = ClipEnsembleObjective([ToyDualEncoder(0), ToyDualEncoder(1)], "blue", "red",
                                     templates=("{}",))
    attack = CWA(eps=16 / 256, step_size=16 / 256 / 5, steps=5, inner_step=0.5, random_state=0)
    check_attack(attack, ensemble, image[None],
                 constraint=lambda xa, x0: attack.within_budget(xa, x0))
    ssa = SpectrumAugmented(ensemble, n=2, random_state=0)
    result = CWA(steps=3)(ssa, image[None], progress=False)
    assert attack.within_budget(result.x_final, image[None])
    with pytest.raises(TypeError, match="member_losses"):
        CWA(steps=2)(objective, image, progress=False)


def test_attack_image_cli_checks_its_flags(tmp_path, capsys):
    from fmlab.cli import main

    assert main(["attack", "image", "--image", str(tmp_path / "missing.png"),
                 "--target", "x"]) == 2
    png = tmp_path / "x.png"
    png.write_bytes(b"not a png")
    assert main(["attack", "image", "--image", str(png), "--target", "x", "--eps", "0"]) == 2
    assert "--eps" in capsys.readouterr().err
    assert main(["attack", "image", "--image", str(png), "--target", "x", "--eps", "1.5"]) == 2
