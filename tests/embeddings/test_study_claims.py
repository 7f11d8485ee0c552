"""The echo study's claim functions: each holds on a clear effect and fails on noise (no model)."""

from __future__ import annotations

import numpy as np

from fmlab.embeddings import _study as st
from fmlab.studies import assert_claim_can_fail


def _cosines(gap: float, seed: int, n: int = 200) -> dict:
    """Gold scores and two cosine columns; echo tracks the gold score ``gap`` better."""
    rng = np.random.default_rng(seed)
    gold = rng.uniform(0, 5, n)
    base = gold + rng.normal(0, 2.0, n)
    echo = gold + rng.normal(0, 2.0, n) * (1 - gap)
    return {"stsb": {"gold": gold, "classical": base, "echo": echo}}


def test_sts_claim_needs_a_clear_gap_with_its_interval() -> None:
    held, failed = assert_claim_can_fail(st.echo_beats_classical, _cosines(0.5, 0),
                                         _cosines(0.0, 1))
    assert held.value > 3 and "stsb" in held.measured
    none = st.echo_beats_classical({}, missing={"sickr": "non-commercial"})
    assert not none.holds and "non-commercial" in none.error


def test_toy_claims() -> None:
    clear = {"early_accuracy": 0.9, "chance": 0.25, "n": 80}
    noise = {"early_accuracy": 0.3, "chance": 0.25, "n": 80}
    assert_claim_can_fail(st.echo_early_tokens_see_late, clear, noise)
    few = st.echo_early_tokens_see_late({"early_accuracy": 1.0, "chance": 0.25, "n": 4})
    assert not few.holds and few.error
    check, broken = assert_claim_can_fail(st.classical_early_tokens_blind, noise, clear)
    assert check.kind == "consistency"


def test_cost_claim_reads_measured_time_not_tokens() -> None:
    held, failed = assert_claim_can_fail(st.echo_time_ratio, [1.9, 1.95, 2.0, 1.92],
                                         [1.2, 3.4, 1.9, 2.8])
    assert held.interval[1] <= 2.2 < failed.interval[1]
    # the token ratio alone never decides it
    assert not st.echo_time_ratio([2.6, 2.7, 2.65], token_ratio=2.0).holds


def test_cost_timing_runs_the_model_every_round(tiny):
    """The cost claim times the model, not the encoder's cache: the study's sentences were encoded
    before they are timed, so every timed round must still reach the LM (a cache hit took ~0.2 ms
    and gave echo/classical ratios below 1 although echo's prompt is twice as long)."""
    from fmlab.embeddings import EchoEncoder
    from fmlab.embeddings._study import _time_templates

    classical = EchoEncoder(*tiny, template="classical")
    echo = EchoEncoder(*tiny, template="echo")
    texts = [f"sentence number {i} about a cat." for i in range(6)]
    classical.encode(texts), echo.encode(texts)  # as the study's STS pass leaves them cached
    calls = []
    hook = tiny[0].model.register_forward_hook(lambda *a: calls.append(1))
    try:
        timing = _time_templates(classical, echo, texts, rounds=2)
    finally:
        hook.remove()
    assert len(calls) == 2 * 3  # (warm-up + 2 rounds) x two templates, one batch each
    assert len(timing["ratios"]) == 2
