"""Factor features: the benchmark's return, rolling beta, residual return and residual momentum.

A benchmark (an index or ETF) enters a backtest as one more column of each asset's
frame: :func:`with_benchmark` adds the benchmark's close on the asset's own dates, as of
each bar (never a later benchmark bar). The factor features are ordinary registered
features (:func:`metabt.features.register_feature`, registered when this module is
imported) that read the columns ``("close", "benchmark")``, so they run offline in
``FeatureSpec.transform`` and online in ``spec.online()`` with the same code::

    from metabt.data import feed, load_ohlcv
    from metabt.features.factors import factor_spec, with_benchmark

    frame = with_benchmark(load_ohlcv("AAPL.csv"), load_ohlcv("SPY.csv"))
    spec = factor_spec(window=60, mom=20)  # FeatureSpec() + the four factor features
    X = spec.transform(frame)
    data = feed(frame)  # the column "benchmark" becomes the line data.benchmark

Online, pass the benchmark each bar: ``online.update(h, l, c, v, extra={"benchmark":
data.benchmark[0]})``.

Definitions. Over the last ``window`` bars let ``r_s = log(C_s / C_{s-1})`` be the asset's
log returns and ``m_s = log(B_s / B_{s-1})`` the benchmark's (per bar). Then

* ``beta = cov(r, m) / var(m)``, the OLS slope of r on m with an intercept (the CAPM
  beta of Sharpe 1964), clipped to [-5, 5]; 0 when the benchmark is flat over the window
  (its sample std below 1e-6 log return per bar);
* the residual (idiosyncratic) returns ``e_s = r_s - beta * m_s`` (no intercept: the
  CAPM with zero alpha) and their sample std ``sd_e`` (ddof=1, which removes their mean,
  so it equals the std of the OLS residuals up to the degrees of freedom), floored at 1e-6;
* ``resid_ret = e_t / sd_e``, the last residual return in units of its typical size;
* ``resid_mom = (e_{t-mom+1} + ... + e_t) / (sd_e * sqrt(mom))``, the residual momentum
  of Blitz, Huij & Martens (2011) with one factor, no skipped month and the window's beta
  (they regress on the three Fama-French factors over 36 months and skip the last one);
* ``bench_ret = m_t / vol_m``, the benchmark's last return over its sample std (ddof=1,
  floored at 1e-6) over the window: standardised like the built-in ``ret_lag0``.

Scales: ``bench_ret``, ``resid_ret`` and ``resid_mom`` are z-scores (order 1, like the
built-in features); ``beta`` is the raw slope (dimensionless, typically 0 .. 2). The
spec clips every feature to ±``clip`` (default 5) as well.

Missing benchmark: an asset bar before the benchmark's first bar has no benchmark close
(NaN from :func:`with_benchmark`). A window that holds such a bar (or a non-positive
benchmark value) carries no benchmark information, and every factor feature of it is 0
(neutral), so feature rows stay finite: the factor warm-up ends ``window + 1`` bars after
the benchmark's first bar. Trim the asset's history to start at the benchmark's first
bar (``frame.loc[benchmark.index[0]:]``) to avoid training on these zeros.

References:
    W. F. Sharpe (1964), "Capital asset prices: a theory of market equilibrium under
    conditions of risk", *Journal of Finance* 19(3), 425-442.

    D. Blitz, J. Huij and M. Martens (2011), "Residual momentum", *Journal of Empirical
    Finance* 18(3), 506-521.
"""

from __future__ import annotations

import json
import keyword
import math
import numbers
import os
from typing import Any

import numpy as np
import pandas as pd

from metabt.data.ohlcv import COLUMNS, is_validated, load_ohlcv
from metabt.errors import DataError
from metabt.features.spec import FeatureSpec, register_feature

__all__ = [
    "BENCHMARK",
    "FACTOR_FEATURES",
    "bench_ret",
    "beta",
    "factor_spec",
    "resid_mom",
    "resid_ret",
    "with_benchmark",
]

BENCHMARK = "benchmark"
"""The column (and backtrader line) of the benchmark's close that the factor features read."""

FACTOR_FEATURES: tuple[str, ...] = ("bench_ret", "beta", "resid_ret", "resid_mom")
"""Registered names of the factor features, in the order :func:`factor_spec` adds them."""

_COLUMNS = ("close", BENCHMARK)
_FLOOR = 1e-6  # floor of every std (log return per bar); the built-in features use the same
_BETA_BOUND = 5.0  # |beta| above this only comes from a nearly flat benchmark window


# ------------------------------------------------------------------ the benchmark column
def _benchmark_close(benchmark: Any) -> pd.Series:
    """The benchmark's closes as a float64 Series on a sorted, unique, tz-naive index."""
    if isinstance(benchmark, (str, os.PathLike)):
        benchmark = load_ohlcv(benchmark)
    if isinstance(benchmark, pd.DataFrame):
        if not is_validated(benchmark):
            raise DataError(
                "with_benchmark: the benchmark DataFrame is not a validated OHLCV frame; "
                "load it with metabt.data.load_ohlcv (or pass a Series of closes)"
            )
        return benchmark["close"].astype(np.float64)
    if not isinstance(benchmark, pd.Series):
        raise DataError(
            f"with_benchmark: benchmark must be an OHLCV frame from metabt.data.load_ohlcv, "
            f"a Series of closes or a CSV/Parquet path, got {type(benchmark).__name__}"
        )
    if not isinstance(benchmark.index, pd.DatetimeIndex):
        raise DataError(
            "with_benchmark: the benchmark Series needs a DatetimeIndex (bar times), got "
            f"{type(benchmark.index).__name__}; set the dates as its index"
        )
    try:
        close = benchmark.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"with_benchmark: the benchmark Series is not numeric ({exc}); pass closes"
        ) from exc
    index = close.index
    if index.tz is not None:  # as load_ohlcv: keep the local wall-clock time
        close.index = index = index.tz_localize(None)
    if index.hasnans or index.has_duplicates or not index.is_monotonic_increasing:
        raise DataError(
            "with_benchmark: the benchmark Series' dates must be present, unique and "
            "ascending; sort it (sort_index()) and drop duplicate or missing dates"
        )
    if close.isna().any():
        when = close.index[int(np.flatnonzero(close.isna().to_numpy())[0])]
        raise DataError(
            f"with_benchmark: the benchmark close is missing (NaN) at {when}; drop the "
            "missing bars (dropna()): the as-of join carries the previous close forward"
        )
    return close


def with_benchmark(
    frame: pd.DataFrame,
    benchmark: pd.DataFrame | pd.Series | str | os.PathLike[str],
    *,
    column: str = BENCHMARK,
) -> pd.DataFrame:
    """The asset's frame with the benchmark's close as an extra column, joined as of each bar.

    For each asset bar t the column holds the close of the LAST benchmark bar at or before
    t (an as-of join: ``reindex(method="ffill")``), never a later bar, so features read it
    causally. Where the benchmark lacks an asset bar (a holiday of its exchange), the
    previous benchmark close repeats (its return on that bar is 0, and the next return
    covers both bars). Asset bars before the benchmark's first bar get NaN; the factor
    features are 0 on windows holding such a bar (see the module docstring). Bar times
    must mean the same thing in both frames (e.g. the close of the bar); if the benchmark
    ends before the asset, its last close repeats to the end (stale: returns 0).

    Args:
        frame: the asset's validated OHLCV frame (:func:`metabt.data.load_ohlcv`); not
            modified.
        benchmark: the benchmark's bars: a validated OHLCV frame (its ``close`` is
            used), a Series of closes (currency units, > 0) on a DatetimeIndex, or a CSV
            or Parquet path (loaded with ``load_ohlcv``).
        column: name of the new column, a Python identifier (it becomes the backtrader
            line of :func:`metabt.data.feed`). Default ``"benchmark"``, the column the
            factor features of this module read.

    Returns:
        A copy of ``frame`` with ``column`` appended (float64; NaN before the benchmark's
        first bar), still validated (``is_validated``), ready for ``FeatureSpec.transform``
        and ``metabt.data.feed``.

    Raises:
        DataError: ``frame`` or a benchmark DataFrame not validated by ``load_ohlcv``; a
            benchmark Series without sorted unique dates or with a missing value; a
            non-positive or non-finite benchmark close (date named); a ``column`` that
            is not an identifier or that ``frame`` already has; daily benchmark bars
            (dated at midnight) for an intraday asset (a day's close would be seen by
            that day's earlier bars); no benchmark bar at or before the asset's last bar.
    """
    if not is_validated(frame):
        raise DataError(
            "with_benchmark: the asset frame is not a validated OHLCV frame; load it with "
            "metabt.data.load_ohlcv (after changing a loaded frame, load it again)"
        )
    if (
        not isinstance(column, str)
        or not column.isidentifier()
        or keyword.iskeyword(column)
        or column.startswith("_")
    ):
        raise DataError(
            f"with_benchmark: column must be a Python identifier not starting with '_' "
            f"(it becomes a backtrader line), got {column!r}; e.g. column='benchmark'"
        )
    if column in frame.columns:
        what = "an OHLCV column" if column in COLUMNS else "a column"
        raise DataError(
            f"with_benchmark: the asset frame already has {what} {column!r}; pass another "
            f"name (column='{column}_bench') or drop that column first"
        )
    close = _benchmark_close(benchmark)
    values = close.to_numpy()
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"with_benchmark: the benchmark close is {float(values[i])!r} at {close.index[i]}; "
            "closes must be finite and > 0 (log returns); fix or drop that bar"
        )
    bench_daily = bool((close.index == close.index.normalize()).all())
    asset_intraday = not bool((frame.index == frame.index.normalize()).all())
    if bench_daily and asset_intraday and len(close) > 1:
        raise DataError(
            "with_benchmark: the benchmark's bars are dated at midnight (daily) but the "
            "asset has intraday bars; a daily close is known only at the end of its day, so "
            "the as-of join would show it to that day's earlier bars; pass intraday "
            "benchmark bars, or resample the asset to daily bars"
        )
    if len(frame) and close.index[0] > frame.index[-1]:
        raise DataError(
            f"with_benchmark: the benchmark starts at {close.index[0]}, after the asset's "
            f"last bar {frame.index[-1]}; pass a benchmark that covers the asset's dates"
        )
    out = frame.copy()
    out[column] = close.reindex(frame.index, method="ffill").to_numpy(dtype=np.float64)
    return out


# ------------------------------------------------------------------ the features
def _window(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: window must be an integer >= {low} (returns), got {value!r}")
    return int(value)


def _bench_lookback(window: int = 60) -> int:
    """Bars ``bench_ret`` reads: ``window + 1`` closes give ``window`` returns."""
    return _window("bench_ret", window, 2) + 1


def _beta_lookback(window: int = 60) -> int:
    """Bars ``beta`` and ``resid_ret`` read: ``window + 1``."""
    return _window("beta", window, 3) + 1


def _mom_lookback(window: int = 60, mom: int = 20) -> int:
    """Bars ``resid_mom`` reads: ``window + 1``; the ``mom`` bars lie inside the window."""
    n = _window("resid_mom", window, 3)
    if isinstance(mom, bool) or not isinstance(mom, numbers.Integral) or not 1 <= mom <= n:
        raise ValueError(
            f"resid_mom: mom must be an integer from 1 to window={n} (bars), got {mom!r}"
        )
    return n + 1


def _returns(close: np.ndarray, bench: np.ndarray, window: int) -> tuple[np.ndarray, ...]:
    """(asset returns, benchmark returns, usable) of the last ``window`` returns.

    ``usable`` (...,) is False where a benchmark value of the window is NaN or <= 0;
    such values are replaced by 1 (no warning) and the caller returns 0 there.
    """
    c = close[..., -(window + 1) :]
    b = bench[..., -(window + 1) :]
    ok = b > 0  # False for NaN
    usable = np.logical_and.reduce(ok, axis=-1)
    lc, lb = np.log(c), np.log(np.where(ok, b, 1.0))
    return lc[..., 1:] - lc[..., :-1], lb[..., 1:] - lb[..., :-1], usable


def _std(x: np.ndarray) -> np.ndarray:
    """Sample std (ddof=1) along the last axis, two-pass, floored at 1e-6."""
    n = x.shape[-1]
    d = x - np.add.reduce(x, axis=-1, keepdims=True) / n
    return np.maximum(np.sqrt(np.add.reduce(d * d, axis=-1) / (n - 1)), _FLOOR)


def _beta(r: np.ndarray, m: np.ndarray) -> np.ndarray:
    """OLS slope of r on m (with intercept) along the last axis; 0 if m is flat; clipped."""
    n = r.shape[-1]
    dr = r - np.add.reduce(r, axis=-1, keepdims=True) / n
    dm = m - np.add.reduce(m, axis=-1, keepdims=True) / n
    var = np.add.reduce(dm * dm, axis=-1)
    cov = np.add.reduce(dr * dm, axis=-1)
    flat = var <= (n - 1) * _FLOOR * _FLOOR  # sample std of m below the floor
    out = np.divide(cov, var, out=np.zeros_like(var), where=~flat)
    return np.clip(out, -_BETA_BOUND, _BETA_BOUND)


def _residuals(
    close: np.ndarray, bench: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(residual returns (..., window), their floored std (...,), usable (...,))."""
    r, m, usable = _returns(close, bench, window)
    e = r - _beta(r, m)[..., None] * m
    return e, _std(e), usable


@register_feature("bench_ret", lookback=_bench_lookback, columns=_COLUMNS)
def bench_ret(close: np.ndarray, benchmark: np.ndarray, window: int = 60) -> np.ndarray:
    """The benchmark's last log return in units of its trailing volatility (a z-score).

    ``m_t / vol_m`` with ``m_t = log(B_t / B_{t-1})`` and ``vol_m`` the sample std
    (ddof=1, floored at 1e-6 log return per bar) of the last ``window`` benchmark
    returns; the same scale as the built-in ``ret_lag0``. 0 when the benchmark is flat,
    or missing anywhere in the window.

    Args:
        close: (..., n) asset closes, n >= window + 1, oldest first (not used: the
            factor features share their columns).
        benchmark: (..., n) benchmark closes as of each asset bar (:func:`with_benchmark`).
        window: benchmark returns in the volatility (>= 2). Default 60.

    Returns:
        (...,) float64, standardised units.
    """
    _, m, usable = _returns(close, benchmark, window)
    return np.where(usable, m[..., -1] / _std(m), 0.0)


@register_feature("beta", lookback=_beta_lookback, columns=_COLUMNS)
def beta(close: np.ndarray, benchmark: np.ndarray, window: int = 60) -> np.ndarray:
    """Rolling CAPM beta (Sharpe 1964): OLS slope of the asset's log returns on the benchmark's.

    ``cov(r, m) / var(m)`` over the last ``window`` log returns of the asset (r) and the
    benchmark (m), i.e. the slope of ``r_s = a + beta * m_s + e_s`` fitted with an
    intercept. Clipped to [-5, 5] (equity betas lie well inside; a larger estimate only
    comes from a nearly flat benchmark window). 0 when the benchmark's sample std over
    the window is below 1e-6 (flat: no slope to estimate) or a benchmark value is missing.

    Args:
        close: (..., n) asset closes, n >= window + 1, oldest first.
        benchmark: (..., n) benchmark closes as of each asset bar.
        window: returns in the regression (>= 3). Default 60.

    Returns:
        (...,) float64, dimensionless (asset return per unit benchmark return).
    """
    r, m, usable = _returns(close, benchmark, window)
    return np.where(usable, _beta(r, m), 0.0)


@register_feature("resid_ret", lookback=_beta_lookback, columns=_COLUMNS)
def resid_ret(close: np.ndarray, benchmark: np.ndarray, window: int = 60) -> np.ndarray:
    """The last residual (idiosyncratic) return in units of the residual volatility.

    ``e_t / sd_e`` with ``e_s = r_s - beta * m_s`` (beta of :func:`beta` over the same
    window) and ``sd_e`` the sample std (ddof=1, floored at 1e-6) of the window's
    ``window`` residuals. With a flat benchmark (beta 0) it is the asset's own return
    z-score; 0 when a benchmark value of the window is missing.

    Args:
        close: (..., n) asset closes, n >= window + 1, oldest first.
        benchmark: (..., n) benchmark closes as of each asset bar.
        window: returns in the regression and the residual std (>= 3). Default 60.

    Returns:
        (...,) float64, standardised units.
    """
    e, sd, usable = _residuals(close, benchmark, window)
    return np.where(usable, e[..., -1] / sd, 0.0)


@register_feature("resid_mom", lookback=_mom_lookback, columns=_COLUMNS)
def resid_mom(
    close: np.ndarray, benchmark: np.ndarray, window: int = 60, mom: int = 20
) -> np.ndarray:
    """Residual momentum (Blitz, Huij & Martens 2011): summed residual returns, standardised.

    ``(e_{t-mom+1} + ... + e_t) / (sd_e * sqrt(mom))``, with the residuals ``e_s = r_s -
    beta * m_s`` and their std ``sd_e`` from the last ``window`` returns (as in
    :func:`resid_ret`): the ``mom``-bar idiosyncratic return in units of its typical size.
    Blitz et al. use three Fama-French factors, 36-month betas and skip the last month;
    this is the one-factor version with no skip. 0 when a benchmark value of the window
    is missing.

    Args:
        close: (..., n) asset closes, n >= window + 1, oldest first.
        benchmark: (..., n) benchmark closes as of each asset bar.
        window: returns in the regression and the residual std (>= 3). Default 60.
        mom: residual returns summed (1 <= mom <= window). Default 20.

    Returns:
        (...,) float64, standardised units.
    """
    e, sd, usable = _residuals(close, benchmark, window)
    total = np.add.reduce(e[..., -mom:], axis=-1)
    return np.where(usable, total / (sd * math.sqrt(mom)), 0.0)


def factor_spec(spec: FeatureSpec | None = None, *, window: int = 60, mom: int = 20) -> FeatureSpec:
    """``spec`` with the four factor features appended (by import path, so checkpoints load).

    Adds ``bench_ret``, ``beta``, ``resid_ret`` (each over ``window`` returns) and
    ``resid_mom`` (``window``, ``mom``), named e.g. ``"beta(window=60)"``. The frame (or
    the backtest's data feed) needs the ``benchmark`` column: see :func:`with_benchmark`.

    Args:
        spec: the spec to extend; None: ``FeatureSpec()``.
        window: returns in the benchmark volatility and the beta regression (>= 3).
            Default 60.
        mom: residual returns summed by ``resid_mom`` (1 <= mom <= window). Default 20.

    Returns:
        A new spec whose ``names`` end with the four factor features and whose
        ``columns`` include ``"benchmark"``.

    Raises:
        ConfigError: a bad ``window`` or ``mom``, or a spec that already has one of them.
    """
    base = FeatureSpec() if spec is None else spec
    window, mom = _int_if_integral(window), _int_if_integral(mom)
    w = json.dumps({"window": window})
    return base.with_features(
        f"{__name__}:bench_ret{w}",
        f"{__name__}:beta{w}",
        f"{__name__}:resid_ret{w}",
        f"{__name__}:resid_mom{json.dumps({'window': window, 'mom': mom})}",
    )


def _int_if_integral(value: Any) -> Any:
    """A NumPy integer as an int (for JSON); anything else unchanged (validated later)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value
