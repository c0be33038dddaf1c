"""_stats: the streaming and the vectorised trailing volatility agree; forward returns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metabt._stats import (
    RollingMoments,
    annual_turnover,
    forward_log_return,
    tail_stds,
    window_mask,
)


def test_rolling_moments_equal_the_two_pass_std_over_a_long_stream():
    """O(1) updates (with the periodic exact re-sum) stay equal to NumPy's two-pass std."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 0.01, 2000), np.full(200, 0.0), rng.normal(5, 1, 800)])
    windows = (5, 20, 60)
    moments = RollingMoments(windows)
    mask, n = window_mask(windows)
    for t, value in enumerate(values):
        moments.push(float(value))
        if t + 1 >= max(windows) and t % 37 == 0:
            expected = [np.std(values[t + 1 - w : t + 1], ddof=1) for w in windows]
            # a flat stretch after moves leaves ~1e-9 of cancellation error (features floor at 1e-6)
            np.testing.assert_allclose(moments.stds(), expected, rtol=1e-9, atol=1e-8)
            window = values[t + 1 - max(windows) : t + 1]
            np.testing.assert_allclose(tail_stds(window, mask, n), expected, rtol=1e-12)
    assert moments.count == len(values)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=80), st.integers(2, 10))
def test_tail_stds_is_the_std_of_the_last_w_values(values, w):
    r = np.asarray(values)
    if len(r) < w:
        return
    mask, n = window_mask((w,))
    got = tail_stds(r[-w:], mask, n)[0]
    assert got == pytest.approx(np.std(r[-w:], ddof=1), rel=1e-9, abs=1e-9)
    assert tail_stds(r[-w:], mask, n, floor=1e6)[0] == 1e6  # the floor bounds it below


def test_forward_log_return_is_realised_h_bars_later():
    close = np.array([100.0, 110.0, 121.0, 133.1])
    out = forward_log_return(close, 2)
    np.testing.assert_allclose(out[:2], [math.log(1.21), math.log(1.21)])
    assert np.isnan(out[2:]).all()  # not yet realised
    assert np.isnan(forward_log_return(close[:2], 2)).all()


def test_annual_turnover_by_hand():
    # 504 bars = 2 years; 4x average equity traded -> 2x a year
    assert annual_turnover(400_000.0, 100_000.0, 504, 252) == pytest.approx(2.0)
    assert annual_turnover(1.0, 1.0, 0, 252) == 252.0  # at least one bar
