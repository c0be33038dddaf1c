"""A user feature for metabt: the relative strength index (RSI), registered as ``"rsi"``.

Import this module (or name it by import path) and the feature is available offline and
inside the backtest, with the same values::

    from metabt.features import FeatureSpec

    spec = FeatureSpec().with_features('examples.rsi_feature:rsi{"window": 21}')
    spec.names[-1]  # 'rsi(window=21)'

or on the command line ``metabt train --feature examples.rsi_feature:rsi`` (run from the
repository root, or with the directory holding ``examples/`` on PYTHONPATH).
"""

from __future__ import annotations

import numpy as np

from metabt.features import register_feature

__all__ = ["rsi"]


def _lookback(window: int = 14) -> int:
    """Bars the RSI of ``window`` changes reads: ``window + 1`` closes."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"rsi: window must be an integer >= 2 (bars), got {window!r}")
    return window + 1


@register_feature("rsi", lookback=_lookback, columns=("close",))
def rsi(close: np.ndarray, window: int = 14) -> np.ndarray:
    """Cutler's RSI of the last ``window`` close-to-close changes, scaled to [-1, 1].

    Wilder's RSI (Wilder 1978, *New Concepts in Technical Trading Systems*) is
    ``100 - 100 / (1 + G / L)`` with G and L the average gain and loss of the last
    ``window`` changes. Wilder averages them with an exponential recursion over the whole
    history, which no finite window reproduces exactly (and which depends on where the
    data starts); this uses simple averages over the window (Cutler's RSI), so each value
    depends on ``window + 1`` closes only. Returned as ``(RSI - 50) / 50 = (G - L) / (G + L)``,
    in [-1, 1] like the standardised features; 0 (RSI 50) when the closes are flat.

    Args:
        close: (..., n) close prices, n >= window + 1, oldest first; the last
            ``window + 1`` are used.
        window: number of close-to-close changes (>= 2). Default 14.

    Returns:
        (...,) float64 in [-1, 1]: the scaled RSI at the last bar of each window.
    """
    change = np.diff(close[..., -(window + 1) :], axis=-1)  # (..., window)
    gain = np.maximum(change, 0.0).sum(axis=-1)  # the 1/window of the averages cancels
    loss = np.maximum(-change, 0.0).sum(axis=-1)
    total = gain + loss
    return np.divide(gain - loss, total, out=np.zeros_like(total), where=total > 0)
