"""Rolling statistics with one home each: trailing volatility, forward returns, turnover.

Trailing volatility has two implementations of one definition, the sample standard
deviation (ddof=1) of the last w one-bar log returns: :func:`tail_stds` computes it for
many windows of a whole history at once (offline features), :class:`RollingMoments` for a
stream, in O(1) per bar (features, sizing and labels inside a backtest). They agree to
float precision (tested).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

__all__ = [
    "RollingMoments",
    "annual_turnover",
    "forward_log_return",
    "tail_stds",
    "window_mask",
]


def window_mask(windows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Masks that select the last w values of a row, for each window w.

    Args:
        windows: K window lengths (each >= 2).

    Returns:
        (mask, lengths): mask (K, max(windows)) float64, 1 on the last w positions of row
        k and 0 elsewhere; lengths (K,) float64, the w.
    """
    width = max(windows)
    lengths = np.asarray(windows, dtype=np.float64)
    mask = (np.arange(width)[None, :] >= width - lengths[:, None]).astype(np.float64)
    return mask, lengths


def tail_stds(r: np.ndarray, mask: np.ndarray, n: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Sample stds (ddof=1) of the last ``n[k]`` values of ``r``, for K windows at once.

    Args:
        r: (..., W) float64 values (e.g. one-bar log returns), oldest first,
            W = mask.shape[1].
        mask: (K, W) float64 from :func:`window_mask`.
        n: (K,) float64 window lengths (each >= 2).
        floor: lower bound of every result (e.g. 1e-6 log return per bar). Default 0.

    Returns:
        (..., K) float64; two-pass (mean, then squared deviations), vectorised.
    """
    x = r[..., None, :] * mask  # (..., K, W), zero outside each window
    d = (x - (np.add.reduce(x, axis=-1) / n)[..., None]) * mask
    return np.maximum(np.sqrt(np.add.reduce(d * d, axis=-1) / (n - 1)), floor)


class RollingMoments:
    """Sample std (ddof=1) of the last w values of a stream, for several w, O(1) per value.

    Each window adds the newest value and drops the one leaving it. Values are shifted by
    the stream's first value (the "shifted data" variance algorithm), so ``q - s²/w`` does
    not cancel catastrophically, and the sums are recomputed exactly every 1,024 values so
    that rounding cannot accumulate over a long backtest.

    Args:
        windows: window lengths w (each >= 2).

    Example:
        >>> moments = RollingMoments((3,))
        >>> for value in (1.0, 2.0, 4.0):
        ...     moments.push(value)
        >>> round(moments.stds()[0], 6)
        1.527525
    """

    _RESUM = 1024

    def __init__(self, windows: Sequence[int]) -> None:
        self.windows = tuple(windows)
        self._values: deque[float] = deque(maxlen=max(self.windows) + 1)
        self._sums = [0.0] * len(self.windows)
        self._squares = [0.0] * len(self.windows)
        self._shift = math.nan
        self.count = 0  # values pushed so far

    def push(self, value: float) -> None:
        """Add the newest value of the stream."""
        if self.count == 0:
            self._shift = value
        self.count += 1
        d = value - self._shift
        values = self._values
        values.append(d)
        n = len(values)
        if self.count % self._RESUM == 0:
            items = list(values)
            for j, w in enumerate(self.windows):
                tail = items[-w:]
                self._sums[j] = sum(tail)
                self._squares[j] = sum(v * v for v in tail)
            return
        sums, squares = self._sums, self._squares
        for j, w in enumerate(self.windows):
            sums[j] += d
            squares[j] += d * d
            if n > w:
                old = values[-1 - w]
                sums[j] -= old
                squares[j] -= old * old

    def std(self) -> float:
        """Sample std (ddof=1) of the last ``windows[0]`` values: ``stds()[0]``, without the
        list (a per-bar path with one window)."""
        w = self.windows[0]
        s = self._sums[0]
        return math.sqrt(max(self._squares[0] - s * s / w, 0.0) / (w - 1))

    def stds(self) -> list[float]:
        """Sample std (ddof=1) of the last w values, for each window w (needs w pushed)."""
        return [
            math.sqrt(max(q - s * s / w, 0.0) / (w - 1))
            for w, s, q in zip(self.windows, self._sums, self._squares)
        ]


def forward_log_return(close: np.ndarray, horizon: int) -> np.ndarray:
    """Forward log return over ``horizon`` bars: ``log(C_{t+h} / C_t)`` for every bar t.

    The label and the information coefficient's target. It is realised at the close of
    bar t + h, so at bar ``now`` only the values of bars t <= now - h are known.

    Args:
        close: (T,) float64 closes, chronological (> 0).
        horizon: h, bars (>= 1).

    Returns:
        (T,) float64; NaN for the last h bars (not yet realised).
    """
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        out[:-horizon] = np.log(close[horizon:] / close[:-horizon])
    return out


def annual_turnover(traded: float, mean_equity: float, bars: int, bars_per_year: int) -> float:
    """Traded notional per year as a multiple of average equity (two-way turnover).

    Two-way: buys and sells both count; one-way turnover (the share of the book replaced)
    is half of it.

    Args:
        traded: total filled notional (sum of |shares x fill price|, buys and sells),
            currency units.
        mean_equity: average portfolio value over the period, currency units.
        bars: bars in the period (>= 1 is used).
        bars_per_year: bars in a year (252 for daily bars).

    Returns:
        ``traded / mean_equity * bars_per_year / bars`` (multiple of equity per year).
    """
    return traded / mean_equity * bars_per_year / max(bars, 1)
