"""Baselines every MetaStrategy result is shown beside: passive, rule-based and model-based."""

from __future__ import annotations

import math
from typing import Any

import backtrader as bt

from metabt._checks import check_int
from metabt.errors import ConfigError, DataError
from metabt.features.spec import FeatureSpec
from metabt.learn.linear import RidgeAdapter, RLSAdapter
from metabt.strategies.meta import MetaStrategy, SignalTrader

__all__ = [
    "BuyAndHold",
    "ConstantLong",
    "ErmAdapt",
    "ErmStatic",
    "RecursiveLeastSquares",
    "RollingRidge",
    "ScratchAdapt",
    "SmaCross",
    "StaticModel",
    "TimeSeriesMomentum",
    "control_windows",
]

#: Trading days a year: the controls' windows are stated in trading days of daily bars.
TRADING_DAYS = 252


def control_windows(bars_per_year: float) -> dict[str, int]:
    """The controls' look-backs at a run's bar frequency, the same calendar span at any bars.

    SmaCross's 50/200-day windows and TimeSeriesMomentum's 12-month look-back are defined on
    daily bars (252 a year); at other frequencies each keeps its span in time: ``days ·
    bars_per_year / 252`` bars, rounded, at least 2 for the fast SMA and 1 bar more for the
    slow one, and at least 2 for momentum. On daily bars they are the classes' defaults
    (50, 200, 252); on monthly bars (12 a year) 2, 10 and 12; on hourly equity bars (1,638 a
    year) 325, 1,300 and 1,638.

    Args:
        bars_per_year: the run's bars a year (> 0), e.g. ``BarFrequency.bars_per_year``.

    Returns:
        ``{"sma_fast": int, "sma_slow": int, "momentum_lookback": int}``, bars.

    Raises:
        ConfigError: ``bars_per_year`` not a positive finite number.
    """
    if not (isinstance(bars_per_year, (int, float)) and 0 < bars_per_year < math.inf):
        raise ConfigError(f"bars_per_year must be a positive number, got {bars_per_year!r}")
    scale = float(bars_per_year) / TRADING_DAYS
    fast = max(2, round(50 * scale))
    slow = max(fast + 1, round(200 * scale))
    return {
        "sma_fast": fast,
        "sma_slow": slow,
        "momentum_lookback": max(2, round(TRADING_DAYS * scale)),
    }


class BuyAndHold(SignalTrader):
    """Equal-weight buy-and-hold of every data, bought on the first trading bar, never rebalanced.

    The passive benchmark: it ignores the sizer (no volatility targeting) and pays the same
    commission and slippage on its single entry as the other strategies. An entry the
    broker rejects (a gap at the next open left too little cash) is sent again, resized,
    at the next bar.

    Params:
        invest (float): fraction of portfolio value invested, split equally across the data;
            a little cash is kept because orders fill at the next bar's open. Default 0.98.
        trade_start: see :class:`metabt.strategies.meta.SignalTrader`.
    """

    params: Any = (("invest", 0.98),)

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        if not 0 < self.p.invest <= 1:
            raise ConfigError(f"invest must be in (0, 1], got {self.p.invest!r}")
        # each data's entry order; None: not sent yet; False: nothing to buy (the size is 0)
        self._entry: list[Any] = [None] * len(self.datas)

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        return 1.0

    def rebalance(self, active: list[int], signals: list[float]) -> None:
        """Buy each data once, on its first trading bar, with an equal share of value (in
        whole units, or the sizer's lots when it is ``fractional``)."""
        sizer = self._signal_sizer
        assert sizer is not None
        value = self.broker.getvalue()
        weight = self.p.invest / len(self.datas)
        for i in active:
            d, entry = self.datas[i], self._entry[i]
            if entry is not None:
                rejected = entry is not False and entry.status in (entry.Margin, entry.Rejected)
                if not rejected or self.getposition(d).size:
                    continue
            size = sizer.shares_for_weight(
                weight, d.close[0], value, deadband=0.0, rebalance_band=0.0
            )
            self._entry[i] = self.order_target_size(d, size) or False


class SmaCross(SignalTrader):
    """Simple moving-average crossover, traded through the same sizer as MetaStrategy.

    Signal +1 when the fast SMA of the close is above the slow one, else -1 (0 when
    ``long_only``); NaN until the slow SMA has ``slow`` bars. The experiments
    (``metabt backtest``, ``compare``, ``walkforward``) give it the windows of
    :func:`control_windows` at the run's bar frequency, the same 50/200 trading days at any
    bars.

    Params:
        fast (int): fast SMA period, bars. Default 50 (daily bars).
        slow (int): slow SMA period, bars. Default 200 (daily bars).
        long_only (bool): flat instead of short below the slow SMA. Default True.
        trade_start, gross_leverage: see :class:`metabt.strategies.meta.SignalTrader`.
    """

    params: Any = (("fast", 50), ("slow", 200), ("long_only", True))

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        if not 1 <= self.p.fast < self.p.slow:
            raise ConfigError(
                f"SmaCross needs 1 <= fast < slow, got fast={self.p.fast}, slow={self.p.slow}"
            )
        for d in self.datas:  # backtrader's SMA fails on a preloaded feed shorter than it
            if 0 < d.buflen() < self.p.slow:
                raise DataError(
                    f"{d._name or 'data'}: {d.buflen()} bars, but SmaCross needs at least "
                    f"slow={self.p.slow}; feed a longer history or pass a smaller slow="
                )
        self._fast = [bt.indicators.SMA(d.close, period=self.p.fast) for d in self.datas]
        self._slow = [bt.indicators.SMA(d.close, period=self.p.slow) for d in self.datas]

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        fast, slow = self._fast[i][0], self._slow[i][0]
        if math.isnan(fast) or math.isnan(slow):
            return math.nan
        if fast > slow:
            return 1.0
        return 0.0 if self.p.long_only else -1.0


class ConstantLong(SignalTrader):
    """A constant long signal through the same sizer, smoothing and costs as MetaStrategy.

    The direct control for a strategy that earns only through a long tilt: each data gets
    the signal ``level`` on every bar, so its position is the sizer's volatility-targeted
    long (``level / signal_scale`` of the target, capped), rebalanced as volatility moves.
    A model strategy that does not beat it has shown no forecasting skill beyond being long.

    Params:
        level (float): the constant signal, signal units (> 0). Default 1.0 (a full-size
            long at the sizer's default ``signal_scale`` of 0.25).
        trade_start, gross_leverage, smooth, no_trade_bps, forecast_scale: see
            :class:`metabt.strategies.trader.SignalTrader`.

    Raises:
        ConfigError: ``level`` not a positive number.
    """

    params: Any = (("level", 1.0),)

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        level = self.p.level
        if not (isinstance(level, (int, float)) and math.isfinite(level) and level > 0):
            raise ConfigError(f"ConstantLong: level must be a number > 0, got {level!r}")

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        return float(self.p.level)


class TimeSeriesMomentum(SignalTrader):
    """Volatility-scaled time-series momentum (Moskowitz, Ooi & Pedersen 2012).

    Each data is long when its own return over the last ``lookback`` bars is positive and
    short when negative (flat when ``long_only``), sized by the same volatility-targeting
    SignalSizer as MetaStrategy: the paper's ``sign(r_{t-12m,t}) · 40% / σ_t`` with the
    sizer's ``target_vol`` in place of 40%. ``skip`` most recent bars are left out of the
    return (0 in the paper; 21 skips the last month's reversal).

    Params:
        lookback (int): bars of the trailing return. Default 252 (12 months of daily bars;
            the experiments scale it to the run's bars by :func:`control_windows`).
        skip (int): most recent bars left out. Default 0.
        long_only (bool): flat instead of short. Default False.
        trade_start, gross_leverage, smooth, no_trade_bps, forecast_scale: see
            :class:`metabt.strategies.trader.SignalTrader`.

    Raises:
        ConfigError: ``lookback`` < 1 or ``skip`` < 0.

    References:
        Moskowitz, Ooi, Pedersen 2012, "Time series momentum", Journal of Financial
        Economics 104(2).
    """

    params: Any = (("lookback", 252), ("skip", 0), ("long_only", False))

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        check_int("lookback", self.p.lookback, 1)
        check_int("skip", self.p.skip, 0, unit="bars")

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        lookback, skip = int(self.p.lookback), int(self.p.skip)
        if len(data) <= lookback + skip:
            return math.nan
        ret = math.log(data.close[-skip] / data.close[-skip - lookback])
        if ret > 0:
            return 1.0
        if ret < 0:
            return 0.0 if self.p.long_only else -1.0
        return 0.0


class StaticModel(MetaStrategy):
    """The meta-init θ, never adapted: MetaStrategy with zero inner steps.

    Same features, support windows, sizer and costs as MetaStrategy; the signal is f_θ(x_t).
    Beside MetaStrategy, it shows what the rolling adaptation itself adds.

    Params:
        inner_steps (int): must stay 0. Other params: see :class:`MetaStrategy`.

    Raises:
        ConfigError: ``inner_steps`` other than 0.
    """

    params: Any = (("inner_steps", 0),)

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        if self.p.inner_steps != 0:
            raise ConfigError(
                f"StaticModel never adapts: inner_steps must be 0, got {self.p.inner_steps}"
            )


class ScratchAdapt(MetaStrategy):
    """The same rolling adaptation, from a random initialisation (a ``scratch`` learner).

    Shows what the meta-learned initialisation adds over fine-tuning from nothing.

    Raises:
        ConfigError: the learner's algorithm is not ``scratch``.
    """

    required_algorithm = "scratch"


class ErmAdapt(MetaStrategy):
    """The same rolling adaptation, from a jointly trained model (an ``erm`` learner).

    The baseline that isolates what meta-learning adds: same data, same fine-tuning, but the
    initialisation is trained by ordinary joint training on all tasks' data.

    Raises:
        ConfigError: the learner's algorithm is not ``erm``.
    """

    required_algorithm = "erm"


class ErmStatic(StaticModel):
    """A jointly trained model (an ``erm`` learner), never fine-tuned.

    The plain "trained model" a quant would otherwise deploy: ordinary joint training on
    all tasks' data for a fixed budget, then f_θ(x_t) with the same features and sizer.

    Raises:
        ConfigError: the learner's algorithm is not ``erm``; ``inner_steps`` other than 0.
    """

    required_algorithm = "erm"


class RollingRidge(MetaStrategy):
    """Ridge regression refitted on the same realised support window, on the same schedule.

    MetaStrategy with its learner replaced by :class:`metabt.learn.linear.RidgeAdapter`: the same
    features, labels (realised ``horizon`` bars later), support window, ``adapt_every``
    schedule, sizer and costs; each refit is closed-form ridge on the last ``support``
    realised pairs.

    Params:
        feature_spec (FeatureSpec | None): the features and label; None uses the default
            ``FeatureSpec()``. Pass the meta-learner's ``feature_spec`` to compare them.
        alpha (float): ridge penalty (> 0); choose it on validation tasks only
            (``metabt.learn.linear.select_by_validation``). Default 10.
        adapt_every, support, trade_start, gross_leverage: see :class:`MetaStrategy`.

    Raises:
        ConfigError: a bad ``alpha``; a ``learner`` param (the adapter is built here).

    References:
        Hoerl and Kennard 1970, "Ridge Regression".
    """

    params: Any = (("feature_spec", None), ("alpha", 10.0))

    def __init__(self, **unknown: Any) -> None:
        _own_adapter(self, RidgeAdapter(_spec(self.p.feature_spec), self.p.alpha))
        super().__init__(**unknown)


class RecursiveLeastSquares(MetaStrategy):
    """Recursive least squares with exponential forgetting, updated every bar.

    MetaStrategy with its learner replaced by :class:`metabt.learn.linear.RLSAdapter` and
    ``adapt_every=1``: at every bar, the newly realised label enters the recursion, which
    runs over the last ``support`` realised pairs (default 200 bars; with λ = 0.99 the
    oldest pair weighs 0.13). Same features, labels, sizer and costs as MetaStrategy.

    Params:
        feature_spec (FeatureSpec | None): the features and label; None uses
            ``FeatureSpec()``.
        forgetting (float): λ in (0, 1], weight of a pair one bar older; choose it on
            validation tasks only. Default 0.99.
        delta (float): prior precision of the coefficients. Default 1.0.
        adapt_every (int): bars between updates. Default 1 (every bar).
        support (int): realised pairs the recursion runs over, bars. Default 200.
        trade_start, gross_leverage: see :class:`MetaStrategy`.

    Raises:
        ConfigError: a bad ``forgetting`` or ``delta``; a ``learner`` param.

    References:
        Haykin 2002, "Adaptive Filter Theory", ch. 9.
    """

    params: Any = (
        ("feature_spec", None),
        ("forgetting", 0.99),
        ("delta", 1.0),
        ("adapt_every", 1),
        ("support", 200),
    )

    def __init__(self, **unknown: Any) -> None:
        adapter = RLSAdapter(_spec(self.p.feature_spec), self.p.forgetting, self.p.delta)
        _own_adapter(self, adapter)
        super().__init__(**unknown)


def _spec(spec: FeatureSpec | None) -> FeatureSpec:
    if spec is None:
        return FeatureSpec()
    if not isinstance(spec, FeatureSpec):
        raise ConfigError(f"feature_spec must be a FeatureSpec, got {type(spec).__name__}")
    return spec


def _own_adapter(strategy: MetaStrategy, adapter: Any) -> None:
    """Install a baseline's own adapter as the strategy's learner (refusing a given one)."""
    if strategy.p.learner is not None:
        raise ConfigError(
            f"{type(strategy).__name__} builds its own model; drop learner= (set its "
            "feature_spec= to share the meta-learner's features)"
        )
    strategy.p.learner = adapter
