"""SignalSizer: volatility-targeted integer positions from a model signal, for Backtrader."""

from __future__ import annotations

import itertools
import math
from typing import Any

import backtrader as bt
import numpy as np

from metabt._checks import reject_unknown_params
from metabt.errors import ConfigError

__all__ = ["SignalSizer"]

# |x - round(x)| below this (relative) counts as an integer before truncation, so that float
# error in ``weight * value / price`` (e.g. 9.999999999999998) does not lose a share.
_INT_TOL = 1e-9


def _finite(x: Any) -> bool:
    """True for a real, finite number (bools and non-numbers are not)."""
    if isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except TypeError:
        return False


def _truncate(x: float) -> int:
    """``x`` truncated toward zero, treating values within float error of an integer as it."""
    nearest = round(x)
    if abs(x - nearest) <= _INT_TOL * max(1.0, abs(x)):
        return int(nearest)
    return math.trunc(x)


class SignalSizer(bt.Sizer):
    """Turns a signal and recent volatility into an integer position (volatility targeting).

    The target weight (position value as a fraction of portfolio value) of a data is::

        s = clip(signal / signal_scale, -1, 1)            (s >= 0 if long_only)
        w = clip(s * target_vol / vol, -max_leverage, max_leverage)

    with ``vol`` the annualised realised volatility of the data. The target position is
    ``trunc(w * weight_scale * value / price)`` shares (truncated toward zero). A deadband
    holds the current position when the target weight is within ``deadband`` of the
    current weight, so small signal changes do not churn the position (and pay costs).

    Invalid inputs never give NaN or inf: a NaN/inf signal, a NaN/inf/non-positive
    volatility (e.g. fewer than ``vol_lookback + 1`` bars), price or portfolio value gives
    a target of 0 shares (flat), whatever the deadband.

    The strategy normally calls :meth:`target_size` and then ``order_target_size``; the
    backtrader hook :meth:`_getsizing` serves plain ``buy()`` / ``sell()`` calls.

    Params:
        target_vol (float): annualised volatility target of each position, as a fraction
            (0.10 = 10% a year). Default 0.10.
        vol_lookback (int): bars of close-to-close log returns in the realised volatility
            (bars). Default 20.
        max_leverage (float): cap on |position value| / portfolio value per data
            (multiple of equity). Default 1.0.
        long_only (bool): if True, negative signals give a flat position, never a short.
            Default False.
        deadband (float): no trade when |target weight - current weight| < deadband
            (fraction of equity, 0.05 = 5%). 0 disables it. Default 0.05.
        signal_scale (float): signal magnitude that earns the full volatility-target
            weight (signal units; larger signals are clipped). Default 0.25.
        bars_per_year (int): bars in a year, to annualise volatility (bars). Default 252.

    Raises:
        ConfigError: a parameter out of range, or an unknown parameter name.

    References:
        Moskowitz, Ooi and Pedersen (2012), "Time series momentum", J. Financial
        Economics 104(2) — volatility-scaled positions.
    """

    params: Any = (
        ("target_vol", 0.10),
        ("vol_lookback", 20),
        ("max_leverage", 1.0),
        ("long_only", False),
        ("deadband", 0.05),
        ("signal_scale", 0.25),
        ("bars_per_year", 252),
    )

    def __init__(self, **unknown: Any) -> None:
        reject_unknown_params("SignalSizer", unknown, self.params)
        p = self.p
        positive = {
            "target_vol": "an annualised fraction, e.g. 0.10 for 10%",
            "max_leverage": "a multiple of equity, e.g. 1.0",
            "signal_scale": "the signal size that earns the full weight, e.g. 0.25",
        }
        for name, example in positive.items():
            value = getattr(p, name)
            if not (_finite(value) and value > 0):
                raise ConfigError(f"SignalSizer: {name} must be > 0 ({example}), got {value!r}")
        if not (_finite(p.deadband) and p.deadband >= 0):
            raise ConfigError(
                f"SignalSizer: deadband must be >= 0 (fraction of equity, e.g. 0.05), "
                f"got {p.deadband!r}"
            )
        for name, low in (("vol_lookback", 2), ("bars_per_year", 1)):
            value = getattr(p, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"SignalSizer: {name} must be an integer >= {low}, got {value!r}")
        if not isinstance(p.long_only, (bool, np.bool_)):
            raise ConfigError(f"SignalSizer: long_only must be True or False, got {p.long_only!r}")

    # ---- pure sizing
    def target_weight(self, signal: float, vol: float) -> float:
        """Target position weight from a signal and an annualised volatility (pure).

        Args:
            signal (float): the model's signal (signal units; sign = direction).
            vol (float): annualised volatility of the data (fraction, 0.2 = 20%).

        Returns:
            float: ``clip(signal / signal_scale, -1, 1) * target_vol / vol`` capped to
            [-max_leverage, max_leverage] (fraction of equity), ``>= 0`` if ``long_only``;
            0.0 for a NaN/inf signal or a NaN/inf/non-positive ``vol``. Never NaN or inf.
        """
        if not (_finite(signal) and _finite(vol) and vol > 0):
            return 0.0
        p = self.p
        direction = min(1.0, max(-1.0, float(signal) / p.signal_scale))
        if p.long_only:
            direction = max(0.0, direction)
        if direction == 0.0:  # also avoids 0 * inf when target_vol / vol overflows
            return 0.0
        cap = float(p.max_leverage)
        return min(cap, max(-cap, direction * (p.target_vol / float(vol))))

    def target_shares(
        self,
        signal: float,
        vol: float,
        price: float,
        value: float,
        *,
        current: float = 0,
        weight_scale: float = 1.0,
        deadband: float | None = None,
    ) -> int:
        """Target position in shares from the sizing inputs (pure; used by :meth:`target_size`).

        Args:
            signal (float): the model's signal (signal units).
            vol (float): annualised volatility of the data (fraction).
            price (float): price of one share (currency units), e.g. the last close.
            value (float): portfolio value (currency units).
            current (float): the current position (shares). Default 0.
            weight_scale (float): multiplier in (0, 1] applied to the target weight, e.g.
                a portfolio gross-leverage cap. Default 1.0.
            deadband (float | None): overrides the ``deadband`` param (0 = always move to
                the exact target). Default None (the param).

        Returns:
            int: ``trunc(target_weight(signal, vol) * weight_scale * value / price)`` shares
            (truncated toward zero); ``int(current)`` when the target weight is within
            ``deadband`` of the current weight ``current * price / value``; 0 when the
            signal, vol, price or value is invalid (NaN, inf, or vol/price/value <= 0) or
            the size overflows a float.

        Raises:
            ConfigError: ``weight_scale`` outside (0, 1].
        """
        if not (_finite(weight_scale) and 0 < weight_scale <= 1):
            raise ConfigError(
                f"SignalSizer: weight_scale must be in (0, 1] (a leverage scale-down), "
                f"got {weight_scale!r}"
            )
        if not (_finite(price) and price > 0 and _finite(value) and value > 0):
            return 0
        if not (_finite(signal) and _finite(vol) and vol > 0):
            return 0
        weight = self.target_weight(signal, vol) * weight_scale
        return self.shares_for_weight(weight, price, value, current=current, deadband=deadband)

    def shares_for_weight(
        self,
        weight: float,
        price: float,
        value: float,
        *,
        current: float = 0,
        deadband: float | None = None,
    ) -> int:
        """Shares that hold ``weight`` of the portfolio, with the deadband (pure).

        The last stage of :meth:`target_shares`, for callers that already have the target
        weight (e.g. after a portfolio gross-leverage cap).

        Args:
            weight (float): target position weight (fraction of equity, signed).
            price (float): price of one share (currency units).
            value (float): portfolio value (currency units).
            current (float): the current position (shares). Default 0.
            deadband (float | None): overrides the ``deadband`` param. Default None.

        Returns:
            int: ``trunc(weight * value / price)`` shares; ``int(current)`` when ``weight``
            is within the deadband of the current weight; 0 for an invalid weight, price
            or value (NaN, inf, or price/value <= 0) or an overflowing size.
        """
        if not (_finite(weight) and _finite(price) and price > 0 and _finite(value) and value > 0):
            return 0
        held = int(current) if _finite(current) else 0
        band = self.p.deadband if deadband is None else deadband
        if abs(weight - held * price / value) < band:
            return held
        shares = weight * value / price
        if not math.isfinite(shares):  # overflow, e.g. a price of 1e-300
            return 0
        return _truncate(shares)

    # ---- backtrader-facing
    def realised_vol(self, data: bt.DataBase) -> float:
        """Annualised realised volatility of ``data`` at the current bar.

        Args:
            data (bt.DataBase): a backtrader data feed.

        Returns:
            float: ``std(ddof=1)`` of the last ``vol_lookback`` close-to-close log returns
            times ``sqrt(bars_per_year)`` (annualised fraction); NaN with fewer than
            ``vol_lookback + 1`` bars or a non-positive/non-finite close in the window.
        """
        n = int(self.p.vol_lookback) + 1
        if len(data) < n:
            return math.nan
        return self.vol_from_closes(np.asarray(data.close.get(size=n), dtype=float))

    def vol_from_closes(self, closes: np.ndarray) -> float:
        """Annualised realised volatility from recent closes (pure; see :meth:`realised_vol`).

        Args:
            closes (np.ndarray): (n,) closes, oldest first; the last ``vol_lookback + 1``
                are used.

        Returns:
            float: annualised volatility (fraction); NaN with too few closes or a
            non-positive/non-finite close in the window.
        """
        n = int(self.p.vol_lookback) + 1
        tail = closes[-n:]
        # scalar math on a list: cheaper than NumPy calls for ~20 values
        window = tail.tolist() if isinstance(tail, np.ndarray) else [float(c) for c in tail]
        if len(window) != n or not all(math.isfinite(c) and c > 0 for c in window):
            return math.nan
        logs = [math.log(c) for c in window]
        returns = [b - a for a, b in itertools.pairwise(logs)]
        mean = sum(returns) / len(returns)
        var = sum((r - mean) * (r - mean) for r in returns) / (len(returns) - 1)
        return math.sqrt(var) * math.sqrt(self.p.bars_per_year)

    def target_size(
        self,
        data: bt.DataBase,
        signal: float,
        *,
        value: float | None = None,
        weight_scale: float = 1.0,
    ) -> int:
        """Target position of ``data`` in shares, at the current bar.

        Uses the data's last close as price, :meth:`realised_vol` as volatility and the
        broker's position as the current position (0 when the sizer is not attached to a
        strategy).

        Args:
            data (bt.DataBase): the data feed to size.
            signal (float): its current signal (NaN = no view: flat).
            value (float | None): portfolio value (currency units); None = the broker's
                ``getvalue()``. Default None.
            weight_scale (float): multiplier in (0, 1] on the target weight (portfolio
                gross-leverage cap). Default 1.0.

        Returns:
            int: the target size (shares, negative = short), see :meth:`target_shares`.

        Raises:
            ConfigError: ``value`` is None and the sizer has no broker; bad ``weight_scale``.
        """
        if value is None:
            if self.broker is None:
                raise ConfigError(
                    "SignalSizer.target_size: no broker to read the portfolio value from; "
                    "pass value=... or attach the sizer with cerebro.addsizer"
                )
            value = self.broker.getvalue()
        price = data.close[0] if len(data) else math.nan
        return self.target_shares(
            signal,
            self.realised_vol(data),
            price,
            value,
            current=self._position(data),
            weight_scale=weight_scale,
        )

    def _position(self, data: bt.DataBase) -> float:
        """Current position of ``data`` in shares (0 without a broker)."""
        if self.broker is None:
            return 0
        return self.broker.getposition(data).size

    def _getsizing(
        self, comminfo: bt.CommInfoBase, cash: float, data: bt.DataBase, isbuy: bool
    ) -> int:
        """Backtrader hook: size of a ``buy()`` / ``sell()`` towards the target position.

        The signal is ``strategy.current_signal(data)`` when the strategy has that method,
        else 0 (which targets a flat position). Cash is not checked here: the broker
        rejects orders it cannot fill.

        Args:
            comminfo: the data's commission scheme (unused).
            cash: the broker's cash (unused).
            data: the data the order is for.
            isbuy: True for a buy, False for a sell.

        Returns:
            int: shares (>= 0) to trade in the requested direction to reach
            :meth:`target_size`; 0 when the target lies the other way or is reached.
        """
        getter = getattr(self.strategy, "current_signal", None)
        signal = getter(data) if callable(getter) else 0.0
        delta = self.target_size(data, signal) - int(self._position(data))
        if isbuy:
            return max(delta, 0)
        return max(-delta, 0)
