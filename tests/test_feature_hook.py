"""The feature hook: registered feature functions, subclasses, records and check_causal."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import gbm_frame

import metabt.features.hooks as feature_hook
from metabt.errors import ConfigError, DataError
from metabt.features.spec import (
    FeatureRef,
    FeatureSpec,
    OnlineFeatures,
    WindowedOnline,
    check_causal,
    register_feature,
    registered_features,
)

ROOT = Path(__file__).resolve().parents[1]
RSI = "examples.rsi_feature:rsi"


# ---------------------------------------------------------------- features of this module
@register_feature("test_turnover_z", lookback=lambda window=10: window, columns=("turnover",))
def turnover_z(turnover: np.ndarray, window: int = 10) -> np.ndarray:
    """z-score of the last turnover among the window (an extra numeric column)."""
    w = turnover[..., -window:]
    sd = w.std(axis=-1)
    return np.divide(w[..., -1] - w.mean(axis=-1), sd, out=np.zeros_like(sd), where=sd > 0)


@register_feature("test_gap", lookback=2, columns=("open", "close"))
def gap(open_: np.ndarray, close: np.ndarray, *, scale: float = 100.0) -> np.ndarray:
    """Overnight gap log(O_t / C_{t-1}) times ``scale``."""
    return scale * np.log(open_[..., -1] / close[..., -2])


@register_feature("test_huge", lookback=3, columns=("close",))
def huge(close: np.ndarray) -> np.ndarray:
    return 1e6 * np.log(close[..., -1] / close[..., -3])


@register_feature("test_nan_after", lookback=3, columns=("close",))
def nan_after(close: np.ndarray, limit: float = 1e9) -> np.ndarray:
    """NaN where the close exceeds ``limit``: a feature that breaks past its warm-up."""
    return np.where(close[..., -1] > limit, np.nan, 0.0)


@register_feature("test_bad_shape", lookback=3, columns=("close",))
def bad_shape(close: np.ndarray) -> np.ndarray:
    return close  # the whole window instead of its last value


# ---------------------------------------------------------------- spec subclasses
@dataclass(frozen=True)
class RangeSpec(FeatureSpec):
    """Adds the 10-bar high-low range (log) in vol_norm units: a causal subclass."""

    range_window: int = 10

    @property
    def base_names(self) -> list[str]:
        return [*super().base_names, f"range_{self.range_window}"]

    def _rows(self, h, lo, c, v):
        base = super()._rows(h, lo, c, v)
        n = self.range_window
        span = np.log(h[..., -n:].max(axis=-1) / lo[..., -n:].min(axis=-1))
        vn = np.std(np.diff(np.log(c[..., -(self.norm_window + 1) :]), axis=-1), axis=-1, ddof=1)
        extra = np.clip(span / np.maximum(vn, 1e-6) / 10.0, -self.clip, self.clip)
        return np.concatenate([base, extra[..., None].astype(np.float32)], axis=-1)


@dataclass(frozen=True)
class LegacySpec(FeatureSpec):
    """A subclass written the old way: overrides names and n_features, not base_names."""

    @property
    def names(self) -> list[str]:
        return [*super().names, "close_level"]

    @property
    def n_features(self) -> int:
        return super().n_features + 1

    def _rows(self, h, lo, c, v):
        base = super()._rows(h, lo, c, v)
        return np.concatenate([base, np.zeros((*base.shape[:-1], 1), np.float32)], axis=-1)


@dataclass(frozen=True)
class PeekingSpec(FeatureSpec):
    """LEAKS: transform puts the next bar's return into ret_lag0."""

    def transform(self, frame):
        X = super().transform(frame)
        c = frame["close"].to_numpy()
        X[:-1, 0] = np.log(c[1:] / c[:-1]) * 50.0
        return X


@dataclass(frozen=True)
class CentredSpec(FeatureSpec):
    """LEAKS: a centred 5-bar mean of closes (relative to the close) as the last feature."""

    def transform(self, frame):
        X = super().transform(frame)
        c = frame["close"]
        centred = c.rolling(5, center=True, min_periods=1).mean() / c - 1.0
        X[:, -1] = (100.0 * centred).to_numpy(dtype=np.float32)
        return X


@dataclass(frozen=True)
class DoubledSpec(FeatureSpec):
    """Causal but inconsistent: transform doubles the rows, the online path does not."""

    def transform(self, frame):
        return super().transform(frame) * 2.0


@dataclass(frozen=True)
class WideRowsSpec(FeatureSpec):
    """Broken: _rows returns one column more than base_names lists."""

    def _rows(self, h, lo, c, v):
        base = super()._rows(h, lo, c, v)
        return np.concatenate([base, base[..., :1]], axis=-1)


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(autouse=True)
def examples_importable(monkeypatch, trusting):
    """The repository root on sys.path, so ``examples.rsi_feature`` imports; these tests
    name it by path, so they trust it (as a user passing --trust examples would)."""
    monkeypatch.syspath_prepend(str(ROOT))
    trusting("examples")
    importlib.import_module("examples.rsi_feature")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return gbm_frame(400, seed=11)


def with_turnover(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    out = frame.copy()
    out["turnover"] = np.random.default_rng(seed).lognormal(0.0, 0.4, len(frame))
    return out


def feed(online, frame: pd.DataFrame, extra_cols=()):
    """Rows and scales of an online computer fed the frame bar by bar."""
    o, h, lo, c, v = (frame[k].to_numpy(dtype=np.float64) for k in feature_hook.COLUMNS)
    extra = {k: frame[k].to_numpy(dtype=np.float64) for k in extra_cols}
    rows, scales = [], []
    for t in range(len(frame)):
        row, s = online.update(
            h[t], lo[t], c[t], v[t], open=o[t], extra={k: x[t] for k, x in extra.items()}
        )
        rows.append(row)
        scales.append(s)
    return rows, scales


def assert_online_equals_offline(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    X, scale = spec.transform(frame), spec.label_scale(frame)
    rows, scales = feed(spec.online(), frame, spec.columns)
    for t, (row, s) in enumerate(zip(rows, scales)):
        if t < spec.lookback - 1:
            assert row is None and math.isnan(s)
            continue
        assert row is not None and row.dtype == np.float32 and row.shape == (spec.n_features,)
        np.testing.assert_allclose(row, X[t], rtol=1e-5, atol=1e-5, err_msg=f"row {t}")
        assert s == pytest.approx(scale[t], rel=1e-9)


# ---------------------------------------------------------------- registry and references
def test_register_returns_the_function_and_records_it():
    rsi = importlib.import_module("examples.rsi_feature").rsi
    feature = registered_features()["rsi"]
    assert feature.func is rsi and feature.columns == ("close",)
    assert feature.import_path == RSI
    assert (
        feature.window(feature.bind({})) == 15 and feature.window(feature.bind({"window": 3})) == 4
    )
    assert len(feature.source_sha256) == 64
    closes = np.array([[1.0, 2.0, 1.0, 2.0]])
    assert rsi(closes, window=3).shape == (1,)


def test_feature_ref_forms_are_equal_and_hashable():
    a = FeatureRef.parse(RSI)
    b = FeatureRef.parse("rsi")
    c = FeatureRef("rsi", {"window": 14})
    d = FeatureRef.parse(RSI + '{"window": 14}')
    e = FeatureRef.of(importlib.import_module("examples.rsi_feature").rsi)
    assert a == b == c == d == e and len({a, b, c, d, e}) == 1
    assert a.params == (("window", 14),) and a.kwargs == {"window": 14}
    assert a.label == "rsi(window=14)" and a.import_path == RSI
    ref = FeatureRef.parse(' rsi{"window": 21} ')
    assert ref.label == "rsi(window=21)"
    assert FeatureRef.parse(str(ref)) == ref  # str() is the parseable form
    assert FeatureRef.of(ref, window=5).kwargs == {"window": 5}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "text like"),
        ("rsii", r"no feature named 'rsii'.*did you mean 'rsi'"),
        ('rsi{"window": 21', "not valid JSON"),
        ("rsi[1, 2]", "no feature named"),
        ('rsi{"windw": 21}', r"no parameter 'windw'.*did you mean 'window'"),
        ('rsi{"window": 1}', "window must be an integer >= 2"),
        ('rsi{"window": [1, {"a": 2}]}', "JSON"),
        ("no_such_module_xyz:f", r"no_such_module_xyz.*PYTHONPATH"),
        ("examples.rsi_feature:nope", r"has no 'nope'"),
        ("examples.rsi_feature:_lookback", "not a registered feature"),
        ("json:dumps", "not a registered feature"),
    ],
)
def test_bad_feature_strings_raise_config_error(text, match, trusting):
    head = text.partition("{")[0]
    if ":" in head:  # the user's word that the module may be imported
        trusting(head.partition(":")[0])
    with pytest.raises(ConfigError, match=match):
        FeatureRef.parse(text)


def test_registration_errors():
    with pytest.raises(ConfigError, match="identifier"):
        register_feature("bad name", lookback=2)
    with pytest.raises(ConfigError, match="columns"):
        register_feature("x_cols", lookback=2, columns=())
    with pytest.raises(ConfigError, match="repeat"):
        register_feature("x_cols", lookback=2, columns=("close", "close"))
    with pytest.raises(ConfigError, match="one positional argument per column"):
        register_feature("x_args", lookback=2, columns=("high", "low"))(lambda high: high)
    with pytest.raises(ConfigError, match="lookback must be an integer >= 1"):
        register_feature("x_look", lookback=lambda n=0: n)(lambda close, n=0: close[..., -1])
    # the name 'rsi' belongs to examples.rsi_feature:rsi
    with pytest.raises(ConfigError, match=r"already registered by examples\.rsi_feature:rsi"):
        register_feature("rsi", lookback=2)(turnover_z)
    assert "x_look" not in registered_features()


# ---------------------------------------------------------------- spec with custom features
def test_with_features_names_lookback_and_transform(frame):
    base = FeatureSpec()
    spec = base.with_features(RSI, 'rsi{"window": 80}')
    assert spec.custom == (FeatureRef("rsi"), FeatureRef("rsi", {"window": 80}))
    assert spec.names == [*base.names, "rsi(window=14)", "rsi(window=80)"]
    assert spec.n_features == 14 and spec.lookback == 81  # the 80-change RSI reads 81 closes
    assert spec.columns == ()
    X = spec.transform(frame)
    assert X.shape == (len(frame), 14) and X.dtype == np.float32
    assert np.isnan(X[:80]).all() and np.isfinite(X[80:]).all()
    assert np.abs(X[80:, -2:]).max() <= 1.0
    # the built-in columns are unchanged (the warm-up is longer)
    np.testing.assert_array_equal(X[80:, :12], base.transform(frame)[80:])
    # the RSI column is Cutler's RSI, (RSI - 50) / 50, written out with pandas
    d = frame["close"].diff()
    gain = d.clip(lower=0).rolling(14).mean()
    loss = (-d).clip(lower=0).rolling(14).mean()
    expected = ((100 - 100 / (1 + gain / loss)) - 50) / 50
    np.testing.assert_allclose(X[80:, 12], expected.to_numpy()[80:], rtol=1e-5, atol=1e-6)
    # labels do not depend on custom features
    np.testing.assert_array_equal(spec.labels(frame), base.labels(frame))
    assert FeatureSpec(custom=(RSI,)) == base.with_features("rsi")
    assert FeatureSpec(custom=RSI).custom == (FeatureRef("rsi"),)


def test_custom_features_are_clipped_and_checked(frame):
    X = FeatureSpec(clip=2.0).with_features("test_huge").transform(frame)
    assert np.nanmax(np.abs(X[:, -1])) == 2.0
    with pytest.raises(
        ConfigError, match=r"lists \['test_nan_after\(limit=1000000000.0\)'\] twice"
    ):
        FeatureSpec().with_features(nan_after, FeatureRef.of(nan_after))
    close = frame["close"].to_numpy()
    limit = float(close[:150].max())  # first exceeded after the warm-up
    bad = FeatureSpec().with_features(FeatureRef.of(nan_after, limit=limit))
    t = int(np.argmax(close > limit))
    assert t >= 150
    with pytest.raises(DataError, match=rf"test_nan_after\(limit=.*\).*nan at bar {t} \("):
        bad.transform(frame)
    online = bad.online()
    with pytest.raises(DataError, match=rf"bar {t}:.*test_nan_after.*nan"):
        feed(online, frame)
    with pytest.raises(DataError, match=r"test_bad_shape.*returned shape \(\d+, 3\).*must return"):
        FeatureSpec().with_features("test_bad_shape").transform(frame)


def test_rsi_is_flat_zero_and_online_equals_offline(frame):
    flat = pd.DataFrame(
        {"open": 10.0, "high": 10.0, "low": 10.0, "close": 10.0, "volume": 5000.0},
        index=pd.bdate_range("2020-01-01", periods=100),
    )
    spec = FeatureSpec().with_features("rsi")
    assert (spec.transform(flat)[spec.lookback - 1 :, -1] == 0).all()
    online = spec.online()
    assert isinstance(online, WindowedOnline)
    assert_online_equals_offline(spec, frame)
    assert_online_equals_offline(spec, gbm_frame(700, seed=5))  # the ring buffer wraps


def test_extra_and_open_columns(frame):
    data = with_turnover(frame)
    spec = FeatureSpec().with_features("test_turnover_z", "test_gap")
    assert spec.columns == ("turnover",)
    assert spec.names[-2:] == ["test_turnover_z(window=10)", "test_gap(scale=100.0)"]
    X = spec.transform(data)
    assert np.isfinite(X[spec.lookback - 1 :]).all()
    o, c = data["open"].to_numpy(), data["close"].to_numpy()
    np.testing.assert_allclose(
        X[100:, -1], np.clip(100 * np.log(o[100:] / c[99:-1]), -5, 5), rtol=1e-5
    )
    assert_online_equals_offline(spec, data)
    with pytest.raises(DataError, match=r"data columns \['turnover'\] that are not declared"):
        check_causal(spec, data, points=3)
    check_causal(spec, data, points=3, known_at_bar=["turnover"])
    with pytest.raises(DataError, match=r"column 'turnover'.*lacks"):
        spec.transform(frame)
    online = spec.online()
    with pytest.raises(DataError, match=r"extra column\(s\) \['turnover'\]"):
        online.update(10.0, 9.0, 9.5, 1000.0, open=9.2)
    with pytest.raises(DataError, match="open price"):
        online.update(10.0, 9.0, 9.5, 1000.0, extra={"turnover": 1.0})
    row = spec.transform_window(
        *(data[k].to_numpy() for k in feature_hook.COLUMNS), extra={"turnover": data["turnover"]}
    )
    np.testing.assert_allclose(row, X[-1], rtol=1e-6, atol=1e-6)
    with pytest.raises(DataError, match="extra="):
        spec.transform_window(*(data[k].to_numpy() for k in feature_hook.COLUMNS))


def test_base_spec_keeps_the_fast_online_path():
    spec = FeatureSpec()
    assert type(spec.online()) is OnlineFeatures
    row, scale = spec.online().update(10.0, 9.0, 9.5, 1e6, open=9.1, extra={"x": 1.0})
    assert row is None and math.isnan(scale)
    with pytest.raises(ConfigError, match=r"spec\.online\(\)"):
        OnlineFeatures(spec.with_features("rsi"))
    with pytest.raises(ConfigError, match=r"spec\.online\(\)"):
        OnlineFeatures(RangeSpec())


# ---------------------------------------------------------------- records
def test_to_dict_from_dict_round_trip_with_custom_features(frame):
    spec = FeatureSpec(horizon=3).with_features('rsi{"window": 9}')
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["custom"] == [
        {
            "name": "rsi",
            "params": {"window": 9},
            "import_path": RSI,
            "sha256": registered_features()["rsi"].source_sha256,
        }
    ]
    again = FeatureSpec.from_dict(d)
    assert again == spec and hash(again) == hash(spec)
    np.testing.assert_array_equal(again.transform(frame), spec.transform(frame))
    # specs without custom features write and read the same dict as before
    assert "custom" not in FeatureSpec().to_dict() and "class" not in FeatureSpec().to_dict()
    old = FeatureSpec().to_dict()
    del old["label_clip"]
    assert FeatureSpec.from_dict(old) == FeatureSpec(label_clip=None)


def test_from_dict_imports_the_feature_module_afresh(monkeypatch):
    d = FeatureSpec().with_features("rsi").to_dict()
    registry = dict(feature_hook._REGISTRY)
    del registry["rsi"]
    monkeypatch.setattr(feature_hook, "_REGISTRY", registry)
    monkeypatch.delitem(sys.modules, "examples.rsi_feature")
    with pytest.raises(ConfigError, match="no feature named 'rsi'"):
        FeatureRef.parse("rsi")
    spec = FeatureSpec.from_dict(d)  # imports examples.rsi_feature, which registers rsi
    assert spec.names[-1] == "rsi(window=14)" and "rsi" in registry


def test_from_dict_in_a_fresh_interpreter(frame, tmp_path):
    spec = FeatureSpec().with_features('examples.rsi_feature:rsi{"window": 21}')
    path = tmp_path / "frame.csv"
    frame.to_csv(path)
    code = textwrap.dedent(
        f"""
        import json, sys
        from metabt.data.ohlcv import load_ohlcv
        from metabt.features.spec import FeatureSpec
        spec = FeatureSpec.from_dict(json.loads(sys.argv[1]))
        assert "examples.rsi_feature" in sys.modules
        print(json.dumps([spec.names, spec.transform(load_ohlcv({str(path)!r}))[-1].tolist()]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec.to_dict())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    names, row = json.loads(out.stdout)
    assert names == spec.names
    np.testing.assert_allclose(row, spec.transform(frame)[-1], rtol=1e-6)


def test_from_dict_refuses_missing_or_changed_features(tmp_path, monkeypatch, trusting):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(feature_hook, "_REGISTRY", dict(feature_hook._REGISTRY))
    monkeypatch.syspath_prepend(str(tmp_path))
    source = """
        import numpy as np
        from metabt.features.spec import register_feature

        @register_feature("tmp_mom", lookback=lambda n=5: n + 1)
        def tmp_mom(close, n=5):
            return np.log(close[..., -1] / close[..., -1 - n]) * {k}
    """
    module = tmp_path / "tmp_user_features.py"
    module.write_text(textwrap.dedent(source.format(k="10.0")))
    importlib.import_module("tmp_user_features")
    monkeypatch.delitem(sys.modules, "tmp_user_features")
    d = FeatureSpec().with_features("tmp_user_features:tmp_mom").to_dict()
    assert FeatureSpec.from_dict(d).names[-1] == "tmp_mom(n=5)"
    # the code changes: refuse, unless allow_changed
    module.write_text(textwrap.dedent(source.format(k="20.0 ")))
    importlib.invalidate_caches()
    sys.modules.pop("tmp_user_features", None)
    with pytest.raises(ConfigError, match=r"tmp_mom\(n=5\).*source code changed.*allow_changed"):
        FeatureSpec.from_dict(d)
    assert FeatureSpec.from_dict(d, allow_changed=True).names[-1] == "tmp_mom(n=5)"
    # parameters that no longer exist, a module that is gone
    bad = {**d, "custom": [{**d["custom"][0], "params": {"n": 5, "m": 1}}]}
    with pytest.raises(ConfigError, match=r"cannot be loaded.*no parameter 'm'"):
        FeatureSpec.from_dict(bad)
    gone = {**d, "custom": [{**d["custom"][0], "import_path": "gone_module_xyz:tmp_mom"}]}
    with pytest.raises(ConfigError, match=r"'gone_module_xyz', which is not trusted"):
        FeatureSpec.from_dict(gone)
    trusting("gone_module_xyz")
    with pytest.raises(ConfigError, match=r"gone_module_xyz.*PYTHONPATH"):
        FeatureSpec.from_dict(gone)
    with pytest.raises(ConfigError, match="list of records"):
        FeatureSpec.from_dict({**d, "custom": "tmp_mom"})


def test_features_defined_in_scripts_cannot_be_recorded(frame):
    @register_feature("test_local_feature", lookback=2)
    def local(close):
        return np.log(close[..., -1] / close[..., -2])

    spec = FeatureSpec().with_features("test_local_feature")
    assert spec.transform(frame).shape == (len(frame), 13)  # usable in this process
    with pytest.raises(ConfigError, match=r"inside a function.*top level"):
        spec.to_dict()


# ---------------------------------------------------------------- subclasses
def test_subclass_round_trip_online_and_causal(frame):
    spec = RangeSpec(range_window=7)
    assert spec.n_features == 13 and spec.names[-1] == "range_7"
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["class"] == "test_feature_hook:RangeSpec" and d["range_window"] == 7
    again = FeatureSpec.from_dict(d)
    assert type(again) is RangeSpec and again == spec and again.n_features == 13
    assert isinstance(spec.online(), WindowedOnline) and spec.online().base is None
    assert_online_equals_offline(spec, frame)
    check_causal(spec, frame, points=3)
    # with custom features too: they come after the subclass's columns
    both = spec.with_features("rsi")
    assert both.names[-2:] == ["range_7", "rsi(window=14)"]
    assert type(FeatureSpec.from_dict(both.to_dict())) is RangeSpec
    assert_online_equals_offline(both, frame)


def test_legacy_subclass_and_its_errors(frame, trusting):
    spec = LegacySpec()
    assert spec.n_features == 13 and spec.transform(frame).shape == (len(frame), 13)
    assert type(FeatureSpec.from_dict(spec.to_dict())) is LegacySpec
    with pytest.raises(ConfigError, match=r"LegacySpec\.names must end with the custom"):
        spec.with_features("rsi")
    with pytest.raises(ConfigError, match=r"WideRowsSpec\._rows returns 13 .* base_names lists 12"):
        WideRowsSpec().transform(frame)

    @dataclass(frozen=True)
    class LocalSpec(FeatureSpec):
        pass

    with pytest.raises(ConfigError, match=r"LocalSpec.*inside a function.*top level"):
        LocalSpec().to_dict()
    with pytest.raises(ConfigError, match="not a subclass of FeatureSpec"):
        FeatureSpec.from_dict({"class": "metabt.features.spec:OnlineFeatures"})
    with pytest.raises(ConfigError, match=r"'no_such_module_xyz', which is not trusted"):
        FeatureSpec.from_dict({"class": "no_such_module_xyz:Spec"})
    trusting("no_such_module_xyz")
    with pytest.raises(ConfigError, match=r"no_such_module_xyz.*PYTHONPATH"):
        FeatureSpec.from_dict({"class": "no_such_module_xyz:Spec"})


# ---------------------------------------------------------------- check_causal
@pytest.mark.parametrize("features", [(), (RSI,)], ids=["base", "rsi"])
def test_check_causal_passes_for_causal_specs(frame, features):
    check_causal(FeatureSpec(norm_window=20, mom_windows=(3,)).with_features(*features), frame)
    check_causal(FeatureSpec().with_features(*features), frame, points=2, seed=1)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (PeekingSpec(), r"feature 'ret_lag0' of bar \d+ .* reads future bars"),
        (CentredSpec(), r"feature 'volume_z' of bar \d+ .* reads future bars"),
        (DoubledSpec(), r"feature '\w+' at bar \d+ .* online but .* in transform"),
    ],
    ids=["peeking", "centred", "online-mismatch"],
)
def test_check_causal_catches_leaks_and_mismatches(frame, spec, match):
    with pytest.raises(DataError, match=match):
        check_causal(spec, frame)


def test_check_causal_input_errors(frame):
    with pytest.raises(DataError, match="more than lookback=61"):
        check_causal(FeatureSpec(), frame.iloc[:61])
    with pytest.raises(ConfigError, match="points"):
        check_causal(FeatureSpec(), frame, points=0)


@register_feature("test_peek", lookback=1, columns=("peek",))
def peek_feature(peek: np.ndarray) -> np.ndarray:
    """The data column ``peek`` as it is (whatever it was built from)."""
    return peek[..., -1]


def _peek(every: int):
    """A column built from tomorrow's close: on every bar, or on one bar in ``every``."""

    def build(frame: pd.DataFrame) -> np.ndarray:
        close = frame["close"].to_numpy(dtype=np.float64)
        ahead = np.r_[close[1:], np.nan] / close
        out = np.ones(len(frame))
        hit = np.arange(len(frame)) % every == 0
        out[hit] = ahead[hit]
        out[np.isnan(out)] = 1.0
        return out

    return build


@pytest.mark.parametrize("every", [1, 10])
def test_check_causal_fails_a_column_built_from_future_prices(frame, every):
    """The issue's probe: ``peek = close.shift(-1) / close``, present on every bar or on
    one in ten, read by a registered feature. Declared as built from prices, the check
    finds it and names the column; declared as known at its bar, it cannot (said in the
    docs), and undeclared it is refused."""
    build = _peek(every)
    data = frame.assign(peek=build(frame))
    spec = FeatureSpec().with_features("test_peek")
    with pytest.raises(DataError, match=r"column 'peek' at bar \d+ .* built from future prices"):
        check_causal(spec, data, points=50, built_from_prices={"peek": build})
    with pytest.raises(DataError, match="not declared"):
        check_causal(spec, data, points=50)
    check_causal(spec, data, points=5, known_at_bar=["peek"])  # trusted: it cannot see


def test_check_causal_passes_a_causal_built_column_and_checks_the_builder(frame):
    def ratio(f: pd.DataFrame) -> np.ndarray:
        return (f["close"] / f["open"]).to_numpy()

    data = frame.assign(peek=ratio(frame))
    spec = FeatureSpec().with_features("test_peek")
    check_causal(spec, data, points=5, built_from_prices={"peek": ratio})
    with pytest.raises(DataError, match=r"built_from_prices\['peek'\] gives"):
        check_causal(spec, data.assign(peek=1.0), built_from_prices={"peek": ratio})
    with pytest.raises(ConfigError, match="declared twice"):
        check_causal(spec, data, built_from_prices={"peek": ratio}, known_at_bar=["peek"])
