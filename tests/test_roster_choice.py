"""Baselines that fit the data: the controls' windows follow the bar frequency, and a
comparison runs only the baselines asked for (``RunConfig.baselines``, ``--baselines``),
training only the parts they need and checking only their history."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

import metabt.experiments.scheduler as scheduler
from metabt.config.defaults import DEMO, RunConfig
from metabt.data import load_ohlcv
from metabt.errors import ConfigError, DataError
from metabt.experiments.compare import compare
from metabt.experiments.roster import (
    ALWAYS_RUN,
    ROSTER,
    ROSTER_PARTS,
    needed_parts,
    roster_entries,
)
from metabt.experiments.settings import RunSettings
from metabt.strategies.baselines import SmaCross, control_windows
from tests.synthetic import gbm_frame


@pytest.mark.parametrize(
    ("bars_per_year", "expected"),
    [
        (252, (50, 200, 252)),  # daily: the classes' defaults
        (52, (10, 41, 52)),  # weekly
        (12, (2, 10, 12)),  # monthly
        (1, (2, 3, 2)),  # yearly: the floors (fast >= 2, slow > fast)
        (252 * 6.5, (325, 1300, 1638)),  # hourly equity bars
    ],
)
def test_the_control_windows_keep_their_span_in_time(bars_per_year, expected):
    w = control_windows(bars_per_year)
    assert (w["sma_fast"], w["sma_slow"], w["momentum_lookback"]) == expected
    assert 2 <= w["sma_fast"] < w["sma_slow"]


@pytest.mark.parametrize("bad", [0, -12, float("nan"), float("inf"), "252"])
def test_the_control_windows_refuse_a_bad_frequency(bad):
    with pytest.raises(ConfigError, match="bars_per_year"):
        control_windows(bad)


def test_the_daily_windows_are_the_classes_defaults():
    params = dict(SmaCross.params._getitems())
    w = control_windows(252)
    assert (params["fast"], params["slow"]) == (w["sma_fast"], w["sma_slow"])


def test_a_roster_keeps_the_baselines_asked_for_beside_the_subject_and_the_benchmark():
    cfg = DEMO.with_(baselines=("SmaCross", "RollingRidge"))
    names = [e.name for e in roster_entries(cfg)]
    assert names == ["MetaStrategy", "RollingRidge", "BuyAndHold", "SmaCross"]  # table order
    assert set(ALWAYS_RUN) <= set(names)
    assert needed_parts(roster_entries(cfg)) == ("meta", "linear")
    assert needed_parts(roster_entries(DEMO)) == tuple(ROSTER_PARTS)
    assert [e.name for e in roster_entries(DEMO)] == [
        e.name for e in ROSTER if e.enabled(DEMO)
    ]  # None: the whole roster


def test_an_unknown_baseline_is_refused_with_a_hint_and_the_names():
    with pytest.raises(ConfigError, match=r"'SmaCros' not on the roster \('SmaCros': did you "
                       r"mean 'SmaCross'\?\); the names are MetaStrategy, "):  # fmt: skip
        roster_entries(DEMO.with_(baselines=("SmaCros",)))


@pytest.mark.parametrize("bad", ["SmaCross", ("SmaCross", 3)])
def test_baselines_must_be_a_list_of_names(bad):
    with pytest.raises(ConfigError, match="`baselines` must be a list of roster names"):
        RunConfig(baselines=bad)


def _monthly(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` month-end bars of a random walk (validated)."""
    frame = gbm_frame(n, seed=seed)
    frame.index = pd.date_range("1990-01-31", periods=n, freq="ME")
    return load_ohlcv(frame)


def test_a_monthly_history_is_not_refused_for_a_200_bar_sma():
    frames = {"A": _monthly(140)}
    cfg = DEMO.with_(support=24, query=6, spec=dataclasses.replace(DEMO.spec, horizon=1))
    settings = RunSettings(
        frames=frames, train_frames=frames, start=frames["A"].index[100], cfg=cfg
    )
    assert settings.control_windows() == {"sma_fast": 2, "sma_slow": 10, "momentum_lookback": 12}
    settings.check_history(roster=False)  # SmaCross needs 10 monthly bars, not 200
    settings.check_history(roster=["RollingRidge"])
    # RecursiveLeastSquares' 200-bar support does not fit 140 months: said, and droppable
    with pytest.raises(DataError, match="RecursiveLeastSquares' 200-bar support"):
        settings.check_history(roster=True)


def test_the_roster_gives_smacross_the_run_s_windows():
    entry = next(e for e in ROSTER if e.name == "SmaCross")
    for bars, (fast, slow) in ((12, (2, 10)), (252, (50, 200))):
        name, cls, kwargs = scheduler._roster_entry(entry, {}, DEMO, bars)
        assert (name, cls, kwargs["fast"], kwargs["slow"]) == ("SmaCross", SmaCross, fast, slow)
    momentum = next(e for e in ROSTER if e.name == "TimeSeriesMomentum")
    assert scheduler._roster_entry(momentum, {}, DEMO, 12)[2]["lookback"] == 12


@pytest.mark.slow
def test_a_compare_with_baselines_trains_and_runs_only_what_they_need():
    frames = {f"S{i}": load_ohlcv(gbm_frame(900, seed=i)) for i in range(2)}
    start = frames["S0"].index[700]
    cfg = DEMO.with_(
        meta_steps=3, batch_size=4, val_years=0.5, hidden=(8,), inner_steps=1,
        baselines=("SmaCross",), smooth_grid=(),
    )  # fmt: skip
    settings = RunSettings(frames=frames, train_frames=frames, start=start, cfg=cfg)
    lines: list[str] = []
    comparison = compare(settings, progress=False, log=lines.append)
    assert list(comparison.table.index) == ["MetaStrategy", "BuyAndHold", "SmaCross"]
    text = "\n".join(lines)
    assert re.search(r"meta-trained maml", text)
    assert not re.search(r"trained erm|LightGBM|RollingRidge alpha", text), text
    sma = next(r for r in comparison.results if r.name == "SmaCross")
    assert np.isfinite(sma.metrics["sharpe"])


@pytest.mark.parametrize(
    ("val_years", "history_years", "expected"),
    [(None, 12.0, 2.0), (None, 6.0, 2.0), (None, 3.0, 1.0), (None, 0.75, 0.25), (0.5, 0.75, 0.5)],
)
def test_the_hold_out_is_two_years_or_a_third_of_a_shorter_history(
    val_years, history_years, expected
):
    assert RunConfig(val_years=val_years).hold_out_years(history_years) == pytest.approx(expected)


def test_a_few_months_of_hourly_bars_train_with_the_default_hold_out():
    """Nine months of hourly bars: the 2-year default left no training task (an error that
    asked for val_years); a third of the history is held out instead."""
    from metabt.experiments.parts import train_learner, validation_split

    frame = gbm_frame(1400, seed=3)
    frame.index = pd.bdate_range("2020-01-01", periods=1400 // 7 + 1).repeat(7)[
        :1400
    ] + pd.to_timedelta(np.tile(np.arange(9, 16), 1400 // 7 + 1)[:1400], unit="h")
    frames = {"EURUSD": load_ohlcv(frame)}
    end = frames["EURUSD"].index[-1].normalize()
    cfg = DEMO.with_(meta_steps=2, batch_size=4, hidden=(8,), support=60, query=20)
    split = validation_split(frames, cfg, end)
    span = (end - frames["EURUSD"].index[0]).days
    assert (end - split).days == pytest.approx(span / 3, abs=1)
    trained = train_learner(frames, cfg, end=end, progress=False)
    assert trained.learner.train_config["val_years"] == pytest.approx(span / 3 / 365.25, abs=0.01)
    with pytest.raises(ConfigError, match="leaves no training task"):
        train_learner(frames, cfg.with_(val_years=2.0), end=end, progress=False)
