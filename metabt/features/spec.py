"""Causal, scale-free features and volatility-scaled forward-return labels from OHLCV bars.

User features plug in through :func:`register_feature` (see :mod:`metabt.features.hooks`,
whose public names this module re-exports) and :meth:`FeatureSpec.with_features`.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from metabt._checks import check_int
from metabt._stats import RollingMoments, forward_log_return, tail_stds, window_mask
from metabt.data.ohlcv import COLUMNS, ohlcv_arrays
from metabt.errors import ConfigError, DataError
from metabt.features.causality import check_causal
from metabt.features.hooks import (
    FeatureFunction,
    FeatureRef,
    OnlineComputer,
    WindowedOnline,
    as_refs,
    bind,
    check_subclass,
    custom_rows,
    register_feature,
    registered_features,
    spec_from_dict,
    spec_to_dict,
)

__all__ = [
    "FeatureFunction",
    "FeatureRef",
    "FeatureSpec",
    "OnlineComputer",
    "OnlineFeatures",
    "WindowedOnline",
    "check_causal",
    "register_feature",
    "registered_features",
    "stack_window",
]

_VOL_FLOOR = 1e-6  # floor of every trailing volatility (log return per bar): flat prices
_VOLUME_STD_TOL = 1e-9  # a log1p(volume) std below this counts as 0 (constant volume)
_CHUNK = 4096  # windows per block in transform: bounds the (rows, K, lookback) temporaries
# what a subclass may override to change rows or scales; otherwise OnlineFeatures applies
_ROW_CODE = (
    "_rows", "_window_rows", "_scale_rows", "_plan", "transform", "transform_window",
    "label_scale", "scale_window", "base_names", "names", "n_features", "lookback", "columns",
)  # fmt: skip


def _check_int(name: str, value: Any, low: int) -> int:
    return check_int(f"FeatureSpec.{name}", value, low)


def _check_windows(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(
            f"FeatureSpec.{name} must be a tuple of integers >= 2 (bars), e.g. (5, 20); "
            f"got {value!r}"
        )
    windows = tuple(_check_int(f"{name}[{i}]", w, 2) for i, w in enumerate(value))
    if len(set(windows)) != len(windows):
        raise ConfigError(f"FeatureSpec.{name} repeats a window in {windows}; list each once")
    return windows


def _check_positive(name: str, value: Any, hint: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"FeatureSpec.{name} must be a finite number > 0 ({hint}), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FeatureSpec:
    """What the model sees at bar t and what it predicts, from OHLCV bars.

    Every feature of bar t is computed from a window of bars ending at t (inclusive), so a
    feature row never uses a later bar. Let ``r_t = log(C_t / C_{t-1})`` be the one-bar log
    return and ``vol_w,t`` the sample standard deviation (ddof=1) of the ``w`` returns
    ``r_{t-w+1} .. r_t``, floored at 1e-6 (log return per bar); ``vol_norm`` is
    ``vol_{norm_window},t``. The features of bar t are, in this order (see :attr:`names`):

    * ``ret_lag{k}``, k = 0 .. lags-1: ``r_{t-k} / vol_norm`` (standardised lagged returns);
    * ``vol_ratio_{w}``, w in vol_windows: ``log(vol_w,t / vol_norm)``;
    * ``mom_{w}``, w in mom_windows: ``log(C_t / C_{t-w}) / (vol_norm * sqrt(w))``, the
      w-bar log return in units of its typical size (a momentum z-score);
    * ``range``: ``log(H_t / L_t) / vol_norm``;
    * ``volume_z``: z-score of ``log1p(V_t)`` among ``log1p(V)`` of bars
      t-volume_window+1 .. t (their mean and sample std); 0 when that std is 0.

    Then come the ``custom`` features (:func:`register_feature`), named like
    ``rsi(window=14)``, each computed from a window of its own lookback ending at t.

    Each feature is clipped to ``[-clip, clip]`` (standardised units; custom features too,
    so return values of order 1). Prices enter only
    through ratios and volume only through differences of ``log1p``, so features do not
    change when all prices are multiplied by a constant, nor (up to the ``+1`` in
    ``log1p``, negligible for share volumes) when volume is.

    The label of bar t is the forward log return over ``horizon`` bars,
    ``log(C_{t+horizon} / C_t)``, divided by the causal scale ``vol_norm_t * sqrt(horizon)``
    when ``scale_label`` (so it is in units of its typical size). It is realised at the
    close of bar t + horizon, and is NaN for the last ``horizon`` bars.

    Args:
        horizon: label horizon, bars (>= 1). Default 5.
        lags: number of lagged standardised returns, r_t .. r_{t-lags+1} (>= 1). Default 5.
        vol_windows: windows w (bars, each >= 2, distinct) of the ``log(vol_w / vol_norm)``
            features. Default (5, 20).
        mom_windows: windows w (bars, each >= 2, distinct) of the momentum z-scores.
            Default (5, 20, 60).
        norm_window: returns (bars, >= 2) in ``vol_norm``, the trailing volatility that
            normalises the features and scales the label. Default 60.
        volume_window: bars (>= 2) of the volume z-score. Default 20.
        clip: features are clipped to [-clip, clip] (standardised units, finite, > 0).
            Default 5.0.
        scale_label: divide the label by ``vol_norm_t * sqrt(horizon)``. Default True.
        label_clip: winsorise the label at ±``label_clip`` (label units: typical sizes
            when ``scale_label``), so that one crash bar cannot dominate a support set's
            mean squared error; None keeps every label. It applies to training and
            adaptation labels only: results are always scored on the true returns. Default
            3.0, chosen from (None, 3, 4, 6) on the demo's validation split only (the two
            years before 2008; ``scripts/choose_label_clip.py``): validation query MSE on
            the true labels 1.5657 unclipped, 1.5598 at 3, 1.5615 at 4, 1.5642 at 6,
            against 1.5609 for predicting zero.
        custom: user features after the built-in ones (FeatureRef objects, strings
            ``"pkg.module:function"`` or registered functions; see :meth:`with_features`).
            Default ().

    Subclasses override ``_rows`` (windows of high, low, close, volume -> rows), its
    column names ``base_names`` and, for more bars, ``lookback``; define them at the top
    level of a module (:meth:`to_dict` records ``"class": "module:QualName"``). Their
    online rows come from ``transform_window``; verify them with :func:`check_causal`.

    Raises:
        ConfigError: a non-integer or too small horizon/lags/window, a repeated window,
            a non-positive or non-finite ``clip``, a non-bool ``scale_label``, an unknown
            or repeated custom feature, a subclass whose names and n_features disagree.

    Example:
        >>> spec = FeatureSpec()
        >>> spec.n_features, spec.lookback
        (12, 61)
    """

    horizon: int = 5
    lags: int = 5
    vol_windows: tuple[int, ...] = (5, 20)
    mom_windows: tuple[int, ...] = (5, 20, 60)
    norm_window: int = 60
    volume_window: int = 20
    clip: float = 5.0
    scale_label: bool = True
    label_clip: float | None = 3.0
    custom: tuple[FeatureRef, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: store the validated, normalised values
        set_(self, "horizon", _check_int("horizon", self.horizon, 1))
        set_(self, "lags", _check_int("lags", self.lags, 1))
        set_(self, "vol_windows", _check_windows("vol_windows", self.vol_windows))
        set_(self, "mom_windows", _check_windows("mom_windows", self.mom_windows))
        set_(self, "norm_window", _check_int("norm_window", self.norm_window, 2))
        set_(self, "volume_window", _check_int("volume_window", self.volume_window, 2))
        set_(self, "clip", _check_positive("clip", self.clip, "standardised units, e.g. 5.0"))
        if not isinstance(self.scale_label, (bool, np.bool_)):
            raise ConfigError(
                f"FeatureSpec.scale_label must be True or False, got {self.scale_label!r}"
            )
        set_(self, "scale_label", bool(self.scale_label))
        if self.label_clip is not None:
            hint = "None or label units, e.g. 4.0 for 4 typical sizes"
            set_(self, "label_clip", _check_positive("label_clip", self.label_clip, hint))
        set_(self, "custom", as_refs(self.custom))
        if type(self) is not FeatureSpec:
            check_subclass(self)

    # ------------------------------------------------------------------ description
    @property
    def base_names(self) -> list[str]:
        """Names of the built-in features (the columns of ``_rows``), before the custom ones."""
        return [
            *(f"ret_lag{k}" for k in range(self.lags)),
            *(f"vol_ratio_{w}" for w in self.vol_windows),
            *(f"mom_{w}" for w in self.mom_windows),
            "range",
            "volume_z",
        ]

    @property
    def names(self) -> list[str]:
        """Feature names, in the column order of :meth:`transform` (``n_features`` of them)."""
        return [*self.base_names, *(ref.label for ref in self.custom)]

    @property
    def n_features(self) -> int:
        """Number of features F per bar."""
        return len(self.base_names) + len(self.custom)

    @property
    def lookback(self) -> int:
        """Bars (including the current one) needed for one complete feature row."""
        return max(
            self.lags + 1,
            self.norm_window + 1,
            max(self.vol_windows, default=0) + 1,
            max(self.mom_windows, default=0) + 1,
            self.volume_window,
            *(b.window for b in self._bound),
        )

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """Extra frame columns (beyond OHLCV) the features read, sorted; pass them online."""
        return tuple(sorted({c for b in self._bound for c in b.columns} - set(COLUMNS)))

    def with_features(self, *features: FeatureRef | str | Any) -> FeatureSpec:
        """This spec with custom features appended (same class, other fields unchanged).

        Args:
            *features: FeatureRef objects, strings ``"pkg.module:function"`` (optionally
                followed by JSON parameters ``{"window": 21}``), registered names, or
                functions decorated with :func:`register_feature`.

        Returns:
            A new spec whose ``names`` end with the new features.

        Raises:
            ConfigError: an unknown feature or parameter, a feature listed twice.
        """
        return replace(self, custom=(*self.custom, *as_refs(features)))

    def online(self) -> OnlineComputer:
        """A fresh per-asset online computer of this spec's rows (one per data feed).

        Returns:
            :class:`OnlineFeatures` (scalar math, ~15 µs per bar) for the built-in features;
            with custom features, a :class:`WindowedOnline` that adds them to it (the
            custom functions on the last ``lookback`` bars); for a subclass that overrides
            the row or scale code, a :class:`WindowedOnline` calling ``transform_window``.
        """
        if not self._builtin:
            return WindowedOnline(self)
        if not self.custom:
            return OnlineFeatures(self)
        return WindowedOnline(self, base=OnlineFeatures(replace(self, custom=())))

    @cached_property
    def _builtin(self) -> bool:  # the rows and scales are FeatureSpec's own code
        return all(getattr(type(self), n) is getattr(FeatureSpec, n) for n in _ROW_CODE)

    @cached_property
    def _bound(self) -> list[Any]:
        return bind(self.custom)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON primitives (tuples become lists); inverse of :meth:`from_dict`.

        Custom features become ``"custom"`` records (name, params, import path, SHA-256 of
        the source), and a subclass is recorded as ``"class": "module:QualName"``; neither
        key is written when unused, so built-in specs read as before.

        Raises:
            ConfigError: the subclass or a feature function is defined in ``__main__`` or
                inside a function (no import could find it again).
        """
        return spec_to_dict(self, FeatureSpec)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, allow_changed: bool = False) -> FeatureSpec:
        """Build and validate a spec from :meth:`to_dict` output.

        Missing keys take their defaults, except ``label_clip``, which is None: a spec
        written before labels could be winsorised was trained on unclipped labels. A
        ``"class"`` key builds that subclass (importing its module); ``"custom"`` records
        import their modules (which registers the features) and must match: same name
        and parameters, and the same source code unless ``allow_changed``.

        Args:
            d: field name -> value; lists are accepted for the window tuples.
            allow_changed: load custom features whose source changed since ``d`` was
                written (their values may differ from training). Default False.

        Returns:
            The FeatureSpec (or recorded subclass).

        Raises:
            ConfigError: ``d`` is not a mapping, has an unknown key, or holds a bad value;
                a class or feature module that cannot be imported (install it or put it
                on PYTHONPATH); a feature whose parameters or source changed.
        """
        return spec_from_dict(cls, d, FeatureSpec, allow_changed=allow_changed)

    # ------------------------------------------------------------------ features
    @cached_property
    def _plan(self) -> dict[str, Any]:
        """Index and constant arrays of the feature code (built once per spec)."""
        mom = np.asarray(self.mom_windows, dtype=np.intp)
        return {
            "lag_idx": -np.arange(1, self.lags + 1),  # r_t, r_{t-1}, ... on the return axis
            "mom_idx": -1 - mom,  # C_{t-w} on the price axis
            "sqrt_mom": np.sqrt(mom.astype(np.float64)),
            "vol": window_mask((self.norm_window, *self.vol_windows)),  # vol_norm first
            "norm": window_mask((self.norm_window,)),
        }

    def _rows(self, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Feature rows of windows of bars: (..., lookback) float64 each -> (..., F) float32.

        The single implementation behind :meth:`transform` (all windows at once) and
        :meth:`transform_window` (one window), so offline and online features agree.
        """
        plan = self._plan
        mask, n_vol = plan["vol"]
        lc = np.log(c)
        r = lc[..., 1:] - lc[..., :-1]  # (..., lookback-1) one-bar log returns
        # (..., 1 + len(vol_windows)): vol_norm first
        vols = tail_stds(r[..., -mask.shape[1] :], mask, n_vol, _VOL_FLOOR)
        vn = vols[..., :1]  # vol_norm, (..., 1)
        parts = [r[..., plan["lag_idx"]] / vn, np.log(vols[..., 1:] / vn)]
        parts.append((lc[..., -1:] - lc[..., plan["mom_idx"]]) / (vn * plan["sqrt_mom"]))
        parts.append(np.log(h[..., -1:] / lo[..., -1:]) / vn)
        n = self.volume_window
        lv = np.log1p(v[..., -n:])
        d = lv - np.add.reduce(lv, axis=-1, keepdims=True) / n
        s = np.sqrt(np.add.reduce(d * d, axis=-1, keepdims=True) / (n - 1))
        parts.append(np.divide(d[..., -1:], s, out=np.zeros_like(s), where=s > _VOLUME_STD_TOL))
        out = np.concatenate(parts, axis=-1)
        np.minimum(out, self.clip, out=out)
        np.maximum(out, -self.clip, out=out)
        return out.astype(np.float32)

    def _window_rows(
        self,
        w: Mapping[str, np.ndarray],
        first_bar: int | None = None,
        index: pd.Index | None = None,
    ) -> np.ndarray:
        """All feature rows of windows: column -> (..., n) float64 -> (..., F) float32.

        ``_rows`` on high, low, close, volume, then the custom features (each on its own
        trailing ``lookback`` bars). ``first_bar``/``index`` only name bars in errors.
        """
        rows = self._rows(w["high"], w["low"], w["close"], w["volume"])
        if rows.shape[-1] != (n_base := self.n_features - len(self.custom)):
            raise ConfigError(
                f"{type(self).__qualname__}._rows returns {rows.shape[-1]} features but "
                f"base_names lists {n_base}; override base_names to name every column of _rows"
            )
        if self.custom:
            more = custom_rows(self._bound, w, self.clip, first_bar, index)
            rows = np.concatenate([rows, more.astype(np.float32)], axis=-1)
        return rows

    def _scale_rows(self, c: np.ndarray) -> np.ndarray:
        """Label scale of windows of closes: (..., >= norm_window+1) float64 -> (...) float64."""
        if not self.scale_label:
            return np.ones(c.shape[:-1])
        mask, n = self._plan["norm"]
        lc = np.log(c[..., -(self.norm_window + 1) :])
        vol_norm = tail_stds(lc[..., 1:] - lc[..., :-1], mask, n, _VOL_FLOOR)[..., 0]
        return vol_norm * math.sqrt(self.horizon)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Feature rows of every bar of an OHLCV frame (the offline path).

        Args:
            frame: DataFrame with float columns open, high, low, close, volume (and the
                extra columns of :attr:`columns`), one row per bar in chronological order,
                as returned by ``metabt.data.load_ohlcv``.

        Returns:
            X: (T, F) float32. Row t uses bars t-lookback+1 .. t only. Rows t < lookback-1
            (the warm-up) are NaN; every row is NaN if T < lookback.

        Raises:
            DataError: not a DataFrame, a missing column, a non-numeric value, a non-positive
                or non-finite price, a negative or non-finite volume; a custom feature that
                returns the wrong shape or a non-finite value (feature and bar named).
        """
        cols = dict(zip(COLUMNS, ohlcv_arrays(frame)))
        for name in self.columns:
            if name not in frame.columns:
                raise DataError(
                    f"the features read column {name!r}, which the frame lacks (has "
                    f"{list(frame.columns)}); load a file with that column"
                )
            try:
                cols[name] = frame[name].to_numpy(dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"column {name!r} is not numeric ({exc})") from exc
        n_bars, width = len(frame), self.lookback
        out = np.full((n_bars, self.n_features), np.nan, dtype=np.float32)
        if n_bars < width:
            return out
        views = {k: sliding_window_view(x, width) for k, x in cols.items()}
        for i in range(0, n_bars - width + 1, _CHUNK):
            j = slice(i, i + _CHUNK)
            rows = self._window_rows(
                {k: x[j] for k, x in views.items()}, width - 1 + i, frame.index
            )
            out[width - 1 + i : width - 1 + i + len(rows)] = rows
        return out

    def transform_window(
        self,
        open: np.ndarray,  # the bar field's name; shadows the builtin in this method only
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        *,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Feature row of the LAST bar, from its recent history (the online path).

        Called once per bar per asset inside a backtest; costs a few tens of µs. Equals
        ``transform(frame)[-1]`` on the same bars to float32 precision (same code).

        Args:
            open: (n,) open prices of the most recent n >= lookback bars, oldest first
                (not used by the current features; part of the bar).
            high: (n,) high prices.
            low: (n,) low prices.
            close: (n,) close prices.
            volume: (n,) volumes.
            extra: (n,) values of each extra column in :attr:`columns`.

        Returns:
            (F,) float32 feature row of the last bar. Only the last ``lookback`` bars are
            read. Values are not re-validated here: a non-positive price gives NaN.

        Raises:
            DataError: arrays that are not 1-D, differ in length, or hold fewer than
                ``lookback`` bars; a missing extra column; a bad custom feature value.
        """
        width, extra = self.lookback, extra or {}
        missing = [c for c in self.columns if c not in extra]
        if missing:
            raise DataError(f"transform_window: pass extra={{name: array}} for {missing}")
        names = (*COLUMNS, *self.columns)
        arrays = [np.asarray(x, dtype=np.float64) for x in (open, high, low, close, volume)]
        arrays += [np.asarray(extra[c], dtype=np.float64) for c in self.columns]
        n = arrays[3].shape[0] if arrays[3].ndim == 1 else -1
        if n < width or any(x.shape != (n,) for x in arrays):
            raise DataError(
                f"transform_window needs 1-D arrays {list(names)} of equal length "
                f">= lookback={width} bars, got shapes {[x.shape for x in arrays]}"
            )
        return self._window_rows({k: x[None, n - width :] for k, x in zip(names, arrays)})[0]

    # ------------------------------------------------------------------ labels
    def label_scale(self, frame: pd.DataFrame) -> np.ndarray:
        """Causal divisor of the label of every bar: ``vol_norm_t * sqrt(horizon)``.

        Args:
            frame: OHLCV DataFrame (see :meth:`transform`).

        Returns:
            (T,) float64, log return per ``horizon`` bars; NaN for rows t < norm_window
            (not enough returns). All ones when ``scale_label`` is False.

        Raises:
            DataError: as :meth:`transform`.
        """
        c = ohlcv_arrays(frame)[3]
        if not self.scale_label:
            return np.ones(len(c))
        out = np.full(len(c), np.nan)
        width = self.norm_window + 1
        if len(c) >= width:
            out[width - 1 :] = self._scale_rows(sliding_window_view(c, width))
        return out

    def scale_window(self, close: np.ndarray) -> float:
        """Label divisor of the LAST bar (the online path of :meth:`label_scale`).

        Args:
            close: (n,) close prices of the most recent n >= norm_window+1 bars, oldest first.

        Returns:
            ``vol_norm_t * sqrt(horizon)`` (log return per ``horizon`` bars); 1.0 when
            ``scale_label`` is False.

        Raises:
            DataError: ``close`` is not 1-D or holds fewer than norm_window+1 bars.
        """
        c = np.asarray(close, dtype=np.float64)
        if c.ndim != 1 or (self.scale_label and len(c) < self.norm_window + 1):
            raise DataError(
                f"scale_window needs a 1-D array of >= norm_window+1={self.norm_window + 1} "
                f"closes, got shape {c.shape}"
            )
        return float(self._scale_rows(c[None, :])[0])

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        """Forward log return over ``horizon`` bars, divided by the causal scale.

        ``y_t = log(C_{t+horizon} / C_t) / scale_t`` with ``scale_t`` from
        :meth:`label_scale` (1 when ``scale_label`` is False). ``y_t`` is realised at the
        close of bar t + horizon, so at bar ``now`` only labels of bars t <= now - horizon
        are known.

        Args:
            frame: OHLCV DataFrame (see :meth:`transform`).

        Returns:
            (T,) float32, winsorised at ±``label_clip`` when set; NaN for the last
            ``horizon`` rows (not yet realised) and where the scale is NaN (rows
            t < norm_window when ``scale_label``).

        Raises:
            DataError: as :meth:`transform`.
        """
        c = ohlcv_arrays(frame)[3]
        y = forward_log_return(c, self.horizon) / self.label_scale(frame)
        if self.label_clip is not None:
            y = np.clip(y, -self.label_clip, self.label_clip)
        return y.astype(np.float32)


class OnlineFeatures:
    """One asset's feature rows, updated bar by bar inside a backtest.

    The same definitions as :meth:`FeatureSpec.transform`, computed per bar with scalar
    math on short rolling buffers (no NumPy call overhead, no recomputation of the whole
    history): each :meth:`update` costs a few microseconds. Statistics are two-pass, as
    offline, so the rows agree with ``transform`` to float32 precision (tested on the
    sample data).

    Args:
        spec: the feature definition.

    Example:
        >>> online = OnlineFeatures(FeatureSpec())
        >>> row, scale = online.update(high=10.2, low=9.9, close=10.0, volume=1e6)
        >>> row is None  # warm-up: fewer than spec.lookback bars so far
        True
    """

    def __init__(self, spec: FeatureSpec) -> None:
        if spec.custom or not spec._builtin:
            raise ConfigError(
                f"OnlineFeatures computes the built-in features only, but this spec has "
                f"custom features or is a {type(spec).__qualname__}; use spec.online()"
            )
        self.spec = spec
        self.lookback = spec.lookback
        self._vol_windows = (spec.norm_window, *spec.vol_windows)
        self._returns: deque[float] = deque(maxlen=spec.lags)
        self._moments = RollingMoments(self._vol_windows)
        self._log_close: deque[float] = deque(maxlen=max(spec.mom_windows, default=0) + 1)
        self._log_volume: deque[float] = deque(maxlen=spec.volume_window)
        self._mom = [(w, math.sqrt(w)) for w in spec.mom_windows]
        self._sqrt_h = math.sqrt(spec.horizon)
        self._lags, self._clip, self._scale_label = spec.lags, spec.clip, spec.scale_label
        self.bars = 0

    def update(
        self,
        high: float,
        low: float,
        close: float,
        volume: float,
        *,
        open: float | None = None,  # the OnlineComputer interface; unused
        extra: Mapping[str, float] | None = None,
    ) -> tuple[np.ndarray | None, float]:
        """Add the newest bar; return its feature row and label scale.

        Args:
            high, low, close: prices of the bar (> 0).
            volume: its volume (>= 0).
            open, extra: ignored (the built-in features do not read them); accepted so
                that every :meth:`FeatureSpec.online` computer takes the same call.

        Returns:
            (row, scale): row is the (F,) float32 feature row, or None during the first
            ``lookback - 1`` bars; scale is the label divisor ``vol_norm * sqrt(horizon)``
            (1.0 without ``scale_label``; NaN during the warm-up).

        Raises:
            DataError: a non-positive or non-finite price, or a negative volume.
        """
        if not (close > 0 and high > 0 and low > 0 and volume >= 0) or not math.isfinite(
            close + high + low + volume
        ):
            raise DataError(
                f"bar {self.bars}: prices must be finite and > 0 and volume >= 0, got high "
                f"{high}, low {low}, close {close}, volume {volume}; validate the feed with "
                "metabt.data.load_ohlcv"
            )
        log_close = math.log(close)
        closes = self._log_close
        if closes:
            r = log_close - closes[-1]
            self._returns.append(r)
            self._moments.push(r)
        closes.append(log_close)
        volumes = self._log_volume
        volumes.append(math.log1p(volume))
        self.bars += 1
        if self.bars < self.lookback:
            return None, math.nan
        vols = [v if v > _VOL_FLOOR else _VOL_FLOOR for v in self._moments.stds()]
        vn = vols[0]
        returns = self._returns
        row = [returns[-1 - k] / vn for k in range(self._lags)]
        row += [math.log(v / vn) for v in vols[1:]]
        row += [(log_close - closes[-1 - w]) / (vn * sq) for w, sq in self._mom]
        row.append(math.log(high / low) / vn)
        n = len(volumes)
        mean = sum(volumes) / n
        sd = math.sqrt(sum([(v - mean) * (v - mean) for v in volumes]) / (n - 1))
        row.append((volumes[-1] - mean) / sd if sd > _VOLUME_STD_TOL else 0.0)
        out = np.array(row, dtype=np.float32)
        np.minimum(out, self._clip, out=out)  # two ufunc calls: cheaper than np.clip here
        np.maximum(out, -self._clip, out=out)
        return out, (vn * self._sqrt_h if self._scale_label else 1.0)


def stack_window(X: np.ndarray, window: int) -> np.ndarray:
    """Stack each feature row with its ``window - 1`` predecessors (sequence-model input).

    Args:
        X: (T, F) feature rows, one per bar, chronological.
        window: rows per stacked input (bars, >= 1).

    Returns:
        (T, window * F) float32: row t is ``X[t-window+1], ..., X[t]`` flattened, oldest
        first; rows t < window-1 (no full history) are NaN. ``window == 1`` returns X as
        float32 (the same array when it already is).

    Raises:
        ConfigError: ``window`` is not an integer >= 1.
        DataError: ``X`` is not 2-D.
    """
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ConfigError(f"stack_window: window must be an integer >= 1 (bars), got {window!r}")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError(f"stack_window: X must be 2-D (bars, features), got shape {X.shape}")
    if window == 1:
        return X
    n_bars, n_feat = X.shape
    out = np.full((n_bars, int(window) * n_feat), np.nan, dtype=np.float32)
    if n_bars >= window:
        # (T-w+1, F, w) -> (T-w+1, w, F): the window's rows oldest first, then features
        view = sliding_window_view(X, int(window), axis=0).transpose(0, 2, 1)
        out[window - 1 :] = view.reshape(n_bars - window + 1, -1)
    return out
