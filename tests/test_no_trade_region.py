"""The cost-derived no-trade region as a run setting (``no_trade_bps``): MetaStrategy's
forecast is calibrated to return units on the validation years before the test, never
after; ``metabt backtest`` and ``metabt sweep`` apply it, and a sweep can search it."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from metabt.config.defaults import DEMO
from metabt.errors import ConfigError
from metabt.experiments.settings import RunSettings
from metabt.experiments.smoothing import no_trade_kwargs, validation_window
from metabt.experiments.space import apply_params, parse_space
from metabt.strategies.meta import MetaStrategy

FIRST = pd.Timestamp("2011-01-03")


def _settings(frames, no_trade_bps: float) -> RunSettings:
    cfg = DEMO.with_(no_trade_bps=no_trade_bps, support=40, val_years=1.0)
    return RunSettings(frames=frames, train_frames=frames, start=FIRST, cfg=cfg)


def test_off_leaves_the_keyword_arguments_as_they_are(sample_frames, small_learner):
    kwargs = {"learner": small_learner, "support": 40}
    assert no_trade_kwargs(_settings(sample_frames, 0.0), MetaStrategy, "M", kwargs, FIRST) == (
        kwargs,
        None,
    )


def test_the_forecast_is_calibrated_on_the_validation_years_before_the_test(
    sample_frames, small_learner
):
    kwargs = {"learner": small_learner, "support": 40, "smooth": 5}
    settings = _settings(sample_frames, 14.0)
    out, line = no_trade_kwargs(settings, MetaStrategy, "MetaStrategy", kwargs, FIRST)
    start, end = validation_window(FIRST, 1.0)
    assert end < FIRST
    if "forecast_scale" in out:  # a positive slope: the region is on, at the given cost
        assert out["no_trade_bps"] == 14.0 and out["forecast_scale"] > 0
        assert f"calibrated on {start.date()} to {end.date()}" in line
    else:  # said why it is off
        assert "no no-trade region" in line
    # causality: prices on and after the first test day do not move the calibration
    shocked = {n: f.copy() for n, f in sample_frames.items()}
    for f in shocked.values():
        f.loc[f.index >= FIRST, ["open", "high", "low", "close"]] *= 1.7
    again, _ = no_trade_kwargs(
        _settings(shocked, 14.0), MetaStrategy, "MetaStrategy", kwargs, FIRST
    )
    assert again.get("forecast_scale") == out.get("forecast_scale")
    assert math.isfinite(out.get("forecast_scale", 1.0))


def test_a_strategy_without_the_region_is_refused(sample_frames):
    import backtrader as bt

    with pytest.raises(ConfigError, match="Plain has no no-trade region"):
        no_trade_kwargs(_settings(sample_frames, 7.0), bt.Strategy, "Plain", {}, FIRST)


def test_a_sweep_can_search_it():
    dims = parse_space({"no_trade_bps": [0.0, 7.0, 14.0]}, "grid")
    assert [d.name for d in dims] == ["no_trade_bps"]
    assert apply_params(DEMO, {"no_trade_bps": 7.0}).no_trade_bps == 7.0
    with pytest.raises(ConfigError, match="no_trade_bps"):
        DEMO.with_(no_trade_bps=-1.0)


@pytest.mark.slow
def test_backtest_says_where_the_region_was_calibrated(tmp_path, capsys):
    from metabt.cli.main import main
    from metabt.data.ohlcv import sample_files

    files = {p.stem: str(p) for p in sample_files()}
    code = main(["backtest", "--data", files["AAPL"], "--start", "2011-01-01", "--end",
                 "2011-12-31", "--steps", "5", "--quiet", "--no-trade-bps", "7",
                 "--report", str(tmp_path / "r.html")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "MetaStrategy: no-trade region at 7 bps a fill" in out or (
        "MetaStrategy: no no-trade region" in out
    )
