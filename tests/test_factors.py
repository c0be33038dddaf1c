"""Factor features: the as-of benchmark column, beta and residual features, online == offline."""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from statsmodels.regression.rolling import RollingOLS
from synthetic import gbm_frame

import metabt.features.factors as factors
from metabt.data.feeds import feed
from metabt.data.ohlcv import is_validated, load_ohlcv
from metabt.errors import ConfigError, DataError
from metabt.features.factors import (
    BENCHMARK,
    FACTOR_FEATURES,
    bench_ret,
    beta,
    factor_spec,
    resid_mom,
    resid_ret,
    with_benchmark,
)
from metabt.features.spec import FeatureSpec, check_causal, registered_features

WINDOW, MOM, TRUE_BETA = 60, 20, 1.3


def _asset(bench: pd.DataFrame, *, b: float = TRUE_BETA, noise: float = 0.008, seed: int = 7):
    """An asset on the benchmark's dates with log returns r = b * m + N(0, noise²)."""
    rng = np.random.default_rng(seed)
    m = np.diff(np.log(bench["close"].to_numpy()), prepend=math.log(100.0))
    close = 50.0 * np.exp(np.cumsum(b * m + rng.normal(0.0, noise, len(m))))
    open_ = np.concatenate([[50.0], close[:-1]])
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.003, len(m))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.003, len(m))))
    volume = np.round(rng.lognormal(13.0, 0.4, len(m)))
    data = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return load_ohlcv(pd.DataFrame(data, index=bench.index), name="asset")


@pytest.fixture(scope="module")
def pair():
    bench = gbm_frame(500, 3, vol=0.01)
    return _asset(bench), bench


@pytest.fixture(scope="module")
def joined(pair):
    asset, bench = pair
    return with_benchmark(asset, bench)


def _windows(frame: pd.DataFrame, width: int = WINDOW + 1):
    c = sliding_window_view(frame["close"].to_numpy(), width)
    b = sliding_window_view(frame[BENCHMARK].to_numpy(), width)
    return c, b, frame.index[width - 1 :]


def _after(asset: pd.DataFrame, bench: pd.DataFrame) -> pd.Series:
    """One benchmark close dated a day after the asset's last bar."""
    return bench["close"].iloc[-1:].set_axis([asset.index[-1] + pd.Timedelta(1, "D")])


# ---------------------------------------------------------------- with_benchmark
def test_with_benchmark_adds_the_close_on_the_asset_dates(pair):
    asset, bench = pair
    before = asset.copy()
    out = with_benchmark(asset, bench)
    assert list(out.columns) == [*asset.columns, BENCHMARK]
    assert out[BENCHMARK].dtype == np.float64
    np.testing.assert_array_equal(out[BENCHMARK].to_numpy(), bench["close"].to_numpy())
    pd.testing.assert_frame_equal(out[list(asset.columns)], asset)
    pd.testing.assert_frame_equal(asset, before)  # input not modified
    assert is_validated(out)


def test_asof_join_uses_the_previous_benchmark_close_and_nan_before_it(pair):
    asset, bench = pair
    gap = bench.index[100]  # the benchmark's exchange is closed on this asset bar
    late = bench.iloc[30:].drop(index=gap)
    out = with_benchmark(asset, late)[BENCHMARK]
    assert out.iloc[:30].isna().all()  # before the benchmark's first bar
    assert out.iloc[30] == bench["close"].iloc[30]
    assert out.loc[gap] == bench["close"].iloc[99]  # as of the last bar at or before
    assert out.iloc[101] == bench["close"].iloc[101]


def test_asof_join_never_takes_a_later_bar_on_shifted_times(pair):
    asset, bench = pair
    # benchmark bars stamped 1 hour after the asset's: each asset bar sees the day before
    shifted = bench["close"].copy()
    shifted.index = shifted.index + pd.Timedelta(hours=1)
    with pytest.raises(DataError, match="intraday"):
        with_benchmark(asset.set_axis(asset.index + pd.Timedelta(hours=16)), bench)
    out = with_benchmark(asset, shifted)[BENCHMARK]
    assert np.isnan(out.iloc[0])
    np.testing.assert_array_equal(out.iloc[1:].to_numpy(), bench["close"].iloc[:-1].to_numpy())


def test_with_benchmark_accepts_a_series_and_a_path(pair, tmp_path):
    asset, bench = pair
    path = tmp_path / "SPY.csv"
    bench.to_csv(path)
    a = with_benchmark(asset, bench["close"].rename("spy"))
    b = with_benchmark(asset, path)
    np.testing.assert_array_equal(a[BENCHMARK].to_numpy(), b[BENCHMARK].to_numpy())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda a, b: (a.reset_index(), b), "asset frame is not a validated"),
        (lambda a, b: (a, b.reset_index()), "benchmark DataFrame is not a validated"),
        (lambda a, b: (a, b["close"].where(b.index != b.index[50], 0.0)), r"0\.0 at .*> 0"),
        (lambda a, b: (a, b["close"].where(b.index != b.index[50], -1.0)), "> 0"),
        (lambda a, b: (a, b["close"].where(b.index != b.index[50])), "missing"),
        (lambda a, b: (a, b["close"].iloc[::-1]), "ascending"),
        (lambda a, b: (a, b["close"].reset_index(drop=True)), "DatetimeIndex"),
        (lambda a, b: (a, [1.0, 2.0]), "got list"),
        (lambda a, b: (a, _after(a, b)), "after the asset's last bar"),
    ],
)
def test_with_benchmark_rejects_bad_input(pair, make, match):
    frame, benchmark = make(*pair)
    with pytest.raises(DataError, match=match):
        with_benchmark(frame, benchmark)


@pytest.mark.parametrize("column", ["close", "volume", "_hidden", "class", "1x"])
def test_with_benchmark_rejects_a_bad_or_clashing_column(pair, column):
    with pytest.raises(DataError, match="column"):
        with_benchmark(*pair, column=column)


def test_with_benchmark_rejects_an_existing_benchmark_column(joined, pair):
    with pytest.raises(DataError, match=r"already has a column 'benchmark'.*column="):
        with_benchmark(joined, pair[1])
    other = with_benchmark(joined, pair[1], column="spy")
    assert list(other.columns[-2:]) == [BENCHMARK, "spy"]


# ---------------------------------------------------------------- values
def test_features_are_registered_and_read_close_and_benchmark():
    found = registered_features()
    for name in FACTOR_FEATURES:
        assert found[name].columns == ("close", BENCHMARK)
        assert found[name].import_path.startswith("metabt.features.factors:")


def test_beta_matches_statsmodels_rolling_ols(joined):
    c, b, dates = _windows(joined)
    got = beta(c, b, window=WINDOW)
    r = np.log(joined["close"]).diff().iloc[1:]
    m = np.log(joined[BENCHMARK]).diff().iloc[1:].rename("m")
    exog = pd.concat([pd.Series(1.0, index=m.index, name="const"), m], axis=1)
    ols = RollingOLS(r, exog, window=WINDOW).fit().params["m"]
    want = ols.loc[dates].to_numpy()
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_residual_features_match_an_independent_pandas_computation(joined):
    c, b, dates = _windows(joined)
    r = np.log(joined["close"]).diff()
    m = np.log(joined[BENCHMARK]).diff()
    exog = pd.concat([pd.Series(1.0, index=m.index, name="const"), m.rename("m")], axis=1)
    slopes = RollingOLS(r.iloc[1:], exog.iloc[1:], window=WINDOW).fit().params["m"]
    want_ret, want_mom, want_bench = [], [], []
    for t in dates:
        rw, mw = r.loc[:t].iloc[-WINDOW:], m.loc[:t].iloc[-WINDOW:]
        e = rw - slopes.loc[t] * mw
        sd = e.std(ddof=1)
        want_ret.append(e.iloc[-1] / sd)
        want_mom.append(e.iloc[-MOM:].sum() / (sd * math.sqrt(MOM)))
        want_bench.append(mw.iloc[-1] / mw.std(ddof=1))
    np.testing.assert_allclose(resid_ret(c, b, window=WINDOW), want_ret, rtol=0, atol=1e-9)
    np.testing.assert_allclose(resid_mom(c, b, window=WINDOW, mom=MOM), want_mom, rtol=0, atol=1e-9)
    np.testing.assert_allclose(bench_ret(c, b, window=WINDOW), want_bench, rtol=0, atol=1e-9)


def test_estimated_beta_is_near_the_true_one(joined):
    c, b, _ = _windows(joined, len(joined))  # one window: the whole history
    assert beta(c, b, window=len(joined) - 1)[0] == pytest.approx(TRUE_BETA, abs=0.03)
    spec = factor_spec()
    rolling = spec.transform(joined)[spec.lookback - 1 :, spec.names.index("beta(window=60)")]
    assert np.median(rolling) == pytest.approx(TRUE_BETA, abs=0.05)
    assert np.all(np.abs(rolling - TRUE_BETA) < 0.5)
    # residuals are the noise: their z-scores are about standard normal
    resid = spec.transform(joined)[spec.lookback - 1 :, spec.names.index("resid_ret(window=60)")]
    assert abs(resid.mean()) < 0.2 and 0.8 < resid.std() < 1.2


def test_an_independent_asset_has_beta_near_zero(pair):
    bench = pair[1]
    other = with_benchmark(gbm_frame(500, 11, vol=0.01), bench)
    c, b, _ = _windows(other, len(other))
    assert abs(beta(c, b, window=len(other) - 1)[0]) < 0.15


def test_flat_benchmark_gives_beta_zero_and_the_assets_own_z_score(pair):
    asset = pair[0]
    flat = with_benchmark(asset, pd.Series(100.0, index=asset.index))
    c, b, _ = _windows(flat)
    r = np.diff(np.log(c), axis=-1)
    np.testing.assert_array_equal(beta(c, b), 0.0)
    np.testing.assert_array_equal(bench_ret(c, b), 0.0)
    np.testing.assert_allclose(resid_ret(c, b), r[:, -1] / r.std(axis=-1, ddof=1), atol=1e-12)
    check_causal(factor_spec(), flat, points=2, known_at_bar=["benchmark"])


def test_flat_asset_and_benchmark_give_zeros():
    ones = np.full((3, WINDOW + 1), 7.0)
    for f in (bench_ret, beta, resid_ret, resid_mom):
        np.testing.assert_array_equal(f(ones, ones), 0.0)


def test_beta_is_clipped():
    rng = np.random.default_rng(0)
    m = rng.normal(0.0, 1e-4, WINDOW)  # tiny benchmark moves, large asset moves
    b = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(m)]))
    c = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(500.0 * m)]))
    assert beta(c[None], b[None])[0] == 5.0
    assert beta(c[None], 1.0 / b[None])[0] == -5.0


def test_windows_holding_a_missing_benchmark_give_zeros(pair):
    asset, bench = pair
    late = with_benchmark(asset, bench.iloc[100:])
    spec = factor_spec()
    X = spec.transform(late)
    cols = [spec.names.index(n) for n in spec.names[-4:]]
    first = 100 + WINDOW  # first bar whose window holds WINDOW + 1 benchmark closes
    assert np.isfinite(X[spec.lookback - 1 :]).all()
    np.testing.assert_array_equal(X[spec.lookback - 1 : first][:, cols], 0.0)
    assert (X[first:, cols[1]] != 0).all()  # beta from then on
    check_causal(spec, late, points=3, known_at_bar=["benchmark"])


# ---------------------------------------------------------------- causality
def test_check_causal_passes(joined):
    check_causal(factor_spec(), joined, known_at_bar=["benchmark"])


def test_check_causal_passes_on_different_calendars(pair):
    asset, bench = pair
    holes = bench.drop(index=bench.index[[70, 71, 150, 300, 301, 302]])
    extra = pd.concat(
        [holes, holes.iloc[[200]].set_axis([holes.index[200] + pd.Timedelta(hours=12)])]
    ).sort_index()  # a benchmark bar between two asset bars
    spec = factor_spec(window=40, mom=10)
    check_causal(
        spec, with_benchmark(asset, load_ohlcv(extra)), points=4, known_at_bar=["benchmark"]
    )


def test_feature_row_of_t_ignores_benchmark_bars_after_t(pair):
    asset, bench = pair
    spec = factor_spec(FeatureSpec(), window=30, mom=5)
    X = spec.transform(with_benchmark(asset, bench))
    rng = np.random.default_rng(1)
    for t in (120, 250, 400):
        changed = bench["close"].copy()
        changed.iloc[t + 1 :] *= np.exp(rng.normal(0.0, 0.05, len(changed) - t - 1))
        X2 = spec.transform(with_benchmark(asset, changed))
        np.testing.assert_array_equal(X2[: t + 1], X[: t + 1])
        assert not np.array_equal(X2[t + 1 :], X[t + 1 :])


# ---------------------------------------------------------------- the spec
def test_factor_spec_names_columns_and_round_trip():
    spec = factor_spec(window=40, mom=10)
    assert spec.names[-4:] == [
        "bench_ret(window=40)",
        "beta(window=40)",
        "resid_ret(window=40)",
        "resid_mom(mom=10, window=40)",
    ]
    assert spec.columns == (BENCHMARK,)
    assert spec.lookback == FeatureSpec().lookback  # 61: the built-in features' warm-up
    assert factor_spec(window=100).lookback == 101
    assert factor_spec(window=np.int64(40), mom=np.int64(10)) == spec
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    base = FeatureSpec(horizon=3)
    assert factor_spec(base).horizon == 3
    one = FeatureSpec().with_features('metabt.features.factors:beta{"window": 40}')
    assert one.names[-1] == "beta(window=40)"
    assert one.custom[0] == spec.custom[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 2}, "window must be an integer >= 3"),
        ({"window": 1.5}, "window must be an integer"),
        ({"mom": 0}, "mom must be an integer from 1 to window=60"),
        ({"window": 30, "mom": 31}, "mom must be an integer from 1 to window=30"),
    ],
)
def test_factor_spec_rejects_bad_windows(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        factor_spec(**kwargs)


def test_factor_spec_refuses_a_feature_listed_twice():
    with pytest.raises(ConfigError, match="twice"):
        factor_spec(factor_spec())


def test_missing_benchmark_column_is_named(pair):
    with pytest.raises(DataError, match=r"column 'benchmark'"):
        factor_spec().transform(pair[0])


# ---------------------------------------------------------------- inside backtrader
class _Recorder(bt.Strategy):
    """Feeds each bar, with the benchmark line, to spec.online() and keeps the rows."""

    params = (("spec", None),)

    def __init__(self) -> None:
        self.online = self.p.spec.online()
        self.rows: list[np.ndarray | None] = []

    def next(self) -> None:
        d = self.data
        row, _ = self.online.update(
            d.high[0],
            d.low[0],
            d.close[0],
            d.volume[0],
            open=d.open[0],
            extra={BENCHMARK: d.benchmark[0]},
        )
        self.rows.append(row)


def test_online_rows_inside_backtrader_equal_transform(pair):
    asset, bench = pair
    gap = bench.index[[90, 200, 201]]
    frame = with_benchmark(asset, bench.iloc[20:].drop(index=gap))  # late start, holes
    spec = factor_spec(window=40, mom=10)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame, name="asset"))
    cerebro.addstrategy(_Recorder, spec=spec)
    rows = cerebro.run()[0].rows
    X = spec.transform(frame)
    assert len(rows) == len(frame)
    width = spec.lookback
    assert all(row is None for row in rows[: width - 1])
    online = np.stack(rows[width - 1 :])
    assert online.dtype == np.float32 and online.shape == X[width - 1 :].shape
    np.testing.assert_allclose(online, X[width - 1 :], rtol=1e-6, atol=1e-6)
    assert (online[:, -3] != 0).any()  # beta is live in the backtest


def test_module_all_is_sorted():
    assert factors.__all__ == sorted(factors.__all__)
