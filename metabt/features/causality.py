"""check_causal: verify that features never read future bars and that online equals offline.

Works on any object with the ``FeatureSpec`` interface (``transform``, ``online``,
``label_scale``, ``labels``, ``names``, ``lookback``, ``columns``, ``horizon``);
:mod:`metabt.features.spec` re-exports :func:`check_causal`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from metabt.data.ohlcv import COLUMNS, ohlcv_arrays
from metabt.data.synthetic import gbm_market
from metabt.errors import ConfigError, DataError

__all__ = ["check_causal"]

_RTOL = _ATOL = 1e-5  # float32 rows: tolerance of online vs offline and before vs after


def _where(frame: pd.DataFrame, t: int) -> str:
    return f"bar {t} ({frame.index[t]})"


def _online_pass(spec: Any, frame: pd.DataFrame, X: np.ndarray, scale: np.ndarray) -> None:
    o, h, lo, c, v = ohlcv_arrays(frame)
    extra = {col: frame[col].to_numpy(dtype=np.float64) for col in spec.columns}
    online, names = spec.online(), spec.names
    for t in range(len(frame)):
        more = {col: float(x[t]) for col, x in extra.items()}
        row, s = online.update(h[t], lo[t], c[t], v[t], open=o[t], extra=more)
        offline_ready = bool(np.isfinite(X[t]).all())
        if row is None:
            if offline_ready:
                raise DataError(
                    f"check_causal: at {_where(frame, t)} transform gives a feature row but "
                    "the online path gives none; their warm-ups (lookback) disagree"
                )
            continue
        row = np.asarray(row)
        if row.shape != X[t].shape:
            raise DataError(
                f"check_causal: the online row has shape {row.shape} but transform rows have "
                f"{X[t].shape}; make names, _rows and the online path agree"
            )
        bad = ~np.isclose(row, X[t], rtol=_RTOL, atol=_ATOL)
        if bad.any():
            j = int(np.argmax(bad))
            raise DataError(
                f"check_causal: feature {names[j]!r} at {_where(frame, t)} is {row[j]} online "
                f"but {X[t, j]} in transform; both paths must compute the same function of "
                "bars <= t (override _rows / register a feature, not transform alone)"
            )
        if not math.isclose(s, scale[t], rel_tol=1e-6, abs_tol=1e-12):
            raise DataError(
                f"check_causal: the label scale at {_where(frame, t)} is {s} online but "
                f"{scale[t]} in label_scale; override _scale_rows, not label_scale alone"
            )


def _perturbed(frame: pd.DataFrame, t: int, columns: Sequence[str], seed: int) -> pd.DataFrame:
    """``frame`` with every bar after t replaced by other valid bars."""
    n = len(frame) - t - 1
    rng = np.random.default_rng(seed)
    close = float(frame["close"].iloc[t])
    tail = gbm_market(max(n, 2), seed, price=close * rng.uniform(0.5, 2.0), vol=0.03)
    out = frame.copy()
    for col in COLUMNS:
        out.iloc[t + 1 :, out.columns.get_loc(col)] = tail[col].to_numpy()[:n]
    for col in columns:
        x = frame[col].to_numpy(dtype=np.float64)
        pool = x[np.isfinite(x)]
        if len(pool):
            out.iloc[t + 1 :, out.columns.get_loc(col)] = rng.choice(pool, n) * rng.uniform(
                0.5, 2.0
            )
    return out


def check_causal(spec: Any, frame: pd.DataFrame, *, points: int = 5, seed: int = 0) -> None:
    """Verify that a spec's features are causal and that its online path equals ``transform``.

    Checks, in order:

    1. every ``transform`` row past the warm-up (``t >= lookback - 1``) is finite;
    2. feeding the bars one by one to ``spec.online()`` gives the ``transform`` rows
       (relative and absolute tolerance 1e-5, float32 precision) and the
       ``label_scale`` (relative 1e-6), and no row before ``transform`` has one;
    3. for ``points`` cut bars t (seeded draw after the warm-up), replacing every bar after
       t by other valid bars (a random walk at another price level and volatility; extra
       columns resampled and rescaled) changes no feature row, label scale or realised
       label (bars <= t - horizon) of a bar <= t.

    Args:
        spec: a ``FeatureSpec`` (or subclass, or a spec with custom features).
        frame: OHLCV frame (plus the extra columns of ``spec.columns``), > lookback bars;
            a few hundred bars suffice.
        points: number of cut bars (>= 1). Default 5.
        seed: seed of the cut bars and replacement bars. Default 0.

    Raises:
        DataError: a check fails (message names the feature, the bar and both values), or
            the frame is too short or invalid.
        ConfigError: ``points`` is not an integer >= 1.
    """
    if isinstance(points, bool) or not isinstance(points, numbers.Integral) or points < 1:
        raise ConfigError(f"check_causal: points must be an integer >= 1, got {points!r}")
    X = spec.transform(frame)
    names, width = spec.names, int(spec.lookback)
    if len(frame) < width + 1:
        raise DataError(
            f"check_causal needs more than lookback={width} bars, got {len(frame)}; pass a "
            "longer frame (a few hundred bars)"
        )
    if X.shape != (len(frame), len(names)):
        raise DataError(
            f"check_causal: transform gives shape {X.shape}, expected {(len(frame), len(names))} "
            "(bars, len(names)); make names and the row computation agree"
        )
    bad = ~np.isfinite(X[width - 1 :])
    if bad.any():
        t, j = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"check_causal: feature {names[j]!r} is {X[width - 1 + t, j]} at "
            f"{_where(frame, width - 1 + t)}, past the warm-up; rows must be finite there"
        )
    scale, y = spec.label_scale(frame), spec.labels(frame)
    rng = np.random.default_rng(seed)
    cuts = np.arange(width - 1, len(frame) - 1)
    for t in sorted(rng.choice(cuts, min(points, len(cuts)), replace=False).tolist()):
        other = _perturbed(frame, t, spec.columns, int(rng.integers(2**31)))
        X2 = spec.transform(other)
        diff = ~np.isclose(X2[: t + 1], X[: t + 1], rtol=_RTOL, atol=_ATOL, equal_nan=True)
        if diff.any():
            s, j = (int(i) for i in np.argwhere(diff)[0])
            raise DataError(
                f"check_causal: feature {names[j]!r} of {_where(frame, s)} changed from "
                f"{X[s, j]} to {X2[s, j]} when the bars after {_where(frame, t)} were "
                f"replaced: it reads future bars; compute it from bars <= {s} only"
            )
        known = max(t - spec.horizon + 1, 0)
        for what, a, b in (
            ("label scale", scale[: t + 1], spec.label_scale(other)[: t + 1]),
            ("label", y[:known], spec.labels(other)[:known]),
        ):
            diff = ~np.isclose(a, b, rtol=_RTOL, atol=_ATOL, equal_nan=True)
            if diff.any():
                s = int(np.argmax(diff))
                raise DataError(
                    f"check_causal: the {what} of {_where(frame, s)} changed from {a[s]} to "
                    f"{b[s]} when the bars after {_where(frame, t)} were replaced: it reads "
                    "future bars beyond its horizon"
                )
    _online_pass(spec, frame, X, scale)
