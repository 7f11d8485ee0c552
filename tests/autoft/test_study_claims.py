"""The claims of study autoft.shift can fail: each holds on a clear effect and not on noise."""

from __future__ import annotations

import scipy  # noqa: F401  (required by fmlab[hpo]; a missing one fails)

from fmlab.autoft._study import (  # noqa: E402
    autoft_beats_baselines,
    id_within_margin,
    wise_not_worse,
)
from fmlab.studies import STUDIES  # noqa: E402
from fmlab.studies._claims import assert_claim_can_fail  # noqa: E402

NOISE = [0.03, -0.04, 0.02, -0.03, 0.01]


def _rows(effect: dict[str, float], noise: list[float]) -> list[dict]:
    rows = []
    for s, n in enumerate(noise):
        for m in ("erm", "flyp", "autoft", "erm_wise", "autoft_wise"):
            gain = effect.get(m, 0.0)
            rows.append({"seed": s, "method": m, "ood": 0.5 + gain + (n if "autoft" in m else 0),
                         "id": 0.8 + effect.get(f"{m}_id", 0.0) + (n if m == "autoft" else 0)})
    return rows


SMALL = [0.002, -0.001, 0.001, 0.0, -0.002]


def test_claims_can_fail() -> None:
    assert_claim_can_fail(autoft_beats_baselines, _rows({"autoft": 0.05}, SMALL),
                          _rows({}, NOISE))
    assert_claim_can_fail(id_within_margin, _rows({}, SMALL),
                          _rows({"autoft_id": -0.1}, NOISE), margin=0.02)
    assert_claim_can_fail(wise_not_worse, _rows({"autoft_wise": 0.01}, SMALL),
                          _rows({"autoft_wise": -0.03}, NOISE))
    one_seed = _rows({"autoft": 0.05}, [0.0])
    assert autoft_beats_baselines(one_seed).error  # one seed: not computed, does not hold


def test_study_declares_its_options() -> None:
    from fmlab.autoft._study import ShiftStudy

    assert ShiftStudy.capability == "autoft" and ShiftStudy.name == "autoft.shift"
    assert {o.name for o in ShiftStudy.options} >= {"seeds", "n_trials", "steps", "tune",
                                                    "ood_val"}
    assert STUDIES.get("autoft.shift") is ShiftStudy
