"""SignalSizer: volatility-targeted integer positions from a model signal, for Backtrader."""

from __future__ import annotations

import math
from typing import Any

import backtrader as bt
import numpy as np

from metabt._checks import reject_unknown_params
from metabt.data.bars import check_bars_per_year, check_calendar
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

    The one sizing path: each bar, :meth:`metabt.strategies.meta.SignalTrader.rebalance` asks
    :meth:`target_weight` for every asset's weight (with the strategy's O(1) estimate of
    the realised volatility over ``vol_lookback`` bars, annualised with the run's bars per
    year: ``bars_per_year`` if given, else the feeds' own bar frequency, inferred at start
    by :func:`metabt.data.bars.common_frequency`), scales the weights down to the portfolio's
    gross-leverage cap, turns each into shares with :meth:`shares_for_weight` (deadband
    included) and submits the differences as orders, which fill at the next bar's open.
    :meth:`target_shares` is the same computation for one asset. A lone ``buy()`` without
    a size is refused (:meth:`_getsizing`).

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
            (fraction of equity, 0.05 = 5%). 0 disables it. Default 0.05. When a
            strategy's gross-leverage cap scales all weights down by a factor (a universe
            of many assets), the band is scaled by the same factor
            (:meth:`metabt.strategies.trader.SignalTrader.rebalance`).
        rebalance_band (float): a relative tolerance band on the size: a position on the
            same side as its target is kept while its weight is within
            ``rebalance_band * |target weight|`` of the target (0.25 = within 25% of it),
            so a volatility-targeted size is not re-traded on every move of the realised
            volatility. The band used is the larger of this and ``deadband``; a change of
            side, or going flat, uses ``deadband`` alone. 0 disables it. Default 0.
        signal_scale (float): signal magnitude that earns the full volatility-target
            weight (signal units; larger signals are clipped). Default 0.25.
        fractional (bool): positions in fractions of a unit (crypto, FX), rounded toward
            zero to a multiple of ``lot``; False: whole units (shares), so a target worth
            less than one unit is 0. Default False.
        lot (float): the unit step of fractional positions (units). Default 1e-8.
        bars_per_year (float | None): bars in a year, to annualise volatility (bars per
            year, e.g. 252 for daily equity bars, 52 weekly, 6240 hourly 24/5 FX). Default
            None: the data's own frequency, inferred from the feeds' bar times when the
            strategy starts (:attr:`metabt.strategies.meta.SignalTrader.bar_frequency`); an
            explicit value overrides the inference.
        calendar (str | None): the market calendar that inference counts with, declared
            by an asset class: ``"exchange"`` (252 days of 6.5 hours), ``"24/5"`` (FX),
            ``"24/7"`` (crypto) or ``"futures"`` (252 days of 23 hours); see
            :data:`metabt.data.bars.CALENDARS`. Default None: read from the bar times.

    Raises:
        ConfigError: a parameter out of range (``bars_per_year`` must be None or a
            positive number), or an unknown parameter name.

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
        ("rebalance_band", 0.0),
        ("signal_scale", 0.25),
        ("fractional", False),
        ("lot", 1e-8),
        ("bars_per_year", None),
        ("calendar", None),
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
        if not (_finite(p.rebalance_band) and 0 <= p.rebalance_band < 1):
            raise ConfigError(
                f"SignalSizer: rebalance_band must be in [0, 1) (a fraction of the target "
                f"weight, e.g. 0.25), got {p.rebalance_band!r}"
            )
        lookback = p.vol_lookback
        integer = isinstance(lookback, (int, np.integer)) and not isinstance(lookback, bool)
        if not integer or lookback < 2:
            raise ConfigError(
                f"SignalSizer: vol_lookback must be an integer >= 2 (bars), got {lookback!r}"
            )
        if p.bars_per_year is not None:
            check_bars_per_year(p.bars_per_year, "SignalSizer: bars_per_year")
        check_calendar(p.calendar, "SignalSizer: calendar")
        if not isinstance(p.fractional, (bool, np.bool_)):
            raise ConfigError(
                f"SignalSizer: fractional must be True or False, got {p.fractional!r}"
            )
        if not (_finite(p.lot) and p.lot > 0):
            raise ConfigError(
                f"SignalSizer: lot must be > 0 (the unit step of fractional positions, e.g. "
                f"1e-8), got {p.lot!r}"
            )
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
    ) -> float:
        """Shares of one asset: :meth:`target_weight`, then :meth:`shares_for_weight`.

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
        rebalance_band: float | None = None,
    ) -> float:
        """Shares that hold ``weight`` of the portfolio, with the deadband (pure).

        The last stage of :meth:`target_shares`, for callers that already have the target
        weight (e.g. after a portfolio gross-leverage cap).

        Args:
            weight (float): target position weight (fraction of equity, signed).
            price (float): price of one share (currency units).
            value (float): portfolio value (currency units).
            current (float): the current position (shares). Default 0.
            deadband (float | None): overrides the ``deadband`` param. Default None.
            rebalance_band (float | None): overrides the ``rebalance_band`` param (pass 0
                with ``deadband=0`` for the exact size). Default None.

        Returns:
            int (float with ``fractional``: a multiple of ``lot``): ``trunc(weight * value /
            price)`` shares; ``int(current)`` when ``weight``
            is within the band of the current weight (the deadband, or on the same side
            the larger of it and ``rebalance_band * |weight|``); 0 for an invalid weight, price
            or value (NaN, inf, or price/value <= 0) or an overflowing size.
        """
        if not (_finite(weight) and _finite(price) and price > 0 and _finite(value) and value > 0):
            return 0
        fractional = bool(self.p.fractional)
        held: float = (current if fractional else int(current)) if _finite(current) else 0
        band = self.p.deadband if deadband is None else deadband
        held_weight = held * price / value
        relative = self.p.rebalance_band if rebalance_band is None else rebalance_band
        if relative and held_weight * weight > 0:  # same side: the tolerance band
            band = max(band, relative * abs(weight))
        if abs(weight - held_weight) < band:
            return held
        shares = weight * value / price
        if not math.isfinite(shares):  # overflow, e.g. a price of 1e-300
            return 0
        if fractional:
            lot = float(self.p.lot)
            return _truncate(shares / lot) * lot
        return _truncate(shares)

    # ---- backtrader-facing
    def _getsizing(
        self, comminfo: bt.CommInfoBase, cash: float, data: bt.DataBase, isbuy: bool
    ) -> int:
        """Backtrader hook for ``buy()`` / ``sell()`` without a size: not a SignalSizer path.

        A SignalSizer sizes a whole portfolio at once (the gross-leverage cap couples the
        assets), so it is used through :meth:`metabt.strategies.meta.SignalTrader.rebalance`,
        never one order at a time.

        Raises:
            ConfigError: always, naming the fix (pass ``size=`` or trade through
                ``SignalTrader.rebalance``).
        """
        raise ConfigError(
            f"SignalSizer cannot size a lone {'buy' if isbuy else 'sell'} of "
            f"{getattr(data, '_name', 'data')}: it sizes through SignalTrader.rebalance "
            "(MetaStrategy and the baselines); pass size= to buy()/sell(), or add a "
            "backtrader sizer such as bt.sizers.FixedSize for your own strategy"
        )
