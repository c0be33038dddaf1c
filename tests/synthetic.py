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
