"""MetaStrategy in Cerebro: causality, online == offline features, determinism, several data."""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from metabt import MetaStrategy, QuantStatsAnalyzer, SignalSizer
from metabt.backtest import Costs, asset_results, run_backtest, signal_frames
from metabt.data import feed
from metabt.errors import ConfigError
from strategies import BuyAndHold, SmaCross

START = "2010-03-01"


class RecordingMetaStrategy(MetaStrategy):
    """MetaStrategy that records every order it submits (bar date, data, size)."""

    def __init__(self) -> None:
        super().__init__()
        self.orders_log: list[tuple] = []

    def notify_order(self, order: bt.Order) -> None:
        super().notify_order(order)
        if order.status == order.Submitted:
            self.orders_log.append(
                (self.datas[0].datetime.date(0), order.data._name, order.created.size)
            )


def _run(frames, learner, strategy=RecordingMetaStrategy, **kwargs):
    return run_backtest(
        strategy,
        frames,
        start=START,
        warmup_bars=150,
        costs=Costs(),
        strategy_kwargs={"learner": learner, "adapt_every": 5, "support": 40, **kwargs},
    )


@pytest.fixture(scope="module")
def base_run(sample_frames, small_learner):
    return _run(sample_frames, small_learner)


def test_end_to_end_run_trades_and_adapts(base_run, sample_frames):
    strat = base_run.strategy
    log = strat.adaptation_log()
    assert len(strat.orders_log) > 10
    assert set(log["data"]) == set(sample_frames)  # each data adapted on its own
    assert (log["support"] == 40).all() and (log["steps"] == 3).all()
    assert (log["loss_after"] < log["loss_before"]).mean() > 0.9
    # adaptations happen every 5 bars per data once the first support set is complete
    bars = sample_frames["AAPL"].index.get_indexer(log[log["data"] == "AAPL"]["date"])
    assert (np.diff(bars) == 5).all()
    assert base_run.returns.index[0] >= pd.Timestamp(START)
    assert math.isfinite(base_run.metrics["sharpe"])
    signal = np.array(strat.signals[0].signal.array)
    assert np.isfinite(signal[-100:]).all()


def test_orders_up_to_a_date_ignore_every_later_price(base_run, sample_frames, small_learner):
    cut = pd.Timestamp("2011-03-15")
    rng = np.random.default_rng(7)
    altered = {}
    for name, frame in sample_frames.items():
        frame = frame.copy()
        later = frame.index > cut
        # replace every later bar by other prices (a different random walk)
        walk = np.exp(np.cumsum(rng.normal(0, 0.03, later.sum())))
        for col in ("open", "high", "low", "close"):
            frame.loc[later, col] = frame.loc[later, col].to_numpy() * walk * 1.7
        frame.loc[later, "volume"] = frame.loc[later, "volume"].to_numpy()[::-1]
        altered[name] = frame
    other = _run(altered, small_learner)
    before = [o for o in base_run.strategy.orders_log if pd.Timestamp(o[0]) <= cut]
    before_other = [o for o in other.strategy.orders_log if pd.Timestamp(o[0]) <= cut]
    assert len(before) > 5
    assert before == before_other
    after = [o for o in base_run.strategy.orders_log if pd.Timestamp(o[0]) > cut]
    after_other = [o for o in other.strategy.orders_log if pd.Timestamp(o[0]) > cut]
    assert after != after_other  # the test can fail: later prices do change later orders


def test_features_in_backtest_equal_offline_features(base_run, sample_frames, small_learner):
    spec = small_learner.feature_spec
    strat = base_run.strategy
    for i, (name, frame) in enumerate(sample_frames.items()):
        online = strat.features(i)
        bars = frame.loc[pd.Timestamp(strat.datas[i].datetime.date(-len(strat.datas[i]) + 1)) :]
        offline = spec.transform(bars)
        assert online.shape == offline.shape, name
        np.testing.assert_allclose(online, offline, rtol=1e-6, atol=1e-6, equal_nan=True)
        assert np.isfinite(online[spec.lookback - 1 :]).all()


def test_support_labels_are_realised_offline_labels(sample_frames, small_learner):
    """Every support label used at bar t is the offline label of a bar s <= t - horizon."""
    seen = []

    class Spy:
        def __init__(self, learner):
            self._learner = learner

        def __getattr__(self, name):
            return getattr(self._learner, name)

        def adapt(self, x, y, steps=None):
            seen.append(np.asarray(y).copy())
            return self._learner.adapt(x, y, steps=steps)

    class SpyStrategy(MetaStrategy):
        def __init__(self):
            super().__init__()
            self.learner = Spy(self.learner)
            self.bars_at = []

        def _maybe_adapt(self, state, data, k):
            n = len(seen)
            super()._maybe_adapt(state, data, k)
            if len(seen) > n:
                self.bars_at.append((data._name, k))

    run = _run(sample_frames, small_learner, strategy=SpyStrategy)
    strat = run.strategy
    h = small_learner.horizon
    assert len(seen) > 20
    for (name, k), y in zip(strat.bars_at, seen):
        i = list(sample_frames).index(name)
        first_bar = pd.Timestamp(strat.datas[i].datetime.date(-len(strat.datas[i]) + 1))
        labels = small_learner.feature_spec.labels(sample_frames[name].loc[first_bar:])
        expected = labels[k - h - len(y) + 1 : k - h + 1]
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_incremental_sizing_vol_equals_the_sizers_definition(sample_frames, small_learner):
    """MetaStrategy's O(1) rolling vol == SignalSizer.realised_vol on the feed, every bar."""
    pairs = []

    class VolProbe(MetaStrategy):
        def next(self):
            super().next()
            for i, d in enumerate(self.datas):
                pairs.append((self.realised_vol(i), self._signal_sizer.realised_vol(d)))

    _run(sample_frames, small_learner, strategy=VolProbe)
    ours, sizer = np.array(pairs).T
    assert len(pairs) > 500 and np.isfinite(sizer).sum() > 500
    np.testing.assert_allclose(ours, sizer, rtol=1e-9, equal_nan=True)


def test_same_seed_same_orders_and_returns(base_run, sample_frames, small_learner):
    again = _run(sample_frames, small_learner)
    assert again.strategy.orders_log == base_run.strategy.orders_log
    pd.testing.assert_series_equal(again.returns, base_run.returns)


def test_gross_leverage_cap_holds(sample_frames, small_learner):
    run = _run(sample_frames, small_learner, gross_leverage=0.3)
    strat = run.strategy
    gross = sum(abs(strat.getposition(d).size) * d.close[0] for d in strat.datas)
    assert gross <= 0.3 * strat.broker.getvalue() * 1.05


def test_metastrategy_checks_its_params(sample_frames, small_learner):
    for kwargs, match in (
        ({"learner": None}, "learner"),
        ({"adapt_every": 0}, "adapt_every"),
        ({"support": -3}, "support"),
    ):
        cerebro = bt.Cerebro()
        cerebro.adddata(feed(sample_frames["AAPL"].iloc[:300], name="AAPL"))
        cerebro.addstrategy(MetaStrategy, **{"learner": small_learner, **kwargs})
        with pytest.raises(ConfigError, match=match):
            cerebro.run()


def test_plain_cerebro_usage_with_checkpoint(tmp_path, sample_frames, small_learner):
    """The DESIGN data flow: feeds, MetaStrategy from a checkpoint path, sizer, analyzer."""
    path = small_learner.save(tmp_path / "theta.pt")
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(sample_frames["IBM"].loc["2009-06-01":"2010-12-31"], name="IBM"))
    cerebro.addstrategy(MetaStrategy, learner=str(path), adapt_every=10, support=40)
    cerebro.addsizer(SignalSizer, target_vol=0.15, long_only=True)
    cerebro.addanalyzer(QuantStatsAnalyzer, _name="qs")
    strat = cerebro.run()[0]
    analysis = strat.analyzers.qs.get_analysis()
    assert len(analysis["returns"]) == len(strat.data)
    assert len(strat.adaptation_log()) > 10
    # long-only sizer: never short
    assert strat.getposition(strat.data).size >= 0


def test_runonce_and_bar_by_bar_modes_give_the_same_signals_and_orders(
    sample_frames, small_learner
):
    """backtrader's vectorised (runonce) and next-only modes drive MetaStrategy alike."""
    results = []
    for runonce in (True, False):
        cerebro = bt.Cerebro(stdstats=False, runonce=runonce)
        for name in ("AAPL", "IBM"):
            cerebro.adddata(feed(sample_frames[name].loc["2009-06-01":"2010-06-30"], name=name))
        cerebro.addstrategy(RecordingMetaStrategy, learner=small_learner, support=40)
        strat = cerebro.run()[0]
        signals = [np.array(line.signal.array[: len(strat)]) for line in strat.signals]
        results.append((signals, strat.orders_log))
    (signals_once, orders_once), (signals_next, orders_next) = results
    assert len(orders_once) > 10 and orders_once == orders_next
    for a, b in zip(signals_once, signals_next):
        assert np.isfinite(a).sum() > 100
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("strategy", [BuyAndHold, SmaCross])
def test_baselines_run_on_the_same_period(strategy, sample_frames, base_run):
    run = run_backtest(strategy, sample_frames, start=START, warmup_bars=150)
    pd.testing.assert_index_equal(run.returns.index, base_run.returns.index)
    assert run.returns.abs().sum() > 0


@pytest.mark.parametrize(
    ("algorithm", "model_type"),
    [(a, "mlp") for a in ("fomaml", "metasgd", "anil", "reptile", "erm", "scratch")]
    + [("maml", "gru"), ("anil", "gru")],
)
def test_every_algorithm_and_the_gru_run_in_metastrategy(algorithm, model_type, sample_frames):
    from metabt.features import FeatureSpec
    from metabt.meta import MetaLearner
    from metabt.models import GRU, MLP
    from metabt.tasks import TaskSampler

    spec = FeatureSpec()
    window = 4 if model_type == "gru" else 1
    model = GRU(spec.n_features, 8, window) if model_type == "gru" else MLP(spec.n_features, (8,))
    tasks = TaskSampler.from_frames(
        sample_frames, spec, support=30, query=10, end="2010-01-01", window=window
    )
    learner = MetaLearner(model, algorithm=algorithm, inner_steps=2, feature_spec=spec)
    learner.fit(tasks, 3, batch_size=4, progress=False)
    frames = {"IBM": sample_frames["IBM"].loc[:"2010-12-31"]}
    run = run_backtest(
        MetaStrategy,
        frames,
        start="2010-06-01",
        warmup_bars=120,
        strategy_kwargs={"learner": learner, "adapt_every": 10, "support": 30},
    )
    log = run.strategy.adaptation_log()
    assert len(log) >= 10 and (log["steps"] == 2).all()
    assert np.isfinite(np.array(run.strategy.signals[0].signal.array)[-50:]).all()


def test_unknown_strategy_param_names_the_closest_one(sample_frames, small_learner):
    cerebro = bt.Cerebro()
    cerebro.adddata(feed(sample_frames["AAPL"].iloc[:300], name="AAPL"))
    cerebro.addstrategy(MetaStrategy, learner=small_learner, adapt_evry=5)
    with pytest.raises(ConfigError, match="did you mean 'adapt_every'"):
        cerebro.run()


def test_model_baselines_share_data_costs_and_sizer(sample_frames, small_learner):
    from metabt.meta import MetaLearner
    from metabt.models import MLP
    from strategies import ErmAdapt, ScratchAdapt, StaticModel

    spec = small_learner.feature_spec
    scratch = MetaLearner(
        MLP(spec.n_features, (16, 16), seed=0),
        algorithm="scratch",
        inner_steps=3,
        feature_spec=spec,
    )
    static = _run(sample_frames, small_learner, strategy=StaticModel)
    adapted = _run(sample_frames, scratch, strategy=ScratchAdapt)
    holder = run_backtest(BuyAndHold, sample_frames, start=START, warmup_bars=150)
    log = static.strategy.adaptation_log()
    assert (log["steps"] == 0).all() and (log["loss_before"] == log["loss_after"]).all()
    for run in (static, adapted, holder):
        pd.testing.assert_index_equal(run.returns.index, static.returns.index)
        strat = run.strategy
        assert strat._signal_sizer.p.target_vol == static.strategy._signal_sizer.p.target_vol
        info = strat.broker.getcommissioninfo(strat.datas[0])
        assert info.p.commission == Costs().commission_bps / 1e4
    with pytest.raises(ConfigError, match="algorithm='erm'"):
        _run(sample_frames, small_learner, strategy=ErmAdapt)  # a maml learner is refused


def test_turnover_of_buy_and_hold_is_its_single_entry(sample_frames):
    run = run_backtest(BuyAndHold, sample_frames, start=START, warmup_bars=150, cash=100_000)
    traded = run.strategy.traded_value
    assert 0.97 * 100_000 < traded < 0.99 * 100_000  # 98% invested once, then held
    equity = 100_000 * (1 + run.returns).cumprod()
    expected = traded / equity.mean() * 252 / len(run.returns)
    assert math.isclose(run.metrics["turnover"], expected, rel_tol=1e-12)


class _Oracle(SmaCross):
    """Test-only strategy that looks ahead on purpose: its signal is the forward return."""

    horizon = 5
    future: ClassVar[dict] = {}

    def compute_signal(self, i, data):
        closes = self.future[data._name]
        t = pd.Timestamp(data.datetime.date(0))
        pos = closes.index.get_loc(t)
        if pos + self.horizon >= len(closes):
            return math.nan
        value = math.log(closes.iloc[pos + self.horizon] / closes.iloc[pos])
        return self.sign * value

    sign = 1.0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_signal_ic_is_one_for_a_signal_that_knows_the_future(sample_frames, sign):
    _Oracle.future = {name: f["close"] for name, f in sample_frames.items()}
    _Oracle.sign = sign
    run = run_backtest(_Oracle, sample_frames, start=START, warmup_bars=210)
    assert run.metrics["ic"] == pytest.approx(sign, abs=1e-9)
    assert run.metrics["rank_ic"] == pytest.approx(sign, abs=1e-9)


def test_walkforward_folds_are_contiguous_and_cover_the_period():
    from metabt.backtest import walkforward_folds

    folds = walkforward_folds("2008-01-01", "2013-03-01")
    assert folds[0][0] == pd.Timestamp("2008-01-01") and folds[-1][1] == pd.Timestamp("2013-03-01")
    for (_, end), (nxt, _) in itertools.pairwise(folds):
        assert nxt == end + pd.Timedelta(days=1)
    assert len(walkforward_folds("2008-01-01", "2013-03-01", years=2)) == 3
    with pytest.raises(ConfigError, match="swap"):
        walkforward_folds("2013-01-01", "2008-01-01")


def test_realised_query_loss_matches_offline_labels(base_run, sample_frames, small_learner):
    strat = base_run.strategy
    log = strat.adaptation_log()
    data = strat.datas[0]
    n = len(data)
    first_bar = pd.Timestamp(data.datetime.date(-n + 1))
    frame = sample_frames[data._name].loc[first_bar:]
    labels = small_learner.feature_spec.labels(frame)
    signal = np.asarray(strat.signals[0].signal.array[:n])
    own = log[log["data"] == data._name]
    bars = frame.index.get_indexer(own["date"])
    assert own["query_count"].iloc[:-2].gt(0).all()
    for j, (start_bar, end_bar) in enumerate(itertools.pairwise(bars[:11])):
        rows = np.arange(start_bar, end_bar)
        rows = rows[np.isfinite(labels[rows]) & np.isfinite(signal[rows])]
        expected = np.mean((signal[rows] - labels[rows]) ** 2)
        assert own["query_loss"].iloc[j] == pytest.approx(expected, rel=1e-5)
        assert own["query_count"].iloc[j] == len(rows)


def test_drift_trigger_adapts_when_the_error_jumps(sample_frames, small_learner, base_run):
    eager = _run(sample_frames, small_learner, adapt_every=50, drift_threshold=0.01)
    never = _run(sample_frames, small_learner, drift_threshold=1e9)
    schedule = base_run.strategy.adaptation_log()
    assert (schedule["trigger"] == "schedule").all()
    log = eager.strategy.adaptation_log()
    assert (log["trigger"] == "drift").sum() > 10  # a tiny threshold fires often
    assert (never.strategy.adaptation_log()["trigger"] == "schedule").all()
    assert never.strategy.orders_log == base_run.strategy.orders_log
    with pytest.raises(ConfigError, match="drift_threshold"):
        _run(sample_frames, small_learner, drift_threshold=-1.0)


def test_drift_trigger_works_with_the_default_schedule(sample_frames, small_learner):
    """adapt_every (5) <= horizon (5): no model's own predictions are scored before the next
    scheduled adaptation, so the observer must judge recent predictions of any model."""
    run = _run(sample_frames, small_learner, drift_threshold=0.01, drift_window=4)
    strat = run.strategy
    log = strat.adaptation_log()
    assert strat.p.adapt_every <= strat.horizon
    assert (log["trigger"] == "drift").sum() > 10
    # after a drift adaptation at bar k, the next one waits for 4 predictions made from
    # bar k on to be scored: the earliest is bar k + horizon + 4 - 1
    for name, frame in sample_frames.items():
        drift = log[(log["data"] == name) & (log["trigger"] == "drift")]
        bars = frame.index.get_indexer(drift["date"])
        assert (np.diff(bars) >= strat.horizon + 4 - 1).all(), name


def test_diagnostics_page_embeds_a_figure(base_run, sample_frames, tmp_path):
    import base64
    import re

    page = base_run.diagnostics(tmp_path / "diag.html")
    text = page.read_text()
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", text).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "Query MSE" in text and not list(tmp_path.glob(".*tmp"))
    holder = run_backtest(BuyAndHold, sample_frames, start=START, warmup_bars=150)
    with pytest.raises(ConfigError, match="does not adapt"):
        holder.diagnostics(tmp_path / "no.html")


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
    assert table.loc["A", "turnover"] == pytest.approx(1500.0 / equity.mean() / years)
    assert table.loc["portfolio", "bars"] == 4 and np.isnan(table.loc["A", "ic"])


def test_contributions_add_up_to_buy_and_hold_pnl(sample_frames):
    """Without costs, the per-asset contributions add up to the portfolio's whole P&L."""
    run = run_backtest(BuyAndHold, sample_frames, start=START, warmup_bars=5, costs=Costs(0.0, 0.0))
    equity = 100_000.0 * (1 + run.returns).cumprod()
    pnl = run.assets.loc[list(sample_frames), "contribution"].sum() * 100_000.0
    assert pnl == pytest.approx(equity.iloc[-1] - 100_000.0, rel=1e-9)
    assert run.metrics["hit_rate"] == run.assets.loc["portfolio", "hit_rate"]


def test_model_asset_results_match_the_adaptation_log_and_signals(base_run):
    strat, assets = base_run.strategy, base_run.assets
    log = strat.adaptation_log()
    start = base_run.returns.index[0]
    pairs = signal_frames(strat, strat.horizon, start)
    for name, pair in pairs.items():
        assert assets.loc[name, "adaptations"] == (log["data"] == name).sum()
        assert assets.loc[name, "ic"] == pytest.approx(pair["signal"].corr(pair["forward"]))
    assert assets.loc["portfolio", "adaptations"] == len(log)
    assert assets.loc["portfolio", "ic"] == pytest.approx(base_run.metrics["ic"])
    assert 0 < assets.loc["portfolio", "exposure"] <= 0.95 * 1.05
    turnover = assets.loc[list(pairs), "turnover"].sum()
    assert turnover == pytest.approx(base_run.metrics["turnover"])
