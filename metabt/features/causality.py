"""check_causal: verify that features never read future bars and that online equals offline.

Works on any object with the ``FeatureSpec`` interface (``transform``, ``online``,
``label_scale``, ``labels``, ``names``, ``lookback``, ``columns``, ``horizon``);
:mod:`metabt.features.spec` re-exports :func:`check_causal`.

What it cannot see. The check perturbs the bars after a cut and compares what came
before. A data column beyond OHLCV is only as causal as the way it was built: a column
derived from future prices (``close.shift(-1) / close``) is left intact up to the cut when
the column is resampled independently of the prices, so such a column passes a check that
only perturbs. Hence every extra column the features read must be declared: either as
built from the OHLCV bars by a function (``built_from_prices``: the check then verifies,
bar by bar, that the function's value at bar t uses only bars <= t, and rebuilds the
column from the perturbed prices), or as known at its own bar (``known_at_bar``: e.g.
another series' close on the same bar, aligned as of each bar; the check trusts that
declaration and cannot verify it). A column whose values come from elsewhere (a vendor's
file) is as causal as its source's timestamps, which no check on the frame can see.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
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


#: A function that builds a data column from an OHLCV frame: frame -> (T,) values.
Builder = Callable[[pd.DataFrame], Any]


def _built(builder: Builder, frame: pd.DataFrame, col: str) -> np.ndarray:
    """The builder's column on ``frame`` as a (T,) float array; DataError on a bad shape."""
    try:
        values = np.asarray(builder(frame), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"check_causal: the builder of column {col!r} failed: {exc}") from exc
    if values.shape != (len(frame),):
        raise DataError(
            f"check_causal: the builder of column {col!r} returned {values.shape} values for "
            f"{len(frame)} bars; it must return one value per bar"
        )
    return values


def _check_builders(frame: pd.DataFrame, builders: Mapping[str, Builder], start: int) -> None:
    """Each built column reproduces the frame's, and its value at bar t needs no bar > t:
    rebuilt from the bars <= t alone, for every t >= ``start``, it is the same."""
    for col, builder in builders.items():
        full = _built(builder, frame, col)
        given = frame[col].to_numpy(dtype=np.float64)
        if not np.allclose(full, given, rtol=_RTOL, atol=_ATOL, equal_nan=True):
            t = int(np.argmax(~np.isclose(full, given, rtol=_RTOL, atol=_ATOL, equal_nan=True)))
            raise DataError(
                f"check_causal: built_from_prices[{col!r}] gives {full[t]} at "
                f"{_where(frame, t)} but the frame's column holds {given[t]}; pass the "
                "function that built the column"
            )
        for t in range(start, len(frame)):
            now = _built(builder, frame.iloc[: t + 1], col)[-1]
            if not np.isclose(now, full[t], rtol=_RTOL, atol=_ATOL, equal_nan=True):
                raise DataError(
                    f"check_causal: column {col!r} at {_where(frame, t)} is {full[t]} built "
                    f"from the whole frame but {now} from the bars up to it: it is built from "
                    "future prices, and every feature reading it does too; build it from "
                    "bars <= t only"
                )


def _perturbed(
    frame: pd.DataFrame,
    t: int,
    columns: Sequence[str],
    seed: int,
    builders: Mapping[str, Builder] | None = None,
) -> pd.DataFrame:
    """``frame`` with every bar after t replaced by other valid bars: the prices by a random
    walk, each built column rebuilt from them, any other column resampled and rescaled."""
    n = len(frame) - t - 1
    rng = np.random.default_rng(seed)
    close = float(frame["close"].iloc[t])
    tail = gbm_market(max(n, 2), seed, price=close * rng.uniform(0.5, 2.0), vol=0.03)
    out = frame.copy()
    for col in COLUMNS:
        out.iloc[t + 1 :, out.columns.get_loc(col)] = tail[col].to_numpy()[:n]
    builders = builders or {}
    for col in columns:
        if col in builders:
            out[col] = _built(builders[col], out, col)
            continue
        x = frame[col].to_numpy(dtype=np.float64)
        pool = x[np.isfinite(x)]
        if len(pool):
            out.iloc[t + 1 :, out.columns.get_loc(col)] = rng.choice(pool, n) * rng.uniform(
                0.5, 2.0
            )
    return out


def _declared(
    columns: Sequence[str],
    built_from_prices: Mapping[str, Builder] | None,
    known_at_bar: Sequence[str],
) -> dict[str, Builder]:
    """The builders, after checking that every extra column is declared exactly once."""
    builders = dict(built_from_prices or {})
    for col, builder in builders.items():
        if not callable(builder):
            raise ConfigError(
                f"check_causal: built_from_prices[{col!r}] must be a function of the OHLCV "
                f"frame, got {type(builder).__name__}"
            )
    both = sorted(set(builders) & set(known_at_bar))
    if both:
        raise ConfigError(f"check_causal: columns {both} are declared twice; declare each once")
    missing = [c for c in columns if c not in builders and c not in known_at_bar]
    if missing:
        raise DataError(
            f"check_causal: the features read data columns {missing} that are not declared. "
            "A column built from future prices passes a check that only perturbs bars, so "
            "say how each was made: built_from_prices={name: function(frame)} (the check "
            "rebuilds it and tests it bar by bar) or known_at_bar=[name] (its value at each "
            "bar was known by that bar's close; trusted, not verifiable)"
        )
    return builders


def check_causal(
    spec: Any,
    frame: pd.DataFrame,
    *,
    points: int = 5,
    seed: int = 0,
    built_from_prices: Mapping[str, Builder] | None = None,
    known_at_bar: Sequence[str] = (),
) -> None:
    """Verify that a spec's features are causal and that its online path equals ``transform``.

    Checks, in order:

    1. every ``transform`` row past the warm-up (``t >= lookback - 1``) is finite;
    2. feeding the bars one by one to ``spec.online()`` gives the ``transform`` rows
       (relative and absolute tolerance 1e-5, float32 precision) and the
       ``label_scale`` (relative 1e-6), and no row before ``transform`` has one;
    3. every extra column the features read (``spec.columns``) is declared, and each one
       declared ``built_from_prices`` is reproduced by its function and, at every bar t,
       equals the function's value on the bars <= t alone (a column that peeks at the
       future on any bar, even one in ten, fails, naming the column);
    4. for ``points`` cut bars t (seeded draw after the warm-up), replacing every bar after
       t by other valid bars (a random walk at another price level and volatility; built
       columns rebuilt from it, the others resampled and rescaled) changes no feature row,
       label scale or realised label (bars <= t - horizon) of a bar <= t.

    It cannot see how a ``known_at_bar`` column was made: see the module docstring.

    Args:
        spec: a ``FeatureSpec`` (or subclass, or a spec with custom features).
        frame: OHLCV frame (plus the extra columns of ``spec.columns``), > lookback bars;
            a few hundred bars suffice.
        points: number of cut bars (>= 1). Default 5.
        seed: seed of the cut bars and replacement bars. Default 0.
        built_from_prices: extra column -> the function that built it from the OHLCV frame
            (frame -> (T,) values), e.g. ``{"ratio": lambda f: f.high / f.low}``.
        known_at_bar: extra columns whose value at each bar was known by that bar's close
            (e.g. a benchmark's close on the same bar, ``metabt.features.factors.
            with_benchmark``).

    Raises:
        DataError: a check fails (message names the feature or column, the bar and both
            values), an extra column is not declared, or the frame is too short or invalid.
        ConfigError: ``points`` is not an integer >= 1, or a bad declaration.
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
    builders = _declared(spec.columns, built_from_prices, tuple(known_at_bar))
    _check_builders(frame, builders, 0)
    scale, y = spec.label_scale(frame), spec.labels(frame)
    rng = np.random.default_rng(seed)
    cuts = np.arange(width - 1, len(frame) - 1)
    for t in sorted(rng.choice(cuts, min(points, len(cuts)), replace=False).tolist()):
        other = _perturbed(frame, t, spec.columns, int(rng.integers(2**31)), builders)
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
