"""The fitting core: robust losses, the batched L-BFGS, multi-start, bootstrap, Jacobians."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fmlab.scaling import _fitting as core
from fmlab.scaling import robust_loss


def test_huber_is_squared_inside_and_linear_outside():
    r = np.array([-0.01, -5e-4, 0.0, 5e-4, 0.01])
    rho, psi = robust_loss(r, "huber", delta=1e-3)
    sq, _ = robust_loss(r, "squared")
    np.testing.assert_allclose(rho[1:4], sq[1:4])
    np.testing.assert_allclose(rho[[0, 4]], 1e-3 * (0.01 - 5e-4))
    np.testing.assert_allclose(psi, np.clip(r, -1e-3, 1e-3))


def test_asymmetric_penalises_overprediction():
    rho, _ = robust_loss(np.array([-0.01, 0.01]), "asymmetric", delta=1e-3, asymmetry=10.0)
    assert rho[0] == pytest.approx(10 * rho[1])


def _rosenbrock(x, rows=None):
    a, b = x[:, 0], x[:, 1]
    f = (1 - a) ** 2 + 100 * (b - a**2) ** 2
    g = np.stack([-2 * (1 - a) - 400 * a * (b - a**2), 200 * (b - a**2)], axis=1)
    return f, g


def test_batched_lbfgs_solves_every_row():
    x0 = np.random.default_rng(0).uniform(-2, 2, size=(64, 2))
    res = core.batched_lbfgs(_rosenbrock, x0, np.full(2, -np.inf), np.full(2, np.inf),
                             max_iter=2000, ftol=1e-16, gtol=1e-9)
    np.testing.assert_allclose(res.x, 1.0, atol=1e-4)
    assert res.converged.all()


def test_batched_lbfgs_respects_bounds():
    lo, hi = np.array([-2.0, -2.0]), np.array([0.5, 2.0])
    res = core.batched_lbfgs(_rosenbrock, np.zeros((4, 2)), lo, hi, max_iter=500)
    assert (res.x >= lo).all() and (res.x <= hi).all()
    np.testing.assert_allclose(res.x[:, 0], 0.5, atol=1e-6)  # minimum on the active bound
    np.testing.assert_allclose(res.x[:, 1], 0.25, atol=1e-4)


def test_multistart_matches_a_scipy_loop_on_a_multimodal_problem():
    from scipy.optimize import minimize

    def fun(x, rows=None):  # many local minima; global at x = 0
        f = np.sum(x**2 - np.cos(3 * x), axis=1)
        return f, 2 * x + 3 * np.sin(3 * x)

    starts = np.stack(np.meshgrid(np.linspace(-3, 3, 5), np.linspace(-3, 3, 5)), -1).reshape(-1, 2)
    res = core.multistart_minimize(fun, starts, np.full(2, -np.inf), np.full(2, np.inf))
    loop = min(minimize(lambda z: float(fun(z[None])[0][0]), s, jac=lambda z: fun(z[None])[1][0],
                        method="L-BFGS-B").fun for s in starts)
    assert res.fun <= loop + 1e-12
    np.testing.assert_allclose(res.x, 0.0, atol=1e-6)


def test_start_grid_subset_is_seeded():
    specs = [core.ParamSpec("a", (0, 1, 2)), core.ParamSpec("b", (0, 1, 2, 3))]
    assert core.start_grid(specs, None, 0).shape == (12, 2)
    a, b = core.start_grid(specs, 5, 1), core.start_grid(specs, 5, 1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("law_name", ["chinchilla", "precision", "ptq", "unified_precision",
                                      "data_filtering"])
def test_analytic_jacobian_matches_finite_differences(law_name):
    from fmlab.scaling import create_law

    rng = np.random.default_rng(0)
    law = create_law(law_name)
    n = 40
    if law_name == "data_filtering":
        law.pools_, law._pool_index = ["p", "q"], {"p": 0, "q": 1}
        X = np.column_stack([rng.integers(0, 2, n), rng.uniform(1e6, 1e8, n), np.full(n, 1e7)])
    else:
        cols = [rng.uniform(1e7, 1e9, n), rng.uniform(1e9, 1e11, n)]
        cols += [rng.choice([3.0, 4.0, 8.0, np.inf], n) for _ in law.feature_names[2:-1]]
        if len(law.feature_names) > 2:
            cols.append(rng.choice([2.0, 3.0, np.inf], n) if law_name == "unified_precision"
                        else rng.choice([3.0, 4.0, 8.0, np.inf], n))
        X = np.column_stack(cols)
    specs = law.param_specs()
    theta = core.start_grid(specs, 5, 0) + 0.03 * rng.standard_normal((5, len(specs)))
    theta = np.clip(theta, [s.lower for s in specs], [s.upper for s in specs])
    f, jac = law._log_predict_jac(theta, X)
    f2, jac2 = core.finite_difference_jac(lambda t: law._log_predict(t, X), theta)
    np.testing.assert_allclose(f, f2, rtol=1e-12)
    np.testing.assert_allclose(jac, jac2, atol=1e-6 * max(1.0, np.abs(jac2).max()))


def test_importing_scaling_does_not_import_torch():
    code = "import sys, fmlab.scaling; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
