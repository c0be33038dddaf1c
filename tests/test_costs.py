"""metabt.evaluate.costs: gross/net Sharpe, break-even cost, sensitivity, holding period,
long share and HAC alpha/beta, each against a hand computation or an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metabt.evaluate.costs import (
    alpha_beta,
    break_even_bps,
    cost_report,
    cost_sensitivity,
    holding_period,
    long_share,
    sharpe,
)

DATES = pd.bdate_range("2020-01-01", periods=500)


def _book(seed: int = 0, cost_bps: float = 7.0):
    """A two-asset book with known gross returns, fills and costs; net derived exactly."""
    rng = np.random.default_rng(seed)
    gross = pd.Series(rng.normal(4e-4, 0.01, len(DATES)), DATES)
    turnover = pd.Series(rng.uniform(0.0, 0.6, len(DATES)), DATES)  # two-way, x equity
    borrow_r = pd.Series(rng.uniform(0.0, 2e-5, len(DATES)), DATES)
    net = gross - cost_bps * 1e-4 * turnover - borrow_r
    equity = 1e5 * (1 + net).cumprod()
    prev = equity.shift(1).fillna(1e5)
    exposure = pd.DataFrame(
        {"A": 0.6 * prev, "B": -0.2 * prev * rng.uniform(0.5, 1.5, len(DATES))}, index=DATES
    )
    return {
        "gross": gross,
        "turnover": turnover,
        "borrow_r": borrow_r,
        "net": net,
        "equity": equity,
        "prev": prev,
        "traded": turnover * prev,
        "trading_costs": cost_bps * 1e-4 * turnover * prev,
        "borrow_costs": borrow_r * prev,
        "exposure": exposure,
    }


def test_sharpe_equals_quantstats():
    import quantstats as qs

    r = _book()["net"]
    assert sharpe(r, 252) == pytest.approx(float(qs.stats.sharpe(r, periods=252)), rel=1e-12)
    assert math.isnan(sharpe(pd.Series([0.01]), 252))
    assert math.isnan(sharpe(pd.Series([0.01, 0.01, 0.01]), 252))


def test_gross_adds_back_each_bars_costs_and_the_curve_meets_the_run_at_its_cost():
    b = _book(cost_bps=7.0)
    basket = pd.Series(np.random.default_rng(1).normal(3e-4, 0.01, len(DATES)), DATES)
    report = cost_report(
        b["net"],
        equity=b["equity"],
        trading_costs=b["trading_costs"],
        borrow_costs=b["borrow_costs"],
        traded=b["traded"],
        exposure=b["exposure"],
        basket=basket,
        periods=252,
    )
    assert report.gross_sharpe == pytest.approx(sharpe(b["gross"], 252), rel=1e-10)
    assert report.net_sharpe == pytest.approx(sharpe(b["net"], 252), rel=1e-12)
    assert report.cost_drag == pytest.approx(report.gross_sharpe - report.net_sharpe)
    assert report.cost_drag > 0
    # the curve at the run's own cost per fill is the run's net Sharpe
    assert report.sensitivity.loc[6.0] > report.net_sharpe > report.sensitivity.loc[8.0]
    at7 = cost_sensitivity(b["gross"], b["turnover"], 252, borrow=b["borrow_r"], grid_bps=[7])
    assert at7.iloc[0] == pytest.approx(report.net_sharpe, rel=1e-10)
    assert report.sensitivity.is_monotonic_decreasing
    # break-even by hand: mean(gross - borrow) / mean(turnover), in bps
    hand = 1e4 * (b["gross"] - b["borrow_r"]).mean() / b["turnover"].mean()
    assert report.break_even_bps == pytest.approx(hand, rel=1e-10)


def test_break_even_is_where_the_mean_net_return_crosses_zero():
    g = pd.Series([0.002, -0.001, 0.003, 0.0])
    t = pd.Series([1.0, 0.5, 1.5, 1.0])
    c = break_even_bps(g, t)
    assert np.mean(g - c * 1e-4 * t) == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(break_even_bps(g, t * 0))
    assert break_even_bps(-g, t) < 0  # loses before costs


def test_holding_period_of_a_book_that_replaces_a_tenth_each_bar():
    idx = DATES[:50]
    prev = pd.Series(1e5, idx)
    exposure = pd.DataFrame({"A": 1e5}, index=idx)  # held 1x equity
    turnover = pd.Series(0.2, idx)  # sells 10% and buys 10% of equity each bar
    assert holding_period(exposure, prev, turnover) == pytest.approx(10.0)
    assert math.isnan(holding_period(exposure, prev, turnover * 0))


def test_long_share_by_hand():
    exposure = pd.DataFrame({"A": [3.0, 1.0, 0.0], "B": [-1.0, 0.0, 0.0]})
    assert long_share(exposure) == pytest.approx(4.0 / 5.0)
    assert math.isnan(long_share(exposure * 0))
    assert long_share(exposure.abs()) == 1.0


def _newey_west(y: np.ndarray, x: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """OLS with a Bartlett-kernel HAC covariance, written out (Newey & West 1987)."""
    X = np.column_stack([np.ones_like(x), x])
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    u = y - X @ beta
    scores = X * u[:, None]
    s = scores.T @ scores
    for lag in range(1, lags + 1):
        w = 1 - lag / (lags + 1)
        gamma = scores[lag:].T @ scores[:-lag]
        s += w * (gamma + gamma.T)
    bread = np.linalg.inv(X.T @ X)
    cov = bread @ s @ bread  # statsmodels' default applies no small-sample correction
    return beta, beta / np.sqrt(np.diag(cov))


def test_alpha_beta_hac_equals_a_hand_written_newey_west():
    rng = np.random.default_rng(3)
    b = pd.Series(rng.normal(0, 0.01, len(DATES)), DATES)
    noise = np.convolve(rng.normal(0, 0.005, len(DATES) + 4), np.ones(5) / 5, "valid")
    r = 2e-4 + 0.3 * b + noise  # autocorrelated errors: HAC matters
    got = alpha_beta(r, b, periods=252, lags=6)
    coef, t = _newey_west(r.to_numpy(), b.to_numpy(), 6)
    assert got["alpha"] == pytest.approx(coef[0] * 252, rel=1e-10)
    assert got["beta"] == pytest.approx(coef[1], rel=1e-10)
    assert got["alpha_t"] == pytest.approx(t[0], rel=1e-8)
    assert got["beta_t"] == pytest.approx(t[1], rel=1e-8)
    assert got["beta_t"] > 10  # a real exposure to the basket is found
    assert all(math.isnan(v) for v in alpha_beta(r[:5], b[:5], 252).values())
