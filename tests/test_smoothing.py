"""metabt.experiments.smoothing: each strategy's smoothing, chosen on the validation years
by one rule, never from the test period."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metabt.config.defaults import DEMO
from metabt.errors import ConfigError
from metabt.experiments.settings import RunSettings
from metabt.experiments.smoothing import choose_smoothing, pick, validation_window
from metabt.strategies.baselines import TimeSeriesMomentum


def test_the_rule_takes_the_best_sharpe_under_the_cap_else_the_lowest_turnover():
    rows = {1: (0.9, 150.0), 5: (0.5, 35.0), 10: (0.7, 17.0), 20: (0.6, 9.0)}
    assert pick(rows, 40.0)[0] == 10  # 1 has the best Sharpe but trades too much
    assert pick(rows, 200.0)[0] == 1
    assert pick(rows, 5.0) == (20, "none at <= 5x: lowest turnover")
    assert pick({1: (math.nan, 1.0), 5: (0.1, 2.0)}, 40.0)[0] == 5  # NaN never wins
    assert pick({1: (math.nan, 0.0), 5: (0.1, 90.0)}, 40.0)[0] == 5  # not by turnover either
    with pytest.raises(ConfigError, match="smooth_grid"):
        pick({}, 40.0)


def test_the_validation_window_is_the_training_splits_and_ends_before_the_test():
    start, end = validation_window(pd.Timestamp("2008-01-01"), 2.0)
    assert start == pd.Timestamp("2006-01-01") and end == pd.Timestamp("2007-12-31")


def _settings(frames, **cfg):
    start = pd.Timestamp("2010-01-01")
    return RunSettings(frames, frames, start, cfg=DEMO.with_(val_years=1.0, **cfg)), start


def test_a_choice_is_backtested_on_validation_only(sample_frames):
    """Every candidate runs on the year before the test; prices after it change nothing."""
    settings, start = _settings(sample_frames, smooth_grid=(1, 5, 20))
    kwargs = {"lookback": 60, "smooth": 1}
    choice = choose_smoothing(settings, "TSMOM", TimeSeriesMomentum, kwargs, start)
    assert set(choice.rows) == {1, 5, 20}
    assert choice.window == (pd.Timestamp("2009-01-01"), pd.Timestamp("2009-12-31"))
    assert choice.smooth == pick(choice.rows, 40.0)[0]
    turnovers = [choice.rows[n][1] for n in (1, 5, 20)]
    assert turnovers[0] > turnovers[2]  # smoothing trades less
    rng = np.random.default_rng(0)
    later = {}
    for name, frame in sample_frames.items():
        f = frame.copy()
        late = f.index >= start
        f.loc[late, ["open", "high", "low", "close"]] *= rng.uniform(0.7, 1.3, (late.sum(), 1))
        later[name] = f
    again = choose_smoothing(
        _settings(later, smooth_grid=(1, 5, 20))[0], "TSMOM", TimeSeriesMomentum, kwargs, start
    )
    assert again.rows == choice.rows and again.smooth == choice.smooth
    assert "TSMOM: smooth" in choice.line("TSMOM") and "at <= 40x" in choice.reason


def test_an_empty_or_single_grid_runs_nothing_and_too_little_history_keeps_the_default(
    sample_frames,
):
    settings, start = _settings(sample_frames, smooth_grid=())
    kwargs = {"lookback": 60, "smooth": 1}
    fixed = choose_smoothing(settings, "T", TimeSeriesMomentum, kwargs, start)
    assert fixed.smooth == DEMO.smooth and not fixed.rows
    one = choose_smoothing(
        _settings(sample_frames, smooth_grid=(7,))[0], "T", TimeSeriesMomentum, kwargs, start
    )
    assert one.smooth == 7 and not one.rows
    early = pd.Timestamp("2008-03-01")  # the frames start in 2008: no validation year
    short = choose_smoothing(
        _settings(sample_frames, smooth_grid=(1, 5))[0], "T", TimeSeriesMomentum, kwargs, early
    )
    assert short.smooth == DEMO.smooth and "kept the run's smooth" in short.reason


def test_forecast_scale_is_the_slope_of_next_open_returns_on_the_traded_signal():
    from metabt.experiments.smoothing import forecast_scale

    idx = pd.bdate_range("2009-01-01", periods=6)
    signal = pd.Series([1.0, -1.0, 2.0, 0.5, -0.5, 1.0], index=idx)
    simple = 0.01 * signal  # the return is exactly 1% per unit of signal
    frame = pd.DataFrame({"signal": signal, "tradable": np.log1p(simple)})
    assert forecast_scale({"A": frame}, 1) == pytest.approx(0.01, rel=1e-12)
    traded = signal.rolling(2, min_periods=1).mean()
    frame2 = pd.DataFrame({"signal": signal, "tradable": np.log1p(0.02 * traded)})
    assert forecast_scale({"A": frame2}, 2) == pytest.approx(0.02, rel=1e-12)
    assert math.isnan(forecast_scale({}, 1))


def test_the_band_is_kept_only_when_the_same_rule_prefers_it():
    from metabt.experiments.smoothing import _better

    assert _better((0.8, 10.0), (0.5, 30.0), 40.0)
    assert not _better((0.4, 10.0), (0.5, 30.0), 40.0)
    assert _better((0.1, 30.0), (0.9, 90.0), 40.0)  # the base broke the cap
    assert _better((0.1, 60.0), (0.9, 90.0), 40.0) and not _better((0.1, 95.0), (0.9, 90.0), 40.0)
    assert not _better((math.nan, 1.0), (0.1, 10.0), 40.0)


def test_a_forecasting_strategy_tries_the_no_trade_band_at_its_chosen_smooth(
    sample_frames, small_learner
):
    from metabt.strategies.meta import MetaStrategy

    settings, start = _settings(sample_frames, smooth_grid=(1, 10))
    kwargs = {"learner": small_learner, "adapt_every": 20, "support": 40, "smooth": 1}
    choice = choose_smoothing(settings, "Meta", MetaStrategy, kwargs, start)
    assert set(choice.rows) == {1, 10} and choice.band
    if "kept" in choice.band and "not kept" not in choice.band:
        assert choice.no_trade_bps == settings.costs.per_fill_bps and choice.forecast_scale > 0
        assert choice.kwargs["no_trade_bps"] == choice.no_trade_bps
    else:
        assert choice.no_trade_bps == 0 and "no_trade_bps" not in choice.kwargs


def test_the_demo_defaults_are_the_committed_validation_choice():
    """DEMO's objective, smooth and rebalance_band are what scripts/choose_smoothing.py chose
    in its committed run (benchmarks/results/choose_smoothing_run.log), not set by hand."""
    import re
    from pathlib import Path

    from metabt.config.defaults import DEMO

    log = Path(__file__).resolve().parents[1] / "benchmarks/results/choose_smoothing_run.log"
    chosen = [line for line in log.read_text().splitlines() if line.startswith("chosen (")]
    assert len(chosen) == 1
    found = re.search(r"objective (\w+), smooth (\d+), rebalance_band ([\d.]+)", chosen[0])
    assert found is not None, chosen[0]
    objective, smooth, band = found.groups()
    assert (DEMO.objective, DEMO.smooth) == (objective, int(smooth))
    assert DEMO.sizer["rebalance_band"] == float(band)
