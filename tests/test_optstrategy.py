"""backtrader's optstrategy with its default maxcpus (a process pool) runs metabt's
strategies: feeds, strategies, sizers and learners pickle, and the results equal maxcpus=1."""

from __future__ import annotations

import pickle

import backtrader as bt
import pytest

from metabt import MetaStrategy, SignalSizer
from metabt.data import feed


@pytest.mark.slow
def test_optstrategy_in_parallel_equals_one_process(sample_frames, small_learner):
    frames = {n: f.loc["2009-06-01":"2011-06-30"] for n, f in sample_frames.items()}

    def run(maxcpus):
        cerebro = bt.Cerebro(stdstats=False, maxcpus=maxcpus)
        for name, frame in frames.items():
            cerebro.adddata(feed(frame, name=name))
        cerebro.optstrategy(
            MetaStrategy,
            learner=[small_learner],
            adapt_every=[5, 10, 20],
            support=[40],
            inner_steps=[3],
            trade_start=["2010-01-04"],
        )
        cerebro.addsizer(SignalSizer)
        cerebro.addanalyzer(bt.analyzers.Returns, _name="returns")
        runs = cerebro.run()  # one list per parameter combination
        return sorted(
            (r[0].p.adapt_every, r[0].analyzers.returns.get_analysis()["rtot"]) for r in runs
        )

    serial = run(1)
    assert [a for a, _ in serial] == [5, 10, 20]
    assert len({value for _, value in serial}) == 3  # the parameter changes the result
    assert run(None) == serial  # backtrader's default: a pool of every CPU


def test_feeds_with_extra_lines_pickle_by_name(sample_frames):
    frame = sample_frames["AAPL"].assign(my_col_1=1.0)
    data = feed(frame, name="AAPL")
    assert "my_col_1" in data.getlinealiases()
    cls = type(data)
    assert cls.__module__ == "metabt.data.feeds"
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert pickle.loads(pickle.dumps(type(feed(sample_frames["IBM"])))) is type(
        feed(sample_frames["IBM"])
    )
