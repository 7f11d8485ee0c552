"""The precision-sweep study's claim checks: clear effects hold, noise-level ones do not."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from fmlab.studies import StudyContext, get_study


def _table(scale: float) -> pd.DataFrame:
    """Runs whose effects are ``scale`` times a clear, paper-like pattern."""
    rows = []
    inf = math.inf
    for d in (100_000, 250_000):
        for bits, extra in ((inf, 0.0), (8, 0.01), (4, 0.03), (3, 0.06)):
            loss = 4.8 + scale * extra
            rows.append(dict(n_params=1e5, n_tokens=d, w_bits=bits, a_bits=bits, kv_bits=bits,
                             post_bits=inf, loss=loss, delta_ptq=0.0, status="complete"))
            # PTQ to 3 bits: grows with D for the fp model, smaller for low-precision training
            delta = scale * (0.01 * d / 100_000) * (1.0 if bits == inf else 0.5)
            rows.append(dict(n_params=1e5, n_tokens=d, w_bits=bits, a_bits=bits, kv_bits=bits,
                             post_bits=3, loss=loss + delta, delta_ptq=delta, status="complete"))
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("scale", "expected"), [(1.0, True), (0.02, False)])
def test_claims_need_an_effect_above_noise(tmp_path, scale, expected) -> None:
    study = get_study("quant.precision_sweep")()
    result = study._analyse(StudyContext(tmp_path), _table(scale), SimpleNamespace(post_bits=[3]))
    verdicts = [c.holds for c in result.claims[:3]]
    assert verdicts == [expected] * 3, [(c.measured, c.criterion) for c in result.claims]
    # the claims this table cannot support are shown, not dropped
    missing = [c for c in result.claims if c.error]
    assert len(result.claims) == 6 and len(missing) == 3
    assert all(not c.holds for c in missing) and "training runs" in missing[1].error


def _law_table(gammas: tuple[float, float, float], noise: float = 0.003) -> pd.DataFrame:
    """Training runs drawn from the precision law (L = A N_eff^-α + B D^-β + E) plus noise."""
    import itertools

    import numpy as np

    rng = np.random.default_rng(0)
    inf = math.inf
    bits = [(inf,) * 3, (8,) * 3, (6,) * 3, (4,) * 3, (3,) * 3,
            (3, inf, inf), (inf, 3, inf), (inf, inf, 3)]
    rows = []
    for n, d, b in itertools.product([27e3, 60e3, 107e3], [3e5, 7e5, 1.5e6], bits):
        f = np.prod([1 - np.exp(-x / g) for x, g in zip(b, gammas, strict=True)])
        loss = 2.0 + 40 * (n * f) ** -0.3 + 300 * d ** -0.35 + rng.normal(0, noise)
        rows.append(dict(n_params=n, n_tokens=d, w_bits=b[0], a_bits=b[1], kv_bits=b[2],
                         post_bits=inf, loss=loss, delta_ptq=0.0, status="complete"))
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("gammas", "activations_worst"), [((1.5, 2.0, 1.0), True),
                                                           ((2.0, 1.0, 1.0), False)])
def test_sensitivity_claim_and_law_fit(tmp_path, gammas, activations_worst) -> None:
    study = get_study("quant.precision_sweep")()
    result = study._analyse(StudyContext(tmp_path), _law_table(gammas),
                            SimpleNamespace(post_bits=[3]))
    by_ref = {c.claim.split(":")[0].split(" (")[0]: c for c in result.claims}
    sens = by_ref["Activations are the most precision-sensitive component"]
    assert sens.holds is activations_worst, sens.measured
    law = by_ref["The precision law"]
    assert law.holds and law.value > 0.95, law.measured
    penalty = next(c for c in result.claims if "loss cost of quantized training" in c.claim)
    assert penalty.holds and penalty.value > 0.8, penalty.measured
    fitted = result.metrics["precision_law"]["params"]
    for name, true in zip(("gamma_w", "gamma_a", "gamma_kv"), gammas, strict=True):
        assert fitted[name] == pytest.approx(true, rel=0.15), (name, fitted)
    assert (tmp_path / "law_fit.png").stat().st_size > 0
