"""The §5 toy: Proposition 1's sign flip, Theorem 1's rise-then-fall on the constructed example,
Proposition 2's shift with S points, Proposition 3's memorisation, and filtering."""

from __future__ import annotations

import numpy as np
import pytest

from fmlab.context import ToyConfig, simulate_toy


@pytest.fixture(scope="module")
def base():
    return simulate_toy(steps=6)


def test_proposition1_sign_flip(base):
    d_c, d_s = np.diff(base.theta_c), np.diff(base.theta_s)
    # step 0: attention moves towards the context direction and away from the subject direction
    assert d_c[0] > 0 and d_s[0] < 0
    # step 1: the signs flip
    assert d_c[1] < 0 and d_s[1] > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_theorem1_rise_then_fall(seed):
    res = simulate_toy(steps=2, seed=seed)
    assert res.m_c[1] > res.m_c[0] + 0.1
    assert res.m_c[1] > res.m_c[2] + 0.01
    assert res.peak_step == 1
    # the attention to the context on the probes follows the same path
    att = res.attention_context
    assert att[1] > att[0] and att[1] > att[2]


def test_proposition2_subject_points_move_theta_s_only():
    plain = simulate_toy(steps=1)
    more = simulate_toy(steps=1, n_subject_only=10)
    # S points have no context token: the θ_C component of the first update is unchanged ...
    assert more.theta_c[1] == pytest.approx(plain.theta_c[1], rel=1e-12, abs=1e-12)
    # ... and the θ_S component increases, which lowers the context's share M_C
    assert more.theta_s[1] > plain.theta_s[1] + 0.5
    assert more.m_c[1] < plain.m_c[1]


def test_filtering_non_critical_points_removes_the_fall():
    res = simulate_toy(steps=15, lr=5.0, n_non_critical=0)
    assert np.all(np.diff(res.m_c) > -1e-9)
    assert np.all(np.diff(res.theta_c) > 0)
    inverted = simulate_toy(steps=15, lr=5.0)
    # with C+S points the same schedule peaks inside the run and ends lower
    assert 0 < inverted.peak_step < 15
    assert inverted.m_c[-1] < inverted.m_c.max() - 0.005
    assert res.m_c[-1] > inverted.m_c[-1]


def test_proposition3_training_value_memorises_subjects():
    frozen = simulate_toy(steps=10, lr=5.0)
    trained = simulate_toy(steps=10, lr=5.0, train_value=True)
    assert np.allclose(frozen.subject_readout, 1 / 8)
    assert trained.subject_readout[-1] > trained.subject_readout[0] + 0.01


def test_to_dict_and_config_round_trip(base):
    d = base.to_dict()
    assert len(d["m_c"]) == 7 and d["config"]["n_answers"] == 8
    assert ToyConfig(**d["config"]) == base.config


@pytest.mark.parametrize(("kwargs", "err", "match"), [
    ({"lr": -1.0}, ValueError, r"'lr' parameter of ToyConfig must be a float in the range \(0"),
    ({"delta_c": 0.05}, ValueError, r"'delta_c'.*Got 0.05"),
    ({"n_answers": 1}, ValueError, r"'n_answers'"),
    ({"steps": 2.5}, TypeError, r"'steps'.*int"),
    ({"n_context_critical": 0, "n_non_critical": 0}, ValueError, r"n_non_critical >= 1"),
])
def test_bad_config(kwargs, err, match):
    with pytest.raises(err, match=match):
        ToyConfig(**kwargs)
