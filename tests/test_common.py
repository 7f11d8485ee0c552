"""fmlab's public contract suites (:mod:`fmlab.testing`) run on every registered entry.

A new law, OOD estimator, template, optimizer configuration, attack, judge or defense is checked
here for free (a new attack, judge or defense adds its small case to the table above its test). A
new registry adds one parametrised test below, calling its ``fmlab.testing.check_<thing>``.
"""

from __future__ import annotations

import pytest

from fmlab.attacks import list_attacks
from fmlab.embeddings import list_templates
from fmlab.jailbreak import DEFENSES, JUDGES
from fmlab.ood import list_estimators
from fmlab.scaling import list_laws
from fmlab.testing import (
    check_defense,
    check_encoder,
    check_judge,
    check_law,
    check_ood_estimator,
    check_optimizer,
)


@pytest.mark.parametrize("name", list_laws())
def test_law_contract(name):
    from fmlab.scaling import create_law

    check_law(create_law(name, n_starts=8))


@pytest.mark.parametrize("name", list_estimators())
def test_ood_estimator_contract(name):
    from fmlab.ood import create_estimator

    check_ood_estimator(create_estimator(name))


# SAM is fmlab's one optimizer class; its variants are constructor settings.
OPTIMIZERS = {"sam": {}, "asam": {"adaptive": True}, "sam_adam": {"base": "Adam"}}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_contract(name):
    import torch

    from fmlab.sam import SAM

    kwargs = dict(OPTIMIZERS[name])
    base = getattr(torch.optim, kwargs.pop("base", "SGD"))
    check_optimizer(SAM, base, **kwargs)


@pytest.fixture(scope="module")
def tiny_lm():
    from fmlab.models import tiny_causal_lm

    return tiny_causal_lm(seed=0)


@pytest.mark.parametrize("template", list_templates())
def test_encoder_contract(template, tiny_lm):
    from fmlab.embeddings import EchoEncoder

    check_encoder(EchoEncoder(*tiny_lm, template=template))


class _Quadratic:
    """Loss ||x - t||^2 per image of a batch ``(N, 3, H, W) -> (N,)``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, xs):
        return (xs - self.value).pow(2).flatten(1).sum(-1)


class _Ensemble:
    """Two quadratic members, for the ensemble attacks (``member_losses``)."""

    members = (_Quadratic(0.0), _Quadratic(0.2))

    def member_losses(self, xs):
        return [m(xs) for m in self.members]

    def __call__(self, xs):
        return sum(self.member_losses(xs))


def _image_case(cls_kwargs):
    import torch

    x0 = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return cls_kwargs, _Ensemble(), x0, "budget"


def _gcg_case():
    from fmlab.attacks import TargetObjective
    from fmlab.models import tiny_causal_lm

    objective = TargetObjective(*tiny_causal_lm(seed=0), "What colour is a plum?", "Purple")
    allowed = objective.allowed_tokens()
    return ({"num_steps": 5, "search_width": 16, "topk": 8}, objective,
            objective.encode_suffix("x x x x x"),
            lambda xa, x: bool(allowed[xa].all()) and xa.shape == x.shape)


# Per registered attack: a small budget, an objective it can lower, a start point, a constraint.
_IMAGE = {"eps": 16 / 255, "step_size": 2 / 255, "steps": 5, "random_state": 0}
ATTACK_CASES = {
    "pgd": lambda: _image_case(dict(_IMAGE)),
    "bim": lambda: _image_case(dict(_IMAGE)),
    "cwa": lambda: _image_case({**_IMAGE, "inner_step": 0.5}),
    "gcg": _gcg_case,
}


@pytest.mark.parametrize("name", list_attacks())
def test_attack_contract(name):
    from fmlab.attacks import create_attack
    from fmlab.testing import check_attack

    assert name in ATTACK_CASES, f"add a small case for the registered attack {name!r} above"
    kwargs, objective, x0, constraint = ATTACK_CASES[name]()
    attack = create_attack(name, **kwargs)
    if constraint == "budget":
        constraint = attack.within_budget
    check_attack(attack, objective, x0, constraint=constraint)


# Per registered judge: the constructor arguments that make it judge the Purple Problem.
JUDGE_ARGS = {
    "word": {"word": "purple"},
    "regex": {"pattern": r"p[\W_]*u[\W_]*r[\W_]*p[\W_]*l[\W_]*e"},
    "classifier": {"score": lambda outs: [float("purple" in o.lower().replace(" ", ""))
                                          for o in outs]},
}


@pytest.mark.parametrize("name", JUDGES.names())
def test_judge_contract(name):
    assert name in JUDGE_ARGS, f"add the arguments of the registered judge {name!r} above"
    check_judge(JUDGES.get(name)(**JUDGE_ARGS[name]))


# Per registered defense: a budget small enough for a tiny model (model-side ones train a LoRA).
DEFENSE_ARGS = {
    "dpo": {"max_steps": 1, "batch_size": 2, "max_length": 48},
    "adversarial_training": {"max_steps": 1, "batch_size": 2, "max_length": 48,
                             "suffixes": ["zx!! qq"]},
    "paraphrase": {"max_new_tokens": 4},
    "perplexity_filter": {"n_calibration": 4},
}


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_contract(name, tiny_lm):
    from fmlab.jailbreak import create_defense

    model, tokenizer = tiny_lm
    check_defense(create_defense(name, **DEFENSE_ARGS.get(name, {})), model, tokenizer)


@pytest.mark.parametrize("check", [check_law, check_ood_estimator])
def test_estimator_suites_name_the_broken_clause(check):
    """A class that computes in __init__ fails the suite with a message that says why."""
    from fmlab.ood import NaiveAgreement
    from fmlab.scaling import ChinchillaLaw

    base = ChinchillaLaw if check is check_law else NaiveAgreement

    class Eager(base):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.cache_ = {}

    with pytest.raises(AssertionError, match="cache_|init"):
        check(Eager())


def test_optimizer_suite_catches_a_base_mismatch():
    """An optimizer that ignores rho=0 and always perturbs fails the rho=0 clause."""
    import torch

    from fmlab.sam import SAM

    def always_perturbs(params, base, *, rho, **kwargs):
        return SAM(params, base, rho=max(rho, 0.5) if rho >= 0 else rho, **kwargs)

    always_perturbs.__name__ = "AlwaysPerturbs"
    with pytest.raises(AssertionError, match="rho=0"):
        check_optimizer(always_perturbs, torch.optim.SGD)


def test_judge_and_defense_suites_name_the_broken_clause(tiny_lm):
    """A judge whose batch disagrees with is_unsafe, and a defense that drops the user's turn."""
    from fmlab.jailbreak import NoDefense, WordJudge

    class FirstOnly(WordJudge):
        def batch(self, outputs):
            return [self.is_unsafe(outputs[0])] * len(outputs) if outputs else []

    class DropsUser(NoDefense):
        def transform(self, chats, model, tokenizer):
            return [[m for m in c if m["role"] != "user"] or [{"role": "system", "content": ""}]
                    for c in chats]

    with pytest.raises(AssertionError, match="batch"):
        check_judge(FirstOnly("purple"))
    with pytest.raises(AssertionError, match="user's turn"):
        check_defense(DropsUser(), *tiny_lm)
