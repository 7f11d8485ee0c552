"""fmlab's public contract suites (:mod:`fmlab.testing`) run on every registered entry.

A new law, OOD estimator, template or optimizer configuration is checked here for free. A new
registry adds one parametrised test below, calling its ``fmlab.testing.check_<thing>``.
"""

from __future__ import annotations

import pytest

from fmlab.embeddings import list_templates
from fmlab.ood import list_estimators
from fmlab.scaling import list_laws
from fmlab.testing import check_encoder, check_law, check_ood_estimator, check_optimizer


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
