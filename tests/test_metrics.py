"""metrics: quantstats metrics, Sharpe inference and per-asset results against references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from oracles import quantstats_metrics
from synthetic import daily_returns as _returns

from metabt.errors import ConfigError, DataError
from metabt.evaluate.metrics import asset_results, compute_metrics, probabilistic_sharpe
from metabt.evaluate.significance import block_bootstrap_sharpe_diff

KEYS = {
    "sharpe",
    "sortino",
    "cagr",
    "max_drawdown",
    "volatility",
    "calmar",
    "total_return",
    "win_rate",
}
DATES = pd.bdate_range("2020-01-01", periods=2)


# ---------------------------------------------------------------- per-asset results
def test_asset_results_by_hand():
    dates = pd.bdate_range("2020-01-01", periods=4)
    prices = {
        "A": pd.DataFrame({"open": [100.0, 108, 100, 99], "close": [100.0, 110, 99, 99]}, dates),
        "B": pd.DataFrame({"open": [50.0, 50, 54, 45], "close": [50.0, 50, 55, 44]}, dates),
    }
    # A: 10 shares, then short 5 (filled at the open of bar 1), then flat; B: 10 shares
    positions = pd.DataFrame(
        {"A": [1000.0, -550.0, 0.0, 0.0], "B": [500.0, 500.0, 550.0, 440.0]}, index=dates
    )
    equity = pd.Series([2000.0, 2100.0, 2000.0, 1900.0], index=dates)
    table = asset_results(positions, prices, equity, cash=2000.0, traded={"A": 1500.0, "B": 500.0})
    # A: bar 1: 10 * (108 - 100) - 5 * (110 - 108) = 70; bar 2: -5 * (100 - 110) = 50
    # B: bar 2: 10 * (54 - 50) + 10 * (55 - 54) = 50; bar 3: 10 * (44 - 55) = -110;
    # bars with zero P&L are not scored
    assert table.loc["A", "hit_rate"] == 1.0 and table.loc["B", "hit_rate"] == 0.5
    assert table.loc["portfolio", "hit_rate"] == 3 / 4
    assert table.loc["A", "contribution"] == pytest.approx(120.0 / 2000.0)
    assert table.loc["B", "contribution"] == pytest.approx(-60.0 / 2000.0)
    assert table.loc["portfolio", "contribution"] == pytest.approx(60.0 / 2000.0)
    assert table.loc["A", "exposure"] == pytest.approx(np.mean([1000 / 2000, 550 / 2100, 0, 0]))
    gross = np.mean([1500 / 2000, 1050 / 2100, 550 / 2000, 440 / 1900])
    assert table.loc["portfolio", "exposure"] == pytest.approx(gross)
    years = 4 / 252
    assert table.loc["A", "turnover_two_way"] == pytest.approx(1500.0 / equity.mean() / years)
    assert table.loc["portfolio", "bars"] == 4 and np.isnan(table.loc["A", "ic"])


@pytest.mark.parametrize("periods", [252, 52, 12])
def test_compute_metrics_equals_quantstats(periods):
    r = _returns()
    m = compute_metrics(r, periods_per_year=periods)
    assert set(m) == KEYS
    assert all(type(v) is float for v in m.values())
    expected = quantstats_metrics(r, periods)
    for key, value in expected.items():
        assert m[key] == pytest.approx(float(value), rel=1e-12), key


def test_compute_metrics_hand_checks():
    """Independent formulas, so a wrong quantstats call (or default periods) is caught."""
    r = _returns()
    x = r.to_numpy()
    m = compute_metrics(r, periods_per_year=52)
    assert m["sharpe"] == pytest.approx(x.mean() / x.std(ddof=1) * math.sqrt(52), rel=1e-10)
    assert m["volatility"] == pytest.approx(x.std(ddof=1) * math.sqrt(52), rel=1e-10)
    total = np.prod(1 + x) - 1
    assert m["total_return"] == pytest.approx(total, rel=1e-10)
    assert m["cagr"] == pytest.approx((1 + total) ** (52 / len(x)) - 1, rel=1e-9)
    wealth = np.concatenate([[1.0], np.cumprod(1 + x)])
    max_dd = (wealth / np.maximum.accumulate(wealth)).min() - 1
    assert m["max_drawdown"] == pytest.approx(max_dd, rel=1e-10)
    assert m["calmar"] == pytest.approx(m["cagr"] / abs(max_dd), rel=1e-9)
    assert m["win_rate"] == pytest.approx((x > 0).sum() / (x != 0).sum(), rel=1e-12)


def test_compute_metrics_turnover_and_degenerate_series(recwarn):
    m = compute_metrics(_returns(), turnover=3.5)
    assert m["turnover"] == 3.5
    aware = _returns().tz_localize("America/New_York")
    assert compute_metrics(aware) == {k: v for k, v in m.items() if k != "turnover"}
    flat = compute_metrics(pd.Series(0.0, index=pd.bdate_range("2020-01-01", periods=20)))
    assert math.isnan(flat["sharpe"]) and flat["win_rate"] == 0.0 and flat["total_return"] == 0.0
    assert not [str(w.message) for w in recwarn]  # no divide-by-zero or win-rate warnings


@pytest.mark.parametrize(
    ("returns", "kwargs", "error", "match"),
    [
        ([0.01, 0.02], {}, DataError, "pandas Series"),
        (pd.Series([0.01, 0.02]), {}, DataError, "DatetimeIndex"),
        (pd.Series([], index=DATES[:0], dtype=float), {}, DataError, "no finite value"),
        (pd.Series([np.nan, np.nan], index=DATES), {}, DataError, "no finite value"),
        (pd.Series(["a", "b"], index=DATES), {}, DataError, "numbers"),
        (pd.Series([0.01, 0.02], index=DATES), {"periods_per_year": 0}, ConfigError, "periods"),
        (pd.Series([0.01, 0.02], index=DATES), {"periods_per_year": True}, ConfigError, "periods"),
        (pd.Series([0.01, 0.02], index=DATES), {"turnover": math.nan}, ConfigError, "turnover"),
    ],
)
def test_compute_metrics_rejects_bad_input(returns, kwargs, error, match):
    with pytest.raises(error, match=match):
        compute_metrics(returns, **kwargs)


def test_sharpe_difference_ci_and_psr_match_quantstats():
    """The Sharpe difference (now with a block-bootstrap interval) and PSR against quantstats."""
    idx = pd.bdate_range("2010-01-01", periods=400)
    rng = np.random.default_rng(3)
    a = pd.Series(rng.normal(0.001, 0.01, 400), idx)
    b = pd.Series(rng.normal(0.0, 0.012, 400), idx)
    out = block_bootstrap_sharpe_diff(a, b, seed=1)
    diff, low, high = out["diff"], out["lo"], out["hi"]
    assert diff == pytest.approx(
        qs.stats.sharpe(a, periods=252) - qs.stats.sharpe(b, periods=252), rel=1e-12
    )
    assert low < diff < high
    assert block_bootstrap_sharpe_diff(a, b, seed=1) == out  # seeded
    narrow = block_bootstrap_sharpe_diff(a, b, seed=1, confidence=0.5)
    assert low < narrow["lo"] < narrow["hi"] < high
    assert probabilistic_sharpe(a) == pytest.approx(
        qs.stats.probabilistic_sharpe_ratio(a, periods=252), rel=1e-12
    )
    with pytest.raises(DataError, match="20 common dates"):
        block_bootstrap_sharpe_diff(a.iloc[:5], b.iloc[:5])


# ---------------------------------------------------------------- inference on time series
def test_deflated_sharpe_matches_the_papers_worked_example():
    """Bailey and López de Prado 2014, section 5: SR 2.5 a year over 1,250 days, skew -3,
    kurtosis 10, 100 trials with V[SR] = 1/2 a year: E[max SR] 0.1132 a day, DSR 0.9004."""
    from metabt.evaluate.significance import deflated_sharpe_ratio, expected_max_sharpe

    variance = 0.5 / 250
    assert expected_max_sharpe(100, variance) == pytest.approx(0.1132, abs=1e-4)
    dsr = deflated_sharpe_ratio(2.5 / math.sqrt(250), 1250, -3.0, 10.0, 100, variance)
    assert dsr == pytest.approx(0.9004, abs=1e-4)
    assert expected_max_sharpe(1, variance) == 0.0  # one trial: no selection to deflate


def test_deflated_sharpe_of_a_series_is_its_psr_for_one_trial():
    """One trial: no selection, so DSR is the PSR against 0 (paper eq. 3 with SR* = 0)."""
    from scipy.stats import norm

    from metabt.evaluate.significance import deflated_sharpe

    r = _returns(500, seed=3)
    sr, n = r.mean() / r.std(), len(r)
    g3, g4 = r.skew(), r.kurt() + 3.0
    expected = norm.cdf(sr * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    one = deflated_sharpe(r, {"only": r})
    assert one == pytest.approx(expected, rel=1e-10)
    many = deflated_sharpe(r, {str(k): _returns(500, seed=k) for k in range(20)} | {"x": r})
    assert many < one  # more trials, a higher bar


def test_block_bootstrap_matches_arch_and_widens_with_autocorrelation():
    from arch.bootstrap import StationaryBootstrap

    from metabt.evaluate.significance import block_bootstrap_sharpe_diff

    a, b = _returns(400, seed=5), _returns(400, seed=6)
    out = block_bootstrap_sharpe_diff(a, b, block=5.0, n_resamples=500, seed=7)
    x, y = a.to_numpy(), b.to_numpy()

    def sharpe(v):
        return v.mean() / v.std(ddof=1) * math.sqrt(252)

    assert out["diff"] == pytest.approx(sharpe(x) - sharpe(y), rel=1e-12)
    bs = StationaryBootstrap(5.0, x, y, seed=np.random.default_rng(7))
    draws = np.array([sharpe(u) - sharpe(v) for (u, v), _ in bs.bootstrap(500)])
    lo, hi = np.percentile(draws, [2.5, 97.5])
    assert (out["lo"], out["hi"]) == pytest.approx((lo, hi), rel=1e-12)
    assert out["lo"] < out["diff"] < out["hi"] and out["block"] == 5.0
    chosen = block_bootstrap_sharpe_diff(a, b, n_resamples=200)
    assert chosen["block"] >= 1.0  # Politis-White's choice, at least one bar


def test_hac_ic_equals_statsmodels_newey_west():
    import statsmodels.api as sm

    from metabt.evaluate.ic import hac_ic

    rng = np.random.default_rng(8)
    signal = rng.normal(size=300)
    forward = 0.3 * signal + rng.normal(size=300)
    pair = pd.DataFrame({"signal": signal, "forward": forward})
    out = hac_ic(pair, lags=5)
    assert out["ic"] == pytest.approx(np.corrcoef(signal, forward)[0, 1], rel=1e-10)
    z = (pair - pair.mean()) / pair.std()
    fit = sm.OLS(z["forward"], sm.add_constant(z["signal"])).fit(
        cov_type="HAC", cov_kwds={"maxlags": 5}
    )
    assert out["ic_t"] == pytest.approx(float(fit.tvalues.iloc[1]), rel=1e-10)
    assert out["rank_ic"] == pytest.approx(pair.corr(method="spearman").iloc[0, 1], rel=1e-10)
    assert math.isnan(hac_ic(pair.iloc[:10], lags=5)["ic"])  # too few bars


def test_cross_sectional_ic_by_hand():
    from metabt.evaluate.ic import cross_sectional_ic

    dates = pd.bdate_range("2020-01-01", periods=30)
    # asset k's signal is k every day and its forward return ranks the same way: rank IC 1
    pairs = {
        f"A{k}": pd.DataFrame(
            {"signal": float(k), "forward": k + 0.1 * np.sin(np.arange(30))}, dates
        )
        for k in range(4)
    }
    out = cross_sectional_ic(pairs, lags=2)
    assert out["cs_ic"] == pytest.approx(1.0) and out["cs_dates"] == 30
    flipped = {k: v.assign(forward=-v["forward"]) for k, v in pairs.items()}
    assert cross_sectional_ic(flipped, lags=2)["cs_ic"] == pytest.approx(-1.0)
    assert math.isnan(cross_sectional_ic(dict(list(pairs.items())[:2]), lags=2)["cs_ic"])


def test_basket_returns_by_hand():
    from metabt.evaluate.metrics import basket_returns

    days = pd.bdate_range("2021-01-04", periods=4)  # Mon..Thu
    a = pd.DataFrame({"close": [100.0, 110.0, 99.0, 99.0]}, index=days)
    # B has no bar on Tuesday: Wednesday's return is from Monday's close
    b = pd.DataFrame({"close": [50.0, 55.0, 44.0]}, index=days[[0, 2, 3]])
    out = basket_returns({"A": a, "B": b}, days[1:])
    # Tue: A +10%, B no bar (0); Wed: A -10%, B +10%; Thu: A 0, B -20%
    expected = [(0.10 + 0.0) / 2, (-0.10 + 0.10) / 2, (0.0 - 0.20) / 2]
    assert out.index.equals(days[1:]) and out.name == "basket"
    assert out.to_numpy() == pytest.approx(expected, abs=1e-15)
    # Series of closes work too; a date before an asset's first bar counts as 0
    first = basket_returns({"A": a["close"], "B": b["close"]}, days[:1])
    assert first.tolist() == [0.0]
    with pytest.raises(DataError, match="no assets"):
        basket_returns({}, days)


def test_metrics_table_puts_the_cost_columns_last():
    from metabt.evaluate.metrics import COST_COLUMNS, metrics_table

    cost = dict.fromkeys(COST_COLUMNS, 1.0)
    rows = {
        "A": {"sharpe": 1.0, **cost, "ic": 0.1},
        "B": {"sharpe": 0.5, "psr": 0.9, **cost},
    }
    table = metrics_table(rows)
    assert list(table.columns) == ["sharpe", "ic", "psr", *COST_COLUMNS]
