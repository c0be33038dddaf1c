"""TaskSampler's excluded spans (CPCV's test groups): no task reads a bar inside one.

The proof is a perturbation: every price inside the excluded spans (and only there) is
changed, and every task the sampler can produce (all of them, with and without the P&L
extras and a stacked window) is the same bit for bit; the tasks after the spans are used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import gbm_frame, perturbed_inside

from metabt.errors import ConfigError
from metabt.features.spec import FeatureSpec
from metabt.features.tasks import TaskSampler

SPANS = (
    (pd.Timestamp("2001-03-01"), pd.Timestamp("2001-04-15")),
    (pd.Timestamp("2001-09-03"), pd.Timestamp("2001-10-01")),
)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {
        "A": gbm_frame(500, seed=1, start="2000-06-01"),
        "B": gbm_frame(450, seed=2, start="2000-08-01"),
    }


def perturbed(frames, spans):
    """The frames with every bar inside ``spans`` (both ends, volume too) scaled by a
    random factor in [0.5, 1.5)."""
    return perturbed_inside(frames, spans, seed=7, low=0.5, high=1.5, volume=True)


def every_task(sampler):
    return sampler.fixed(sampler.n_tasks, seed=0)


def same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for key in x:
                assert torch.equal(x[key], y[key]), key
        else:
            assert torch.equal(x, y)


@pytest.mark.parametrize(
    "options",
    [{}, {"extras": True, "bars_per_year": 252.0}, {"window": 3}],
    ids=["plain", "extras", "window3"],
)
def test_prices_inside_the_excluded_spans_change_no_task(frames, options):
    spec = FeatureSpec(horizon=5)
    kwargs = dict(support=20, query=5, end="2002-06-01", exclude=SPANS, **options)
    clean = TaskSampler.from_frames(frames, spec, **kwargs)
    moved = TaskSampler.from_frames(perturbed(frames, SPANS), spec, **kwargs)
    np.testing.assert_array_equal(clean._anchors, moved._anchors)
    same(every_task(clean), every_task(moved))
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    same(clean.sample(16, rng_a), moved.sample(16, rng_b))
    # the perturbation is real: without the exclusion the tasks differ
    base = {k: v for k, v in kwargs.items() if k != "exclude"}
    a = TaskSampler.from_frames(frames, spec, **base)
    b = TaskSampler.from_frames(perturbed(frames, SPANS), spec, **base)
    assert not torch.equal(every_task(a)[0], every_task(b)[0])
    # fewer tasks, but those after and between the spans are still used
    assert 0 < clean.n_tasks < a.n_tasks
    first_row = clean._dates[clean._anchors]
    assert (first_row > SPANS[-1][1].value).any()
    assert ((first_row > SPANS[0][1].value) & (first_row < SPANS[1][0].value)).any()
    # and the split keeps the exclusion on both sides
    train, val = clean.split("2001-12-01")
    assert set(train._anchors) | set(val._anchors) <= set(clean._anchors)


def test_no_exclusion_is_todays_sampler(frames):
    spec = FeatureSpec(horizon=5)
    kwargs = dict(support=20, query=5, end="2002-06-01", extras=True, bars_per_year=252.0)
    a = TaskSampler.from_frames(frames, spec, **kwargs)
    b = TaskSampler.from_frames(frames, spec, exclude=(), **kwargs)
    np.testing.assert_array_equal(a._anchors, b._anchors)
    same(every_task(a), every_task(b))
    assert b.exclude == () and b.lookback == 0


def test_a_task_next_to_a_span_is_dropped_exactly_when_it_reads_it(frames):
    """Brute force on one asset: a task is kept iff no bar its rows read is excluded."""
    spec = FeatureSpec(horizon=5)
    one = {"A": frames["A"]}
    S, Q, h = 20, 5, spec.horizon
    full = TaskSampler.from_frames(one, spec, support=S, query=Q, end="2002-06-01")
    cut = TaskSampler.from_frames(one, spec, support=S, query=Q, end="2002-06-01", exclude=SPANS)
    dates = one["A"].index
    bad = np.zeros(len(dates), dtype=bool)
    for first, last in SPANS:
        bad |= (dates >= first) & (dates <= last)
    back = max(spec.lookback - 1, spec.norm_window)
    expected = []
    for a in full._anchors:
        rows = list(range(a, a + S)) + list(range(a + S - 1 + h, a + S - 1 + h + Q))
        if not any(bad[max(r - back, 0) : r + h + 1].any() for r in rows):
            expected.append(a)
    np.testing.assert_array_equal(cut._anchors, expected)


def test_bad_spans_are_refused(frames):
    spec = FeatureSpec(horizon=5)
    with pytest.raises(ConfigError, match="first <= last"):
        TaskSampler.from_frames(
            frames, spec, support=20, query=5, exclude=(("2001-05-01", "2001-04-01"),)
        )
    with pytest.raises(ConfigError, match="date pairs"):
        TaskSampler.from_frames(frames, spec, support=20, query=5, exclude=("2001-05-01",))
