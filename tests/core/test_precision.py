"""One spelling of full precision and one bit-width parser, shared by quant and scaling."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("value", "expected"), [
    (None, float("inf")), ("fp", float("inf")), ("FP", float("inf")), ("inf", float("inf")),
    ("none", float("inf")), (float("inf"), float("inf")), (16, float("inf")), ("32", float("inf")),
    (4, 4.0), ("8", 8.0), (2.0, 2.0),
])
def test_parse_bits_one_spelling_of_full_precision(value, expected):
    from fmlab._precision import parse_bits

    assert parse_bits(value) == expected


@pytest.mark.parametrize("value", [1, 4.5, "fp32", "four", float("nan"), -3, True])
def test_parse_bits_rejects_with_the_accepted_spellings(value):
    from fmlab._precision import parse_bits

    with pytest.raises(ValueError, match=r"'w_bits' parameter of X must be .*'fp'"):
        parse_bits(value, name="w_bits", owner="X")


def test_quant_and_scaling_share_the_spelling():
    from fmlab._precision import bits_label, parse_bits
    from fmlab.quant._formats import resolve_format
    from fmlab.quant._sweep import SweepSpec

    assert resolve_format("fp") is None and resolve_format(None) is None
    assert resolve_format(16) is None and resolve_format(4).bits == 4
    spec = SweepSpec(train_bits=["fp", 4, (8, "inf", 4)], post_bits=[])
    assert spec.train_bits == ((float("inf"),) * 3, (4.0,) * 3, (8.0, float("inf"), 4.0))
    assert bits_label(float("inf")) == "fp" and bits_label(4.0) == "4"
    assert parse_bits(16, real=True) == 16.0 and parse_bits("fp", real=True) == float("inf")
