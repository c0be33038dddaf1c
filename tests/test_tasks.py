"""TaskSampler: the support/query gap, no look-ahead past `end`, splits, determinism, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import gbm_frame

from metabt.errors import ConfigError, DataError
from metabt.features.spec import FeatureSpec, stack_window
from metabt.features.tasks import PooledTaskSampler, TaskSampler

H = 5  # label horizon of the encoded tasks
STARTS = ["2001-01-01", "2001-03-15"]  # the two encoded assets start on different dates


def encoded(lengths=(300, 260), warmup=20, horizon=H, seed=0):
    """Per asset: X[:, 0] = row index, X[:, 1] = asset id, X[:, 2] noise; y = row + 0.25.

    Like real features and labels: X is NaN in the first `warmup` rows, y in the last
    `horizon` rows. Dates are business days.
    """
    rng = np.random.default_rng(seed)
    X, y, dates = [], [], []
    for i, n in enumerate(lengths):
        x = np.column_stack([np.arange(n), np.full(n, i), rng.normal(size=n)]).astype(np.float32)
        x[:warmup] = np.nan
        lab = (np.arange(n) + 0.25).astype(np.float32)
        lab[n - horizon :] = np.nan
        X.append(x)
        y.append(lab)
        dates.append(pd.bdate_range(STARTS[i % 2], periods=n))
    return X, y, dates


def decode(batch, dates):
    """(asset (B,), support rows (B, S), query rows (B, Q)) of a batch of encoded tasks."""
    xs, ys, xq, yq = (t.numpy() for t in batch)
    asset = xs[:, 0, 1].astype(int)
    assert (xs[..., 1] == asset[:, None]).all() and (xq[..., 1] == asset[:, None]).all()
    s_rows, q_rows = xs[..., 0].astype(int), xq[..., 0].astype(int)
    np.testing.assert_array_equal(ys, s_rows + 0.25)  # labels travel with their rows
    np.testing.assert_array_equal(yq, q_rows + 0.25)
    return asset, s_rows, q_rows


def used_dates(asset, rows, dates, shift=0):
    """Dates of rows + shift, per task: (B, n) datetime64."""
    return np.stack([dates[a].values[r + shift] for a, r in zip(asset, rows)])


def all_tasks(sampler):
    return sampler.fixed(sampler.n_tasks, seed=0)


def brute_force_count(X, y, dates, S, Q, h, start=None, end=None):
    """Number of valid anchors, from the definition, one row at a time."""
    count = 0
    for x, lab, d in zip(X, y, dates):
        n = len(d)
        for a in range(n):
            rows = list(range(a, a + S)) + list(range(a + S - 1 + h, a + S - 1 + h + Q))
            count += all(
                s + h < n
                and np.isfinite(x[s]).all()
                and np.isfinite(lab[s])
                and (start is None or d[s] >= pd.Timestamp(start))
                and (end is None or d[s + h] < pd.Timestamp(end))
                for s in rows
            )
    return count


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {"AAA": gbm_frame(500, 1), "BBB": gbm_frame(450, 2, start="2005-03-01", price=20.0)}


# ---------------------------------------------------------------- task geometry
def test_query_starts_horizon_bars_after_support_ends():
    X, y, dates = encoded()
    sampler = TaskSampler(X, y, dates, support=30, query=8, horizon=H)
    asset, s_rows, q_rows = decode(sampler.sample(256, np.random.default_rng(0)), dates)
    assert set(asset) == {0, 1}
    np.testing.assert_array_equal(np.diff(s_rows, axis=1), 1)  # chronological blocks
    np.testing.assert_array_equal(np.diff(q_rows, axis=1), 1)
    support_end = used_dates(asset, s_rows[:, -1:], dates)[:, 0]
    query_start = used_dates(asset, q_rows[:, :1], dates)[:, 0]
    gap = np.busday_count(support_end.astype("datetime64[D]"), query_start.astype("datetime64[D]"))
    np.testing.assert_array_equal(gap, H)  # `horizon` business days: the deployment gap
    # the support's newest label is realised exactly when the query starts
    realised = used_dates(asset, s_rows[:, -1:], dates, shift=H)[:, 0]
    np.testing.assert_array_equal(realised, query_start)


def test_every_valid_anchor_is_found():
    X, y, dates = encoded()
    sampler = TaskSampler(X, y, dates, support=30, query=8, horizon=H)
    assert sampler.n_tasks == brute_force_count(X, y, dates, 30, 8, H)
    asset, s_rows, _ = decode(all_tasks(sampler), dates)
    assert len({(a, r) for a, r in zip(asset, s_rows[:, 0])}) == sampler.n_tasks
    assert sampler.tasks_per_asset == {
        "asset0": int((asset == 0).sum()),
        "asset1": int((asset == 1).sum()),
    }


@settings(max_examples=40, deadline=None)
@given(
    support=st.integers(1, 20),
    query=st.integers(1, 10),
    horizon=st.integers(1, 6),
    start=st.integers(0, 60),
    end=st.integers(40, 130),
)
def test_anchor_count_matches_definition(support, query, horizon, start, end):
    X, y, dates = encoded(lengths=(110, 90), warmup=7, horizon=horizon)
    start_date, end_date = dates[0][start], pd.bdate_range(STARTS[0], periods=200)[end]
    expected = brute_force_count(X, y, dates, support, query, horizon, start_date, end_date)
    kwargs = {"support": support, "query": query, "horizon": horizon}
    if start_date >= end_date:
        with pytest.raises(ConfigError, match="before end"):
            TaskSampler(X, y, dates, start=start_date, end=end_date, **kwargs)
    elif expected == 0:
        with pytest.raises(ConfigError, match="no valid support/query task"):
            TaskSampler(X, y, dates, start=start_date, end=end_date, **kwargs)
    else:
        sampler = TaskSampler(X, y, dates, start=start_date, end=end_date, **kwargs)
        assert sampler.n_tasks == expected


def test_no_row_before_start_and_no_price_on_or_after_end():
    X, y, dates = encoded()
    start, end = pd.Timestamp("2001-02-01"), pd.Timestamp("2001-11-15")
    sampler = TaskSampler(X, y, dates, support=30, query=8, horizon=H, start=start, end=end)
    asset, s_rows, q_rows = decode(all_tasks(sampler), dates)
    rows = np.concatenate([s_rows, q_rows], axis=1)
    assert (used_dates(asset, rows, dates) >= start).all()
    assert (used_dates(asset, rows, dates, shift=H) < end).all()  # label realisation dates
    first, last = sampler.date_range
    assert first == used_dates(asset, s_rows, dates).min()
    assert last == used_dates(asset, q_rows, dates, shift=H).max()
    assert start <= first and last < end
    # the bounds bind: without them there are tasks outside [start, end)
    unbounded = TaskSampler(X, y, dates, support=30, query=8, horizon=H)
    assert unbounded.date_range[0] < start and unbounded.date_range[1] >= end


def test_split_is_chronological_without_overlap():
    X, y, dates = encoded()
    end = pd.Timestamp("2002-01-10")
    sampler = TaskSampler(X, y, dates, support=30, query=8, horizon=H, end=end)
    at = pd.Timestamp("2001-08-01")
    train, val = sampler.split(at)
    assert train.end == at and val.start == at and val.end == end
    used = []
    for part in (train, val):
        asset, s_rows, q_rows = decode(all_tasks(part), dates)
        rows = np.concatenate([s_rows, q_rows], axis=1)
        used.append({(a, r) for a, rr in zip(asset, rows) for r in rr})
        realised = used_dates(asset, rows, dates, shift=H)
        if part is train:
            assert (realised < at).all()  # every train label is known before `at`
        else:
            assert (used_dates(asset, rows, dates) >= at).all() and (realised < end).all()
    assert not used[0] & used[1]
    assert train.date_range[1] < at <= val.date_range[0]
    assert train.n_tasks + val.n_tasks < sampler.n_tasks  # tasks straddling `at` are dropped


def test_split_without_room_raises():
    X, y, dates = encoded()
    sampler = TaskSampler(X, y, dates, support=30, query=8, horizon=H)
    with pytest.raises(ConfigError, match="train part"):
        sampler.split(dates[0][25])
    with pytest.raises(ConfigError, match="validation part"):
        sampler.split(dates[0][-10])


# ---------------------------------------------------------------- batches
def test_sample_shapes_dtypes_and_determinism():
    X, y, dates = encoded()
    sampler = TaskSampler(X, y, dates, support=30, query=8, horizon=H)
    assert sampler.features == 3
    batch = sampler.sample(16, np.random.default_rng(42))
    shapes = [(16, 30, 3), (16, 30), (16, 8, 3), (16, 8)]
    for tensor, shape in zip(batch, shapes):
        assert isinstance(tensor, torch.Tensor)
        assert tensor.dtype == torch.float32 and tuple(tensor.shape) == shape
        assert torch.isfinite(tensor).all()
    again = sampler.sample(16, np.random.default_rng(42))
    assert all(torch.equal(a, b) for a, b in zip(batch, again))
    other = sampler.sample(16, np.random.default_rng(43))
    assert not torch.equal(batch[0], other[0])


def test_fixed_is_deterministic_and_evenly_spread():
    X, y, dates = encoded()
    sampler = TaskSampler(X, y, dates, support=30, query=8, horizon=H)
    a = sampler.fixed(40, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, sampler.fixed(40, seed=3)))
    asset, s_rows, _ = decode(a, dates)
    keys = sorted(zip(asset, s_rows[:, 0]))
    assert len(set(keys)) == 40  # distinct tasks
    assert set(asset) == {0, 1}  # spread over both assets
    assert len(sampler.fixed(10**6, seed=0)[0]) == sampler.n_tasks  # all tasks, each once


# ---------------------------------------------------------------- from_frames
def test_from_frames_uses_the_spec_features_and_labels(frames):
    spec = FeatureSpec()
    sampler = TaskSampler.from_frames(frames, spec, support=40, query=10)
    assert sampler.features == spec.n_features and sampler.names == ["AAA", "BBB"]
    X = {k: spec.transform(f) for k, f in frames.items()}
    y = {k: spec.labels(f) for k, f in frames.items()}
    xs, ys, xq, yq = (t.numpy() for t in sampler.sample(8, np.random.default_rng(0)))
    for b in range(8):
        matches = [
            (k, int(np.flatnonzero((X[k] == xs[b, 0]).all(axis=1))[0]))
            for k in X
            if (X[k] == xs[b, 0]).all(axis=1).any()
        ]
        assert len(matches) == 1
        k, a = matches[0]
        np.testing.assert_array_equal(xs[b], X[k][a : a + 40])
        np.testing.assert_array_equal(ys[b], y[k][a : a + 40])
        q0 = a + 40 - 1 + spec.horizon
        np.testing.assert_array_equal(xq[b], X[k][q0 : q0 + 10])
        np.testing.assert_array_equal(yq[b], y[k][q0 : q0 + 10])


def test_from_frames_window_stacks_rows(frames):
    spec = FeatureSpec()
    sampler = TaskSampler.from_frames(frames, spec, support=20, query=5, window=3)
    assert sampler.features == 3 * spec.n_features
    stacked = stack_window(spec.transform(frames["AAA"]), 3)
    xs = all_tasks(sampler)[0].numpy()
    first = xs[0]  # the earliest task of the first asset starts after the stacked warm-up
    row = spec.lookback - 1 + 2
    np.testing.assert_array_equal(first, stacked[row : row + 20])


def test_from_frames_never_uses_prices_on_or_after_end(frames):
    spec = FeatureSpec()
    end = frames["AAA"].index[300]
    changed = {}
    for k, f in frames.items():
        g = f.copy()
        after = g.index >= end
        g.loc[after] = gbm_frame(int(after.sum()), 99, price=1.0).to_numpy()
        changed[k] = g
    kwargs = {"support": 40, "query": 10, "end": end}
    a = TaskSampler.from_frames(frames, spec, **kwargs)
    b = TaskSampler.from_frames(changed, spec, **kwargs)
    assert a.n_tasks == b.n_tasks and a.date_range == b.date_range
    assert a.date_range[1] < end
    for u, v in zip(a.sample(64, np.random.default_rng(5)), b.sample(64, np.random.default_rng(5))):
        assert torch.equal(u, v)
    for u, v in zip(all_tasks(a), all_tasks(b)):
        assert torch.equal(u, v)


def test_from_frames_too_short_says_how_many_bars(frames):
    spec = FeatureSpec()
    need = spec.lookback + 40 + 10 + 2 * spec.horizon - 2  # documented minimum
    short = {"AAA": frames["AAA"].iloc[:need]}
    assert TaskSampler.from_frames(short, spec, support=40, query=10).n_tasks == 1
    with pytest.raises(ConfigError, match=rf"at least {need} bars"):
        TaskSampler.from_frames({"AAA": frames["AAA"].iloc[: need - 1]}, spec, support=40, query=10)
    with pytest.raises(ConfigError, match="no valid support/query task"):
        TaskSampler.from_frames(frames, spec, support=40, query=10, end="2005-02-01")


# ---------------------------------------------------------------- bad input
def test_bad_arguments_raise():
    X, y, dates = encoded()
    kw = {"support": 30, "query": 8, "horizon": H}
    with pytest.raises(ConfigError, match="support"):
        TaskSampler(X, y, dates, **{**kw, "support": 0})
    with pytest.raises(ConfigError, match="horizon"):
        TaskSampler(X, y, dates, **{**kw, "horizon": 1.5})
    with pytest.raises(DataError, match="one X, y and dates"):
        TaskSampler(X, y[:1], dates, **kw)
    with pytest.raises(DataError, match="asset1"):
        TaskSampler(X, [y[0], y[1][:-1]], dates, **kw)
    with pytest.raises(DataError, match="same number of features"):
        TaskSampler([X[0], X[1][:, :2]], y, dates, **kw)
    with pytest.raises(DataError, match="increasing"):
        TaskSampler(X, y, [dates[0], dates[1][::-1]], **kw)
    with pytest.raises(ConfigError, match="start"):
        TaskSampler(X, y, dates, start="not a date", **kw)
    with pytest.raises(ConfigError, match="before end"):
        TaskSampler(X, y, dates, start="2001-06-01", end="2001-06-01", **kw)
    sampler = TaskSampler(X, y, dates, **kw)
    with pytest.raises(ConfigError, match="default_rng"):
        sampler.sample(4, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        sampler.sample(0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="from_frames"):
        TaskSampler.from_frames({}, FeatureSpec(), support=5, query=5)


# ---------------------------------------------------------------- pooled (cross-sectional) tasks
POOL_STARTS = ["2001-01-01", "2001-01-01", "2001-06-01"]  # the third asset starts late


def pooled_encoded(lengths=(300, 200, 220), warmup=20, horizon=H):
    """Three assets on business days: asset1 ends early, asset2 starts late.

    X[:, 0] = row index, X[:, 1] = asset id; y = 1000 * asset + row + 0.25 (unique per row);
    NaN features in the first ``warmup`` rows and NaN labels in the last ``horizon``.
    """
    X, y, dates = [], [], []
    for i, n in enumerate(lengths):
        x = np.column_stack([np.arange(n), np.full(n, i), np.zeros(n)]).astype(np.float32)
        x[:warmup] = np.nan
        lab = (1000 * i + np.arange(n) + 0.25).astype(np.float32)
        lab[n - horizon :] = np.nan
        X.append(x)
        y.append(lab)
        dates.append(pd.bdate_range(POOL_STARTS[i], periods=n))
    return X, y, dates


def pooled_rows(xs, xq):
    """(asset, row) pairs of support and query rows: 2 x (B, rows) int arrays each."""
    xs, xq = xs.numpy(), xq.numpy()
    return (xs[..., 1].astype(int), xs[..., 0].astype(int)), (
        xq[..., 1].astype(int),
        xq[..., 0].astype(int),
    )


def test_pooled_query_starts_horizon_dates_after_support_and_labels_are_realised():
    X, y, dates = pooled_encoded()
    sampler = PooledTaskSampler(
        X, y, dates, support=10, query=4, horizon=H, support_rows=12, query_rows=5
    )
    calendar = dates[0].union(dates[1]).union(dates[2])
    windows = sampler.windows
    assert len(windows) == sampler.n_tasks > 50
    for w in windows.itertuples():
        gap = calendar.get_loc(w.query_start) - calendar.get_loc(w.support_end)
        assert gap == H  # the deployment gap, on the union calendar
        support, query = sampler.pools(w.anchor)
        for rows, lo, hi in (
            (support, w.support_start, w.support_end),
            (query, w.query_start, w.query_end),
        ):
            assert len(rows)
            assert np.isfinite(sampler._X[rows]).all() and np.isfinite(sampler._y[rows]).all()
            for r in rows:
                asset, row = int(sampler._X[r, 1]), int(sampler._X[r, 0])
                assert lo <= dates[asset][row] <= hi
                realised = dates[asset][row + H]  # the label's bar exists and ...
                if r in support:  # ... every support label is realised by the query start
                    assert realised <= w.query_start
    xs, ys, xq, yq = sampler.fixed(sampler.n_tasks)
    assert xs.shape == (sampler.n_tasks, 12, 3) and xq.shape == (sampler.n_tasks, 5, 3)
    assert torch.isfinite(ys).all() and torch.isfinite(yq).all()
    (sa, sr), (qa, qr) = pooled_rows(xs, xq)
    np.testing.assert_array_equal(ys.numpy(), 1000 * sa + sr + 0.25)  # labels travel with rows
    np.testing.assert_array_equal(yq.numpy(), 1000 * qa + qr + 0.25)


def test_pooled_window_count_matches_definition():
    X, y, dates = pooled_encoded()
    S, Q, ks, kq = 10, 4, 15, 6
    sampler = PooledTaskSampler(
        X, y, dates, support=S, query=Q, horizon=H, support_rows=ks, query_rows=kq
    )
    calendar = dates[0].union(dates[1]).union(dates[2])
    per_date = np.zeros(len(calendar), dtype=int)  # usable rows per union date, by definition
    for x, lab, d in zip(X, y, dates):
        pos = calendar.get_indexer(d)
        for s in range(len(d) - H):
            regular = pos[s + H] == pos[s] + H
            per_date[pos[s]] += bool(np.isfinite(x[s]).all() and np.isfinite(lab[s]) and regular)
    span = S - 1 + H + Q
    expected = [
        a
        for a in range(len(calendar) - span - H + 1)  # the last query date is realised
        if per_date[a : a + S].sum() >= ks
        and per_date[a + S - 1 + H : a + S - 1 + H + Q].sum() >= kq
    ]
    np.testing.assert_array_equal(sampler.windows["anchor"], expected)
    # before asset2 starts and after asset1 ends, windows have fewer rows but still exist
    late = pd.Timestamp(POOL_STARTS[2])
    assert (sampler.windows["query_end"] < late).any()
    assert (sampler.windows["support_start"] > dates[1][-1]).any()
    assert sampler.rows_per_asset["asset1"] < sampler.rows_per_asset["asset0"]


def test_pooled_demean_subtracts_the_dates_cross_sectional_mean():
    X, y, dates = pooled_encoded()
    plain = PooledTaskSampler(X, y, dates, support=10, query=4, horizon=H)
    demeaned = PooledTaskSampler(X, y, dates, support=10, query=4, horizon=H, demean=True)
    checked = 0
    for a in demeaned.windows["anchor"][::7]:
        for rows in demeaned.pools(int(a)):
            day = np.searchsorted(demeaned._calendar, demeaned._calendar[demeaned._u[rows]])
            for t in np.unique(day):
                on_day = rows[day == t]
                assert len(on_day) >= 2  # a lone row has no cross-section to demean against
                np.testing.assert_allclose(demeaned._y[on_day].sum(), 0, atol=1e-3)
                raw = plain._y[on_day]
                np.testing.assert_allclose(demeaned._y[on_day], raw - raw.mean(), atol=1e-3)
                checked += 1
    assert checked > 100


def test_pooled_split_and_determinism_and_errors():
    X, y, dates = pooled_encoded()
    kw = {"support": 10, "query": 4, "horizon": H, "support_rows": 8, "query_rows": 4}
    sampler = PooledTaskSampler(X, y, dates, **kw)
    at = pd.Timestamp("2001-08-01")
    train, val = sampler.split(at)
    assert train.n_tasks + val.n_tasks < sampler.n_tasks
    assert train.date_range[1] < at  # every train label realised before the split
    assert (val.windows["support_start"] >= at).all()
    for u, v in zip(
        sampler.sample(16, np.random.default_rng(3)), sampler.sample(16, np.random.default_rng(3))
    ):
        assert torch.equal(u, v)
    for u, v in zip(sampler.fixed(20, seed=1), sampler.fixed(20, seed=1)):
        assert torch.equal(u, v)
    xs, _, _, _ = sampler.sample(16, np.random.default_rng(3))
    (sa, sr), _ = pooled_rows(xs, xs)
    assert all(len(set(zip(a, r))) == 8 for a, r in zip(sa, sr))  # drawn without replacement
    assert "PooledTaskSampler(" in repr(sampler)
    with pytest.raises(ConfigError, match=r"no valid pooled task.*support_rows"):
        PooledTaskSampler(X, y, dates, **{**kw, "support_rows": 31})  # 10 dates x 3 assets
    with pytest.raises(ConfigError, match="demean"):
        PooledTaskSampler(X, y, dates, **kw, demean="yes")
    with pytest.raises(ConfigError, match="query_rows"):
        PooledTaskSampler(X, y, dates, **{**kw, "query_rows": 0})
    with pytest.raises(DataError, match="one X, y and dates"):
        PooledTaskSampler(X, y[:2], dates, **kw)


def test_pooled_tasks_from_frames_train_a_meta_learner(frames):
    from metabt.learn.learner import MetaLearner
    from metabt.learn.models import MLP

    spec = FeatureSpec()
    tasks = PooledTaskSampler.from_frames(
        frames,
        spec,
        support=20,
        query=5,
        support_rows=30,
        query_rows=8,
        demean=True,
        end="2006-06-01",
    )
    assert tasks.date_range[1] < pd.Timestamp("2006-06-01")
    xs, _, _, yq = tasks.sample(4, np.random.default_rng(0))
    assert xs.shape == (4, 30, spec.n_features) and yq.shape == (4, 8)
    learner = MetaLearner(MLP(spec.n_features, (8,), seed=0), inner_steps=1, feature_spec=spec)
    result = learner.fit(tasks, 2, batch_size=4, progress=False)
    assert len(result.train_losses) == 2 and np.isfinite(result.train_losses).all()
