"""MetaStrategy in Cerebro: causality, online == offline features, determinism, several data."""

from __future__ import annotations

import itertools
import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from metabt import MetaStrategy, QuantStatsAnalyzer, SignalSizer
from metabt.analyzers import signal_frames
from metabt.data.feeds import feed
from metabt.errors import ConfigError
from metabt.experiments.backtest import Costs, run_backtest
from metabt.strategies.baselines import BuyAndHold, SmaCross

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

        def adapt_batch(self, xs, ys, steps=None):  # several data due on one bar
            seen.extend(np.asarray(y).copy() for y in ys)
            return self._learner.adapt_batch(xs, ys, steps=steps)

    class SpyStrategy(MetaStrategy):
        def __init__(self):
            super().__init__()
            self.learner = Spy(self.learner)

    run = _run(sample_frames, small_learner, strategy=SpyStrategy)
    strat = run.strategy
    h = small_learner.horizon
    assert len(seen) > 20
    # the bar k of each adaptation, from the public adaptation log (one row per adapt call)
    log = strat.adaptation_log()
    assert len(log) == len(seen)
    bars_at = []
    for _, row in log.iterrows():
        data = strat.datas[list(sample_frames).index(row["data"])]
        dates = [bt.num2date(x).date() for x in data.datetime.array[: len(data)]]
        bars_at.append((row["data"], dates.index(row["date"].date())))
    for (name, k), y in zip(bars_at, seen):
        i = list(sample_frames).index(name)
        first_bar = pd.Timestamp(strat.datas[i].datetime.date(-len(strat.datas[i]) + 1))
        labels = small_learner.feature_spec.labels(sample_frames[name].loc[first_bar:])
        expected = labels[k - h - len(y) + 1 : k - h + 1]
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def _sizer_vol(closes: np.ndarray, lookback: int, bars_per_year: int) -> float:
    """The sizer's definition, two-pass: std (ddof=1) of the last log returns, annualised."""
    if len(closes) < lookback + 1:
        return math.nan
    returns = np.diff(np.log(closes[-(lookback + 1) :]))
    return float(np.std(returns, ddof=1) * math.sqrt(bars_per_year))


def test_incremental_sizing_vol_equals_the_sizers_definition(sample_frames, small_learner):
    """MetaStrategy's O(1) rolling vol == the sizer's definition on the feed, every bar."""
    pairs = []

    class VolProbe(MetaStrategy):
        def next(self):
            super().next()
            sizer = self.getsizer()
            lookback, per_year = sizer.p.vol_lookback, self.bar_frequency.bars_per_year
            for i, d in enumerate(self.datas):
                closes = np.asarray(d.close.get(size=len(d)), dtype=float)
                pairs.append((self.realised_vol(i), _sizer_vol(closes, lookback, per_year)))

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
    from metabt.features.spec import FeatureSpec
    from metabt.features.tasks import TaskSampler
    from metabt.learn.learner import MetaLearner
    from metabt.learn.models import GRU, MLP

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


def test_model_asset_results_match_the_adaptation_log_and_signals(base_run):
    strat, assets = base_run.strategy, base_run.assets
    start = base_run.returns.index[0]
    log = strat.adaptation_log()
    log = log[log["date"] >= start]  # adaptation statistics count the test period only
    assert len(log) < len(strat.adaptation_log())
    pairs = signal_frames(strat, strat.horizon, start)
    for name, pair in pairs.items():
        assert assets.loc[name, "adaptations"] == (log["data"] == name).sum()
        assert assets.loc[name, "ic"] == pytest.approx(pair["signal"].corr(pair["forward"]))
    assert assets.loc["portfolio", "adaptations"] == len(log)
    assert assets.loc["portfolio", "ic"] == pytest.approx(base_run.metrics["ic"])
    assert 0 < assets.loc["portfolio", "exposure"] <= 0.95 * 1.05
    turnover = assets.loc[list(pairs), "turnover_two_way"].sum()
    assert turnover == pytest.approx(base_run.metrics["turnover_two_way"])


def test_batched_adaptation_equals_the_per_data_path(
    base_run, sample_frames, small_learner, monkeypatch
):
    """Data due on the same bar adapt in one adapt_batch call and predict in one
    predict_rows call; signals, losses and orders equal the per-data path."""
    from metabt.learn.kernels.batched import BatchAdapted

    calls = {"adapt_batch": [], "predict_rows": 0}
    adapt_batch, predict_rows = small_learner.adapt_batch, BatchAdapted.predict_rows

    def counting_adapt_batch(xs, ys, steps=None):
        calls["adapt_batch"].append(len(xs))
        return adapt_batch(xs, ys, steps=steps)

    def counting_predict_rows(self, x):
        calls["predict_rows"] += 1
        return predict_rows(self, x)

    monkeypatch.setattr(small_learner, "adapt_batch", counting_adapt_batch)
    monkeypatch.setattr(BatchAdapted, "predict_rows", counting_predict_rows)
    batched = _run(sample_frames, small_learner).strategy
    monkeypatch.undo()
    single = _run(sample_frames, small_learner, batch_adapt=False).strategy
    n_adapt = len(batched.adaptation_log())
    assert set(calls["adapt_batch"]) == {2}  # AAPL and IBM share a calendar
    assert len(calls["adapt_batch"]) == n_adapt // 2
    assert calls["predict_rows"] > 500
    a, b = batched.adaptation_log(), single.adaptation_log()
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-7)
    for x, y in zip(batched.signals, single.signals):
        np.testing.assert_allclose(
            np.asarray(x.signal.array), np.asarray(y.signal.array), rtol=1e-5, atol=1e-7
        )
    assert batched.orders_log == single.orders_log
    assert batched.orders_log == base_run.strategy.orders_log  # the default is batched


def test_a_learner_trained_on_other_bars_is_refused_in_cerebro(sample_frames, small_learner):
    """From Python too (not only the CLI): a daily-trained learner on weekly bars is refused."""
    import copy

    learner = copy.copy(small_learner)
    learner.train_config = {**(small_learner.train_config or {}), "bar_frequency": "daily"}
    weekly = {
        name: f.resample("W-FRI")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna()
        for name, f in sample_frames.items()
    }
    with pytest.raises(ConfigError, match="trained on daily bars but the data are weekly"):
        run_backtest(
            MetaStrategy,
            weekly,
            start="2010-01-01",
            warmup_bars=60,
            strategy_kwargs={"learner": learner, "adapt_every": 5, "support": 40},
        )
    # the same learner on the daily bars it was trained on runs
    _run(sample_frames, learner)
