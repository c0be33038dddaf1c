"""The strategy state API (metabt.strategies.state) and live feeds (metabt.data.live)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from metabt.costs import Costs
from metabt.data.live import live_feed
from metabt.errors import ConfigError, DataError
from metabt.experiments.backtest import build_cerebro, collect_result, run_backtest, warmup_start
from metabt.strategies.meta import MetaStrategy
from metabt.strategies.state import (
    STATE_FORMAT,
    StrategyState,
    capture,
    differences,
    load_state,
    save_state,
)

START = pd.Timestamp("2010-06-01")


def _live_run(frames, learner, *, stop_after=None, cls=MetaStrategy):
    """MetaStrategy on live feeds of ``frames`` (all bars at once), like the backtest."""
    first = warmup_start(frames, START, 120)
    rows = {
        n: list(zip(f.loc[first:].index, f.loc[first:].itertuples(index=False)))
        for n, f in frames.items()
    }
    pos = dict.fromkeys(frames, 0)

    def source(name):
        def next_bar():
            if pos[name] >= len(rows[name]) or (stop_after and pos[name] >= stop_after):
                return False
            pos[name] += 1
            when, values = rows[name][pos[name] - 1]
            return when, tuple(values)

        return next_bar

    feeds = [live_feed(source(n), name=n, columns=list(f.columns)) for n, f in frames.items()]
    cerebro = build_cerebro(
        cls,
        feeds,
        start=START,
        cash=100_000.0,
        costs=Costs(),
        strategy_kwargs={"learner": learner, "support": 40, "smooth": 3},
    )
    return cerebro.run()[0]


@pytest.fixture(scope="module")
def runs(sample_frames, small_learner):
    frames = {n: f.loc[:"2011-03-31"] for n, f in sample_frames.items()}
    backtest = run_backtest(
        MetaStrategy,
        frames,
        start=START,
        warmup_bars=120,
        strategy_kwargs={"learner": small_learner, "support": 40, "smooth": 3},
    )
    live = _live_run(frames, small_learner)
    return frames, backtest, live


def test_a_live_run_equals_the_backtest_of_the_same_bars(runs):
    frames, backtest, live = runs
    assert all(d.islive() for d in live.datas)
    result = collect_result(live, frames, start=START, end=None, cash=100_000.0, costs=Costs())
    assert result.returns.equals(backtest.returns)
    assert result.metrics["turnover_two_way"] == backtest.metrics["turnover_two_way"] > 0
    assert differences(capture(backtest.strategy), capture(live)) == []


def test_a_cross_sectional_book_runs_live_as_in_the_backtest(runs, small_learner):
    from metabt.strategies.portfolio import CrossSectionalStrategy

    frames = runs[0]
    backtest = run_backtest(
        CrossSectionalStrategy,
        frames,
        start=START,
        warmup_bars=120,
        strategy_kwargs={"learner": small_learner, "support": 40, "smooth": 3},
    )
    live = _live_run(frames, small_learner, cls=CrossSectionalStrategy)
    result = collect_result(live, frames, start=START, end=None, cash=100_000.0, costs=Costs())
    assert result.returns.equals(backtest.returns)
    state = capture(live)
    assert state.meta["book"]["ticks"] > 0 and state.meta["book"]["targets"]
    assert differences(capture(backtest.strategy), state) == []


def test_capture_holds_the_broker_signal_path_and_adapted_parameters(runs):
    _, backtest, _ = runs
    state = capture(backtest.strategy)
    meta = state.meta
    assert meta["format"] == STATE_FORMAT and meta["strategy"] == "MetaStrategy"
    assert meta["datas"] == ["AAPL", "IBM"] and meta["bar"].startswith("2011-03-31")
    held = {n: p["size"] for n, p in meta["positions"].items()}
    strat = backtest.strategy
    assert held == {d._name: float(strat.getposition(d).size) for d in strat.datas}
    assert meta["cash"] == pytest.approx(strat.broker.getcash())
    assert all(1 <= len(window) <= 3 for window in meta["smoothing"])
    assert meta["adaptations"] == len(strat.adaptations) > 0
    phi = [k for k in state.arrays if k.startswith("phi/AAPL/")]
    assert phi and all(state.arrays[k].dtype == np.float64 for k in phi)


def test_save_and_load_round_trip_and_differences_name_what_changed(runs, tmp_path):
    _, backtest, _ = runs
    state = capture(backtest.strategy)
    path = save_state(state, tmp_path / "state.npz")
    loaded = load_state(path)
    assert loaded.meta == json.loads(json.dumps(state.meta))
    assert differences(state, loaded) == []
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed
    changed = StrategyState({**loaded.meta, "cash": loaded.meta["cash"] + 1}, loaded.arrays)
    key = next(k for k in loaded.arrays if k.startswith("phi/"))
    arrays = {**loaded.arrays, key: loaded.arrays[key] + 1e-12}
    diff = differences(loaded, StrategyState(changed.meta, arrays))
    assert any(line.startswith("cash:") for line in diff)
    assert f"{key}: the arrays differ" in diff


def test_state_saver_keeps_the_last_bar_s_state(sample_frames, small_learner, tmp_path):
    from metabt.data.feeds import feed
    from metabt.strategies.state import StateSaver

    frames = {n: f.loc["2010-01-01":"2010-09-30"] for n, f in sample_frames.items()}

    def run(**saver):
        cerebro = build_cerebro(
            MetaStrategy,
            [feed(f, name=n) for n, f in frames.items()],
            start=START,
            cash=100_000.0,
            costs=Costs(),
            strategy_kwargs={"learner": small_learner, "support": 40},
        )
        cerebro.addanalyzer(StateSaver, **saver)
        return cerebro.run()[0]

    strategy = run(path=tmp_path / "s.npz", every=2)
    saved = load_state(tmp_path / "s.npz")
    bars = len(strategy)
    assert saved.meta["bars"][0] == bars - bars % 2
    if bars % 2 == 0:
        assert differences(saved, capture(strategy)) == []
    with pytest.raises(ConfigError, match="existing folder"):
        run(path=tmp_path / "missing" / "s.npz")


def test_load_state_reads_only_numbers_and_text(tmp_path):
    # an object array needs pickle: refused, never unpickled
    bad = tmp_path / "pickled.npz"
    np.savez(bad, __meta__=np.array(json.dumps({"format": STATE_FORMAT})), x=np.array([{}]))
    with pytest.raises(ConfigError, match="not a metabt state file"):
        load_state(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ConfigError, match="not written by metabt"):
        load_state(other)
    newer = tmp_path / "newer.npz"
    np.savez(newer, __meta__=np.array(json.dumps({"format": STATE_FORMAT + 1})))
    with pytest.raises(ConfigError, match="format 2"):
        load_state(newer)
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    with pytest.raises(ConfigError, match="not a metabt state file"):
        load_state(text)
    with pytest.raises(ConfigError, match="does not exist"):
        load_state(tmp_path / "missing.npz")


def test_load_state_bounds_what_it_inflates(tmp_path, monkeypatch):
    from metabt.strategies import state as state_module

    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", b"\0" * 50_000)
    monkeypatch.setattr(state_module, "MAX_STATE_BYTES", 10_000)
    with pytest.raises(ConfigError, match="inflates to 50,000 bytes"):
        load_state(path)


def test_live_feed_checks_its_columns_and_timeframe():
    with pytest.raises(DataError, match="must start with open, high, low, close, volume"):
        live_feed(lambda: False, name="x", columns=["close"])
    with pytest.raises(DataError, match="not a backtrader timeframe"):
        live_feed(
            lambda: False,
            name="x",
            columns=["open", "high", "low", "close", "volume"],
            timeframe="Hours",
        )
