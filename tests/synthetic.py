"""Synthetic market data shared by the tests (no file I/O, seeded).

The generators live in :mod:`metabt.data.synthetic`; the old names stay for the tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metabt.data.synthetic import gbm_market, regime_market

__all__ = ["daily_returns", "gbm_frame", "regime_frame"]

gbm_frame = gbm_market
regime_frame = regime_market


def daily_returns(n: int = 300, seed: int = 0, name: str = "returns") -> pd.Series:
    """Seeded normal simple daily returns on business days from 2020-01-01."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2020-01-01", periods=n)
    return pd.Series(rng.normal(0.0004, 0.01, n), index=index, name=name)


def linear_task_batch(b=3, s=8, q=5, f=4, seed=0, dtype=None):
    """A seeded batch of linear regression tasks (each task its own rule): xs, ys, xq, yq.

    Shapes (b, s, f), (b, s), (b, q, f), (b, q); float64 unless ``dtype`` says otherwise.
    """
    import torch

    dtype = torch.float64 if dtype is None else dtype
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(b, f, generator=g, dtype=dtype)  # each task has its own linear rule
    xs = torch.randn(b, s, f, generator=g, dtype=dtype)
    xq = torch.randn(b, q, f, generator=g, dtype=dtype)
    ys = torch.einsum("bsf,bf->bs", xs, w) + 0.1 * torch.randn(b, s, generator=g, dtype=dtype)
    yq = torch.einsum("bqf,bf->bq", xq, w) + 0.1 * torch.randn(b, q, generator=g, dtype=dtype)
    return xs, ys, xq, yq


def perturbed_inside(frames, spans, *, seed, low, high, volume=False):
    """``frames`` with every bar inside ``spans`` (both ends) scaled by a random factor in
    [low, high) (OHLC, and the volume when ``volume``); the bars outside are untouched."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, frame in frames.items():
        frame = frame.copy()
        inside = np.zeros(len(frame), dtype=bool)
        for first, last in spans:
            inside |= (frame.index >= first) & (frame.index <= last)
        factor = rng.uniform(low, high, size=int(inside.sum()))
        columns = ("open", "high", "low", "close", *(("volume",) if volume else ()))
        for col in columns:
            frame.loc[inside, col] = frame.loc[inside, col].to_numpy() * factor
        out[name] = frame
    return out
