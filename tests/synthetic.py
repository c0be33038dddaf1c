"""Synthetic market data shared by the tests (no file I/O, seeded)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def gbm_frame(n: int, seed: int, *, start: str = "2005-01-03", price: float = 100.0):
    """Synthetic daily OHLCV bars: GBM closes, opens/highs/lows around them, lognormal volume."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(2e-4, 0.015, n)))
    prev = np.concatenate([[price], close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, 0.004, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.006, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.006, n)))
    volume = np.round(rng.lognormal(14.0, 0.5, n))
    index = pd.bdate_range(start, periods=n, name="date")
    data = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return pd.DataFrame(data, index=index)


def regime_frame(
    n: int,
    seed: int,
    *,
    mean_regime: int = 250,
    strength: float = 0.5,
    vol: float = 0.01,
    start: str = "2000-01-03",
) -> pd.DataFrame:
    """Synthetic daily bars where the meaning of a volume surge switches between regimes.

    Log volume is i.i.d. normal; z_t is its standard score. A hidden regime s_t in {+1, -1}
    flips with probability 1 / mean_regime each bar, and the next bar's log return is
    ``r_{t+1} = vol * (s_t * strength * z_t + e_{t+1})`` with e ~ N(0, 1): in one regime
    heavy volume precedes a rise, in the other a fall. Returns have the same variance in
    both regimes and no autocorrelation, so no feature's distribution reveals the regime;
    only the recent relation between volume and the returns that followed does, which a
    few dozen realised bars show. Averaged over regimes, volume predicts nothing.
    """
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
    volume = np.round(np.exp(14.0 + 0.3 * z))
    index = pd.bdate_range(start, periods=n, name="date")
    data = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return pd.DataFrame(data, index=index), regime


def daily_returns(n: int = 300, seed: int = 0, name: str = "returns") -> pd.Series:
    """Seeded normal simple daily returns on business days from 2020-01-01."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2020-01-01", periods=n)
    return pd.Series(rng.normal(0.0004, 0.01, n), index=index, name=name)
