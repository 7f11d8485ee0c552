"""The claims of study ``attacks.agents`` hold on a clear effect and fail on noise (no model)."""

from __future__ import annotations

import random

from fmlab.agents._study import (
    claim_benign,
    claim_caption_vs_pixel,
    claim_captioner_attack,
    claim_ensemble,
    claim_eps,
    claim_transfer,
)
from fmlab.studies import assert_claim_can_fail


def _rows(n, p_benign, p_cap, p_pix, p_wb_small, p_wb_large, seed=0, p_single=0.05):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"task": f"t{i}", "text_benign": rng.random() < p_benign,
               "cap_attacked": rng.random() < p_cap}
        if i % 3 != 2:  # listing tasks carry the pixel agents
            row.update({"pixel_benign": rng.random() < p_benign,
                        "wb_benign": rng.random() < p_benign,
                        "pixel_attacked@16/256": rng.random() < p_pix,
                        "pixel_single@16/256": rng.random() < p_single,
                        "wb_attacked@2/256": rng.random() < p_wb_small,
                        "wb_attacked@16/256": rng.random() < p_wb_large})
        rows.append(row)
    return rows


CLEAR = _rows(60, 0.95, 0.9, 0.4, 0.05, 0.9)
NOISE = _rows(60, 0.3, 0.25, 0.25, 0.05, 0.05, seed=1)


def test_benign_precondition_can_fail():
    assert_claim_can_fail(claim_benign, CLEAR, NOISE)


def test_captioner_attack_claim_can_fail():
    assert_claim_can_fail(claim_captioner_attack, CLEAR, NOISE)


def test_caption_vs_pixel_claim_can_fail():
    same_rates = _rows(90, 0.9, 0.3, 0.3, 0.05, 0.05, seed=2)  # both agents hijacked at 30%
    assert_claim_can_fail(claim_caption_vs_pixel, CLEAR, same_rates, eps_key="16/256")


def test_transfer_claim_can_fail():
    assert_claim_can_fail(claim_transfer, CLEAR, _rows(60, 0.95, 0.9, 0.0, 0.0, 0.0),
                          eps_key="16/256")


def test_ensemble_claim_can_fail():
    same = _rows(90, 0.95, 0.9, 0.4, 0.05, 0.9, seed=3, p_single=0.4)  # one surrogate does as well
    assert_claim_can_fail(claim_ensemble, CLEAR, same, eps_key="16/256")


def test_eps_claim_can_fail():
    assert_claim_can_fail(claim_eps, CLEAR, NOISE, small="2/256", large="16/256")


def test_no_benign_success_is_not_computed_rather_than_held():
    rows = _rows(12, 0.0, 1.0, 1.0, 1.0, 1.0)
    claim = claim_captioner_attack(rows)
    assert not claim.holds and "solved no task benignly" in claim.error


def test_one_half_only_rates_and_claims():
    """With only the CLIP half, the captioner claims are not computed (never held) and the
    precondition judges the pixel agent alone."""
    from fmlab.agents._study import _metrics, claim_benign

    clip_only = [{k: v for k, v in r.items() if not (k.startswith("text") or k.startswith("cap"))}
                 | {"type": "wrong_object"} for r in CLEAR if "pixel_benign" in r]
    m = _metrics(clip_only, 16 / 256, [2 / 256, 16 / 256])
    assert m["benign"]["caption_agent"]["n"] == 0
    assert m["asr"]["clip_attack_vs_pixel_agent_heldout"]["n"] > 0
    benign = claim_benign(clip_only)
    assert "caption agent" not in benign.measured and "pixel agent" in benign.measured
    assert not claim_captioner_attack(clip_only).holds
    assert claim_transfer(clip_only, eps_key="16/256").holds


def test_registered_with_declared_options():
    from fmlab.studies import get_study
    from fmlab.studies._options import UsageError

    cls = get_study("attacks.agents")
    quick = cls.resolve_options({}, "quick")
    assert quick["attacks"] == ["captioner", "clip"] and quick["eps"] == 16 / 256
    assert cls.resolve_options({"attacks": "clip"}, "quick")["attacks"] == ["clip"]
    import pytest

    with pytest.raises(ValueError, match="'attacks' option"):
        cls.resolve_options({"attacks": "pixels"}, "quick")
    with pytest.raises(UsageError, match="Did you mean: eps"):
        cls.resolve_options({"epss": 0.1}, "quick")


def test_full_scale_attack_cache_resumes_finished_attacks_and_sees_every_input(tmp_path,
                                                                               monkeypatch):
    import numpy as np
    import torch

    from fmlab.agents._study import _AttackCache

    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    model = torch.nn.Linear(3, 2)
    pictures = [np.full((4, 4, 3), i, np.uint8) for i in range(2)]
    calls = []

    def compute(shift=1):
        calls.append(shift)
        return [p + shift for p in pictures], [{"ok": True, "first": None}], 1.5

    cache = _AttackCache(enabled=True)
    key = {"attack": "captioner", "model": cache.model_id(model), "eps": 0.0625}
    advs, recs, secs = cache.run(key, pictures, compute)
    again = _AttackCache(enabled=True)  # a new run (a killed one resuming)
    advs2, recs2, secs2 = again.run({**key, "model": again.model_id(model)}, pictures, compute)
    assert calls == [1] and again.hits == 1 and cache.hits == 0
    assert all(np.array_equal(a, b) and b.dtype == np.uint8 for a, b in zip(advs, advs2, strict=True))
    assert recs2 == recs and secs2 == secs
    # another setting, other pictures or other weights: attacked afresh
    again.run({**key, "eps": 0.03}, pictures, lambda: compute(2))
    again.run(key, [p + 7 for p in pictures], lambda: compute(3))
    with torch.no_grad():
        model.weight.add_(1.0)
    third = _AttackCache(enabled=True)
    third.run({**key, "model": third.model_id(model)}, pictures, lambda: compute(4))
    assert calls == [1, 2, 3, 4]
    # quick scale keeps nothing
    off = _AttackCache(enabled=False)
    off.run(key, pictures, lambda: compute(5))
    off.run(key, pictures, lambda: compute(5))
    assert calls[-2:] == [5, 5] and off.hits == 0


def test_study_captions_each_distinct_picture_once() -> None:
    """The study's captioner cache: repeated pictures are captioned once, results in input order."""
    import numpy as np

    from fmlab.agents._study import _Models

    calls: list[int] = []

    class Echo:
        def generate(self, batch):
            calls.append(len(batch))
            return [f"mean {int(b.mean())}" for b in batch]

    a, b = np.full((4, 4, 3), 10, np.uint8), np.full((4, 4, 3), 200, np.uint8)
    env = _Models(captioner=Echo())
    assert env.caption([a, b, a]) == ["mean 10", "mean 200", "mean 10"]
    assert env.caption([b, np.full((4, 4, 3), 7, np.uint8)]) == ["mean 200", "mean 7"]
    assert calls == [2, 1]
