"""linear: the classical adaptive baselines against their textbook definitions."""

from __future__ import annotations

import numpy as np
import pytest

from metabt.errors import ConfigError
from metabt.features.spec import FeatureSpec
from metabt.learn.linear import RidgeAdapter, RLSAdapter, select_by_validation


def _support(n: int = 80, f: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    beta = rng.normal(size=f)
    return x, x @ beta + 0.3 + rng.normal(scale=0.5, size=n), beta


def test_ridge_equals_the_normal_equations_with_an_unpenalised_intercept():
    x, y, _ = _support()
    alpha = 7.0
    fit = RidgeAdapter(None, alpha).adapt(x, y)
    xa = np.hstack([x, np.ones((len(y), 1))])
    penalty = np.diag([alpha] * x.shape[1] + [0.0])  # the intercept is not penalised
    reference = np.linalg.solve(xa.T @ xa + penalty, xa.T @ y)
    np.testing.assert_allclose(fit.coef, reference[:-1], rtol=1e-10)
    assert fit.intercept == pytest.approx(reference[-1], rel=1e-10)
    assert fit.loss_after < fit.loss_before == pytest.approx(float(np.mean(y**2)))
    assert fit.predict_row(x[3]) == pytest.approx(float(fit.predict(x)[3]))


def test_ridge_recovers_the_coefficients_as_the_penalty_vanishes():
    x, y, beta = _support(n=5000)
    fit = RidgeAdapter(None, 1e-6).adapt(x, y)
    np.testing.assert_allclose(fit.coef, beta, atol=0.05)
    assert fit.intercept == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize("forgetting", [0.9, 0.99, 1.0])
def test_rls_closed_form_equals_the_recursion(forgetting):
    x, y, _ = _support(n=120)
    adapter = RLSAdapter(None, forgetting, delta=2.0)
    closed, recursive = adapter.adapt(x, y), adapter.recursion(x, y)
    np.testing.assert_allclose(closed.coef, recursive.coef, rtol=1e-8, atol=1e-10)
    assert closed.intercept == pytest.approx(recursive.intercept, rel=1e-8, abs=1e-10)


def test_rls_forgets_an_old_regime():
    """After the sign of the relation flips, a forgetful RLS follows the new regime."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 1))
    y = np.where(np.arange(300) < 200, 1.0, -1.0) * x[:, 0]
    assert RLSAdapter(None, 0.95).adapt(x, y).coef[0] < -0.9
    assert RLSAdapter(None, 1.0).adapt(x, y).coef[0] > 0.0  # no forgetting: the old regime wins


def test_bad_inputs_are_config_errors():
    with pytest.raises(ConfigError, match="alpha"):
        RidgeAdapter(None, 0.0)
    with pytest.raises(ConfigError, match="forgetting"):
        RLSAdapter(None, 1.5)
    with pytest.raises(ConfigError, match="NaN"):
        RidgeAdapter(None).adapt(np.full((5, 2), np.nan), np.zeros(5))
    with pytest.raises(ConfigError, match="support set"):
        RidgeAdapter(None).adapt(np.zeros((5, 2)), np.zeros(4))


def test_select_by_validation_picks_the_lowest_query_loss():
    rng = np.random.default_rng(2)
    xs, xq = rng.normal(size=(8, 40, 3)), rng.normal(size=(8, 10, 3))
    ys = xs @ np.array([1.0, -1.0, 0.5]) + rng.normal(scale=0.1, size=(8, 40))
    yq = xq @ np.array([1.0, -1.0, 0.5])
    best, scores = select_by_validation(
        lambda a: RidgeAdapter(None, a), [1e-3, 1e4], (xs, ys, xq, yq)
    )
    assert best == 1e-3 and scores[1e-3] < scores[1e4]  # a signal: little shrinkage wins
    spec = FeatureSpec()
    assert RidgeAdapter(spec).horizon == spec.horizon and RidgeAdapter(None).horizon is None
