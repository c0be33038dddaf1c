"""FeatureSpec and stack_window: causality, offline == online, labels, invariances, config."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import gbm_frame

from metabt.errors import ConfigError, DataError
from metabt.features.spec import FeatureSpec, OnlineFeatures, stack_window

COLS = ["open", "high", "low", "close", "volume"]


def columns(frame: pd.DataFrame) -> list[np.ndarray]:
    return [frame[c].to_numpy(dtype=np.float64) for c in COLS]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return gbm_frame(400, seed=7)


SPECS = [
    FeatureSpec(),
    # volume window is the longest window; no momentum; 1 lag; unscaled label
    FeatureSpec(
        horizon=2,
        lags=1,
        vol_windows=(3,),
        mom_windows=(),
        norm_window=10,
        volume_window=30,
        scale_label=False,
    ),
    FeatureSpec(horizon=10, lags=8, vol_windows=(), mom_windows=(2, 40), norm_window=25, clip=2.5),
]


def pandas_reference(frame: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """The documented features written independently with pandas rolling windows."""
    c = frame["close"]
    r = np.log(c).diff()
    vol = r.rolling(spec.norm_window).std().clip(lower=1e-6)
    cols = [r.shift(k) / vol for k in range(spec.lags)]
    cols += [np.log(r.rolling(w).std().clip(lower=1e-6) / vol) for w in spec.vol_windows]
    cols += [np.log(c / c.shift(w)) / (vol * math.sqrt(w)) for w in spec.mom_windows]
    cols.append(np.log(frame["high"] / frame["low"]) / vol)
    lv = np.log1p(frame["volume"])
    roll = lv.rolling(spec.volume_window)
    cols.append((lv - roll.mean()) / roll.std())
    out = pd.concat(cols, axis=1).to_numpy()
    return np.clip(out, -spec.clip, spec.clip)


# ---------------------------------------------------------------- description and shapes
def test_default_spec_description():
    spec = FeatureSpec()
    assert spec.n_features == len(spec.names) == 12
    assert len(set(spec.names)) == spec.n_features
    assert spec.names[:5] == [f"ret_lag{k}" for k in range(5)]
    assert spec.names[-2:] == ["range", "volume_z"]
    assert spec.lookback == 61  # 60 returns of vol_norm and C_{t-60} of mom_60


@pytest.mark.parametrize("spec", SPECS, ids=["default", "short", "long"])
def test_transform_shape_dtype_and_warmup(frame, spec):
    X = spec.transform(frame)
    assert X.shape == (len(frame), spec.n_features)
    assert X.dtype == np.float32
    nan_rows = np.isnan(X).any(axis=1)
    assert nan_rows.sum() == spec.lookback - 1
    assert np.isnan(X[: spec.lookback - 1]).all()
    assert np.isfinite(X[spec.lookback - 1 :]).all()
    assert np.abs(X[spec.lookback - 1 :]).max() <= spec.clip


def test_transform_short_frames_are_all_nan(frame):
    spec = FeatureSpec()
    assert np.isnan(spec.transform(frame.iloc[: spec.lookback - 1])).all()
    assert spec.transform(frame.iloc[:0]).shape == (0, spec.n_features)
    assert np.isfinite(spec.transform(frame.iloc[: spec.lookback])[-1]).all()


@pytest.mark.parametrize("spec", SPECS, ids=["default", "short", "long"])
def test_matches_independent_pandas_reference(frame, spec):
    X = spec.transform(frame)
    ref = pandas_reference(frame, spec)
    rows = slice(spec.lookback - 1, None)
    np.testing.assert_allclose(X[rows], ref[rows], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- offline == online
@pytest.mark.parametrize("spec", SPECS, ids=["default", "short", "long"])
def test_transform_equals_transform_window_on_every_row(frame, spec):
    X = spec.transform(frame)
    o, h, lo, c, v = columns(frame)
    for t in range(spec.lookback - 1, len(frame)):
        # the whole history up to t (only the last `lookback` bars may matter) ...
        row = spec.transform_window(o[: t + 1], h[: t + 1], lo[: t + 1], c[: t + 1], v[: t + 1])
        assert row.dtype == np.float32 and row.shape == (spec.n_features,)
        np.testing.assert_allclose(row, X[t], rtol=1e-6, atol=1e-6, err_msg=f"row {t}")
        # ... and exactly `lookback` bars give the same row
        k = t + 1 - spec.lookback
        short = spec.transform_window(
            o[k : t + 1], h[k : t + 1], lo[k : t + 1], c[k : t + 1], v[k : t + 1]
        )
        np.testing.assert_array_equal(short, row)


@pytest.mark.parametrize("spec", SPECS, ids=["default", "short", "long"])
def test_online_features_equal_transform_over_a_long_history(spec):
    # 2,600 bars: more than one exact re-summation of the rolling moments (every 1,024
    # values); a flat-price stretch (zero volatility, the floor) and a 50x level jump
    frame = gbm_frame(2600, seed=3)
    frame.iloc[1500:1600, :4] = frame["close"].iloc[1499]
    frame.iloc[1800:, :4] *= 50.0
    X = spec.transform(frame)
    scale = spec.label_scale(frame)
    online = OnlineFeatures(spec)
    _, h, lo, c, v = columns(frame)
    for t in range(len(frame)):
        row, s = online.update(h[t], lo[t], c[t], v[t])
        if t < spec.lookback - 1:
            assert row is None and math.isnan(s)
            continue
        assert row is not None
        np.testing.assert_allclose(row, X[t], rtol=1e-5, atol=1e-5, err_msg=f"row {t}")
        assert math.isclose(s, scale[t], rel_tol=1e-9), t


specs = st.builds(
    FeatureSpec,
    horizon=st.integers(1, 10),
    lags=st.integers(1, 8),
    vol_windows=st.lists(st.integers(2, 30), max_size=3, unique=True).map(tuple),
    mom_windows=st.lists(st.integers(2, 40), max_size=3, unique=True).map(tuple),
    norm_window=st.integers(2, 40),
    volume_window=st.integers(2, 30),
    clip=st.floats(0.5, 10.0),
    scale_label=st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(spec=specs, seed=st.integers(0, 2**16), extra=st.integers(0, 30))
def test_last_row_equals_transform_window_for_any_spec(spec, seed, extra):
    frame = gbm_frame(spec.lookback + extra, seed)
    X = spec.transform(frame)
    assert X.shape == (len(frame), spec.n_features)
    row = spec.transform_window(*columns(frame))
    np.testing.assert_allclose(row, X[-1], rtol=1e-6, atol=1e-6)
    assert np.isnan(X[: spec.lookback - 1]).all() and np.isfinite(X[spec.lookback - 1 :]).all()
    c = frame["close"].to_numpy()
    assert spec.scale_window(c) == pytest.approx(spec.label_scale(frame)[-1], rel=1e-12)


# ---------------------------------------------------------------- causality
@settings(max_examples=40, deadline=None)
@given(k=st.integers(0, 199), seed=st.integers(0, 2**16))
def test_changing_bars_after_k_leaves_past_rows_unchanged(k, seed):
    spec = FeatureSpec()
    base = gbm_frame(200, seed=1)
    other = gbm_frame(200, seed=seed + 2, price=55.0)
    changed = base.copy()
    changed.iloc[k + 1 :] = other.iloc[k + 1 :].to_numpy()
    X0, X1 = spec.transform(base), spec.transform(changed)
    np.testing.assert_array_equal(X0[: k + 1], X1[: k + 1])
    if k + 1 < len(base) and k + 1 >= spec.lookback - 1:
        assert not np.array_equal(X0[k + 1 :], X1[k + 1 :])  # the change is visible later
    s0, s1 = spec.label_scale(base), spec.label_scale(changed)
    np.testing.assert_array_equal(s0[: k + 1], s1[: k + 1])
    y0, y1 = spec.labels(base), spec.labels(changed)
    known = max(k - spec.horizon + 1, 0)  # labels of bars s <= k - horizon are realised by k
    np.testing.assert_array_equal(y0[:known], y1[:known])
    if k + 1 < len(base):
        assert not np.array_equal(y0[known:], y1[known:], equal_nan=True)


# ---------------------------------------------------------------- labels
def test_unscaled_labels_are_forward_log_returns(frame):
    spec = FeatureSpec(horizon=3, scale_label=False)
    y = spec.labels(frame)
    c = frame["close"].to_list()
    assert y.dtype == np.float32 and y.shape == (len(frame),)
    assert np.isnan(y[-3:]).all()
    expected = [math.log(c[t + 3] / c[t]) for t in range(len(c) - 3)]
    np.testing.assert_allclose(y[:-3], expected, rtol=1e-6, atol=1e-9)
    assert (spec.label_scale(frame) == 1.0).all()
    assert spec.scale_window(frame["close"].to_numpy()[-2:]) == 1.0


def test_scaled_labels_divide_by_causal_volatility(frame):
    spec = FeatureSpec(horizon=4, norm_window=20, label_clip=None)
    y = spec.labels(frame)
    c = frame["close"].to_numpy()
    r = np.diff(np.log(c))  # r[t-1] is the return of bar t
    assert np.isnan(y[:20]).all() and np.isnan(y[-4:]).all()
    for t in range(20, len(c) - 4):
        scale = np.std(r[t - 20 : t], ddof=1) * math.sqrt(4)  # returns of bars t-19 .. t
        expected = math.log(c[t + 4] / c[t]) / scale
        assert y[t] == pytest.approx(expected, rel=1e-6), t
    scale = spec.label_scale(frame)
    online = [spec.scale_window(c[: t + 1]) for t in range(20, len(c))]
    np.testing.assert_allclose(scale[20:], online, rtol=1e-12)
    assert np.isnan(scale[:20]).all()


def test_labels_are_winsorised_at_label_clip(frame):
    raw = FeatureSpec(horizon=4, norm_window=20, label_clip=None).labels(frame)
    clipped = FeatureSpec(horizon=4, norm_window=20, label_clip=1.0).labels(frame)
    ok = np.isfinite(raw)
    assert (np.abs(raw[ok]) > 1.0).any()  # the clip binds somewhere on this data
    np.testing.assert_array_equal(clipped[ok], np.clip(raw[ok], -1.0, 1.0))
    assert np.array_equal(np.isnan(raw), np.isnan(clipped))
    with pytest.raises(ConfigError, match="label_clip"):
        FeatureSpec(label_clip=0.0)
    # checkpoints written before label_clip existed trained on unclipped labels
    old = FeatureSpec().to_dict()
    del old["label_clip"]
    assert FeatureSpec.from_dict(old).label_clip is None


# ---------------------------------------------------------------- invariances and edges
def test_features_invariant_to_price_and_volume_scale(frame):
    spec = FeatureSpec()
    scaled = frame.copy()
    scaled[["open", "high", "low", "close"]] *= 37.5
    scaled["volume"] *= 1000.0
    X0, X1 = spec.transform(frame), spec.transform(scaled)
    rows = slice(spec.lookback - 1, None)
    price = slice(0, spec.n_features - 1)
    np.testing.assert_allclose(X1[rows, price], X0[rows, price], rtol=1e-5, atol=1e-5)
    # log1p(k v) = log(k) + log(v) + O(1 / v): invariant up to ~1e-6 for share volumes
    np.testing.assert_allclose(X1[rows, -1], X0[rows, -1], atol=1e-4)
    np.testing.assert_allclose(spec.labels(scaled), spec.labels(frame), rtol=1e-5, atol=1e-6)


def test_flat_prices_and_volume_give_finite_features():
    spec = FeatureSpec()
    n = 100
    flat = pd.DataFrame(
        {"open": 10.0, "high": 10.0, "low": 10.0, "close": 10.0, "volume": 5000.0},
        index=pd.bdate_range("2020-01-01", periods=n),
    )
    X = spec.transform(flat)[spec.lookback - 1 :]
    assert np.isfinite(X).all()
    assert (X == 0).all()  # no return, no range, volume std 0 -> z-score 0
    y = spec.labels(flat)
    assert (y[spec.norm_window : -spec.horizon] == 0).all()  # scale floored at 1e-6, not 0


def test_features_are_clipped(frame):
    spec = FeatureSpec(clip=3.0)
    jumped = frame.copy()
    jumped.iloc[200:, :4] *= 4.0  # a 300% overnight jump at bar 200
    X = spec.transform(jumped)
    assert np.nanmax(np.abs(X)) == pytest.approx(3.0)
    assert X[200, spec.names.index("ret_lag0")] == pytest.approx(3.0)


# ---------------------------------------------------------------- stack_window
def test_stack_window_rows_are_consecutive_feature_rows():
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    S = stack_window(X, 4)
    assert S.shape == (10, 12) and S.dtype == np.float32
    assert np.isnan(S[:3]).all()
    for t in range(3, 10):
        np.testing.assert_array_equal(S[t], np.concatenate([X[t - 3], X[t - 2], X[t - 1], X[t]]))
    assert stack_window(X, 1) is X
    assert np.isnan(stack_window(X, 11)).all()
    np.testing.assert_array_equal(stack_window(X.astype(np.float64), 1), X)


@pytest.mark.parametrize("window", [0, -1, 2.0, True, "3"])
def test_stack_window_rejects_bad_window(window):
    with pytest.raises(ConfigError, match="window"):
        stack_window(np.zeros((5, 2)), window)


def test_stack_window_rejects_non_2d():
    with pytest.raises(DataError, match="2-D"):
        stack_window(np.zeros(5), 2)


# ---------------------------------------------------------------- configuration
def test_to_dict_from_dict_round_trip():
    spec = FeatureSpec(
        horizon=3,
        lags=2,
        vol_windows=(4,),
        mom_windows=(),
        norm_window=30,
        volume_window=10,
        clip=4.0,
        scale_label=False,
    )
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["vol_windows"] == [4] and d["mom_windows"] == []
    again = FeatureSpec.from_dict(d)
    assert again == spec and hash(again) == hash(spec)
    assert isinstance(again.vol_windows, tuple)
    # missing keys take the defaults, except label_clip: a spec written before it existed
    assert FeatureSpec.from_dict({}) == FeatureSpec(label_clip=None)
    assert FeatureSpec.from_dict(FeatureSpec().to_dict()) == FeatureSpec()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"horizon": 0},
        {"horizon": 2.5},
        {"horizon": True},
        {"lags": 0},
        {"vol_windows": (1,)},
        {"vol_windows": "5"},
        {"vol_windows": 5},
        {"mom_windows": (5, 5)},
        {"mom_windows": (5, 0)},
        {"norm_window": 1},
        {"volume_window": 1},
        {"clip": 0.0},
        {"clip": -1.0},
        {"clip": float("nan")},
        {"clip": float("inf")},
        {"clip": "5"},
        {"scale_label": "yes"},
        {"scale_label": 1},
    ],
)
def test_bad_values_raise_config_error(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        FeatureSpec(**kwargs)
    with pytest.raises(ConfigError, match=name):
        FeatureSpec.from_dict({**FeatureSpec().to_dict(), **kwargs})


def test_unknown_key_raises_with_hint():
    with pytest.raises(ConfigError, match=r"'horizn'.*did you mean 'horizon'"):
        FeatureSpec.from_dict({"horizn": 5})
    with pytest.raises(ConfigError, match="dict"):
        FeatureSpec.from_dict([("horizon", 5)])  # type: ignore[arg-type]


def test_spec_is_frozen():
    spec = FeatureSpec()
    with pytest.raises(AttributeError):
        spec.horizon = 3  # type: ignore[misc]


# ---------------------------------------------------------------- input errors
def test_bad_frames_raise_data_error(frame):
    spec = FeatureSpec()
    with pytest.raises(DataError, match="volume"):
        spec.transform(frame.drop(columns="volume"))
    bad = frame.copy()
    bad.iloc[10, bad.columns.get_loc("close")] = 0.0
    with pytest.raises(DataError, match=r"close.*row 10"):
        spec.labels(bad)
    bad = frame.copy()
    bad.iloc[3, bad.columns.get_loc("volume")] = -1.0
    with pytest.raises(DataError, match="volume"):
        spec.transform(bad)
    with pytest.raises(DataError, match="DataFrame"):
        spec.transform(frame.to_numpy())  # type: ignore[arg-type]


def test_bad_windows_raise_data_error(frame):
    spec = FeatureSpec()
    o, h, lo, c, v = columns(frame)
    n = spec.lookback - 1
    with pytest.raises(DataError, match="lookback=61"):
        spec.transform_window(o[:n], h[:n], lo[:n], c[:n], v[:n])
    with pytest.raises(DataError, match="equal length"):
        spec.transform_window(o, h, lo, c, v[:-1])
    with pytest.raises(DataError, match="norm_window"):
        spec.scale_window(c[:60])
