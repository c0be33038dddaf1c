"""Online meta-updates of θ inside MetaStrategy (``online_meta_lr``): causality, schedule, off."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
import torch

from metabt import MetaStrategy
from metabt.data.feeds import feed
from metabt.errors import ConfigError
from metabt.experiments.backtest import Costs, run_backtest
from metabt.features.spec import FeatureSpec
from metabt.learn.linear import RidgeAdapter

START = "2010-03-01"
LR = 0.01


class Recording(MetaStrategy):
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


def _run(frames, learner, **kwargs):
    return run_backtest(
        Recording,
        frames,
        start=START,
        warmup_bars=150,
        costs=Costs(),
        strategy_kwargs={"learner": learner, "adapt_every": 5, "support": 40, **kwargs},
    ).strategy


def _theta(learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}


@pytest.fixture(scope="module")
def online_run(sample_frames, small_learner):
    before = _theta(small_learner)
    strat = _run(sample_frames, small_learner, online_meta_lr=LR)
    after = _theta(small_learner)
    return strat, before, after


def _bar_of(frame: pd.DataFrame, strat: MetaStrategy, name: str, dates: pd.Series) -> np.ndarray:
    """Bar index (in the data's feed, as MetaStrategy counts bars) of each date."""
    i = [d._name for d in strat.datas].index(name)
    first = pd.Timestamp(strat.datas[i].datetime.date(-len(strat.datas[i]) + 1))
    return frame.loc[first:].index.get_indexer(pd.DatetimeIndex(dates))


def test_users_learner_is_never_modified_and_theta_drifts(online_run, small_learner):
    strat, before, after = online_run
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    log = strat.theta_log()
    assert len(log) > 50 and len(log) == len(strat.theta_drift)
    assert list(log.columns) == [
        "date",
        "data",
        "update",
        "adaptation",
        "query",
        "query_loss",
        "theta_drift",
        "theta_sha256",
    ]
    assert (log["update"] == np.arange(len(log))).all()
    assert (log["theta_drift"] > 0).all() and np.isfinite(log["query_loss"]).all()
    assert log["theta_drift"].iloc[-1] > log["theta_drift"].iloc[0]
    assert (log["query"] == 5).all()  # adapt_every rows, all realised
    assert log["theta_sha256"].nunique() == len(log)  # every step moves θ
    assert strat.online_learner is not small_learner and strat.online_learner.meta_lr == LR
    assert [g["lr"] for g in strat.online_learner.optimizer.param_groups] == [LR]
    assert small_learner.meta_lr == 1e-3 and small_learner.optimizer.param_groups[0]["lr"] == 1e-3


def test_theta_updates_exactly_when_a_query_is_fully_realised(online_run, sample_frames):
    """Adaptation at bar k predicts k..k+adapt_every-1; θ steps at bar k+adapt_every-1+h."""
    strat, _, _ = online_run
    h, every = strat.horizon, strat.p.adapt_every
    adaptations = strat.adaptation_log()
    log = strat.theta_log()
    for name, frame in sample_frames.items():
        own = adaptations[adaptations["data"] == name]
        ks = _bar_of(frame, strat, name, own["date"])
        n_bars = len(frame.loc[pd.Timestamp(strat.datas[0].datetime.date(-len(strat) + 1)) :])
        expected = {
            a: k + every - 1 + h for a, k in zip(own.index, ks) if k + every - 1 + h < n_bars
        }
        mine = log[log["data"] == name]
        assert dict(zip(mine["adaptation"], _bar_of(frame, strat, name, mine["date"]))) == expected
        # the first update: first adaptation bar k0 + adapt_every - 1 + horizon
        assert _bar_of(frame, strat, name, mine["date"].iloc[:1])[0] == ks[0] + every - 1 + h


def test_later_adaptations_start_from_the_updated_theta(online_run, sample_frames, small_learner):
    strat, _, _ = online_run
    fixed = _run(sample_frames, small_learner)
    first_update = strat.theta_log()["date"].iloc[0]
    a, b = strat.adaptation_log(), fixed.adaptation_log()
    assert len(a) == len(b)
    early, late = a["date"] <= first_update, a["date"] > first_update
    # up to the first update (and on its bar: updates follow the bar's signals) θ is θ₀
    np.testing.assert_array_equal(a.loc[early, "loss_before"], b.loc[early, "loss_before"])
    assert not np.allclose(a.loc[late, "loss_before"], b.loc[late, "loss_before"])


def test_orders_and_theta_up_to_a_date_ignore_every_later_price(
    online_run, sample_frames, small_learner
):
    strat, _, _ = online_run
    cut = pd.Timestamp("2011-03-15")
    rng = np.random.default_rng(7)
    altered = {}
    for name, frame in sample_frames.items():
        frame = frame.copy()
        later = frame.index > cut
        walk = np.exp(np.cumsum(rng.normal(0, 0.03, later.sum())))
        for col in ("open", "high", "low", "close"):
            frame.loc[later, col] = frame.loc[later, col].to_numpy() * walk * 1.7
        frame.loc[later, "volume"] = frame.loc[later, "volume"].to_numpy()[::-1]
        altered[name] = frame
    other = _run(altered, small_learner, online_meta_lr=LR)

    def upto(orders):
        return [o for o in orders if pd.Timestamp(o[0]) <= cut]

    assert len(upto(strat.orders_log)) > 5
    assert upto(strat.orders_log) == upto(other.orders_log)
    mine = [r for r in strat.theta_drift if r["date"] <= cut]
    theirs = [r for r in other.theta_drift if r["date"] <= cut]
    assert len(mine) > 20 and len(mine) == len(theirs)
    for x, y in zip(mine, theirs):
        assert (x["date"], x["data"], x["adaptation"]) == (y["date"], y["data"], y["adaptation"])
        assert x["theta_sha256"] == y["theta_sha256"]  # bit-identical θ up to the cut
        assert x["theta_drift"] == y["theta_drift"]
    assert strat.theta_drift[-1]["theta_sha256"] != other.theta_drift[-1]["theta_sha256"]
    mine_theta = _theta(strat.online_learner)  # the private copies, at the end
    assert any(not torch.equal(v, _theta(other.online_learner)[k]) for k, v in mine_theta.items())


def test_default_zero_is_off_and_identical_to_today(sample_frames, small_learner):
    before = _theta(small_learner)
    default = _run(sample_frames, small_learner)
    zero = _run(sample_frames, small_learner, online_meta_lr=0.0)
    assert default.theta_drift == [] and zero.theta_log().empty
    assert default.orders_log == zero.orders_log
    pd.testing.assert_frame_equal(default.adaptation_log(), zero.adaptation_log())
    for name, tensor in before.items():
        assert torch.equal(tensor, small_learner.model.state_dict()[name])


def test_query_is_cut_at_a_drift_adaptation(sample_frames, small_learner):
    """With drift triggers, adaptation a's query ends the bar before the next adaptation."""
    strat = _run(
        sample_frames, small_learner, online_meta_lr=LR, drift_threshold=0.01, drift_window=4
    )
    h, every = strat.horizon, strat.p.adapt_every
    adaptations, log = strat.adaptation_log(), strat.theta_log()
    assert (adaptations["trigger"] == "drift").sum() > 5
    for name, frame in sample_frames.items():
        own = adaptations[adaptations["data"] == name]
        ks = list(_bar_of(frame, strat, name, own["date"]))
        ends = [min(k + every - 1, nxt - 1) for k, nxt in zip(ks, [*ks[1:], 10**9])]
        mine = log[log["data"] == name]
        bars = _bar_of(frame, strat, name, mine["date"])
        index = {a: j for j, a in enumerate(own.index)}
        for a, bar, rows in zip(mine["adaptation"], bars, mine["query"]):
            end = ends[index[a]]
            assert bar == end + h
            assert rows == end - ks[index[a]] + 1


def test_online_meta_lr_is_checked(sample_frames, small_learner):
    for learner, rate, match in (
        (small_learner, -0.1, "online_meta_lr must be a number >= 0"),
        (small_learner, float("nan"), "online_meta_lr"),
        (RidgeAdapter(FeatureSpec()), 0.01, "needs a MetaLearner.*RidgeAdapter"),
    ):
        cerebro = bt.Cerebro()
        cerebro.adddata(feed(sample_frames["AAPL"].iloc[:300], name="AAPL"))
        cerebro.addstrategy(MetaStrategy, learner=learner, online_meta_lr=rate)
        with pytest.raises(ConfigError, match=match):
            cerebro.run()


def test_batched_and_per_data_paths_update_theta_alike(online_run, sample_frames, small_learner):
    """Updates follow all signals of a bar, so batching the bar's adaptations changes nothing."""
    strat, _, _ = online_run  # batched: AAPL and IBM adapt on the same bars
    single = _run(sample_frames, small_learner, online_meta_lr=LR, batch_adapt=False)
    a, b = strat.theta_log(), single.theta_log()
    cols = ["date", "data", "update", "adaptation", "query"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    np.testing.assert_allclose(a["theta_drift"], b["theta_drift"], rtol=1e-4)
