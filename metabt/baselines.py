"""Baselines every MetaStrategy result is shown beside: passive, rule-based and model-based."""

from __future__ import annotations

import math
from typing import Any

import backtrader as bt

from metabt.errors import ConfigError
from metabt.strategy import MetaStrategy, SignalTrader

__all__ = ["BuyAndHold", "ErmAdapt", "ScratchAdapt", "SmaCross", "StaticModel"]


class BuyAndHold(SignalTrader):
    """Equal-weight buy-and-hold of every data, bought on the first trading bar, never rebalanced.

    The passive benchmark: it ignores the sizer (no volatility targeting) and pays the same
    commission and slippage on its single entry as the other strategies.

    Params:
        invest (float): fraction of portfolio value invested, split equally across the data;
            a little cash is kept because orders fill at the next bar's open. Default 0.98.
        trade_start: see :class:`metabt.strategy.SignalTrader`.
    """

    params: Any = (("invest", 0.98),)

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        if not 0 < self.p.invest <= 1:
            raise ConfigError(f"invest must be in (0, 1], got {self.p.invest!r}")
        self._bought = [False] * len(self.datas)

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        return 1.0

    def rebalance(self, active: list[int], signals: list[float]) -> None:
        """Buy each data once, on its first trading bar, with an equal share of value."""
        value = self.broker.getvalue() * self.p.invest / len(self.datas)
        for i in active:
            if not self._bought[i]:
                d = self.datas[i]
                self.order_target_size(d, int(value / d.close[0]))
                self._bought[i] = True


class SmaCross(SignalTrader):
    """Simple moving-average crossover, traded through the same sizer as MetaStrategy.

    Signal +1 when the fast SMA of the close is above the slow one, else -1 (0 when
    ``long_only``); NaN until the slow SMA has ``slow`` bars.

    Params:
        fast (int): fast SMA period, bars. Default 50.
        slow (int): slow SMA period, bars. Default 200.
        long_only (bool): flat instead of short below the slow SMA. Default True.
        trade_start, gross_leverage: see :class:`metabt.strategy.SignalTrader`.
    """

    params: Any = (("fast", 50), ("slow", 200), ("long_only", True))

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        if not 1 <= self.p.fast < self.p.slow:
            raise ConfigError(
                f"SmaCross needs 1 <= fast < slow, got fast={self.p.fast}, slow={self.p.slow}"
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
