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
