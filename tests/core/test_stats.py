"""The one Wilson-interval helper (fmlab._stats) every capability uses."""

import math

import pytest

from fmlab._stats import rate, wilson_interval


def test_wilson_interval_reference_values():
    # Wilson (1927); 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634] at 95%.
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 0) == (0.0, 1.0)
    # a fractional (weighted) count and a narrower z
    lo90, hi90 = wilson_interval(2.5, 10, z=1.645)
    lo95, hi95 = wilson_interval(2.5, 10)
    assert lo95 < lo90 < 0.25 < hi90 < hi95


def test_rate_packs_the_count_and_its_interval():
    r = rate(3, 4)
    assert (r["k"], r["n"], r["rate"]) == (3, 4, 0.75)
    assert (r["low"], r["high"]) == wilson_interval(3, 4)
    empty = rate(0, 0)
    assert math.isnan(empty["rate"]) and (empty["low"], empty["high"]) == (0.0, 1.0)
