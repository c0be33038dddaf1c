"""Seeded synthetic daily OHLCV markets: a plain GBM and a hidden-regime volume market.

Both generators draw from ``np.random.default_rng(seed)`` only (no global random state) and
return frames validated by :func:`metabt.data.load_ohlcv`: columns ``open, high, low,
close, volume`` (float64; prices in currency units per share, volume in shares per bar) on
a business-day ``DatetimeIndex`` named ``date``.

:func:`regime_market` is the market of the synthetic benchmark family
(``benchmarks/bench_synthetic.py``): whether a volume surge precedes a rise or a fall
depends on a hidden regime, so only a model that reads the recent (features, return)
pairs can use it; with ``strength=0`` it holds no signal at all.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from metabt.data.ohlcv import load_ohlcv
from metabt.errors import ConfigError

__all__ = [
    "VOLUME_LOG_MEAN",
    "VOLUME_LOG_SD",
    "gbm_market",
    "regime_market",
    "volume_score",
]

#: Mean of the natural log of volume in :func:`regime_market` (log shares).
VOLUME_LOG_MEAN = 14.0
#: Standard deviation of the natural log of volume in :func:`regime_market` (log shares).
VOLUME_LOG_SD = 0.3


def _check(n: int, seed: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"n (bars) must be an integer >= 2, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def _frame(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    start: str | pd.Timestamp,
    name: str,
) -> pd.DataFrame:
    index = pd.bdate_range(start, periods=len(close), name="date")
    if index[-1] > pd.Timestamp.max:
        raise ConfigError(
            f"{len(close)} business days from {pd.Timestamp(start).date()} end after "
            f"{pd.Timestamp.max.date()}, the last date pandas can hold; use an earlier start"
        )
    data = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return load_ohlcv(pd.DataFrame(data, index=index), name=name)


def gbm_market(
    n: int,
    seed: int,
    *,
    start: str | pd.Timestamp = "2005-01-03",
    price: float = 100.0,
    drift: float = 2e-4,
    vol: float = 0.015,
) -> pd.DataFrame:
    """Daily bars whose closes follow a geometric Brownian motion.

    The log return of bar t is N(``drift``, ``vol``²), i.i.d.; the open is the previous
    close times exp(N(0, 0.004²)); the high (low) is the larger (smaller) of open and close
    times exp(+|N(0, 0.006²)|) (exp(-|N(0, 0.006²)|)); volume is lognormal(14, 0.5),
    rounded to whole shares. Nothing is predictable.

    Args:
        n: bars (>= 2).
        seed: seed of ``np.random.default_rng``; the same seed gives the same frame.
        start: date of the first bar (business days follow). Default 2005-01-03.
        price: the close before the first bar, currency units. Default 100.
        drift: mean log return per bar. Default 2e-4.
        vol: standard deviation of the log return per bar (> 0). Default 0.015.

    Returns:
        A validated OHLCV frame of shape (n, 5).

    Raises:
        ConfigError: n < 2, a negative seed, a non-positive price or vol.
    """
    _check(n, seed)
    _positive("price", price)
    _positive("vol", vol)
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(drift, vol, n)))
    prev = np.concatenate([[price], close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, 0.004, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.006, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.006, n)))
    volume = np.round(rng.lognormal(14.0, 0.5, n))
    return _frame(open_, high, low, close, volume, start, f"gbm_market(seed={seed})")


def regime_market(
    n: int,
    seed: int,
    *,
    strength: float,
    mean_regime: float = 250,
    vol: float = 0.01,
    start: str | pd.Timestamp = "2000-01-03",
) -> tuple[pd.DataFrame, pd.Series]:
    """Daily bars where the meaning of a volume surge switches with a hidden regime.

    Log volume is i.i.d. N(14, 0.3²); z_t is its standard score (:func:`volume_score`).
    A hidden regime s_t in {+1, -1} flips with probability ``1 / mean_regime`` at each
    bar (s starts at +1 and flips at bar 0 with that probability), so regimes last
    ``mean_regime`` bars on average. The log return of the next bar is

        r_{t+1} = vol * (s_t * strength * z_t + e_{t+1}),  e ~ N(0, 1) i.i.d.

    (r_0 = vol * e_0): in one regime heavy volume precedes a rise, in the other a fall.
    Returns have the same variance in both regimes and no autocorrelation, so no
    feature's distribution reveals the regime; only the recent relation between volume
    and the returns that followed does. Averaged over regimes, volume predicts nothing.

    A forecaster that knows the regime (signal s_t * z_t) has a correlation of
    ``strength / sqrt(1 + strength²)`` with r_{t+1} (R² = strength² / (1 + strength²));
    with ``strength=0`` nothing is predictable.

    The open is the previous close times exp(N(0, (vol/4)²)); the high (low) is the larger
    (smaller) of open and close times exp(+|N(0, (vol/2)²)|) (exp(-|N(0, (vol/2)²)|));
    volume is exp(14 + 0.3 z_t) rounded to whole shares.

    Args:
        n: bars (>= 2).
        seed: seed of ``np.random.default_rng``; the same seed gives the same market.
        strength: the volume effect, in units of the return noise sd (dimensionless;
            finite, >= 0). 0 is the null: no signal at all.
        mean_regime: mean regime length, bars (>= 1). Default 250.
        vol: standard deviation of the return noise, log return per bar (> 0).
            Default 0.01.
        start: date of the first bar (business days follow). Default 2000-01-03.

    Returns:
        (frame, regime): the validated OHLCV frame of shape (n, 5), and the regime s_t
        (+1.0 or -1.0, float64) of each bar, a Series of length n named ``regime`` on the
        frame's index.

    Raises:
        ConfigError: n < 2, a negative seed, a negative or non-finite strength, a
            mean_regime below 1, a non-positive vol.
    """
    _check(n, seed)
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
        raise ConfigError(f"strength must be a finite number >= 0, got {strength!r}")
    if not (isinstance(mean_regime, (int, float)) and mean_regime >= 1):
        raise ConfigError(f"mean_regime must be a number of bars >= 1, got {mean_regime!r}")
    _positive("vol", vol)
    rng = np.random.default_rng(seed)
    flips = rng.random(n) < 1.0 / mean_regime
    regime = np.where(np.cumsum(flips) % 2 == 0, 1.0, -1.0)
    z = rng.normal(0.0, 1.0, n)
    r = vol * rng.normal(0.0, 1.0, n)
    r[1:] += vol * strength * regime[:-1] * z[:-1]
    close = 100.0 * np.exp(np.cumsum(r))
    prev = np.concatenate([[100.0], close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, vol / 4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    volume = np.round(np.exp(VOLUME_LOG_MEAN + VOLUME_LOG_SD * z))
    frame = _frame(
        open_, high, low, close, volume, start, f"regime_market(seed={seed}, strength={strength})"
    )
    return frame, pd.Series(regime, index=frame.index, name="regime")


def volume_score(frame: pd.DataFrame) -> pd.Series:
    """The volume standard score z_t of a :func:`regime_market` frame.

    ``(log(volume) - 14) / 0.3``; equal to the generator's z_t up to the rounding of
    volume to whole shares (an error below 1e-5).

    Args:
        frame: a frame from :func:`regime_market`.

    Returns:
        A float64 Series named ``volume_z`` on the frame's index.
    """
    z = (np.log(frame["volume"]) - VOLUME_LOG_MEAN) / VOLUME_LOG_SD
    return z.rename("volume_z")
