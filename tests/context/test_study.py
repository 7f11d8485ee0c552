"""The study context.inversion: registered, and its seed intervals."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.studies import STUDIES


def test_registered_with_metadata():
    cls = STUDIES.get("context.inversion")
    assert cls.capability == "context" and "2410.10796" in cls.paper
    assert "peft" in cls.requires


def test_seed_interval_is_a_t_interval():
    from fmlab.context._study import seed_interval

    m, lo, hi = seed_interval(np.array([1.0, 2.0, 3.0]))
    assert m == 2.0
    assert hi - m == pytest.approx(4.303 * 1.0 / np.sqrt(3), rel=1e-3)
    assert seed_interval(np.array([0.5]))[0] == 0.5 and np.isnan(seed_interval(np.array([0.5]))[1])
