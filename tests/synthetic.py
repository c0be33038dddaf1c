"""Synthetic market data shared by the tests (no file I/O, seeded).

The generators live in :mod:`metabt.synthetic`; the old names stay for the tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metabt.synthetic import gbm_market, regime_market

__all__ = ["daily_returns", "gbm_frame", "regime_frame"]

gbm_frame = gbm_market
regime_frame = regime_market


def daily_returns(n: int = 300, seed: int = 0, name: str = "returns") -> pd.Series:
    """Seeded normal simple daily returns on business days from 2020-01-01."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2020-01-01", periods=n)
    return pd.Series(rng.normal(0.0004, 0.01, n), index=index, name=name)
