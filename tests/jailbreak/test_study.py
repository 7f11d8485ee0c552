"""The claims of ``jailbreak.purple`` can fail: each holds on rows with a clear effect and not on
rows without one (no model: milliseconds)."""

from __future__ import annotations

import pytest

from fmlab.jailbreak import _study as s
from fmlab.studies import assert_claim_can_fail, get_study

N = 20


def cell(defense: str, attack: str, unsafe: list[bool], blocked: int = 0, **extra):
    n_safe = sum(not u for u in unsafe)
    return {"defense": defense, "attack": attack, "n": len(unsafe), "n_safe": n_safe,
            "dsr": n_safe / len(unsafe), "n_blocked": blocked, "unsafe": unsafe, **extra}


def flips(k: int) -> list[bool]:
    """``k`` unsafe prompts first, the rest safe."""
    return [i < k for i in range(N)]


def test_base_claim():
    assert_claim_can_fail(s.base_says_purple, [cell("none", "none", flips(15))],
                          [cell("none", "none", flips(6))])


def test_dpo_claim_needs_a_paired_improvement():
    clear = [cell("none", "none", flips(12)), cell("dpo", "none", flips(1))]
    noise = [cell("none", "none", flips(3)), cell("dpo", "none", flips(2))]  # high, but no gain
    assert_claim_can_fail(s.dpo_defends_clean_prompts, clear, noise)


def test_gcg_claim():
    clear = [cell("dpo", "none", flips(1)), cell("dpo", "gcg", flips(14), gcg_best_loss=0.2)]
    noise = [cell("dpo", "none", flips(1)), cell("dpo", "gcg", flips(3), gcg_best_loss=3.0)]
    assert_claim_can_fail(s.gcg_breaks_dpo, clear, noise)


def test_perplexity_claim():
    d = "dpo+perplexity_filter"
    clear = [cell(d, "gcg", [False] * N, blocked=N), cell(d, "ppl_prefix", flips(12))]
    noise = [cell(d, "gcg", flips(2), blocked=N // 2), cell(d, "ppl_prefix", flips(3))]
    held, failed = assert_claim_can_fail(s.prefix_beats_perplexity_filter, clear, noise)
    # all blocked and all let through, but the prefix does not make the model say the word
    still = [cell(d, "gcg", [False] * N, blocked=N), cell(d, "ppl_prefix", flips(1))]
    assert not s.prefix_beats_perplexity_filter(still).holds


def test_adversarial_training_claim():
    d = "adversarial_training"
    clear = [cell(d, "seen_gcg", flips(2)), cell(d, "fresh_gcg", flips(15))]
    noise = [cell(d, "seen_gcg", flips(2)), cell(d, "fresh_gcg", flips(4))]
    assert_claim_can_fail(s.adversarial_training_breaks, clear, noise)


def test_output_filter_claim_is_a_consistency_check():
    c = s.output_filter_holds([cell("dpo+output_filter", "gcg", [False] * N)])
    assert c.holds and c.kind == "consistency"
    assert not s.output_filter_holds([cell("dpo+output_filter", "gcg", flips(1))]).holds


def test_missing_cell_is_not_computed():
    c = s.gcg_breaks_dpo([cell("dpo", "none", flips(1))])
    assert not c.holds and "dpo × gcg" in c.error


def test_options_are_declared():
    study = get_study("jailbreak.purple")
    quick, full = study.resolve_options({}, "quick"), study.resolve_options({}, "full")
    assert quick["n_test"] < full["n_test"] and quick["gcg_steps"] < full["gcg_steps"]
    assert not quick["adversarial_training"] and full["adversarial_training"]
    with pytest.raises(Exception, match="Did you mean: gcg_steps"):
        study.resolve_options({"gcg_step": 3}, "quick")
