"""CrossSectionalStrategy: weights by hand, caps, neutrality, min trade, turnover, causality."""

from __future__ import annotations

import itertools
import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from synthetic import gbm_frame

from metabt.errors import ConfigError
from metabt.experiments.backtest import Costs, run_backtest
from metabt.strategies.portfolio import CrossSectionalStrategy, cross_sectional_weights

START = "2006-01-02"
CAP = 0.3
GROSS = 0.9
TOL = 1e-12


class Recording(CrossSectionalStrategy):
    """Records every submitted order and, each bar, the value and the positions held."""

    def __init__(self) -> None:
        super().__init__()
        self.orders_log: list[tuple] = []
        self.book: dict[pd.Timestamp, tuple[float, dict[str, int]]] = {}

    def _today(self) -> pd.Timestamp:
        return pd.Timestamp(max(d.datetime.date(0) for d in self.datas if len(d)))

    def buy(self, data=None, size=None, **kwargs):
        self.orders_log.append((self._today(), data._name, size))
        return super().buy(data=data, size=size, **kwargs)

    def sell(self, data=None, size=None, **kwargs):
        self.orders_log.append((self._today(), data._name, -size))
        return super().sell(data=data, size=size, **kwargs)

    def _record(self) -> None:
        held = {d._name: self.getposition(d).size for d in self.datas}
        self.book[self._today()] = (self.broker.getvalue(), held)

    def prenext(self) -> None:
        self._record()
        super().prenext()

    def next(self) -> None:
        self._record()
        super().next()


@pytest.fixture(scope="module")
def universe() -> dict[str, pd.DataFrame]:
    """Five assets: three full, LATE starts after trading begins, EARLY ends before the end."""
    frames = {name: gbm_frame(560, seed, price=50 + 10 * seed) for seed, name in enumerate("ABC")}
    last = frames["A"].index[-1]
    frames["LATE"] = gbm_frame(len(pd.bdate_range("2006-03-01", last)), 7, start="2006-03-01")
    frames["EARLY"] = gbm_frame(430, 8, price=60.0)
    return frames


def _run(frames, learner, **kwargs):
    params = {
        "learner": learner,
        "adapt_every": 10,
        "support": 40,
        "name_cap": CAP,
        "gross_leverage": GROSS,
        **kwargs,
    }
    return run_backtest(
        Recording, frames, start=START, warmup_bars=120, costs=Costs(), strategy_kwargs=params
    )


@pytest.fixture(scope="module")
def base_run(universe, small_learner):
    return _run(universe, small_learner)


def _closes(frames):
    return pd.DataFrame({name: f["close"] for name, f in frames.items()})


def _current(strat, frames):
    """Held weights (positions at each rebalance bar, at its close, over its value)."""
    closes = _closes(frames)
    rows = {}
    for when, (value, held) in strat.book.items():
        rows[when] = {n: s * closes.at[when, n] / value for n, s in held.items() if s}
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(frames)).fillna(0.0)


# ---------------------------------------------------------------- pure weights, by hand
def test_rank_weights_by_hand():
    signals = [0.3, -0.1, 0.2, 0.0]  # ranks 4, 1, 3, 2 -> centred 1.5, -1.5, 0.5, -0.5
    w = cross_sectional_weights(signals, gross_leverage=1.0)
    np.testing.assert_allclose(w, [0.375, -0.375, 0.125, -0.125])  # each side 0.5, ∝ score
    w = cross_sectional_weights(signals, gross_leverage=1.0, name_cap=0.3)
    np.testing.assert_allclose(w, [0.3, -0.3, 0.2, -0.2])  # the capped excess moves over
    w = cross_sectional_weights(signals, book="long_only", gross_leverage=1.0)
    np.testing.assert_allclose(w, [0.75, 0.0, 0.25, 0.0])  # the top half, ∝ score
    w = cross_sectional_weights(signals, book="long_only", gross_leverage=1.0, net_leverage=0.4)
    np.testing.assert_allclose(w, [0.3, 0.0, 0.1, 0.0])  # the net cap binds a long book
    w = cross_sectional_weights(signals, book="long_only", gross_leverage=1.0, name_cap=0.2)
    np.testing.assert_allclose(w, [0.2, 0.0, 0.2, 0.0])  # cannot place more: cash
    # a side that cannot place its budget: the other side is scaled to it (still neutral)
    w = cross_sectional_weights([1.0, 2.0, 3.0, 6.0], cross_section="zscore", name_cap=0.25)
    np.testing.assert_allclose(w, [-0.25 * 2 / 3, -0.25 / 3, 0.0, 0.25])


def test_zscore_nan_and_too_few_names():
    # z = (s - 3) / sqrt(3.5): longs {6}, shorts {1: 2, 2: 1} in proportion
    w = cross_sectional_weights([1.0, 2.0, 3.0, 6.0, math.nan], cross_section="zscore")
    np.testing.assert_allclose(w, [-1 / 3, -1 / 6, 0.0, 0.5, 0.0])
    assert cross_sectional_weights([0.5, math.nan, math.nan]).tolist() == [0.0, 0.0, 0.0]
    assert cross_sectional_weights([0.2, 0.2, 0.2], cross_section="zscore").tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="book must be one of"):
        cross_sectional_weights([1.0, 2.0], book="short_only")
    with pytest.raises(ConfigError, match="name_cap"):
        cross_sectional_weights([1.0, 2.0], name_cap=-1)


@pytest.mark.parametrize("cross_section", ["rank", "zscore"])
@pytest.mark.parametrize("book", ["dollar_neutral", "long_only"])
def test_random_weights_respect_every_cap(cross_section, book):
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 12))
        s = rng.normal(size=n)
        s[rng.random(n) < 0.2] = np.nan
        cap, gross, net = rng.uniform(0.05, 0.6), rng.uniform(0.2, 2), rng.uniform(0, 1)
        w = cross_sectional_weights(
            s,
            cross_section=cross_section,
            book=book,
            gross_leverage=gross,
            net_leverage=net,
            name_cap=cap,
        )
        assert np.isfinite(w).all() and (w[np.isnan(s)] == 0).all()
        assert np.abs(w).max() <= cap + TOL and np.abs(w).sum() <= gross + TOL
        assert abs(w.sum()) <= (TOL if book == "dollar_neutral" else net + TOL)


# ---------------------------------------------------------------- a stub adapter, by hand
SIGNALS = [0.3, -0.1, 0.2, 0.0]


class _Constant:
    loss_before = loss_after = 0.0
    steps = 0

    def __init__(self, value: float) -> None:
        self.value = value

    def predict_row(self, x: np.ndarray) -> float:
        return self.value


class _StubAdapter:
    """Its k-th adaptation predicts SIGNALS[k % 4]: the 4 assets adapt in data order."""

    algorithm = "stub"
    window = 1

    def __init__(self, spec) -> None:
        self.feature_spec = spec
        self.calls = 0

    def adapt(self, x_support, y_support, steps=None):
        value = SIGNALS[self.calls % 4]
        self.calls += 1
        return _Constant(value)


@pytest.mark.filterwarnings("ignore:An input array is constant")  # IC of constant signals
def test_stub_signals_give_the_hand_computed_book(small_learner):
    frames = {name: gbm_frame(300, seed) for seed, name in enumerate("WXYZ")}
    run = _run(frames, _StubAdapter(small_learner.feature_spec), gross_leverage=1.0)
    strat = run.strategy
    targets = strat.weights_log()
    assert len(targets) == len(run.returns) and not run.rejected_orders
    expected = np.tile([0.3, -0.3, 0.2, -0.2], (len(targets), 1))
    np.testing.assert_allclose(targets.to_numpy(), expected, atol=TOL)
    held = _current(strat, frames).iloc[-1].to_numpy()
    np.testing.assert_allclose(held, [0.3, -0.3, 0.2, -0.2], atol=0.01)


# ---------------------------------------------------------------- a learned universe
def test_targets_and_held_positions_respect_the_caps(base_run, universe):
    strat = base_run.strategy
    targets = strat.weights_log()
    planned = strat.weights_log(planned=True)
    assert len(targets) == len(base_run.returns) and not base_run.rejected_orders
    w = targets.fillna(0.0)
    assert (w.abs().sum(axis=1) > 0.5).mean() > 0.9  # a book is held
    assert (w.sum(axis=1).abs() <= TOL).all()  # dollar-neutral targets
    assert (w.abs() <= CAP + TOL).all().all() and (w.abs().sum(axis=1) <= GROSS + TOL).all()
    # the planned book (share rounding toward 0) never exceeds the targets' caps
    p = planned.fillna(0.0)
    assert (p.abs() <= w.abs() + TOL).all().all()
    assert (p.sum(axis=1).abs() <= 5 * 100 / 1e5).all()  # < one share of each name
    # the positions held after the fills are the planned ones (no rejection, no drift)
    current = _current(strat, universe)
    dates = list(planned.index)
    for day, nxt in itertools.pairwise(dates):
        value, _ = strat.book[day]
        _, held = strat.book[nxt]
        closes = _closes(universe).loc[day]
        got = {n: held[n] * closes[n] / value for n in held if not np.isnan(planned.at[day, n])}
        for name, weight in got.items():
            if name not in strat.ended:
                assert weight == pytest.approx(planned.at[day, name], abs=1e-9), (day, name)
    # held at each close: within price drift of the caps
    assert (current.abs() <= CAP * 1.15).all().all()
    assert (current.abs().sum(axis=1) <= GROSS * 1.1).all()
    assert (current.sum(axis=1).abs() <= 0.06).all()


def test_late_starter_joins_once_it_has_a_signal_and_early_ender_leaves(base_run, universe):
    strat = base_run.strategy
    targets = strat.weights_log()
    late = targets["LATE"]
    first_bar = universe["LATE"].index[0]
    assert late.loc[: first_bar - pd.Timedelta(days=1)].isna().all()  # no bar: not in the book
    i = list(universe).index("LATE")
    signal = pd.Series(
        np.asarray(strat.signals[i].signal.array[: len(strat.datas[i])]),
        index=universe["LATE"].index[: len(strat.datas[i])],
    )
    first_signal = signal.first_valid_index()
    assert first_signal > first_bar  # warm-up: bars without a signal ...
    assert (late.loc[first_bar : first_signal - pd.Timedelta(days=1)] == 0).all()  # ... held flat
    assert (late.loc[first_signal:].abs() > 0).mean() > 0.5  # then it is traded
    # the early ender is closed one bar before its last and leaves the cross-section
    ended = pd.Timestamp(strat.ended["EARLY"])
    assert ended == universe["EARLY"].index[-2]
    assert targets["EARLY"].loc[ended:].isna().all()
    assert strat.book[targets.index[-1]][1]["EARLY"] == 0
    assert (targets.loc[ended:].fillna(0).sum(axis=1).abs() <= TOL).all()


def test_min_trade_suppresses_small_trades(base_run, universe, small_learner):
    lazy = _run(universe, small_learner, min_trade=0.03)
    busy_orders, lazy_orders = len(base_run.strategy.orders_log), len(lazy.strategy.orders_log)
    assert lazy_orders < 0.5 * busy_orders
    strat = lazy.strategy
    targets, planned = strat.weights_log(), strat.weights_log(planned=True)
    current = _current(strat, universe)
    for day in planned.index:
        for name in planned.columns:
            if np.isnan(planned.at[day, name]):
                continue
            move = abs(planned.at[day, name] - current.at[day, name])
            if move > 0 and targets.at[day, name] != 0:  # exits always trade
                assert move >= 0.03 - 2e-3, (day, name)  # less one share of rounding


def test_turnover_budget_bounds_the_value_traded(universe, small_learner):
    budget = 0.1
    run = _run(universe, small_learner, turnover_budget=budget)
    strat = run.strategy
    targets, planned = strat.weights_log(), strat.weights_log(planned=True)
    current = _current(strat, universe)
    opens = pd.DataFrame({n: f["open"] for n, f in universe.items()})
    dates = list(planned.index)
    wanted = (targets.fillna(0) - current.loc[dates]).abs().sum(axis=1)
    assert (wanted > 2 * budget).sum() > 5  # the budget binds
    for day, nxt in itertools.pairwise(dates):
        live = [n for n in planned.columns if not np.isnan(planned.at[day, n])]
        live = [n for n in live if not (n in strat.ended and nxt >= pd.Timestamp(strat.ended[n]))]
        plan = (planned.loc[day, live] - current.loc[day, live]).abs().sum()
        assert plan <= budget + 5 * 100 / 1e5  # plus less than one share per name
        value, before = strat.book[day]
        _, after = strat.book[nxt]
        filled = sum(abs(after[n] - before[n]) * opens.at[nxt, n] for n in live) / value
        assert filled <= budget * 1.1 + 5 * 100 / 1e5


def test_rebalance_schedule(universe, small_learner):
    run = _run(universe, small_learner, rebalance_every=5)
    strat = run.strategy
    bars = run.returns.index
    targets = strat.weights_log()
    np.testing.assert_array_equal(targets.index, bars[::5])
    order_days = {pd.Timestamp(o[0]) for o in strat.orders_log if o[1] != "EARLY"}
    assert order_days and order_days <= set(targets.index)


@pytest.mark.parametrize("pooled", [False, True])
def test_orders_up_to_a_date_ignore_every_later_price(pooled, base_run, universe, small_learner):
    cut = pd.Timestamp("2006-09-15")
    rng = np.random.default_rng(7)
    altered = {}
    for name, frame in universe.items():
        frame = frame.copy()
        later = frame.index > cut
        walk = np.exp(np.cumsum(rng.normal(0, 0.03, later.sum())))
        for col in ("open", "high", "low", "close"):
            frame.loc[later, col] = frame.loc[later, col].to_numpy() * walk * 1.7
        altered[name] = frame
    first = base_run if not pooled else _run(universe, small_learner, pooled_adaptation=True)
    other = _run(altered, small_learner, pooled_adaptation=pooled)
    before = [o for o in first.strategy.orders_log if pd.Timestamp(o[0]) <= cut]
    assert len(before) > 20
    assert before == [o for o in other.strategy.orders_log if pd.Timestamp(o[0]) <= cut]
    after = [o for o in first.strategy.orders_log if pd.Timestamp(o[0]) > cut]
    assert after != [o for o in other.strategy.orders_log if pd.Timestamp(o[0]) > cut]
    if pooled:
        log = first.strategy.adaptation_log()
        assert (log["data"] == "pooled").all() and (log["support"] >= 40).all()
        assert log["support"].max() >= 3 * 40  # each asset's last 40 realised pairs
        assert log["date"].diff().dropna().dt.days.min() >= 10  # every 10 dates
        assert (log["query_count"].iloc[:-2] > 0).all()


def test_long_only_zscore_book(universe, small_learner):
    run = _run(universe, small_learner, book="long_only", cross_section="zscore", name_cap=0.4)
    w = run.strategy.weights_log().fillna(0.0)
    assert (w >= 0).all().all() and (w <= 0.4 + TOL).all().all()
    assert (w.sum(axis=1) <= GROSS + TOL).all() and (w.sum(axis=1) >= 0.4 - TOL).mean() > 0.9
    held = _current(run.strategy, universe)
    assert (held >= 0).all().all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"book": "market_neutral"}, "book must be one of"),
        ({"cross_section": "sort"}, "cross_section must be one of"),
        ({"name_cap": 0}, "name_cap must be a number > 0"),
        ({"min_trade": -0.1}, "min_trade"),
        ({"turnover_budget": 0}, "turnover_budget"),
        ({"rebalance_every": 0}, "rebalance_every"),
        ({"pooled_adaptation": True, "drift_threshold": 2.0}, "drift_threshold"),
        # online meta-updates need one asset's (support, realised query) pair: refused,
        # not silently skipped
        ({"pooled_adaptation": True, "online_meta_lr": 0.01}, "per-asset adaptation only"),
        ({"name_cpa": 0.1}, "did you mean 'name_cap'"),
    ],
)
def test_bad_params_raise(kwargs, match, universe, small_learner):
    cerebro = bt.Cerebro()
    from metabt.data.feeds import feed

    cerebro.adddata(feed(universe["A"].iloc[:50], name="A"))
    cerebro.addstrategy(CrossSectionalStrategy, learner=small_learner, **kwargs)
    with pytest.raises(ConfigError, match=match):
        cerebro.run()


def test_per_asset_signals_adapt_in_one_batched_call_as_the_per_asset_path(
    base_run, universe, small_learner, monkeypatch
):
    calls: list[int] = []
    adapt_batch = small_learner.adapt_batch

    def counting(xs, ys, steps=None):
        calls.append(len(xs))
        return adapt_batch(xs, ys, steps=steps)

    monkeypatch.setattr(small_learner, "adapt_batch", counting)
    batched = _run(universe, small_learner).strategy
    monkeypatch.undo()
    assert calls and max(calls) >= 3  # the assets due on one bar adapt together
    single = _run(universe, small_learner, batch_adapt=False).strategy
    pd.testing.assert_frame_equal(
        batched.adaptation_log(), single.adaptation_log(), check_exact=False, rtol=1e-5, atol=1e-7
    )
    pd.testing.assert_frame_equal(
        batched.weights_log(), single.weights_log(), check_exact=False, rtol=1e-5, atol=1e-7
    )
    assert batched.orders_log == single.orders_log == base_run.strategy.orders_log

    pooled = []  # pooled adaptation keeps its own signal: no per-asset batch
    monkeypatch.setattr(small_learner, "adapt_batch", lambda *a, **k: pooled.append(1))
    _run(universe, small_learner, pooled_adaptation=True)
    assert not pooled
