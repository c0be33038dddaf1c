"""The settings every strategy of an experiment shares: data, period, cash, costs, config.

:class:`RunSettings` is the one settings object of the experiments on price data
(:func:`metabt.experiments.compare.main_backtest`, :func:`~metabt.experiments.compare.compare`,
:func:`~metabt.experiments.walkforward.walkforward`, :func:`~metabt.experiments.sweep.sweep`):
what each strategy is given is the same, and it backtests (:meth:`RunSettings.run`) and
trains (:meth:`RunSettings.train`) with it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from metabt.config.defaults import DEMO, RunConfig
from metabt.errors import ConfigError, DataError
from metabt.evaluate.sanitize import clean
from metabt.experiments.backtest import BacktestResult, Costs, run_backtest
from metabt.experiments.log import Log
from metabt.experiments.parts import RLS_SUPPORT, check_no_leak, run_bars_per_year, train_learner
from metabt.learn.learner import MetaLearner
from metabt.strategies.baselines import control_windows

__all__ = ["RunSettings"]


@dataclass(frozen=True)
class RunSettings:
    """What every strategy of an experiment shares: data, period, cash, costs, sizer.

    Attributes:
        frames: name -> validated OHLCV frame to trade.
        train_frames: name -> frame to meta-train on (other assets for transfer).
        start: first test date; training uses data strictly before it.
        end: last test date (inclusive); None for all data.
        cash: starting cash, currency units.
        costs: the cost model (:class:`metabt.costs.Costs`): commission, half-spread,
            slippage, impact and short borrow, and the declared asset class.
        cfg: the learner, schedule and sizer configuration.
        ledger: the trial ledger file that ``compare``, ``walkforward`` and ``backtest``
            add their strategies to (:mod:`metabt.evaluate.ledger`); None keeps none.

    Raises:
        ConfigError: ``end`` before ``start``.
    """

    frames: Mapping[str, pd.DataFrame]
    train_frames: Mapping[str, pd.DataFrame]
    start: pd.Timestamp
    end: pd.Timestamp | None = None
    cash: float = 100_000.0
    costs: Costs = field(default_factory=Costs)
    cfg: RunConfig = DEMO
    ledger: str | None = None

    def __post_init__(self) -> None:
        if self.end is not None and self.end < self.start:
            raise ConfigError(
                f"`end` {self.end.date()} is before `start` {self.start.date()}; swap them"
            )

    def run(
        self,
        strategy: type[Any],
        name: str,
        strategy_kwargs: Mapping[str, Any] | None = None,
        *,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> BacktestResult:
        """One backtest with the shared settings (``start``/``end`` override the period).

        Args:
            strategy: the backtrader strategy class.
            name: its label in tables.
            strategy_kwargs: its keyword arguments.
            start, end: the test period; default ``self.start`` / ``self.end``.

        Returns:
            The :class:`~metabt.experiments.backtest.BacktestResult`.
        """
        return run_backtest(
            strategy,
            self.frames,
            name=name,
            strategy_kwargs=strategy_kwargs,
            start=self.start if start is None else start,
            end=self.end if end is None else end,
            cash=self.cash,
            costs=self.costs,
            warmup_bars=self.cfg.warmup_bars,
            sizer_kwargs=dict(self.cfg.sizer),
        )

    def train(self, end: pd.Timestamp, *, progress: bool, log: Log) -> MetaLearner:
        """Meta-train on ``train_frames`` strictly before ``end``; log the summary.

        Args:
            end: the cut-off: no price on or after it is used.
            progress: show the training progress bar.
            log: receives the training summary lines.

        Returns:
            The trained learner.

        Raises:
            ConfigError: too little data before ``end``; a training range that reaches it.
        """
        trained = train_learner(self.train_frames, self.cfg, end=end, progress=progress)
        for line in trained.summary(self.cfg, list(self.train_frames)):
            log(line)
        check_no_leak(trained.learner, end)
        return trained.learner

    def control_windows(self) -> dict[str, int]:
        """SmaCross's and TimeSeriesMomentum's windows at this run's bars a year
        (:func:`metabt.strategies.baselines.control_windows` of
        :func:`metabt.experiments.parts.run_bars_per_year`): 50/200 days and 12 months.

        Returns:
            ``{"sma_fast", "sma_slow", "momentum_lookback"}``, bars.
        """
        return control_windows(run_bars_per_year(self.frames, self.cfg))

    def check_history(self, *, roster: bool | Collection[str], spec: Any = None) -> None:
        """Refuse, before any work, data too short for every strategy of the run to trade.

        Each traded feed gets up to ``cfg.warmup_bars`` bars before ``start`` plus the test
        period. It needs the feature look-back, one support window and the horizon before
        MetaStrategy's first adaptation, and, for the strategies that run, the SMA
        crossover's slow window, RecursiveLeastSquares' longer support and
        TimeSeriesMomentum's look-back (the controls' windows at the run's bars,
        :meth:`control_windows`).

        Args:
            roster: True for a comparison of the whole roster; the names of the strategies
                a comparison runs (``metabt.experiments.roster.roster_entries``); False for
                the main backtest (MetaStrategy and BuyAndHold; its SmaCross is left out
                when the data are too short for its windows, :meth:`bars_fed`).
            spec: the traded learner's feature spec (a checkpoint's: its look-back and
                horizon, not the run's flags); None: ``cfg.spec``.

        Raises:
            DataError: a feed with fewer bars than needed; the message gives the count
                needed and what each part is for.
        """
        cfg = self.cfg
        if spec is None or not all(hasattr(spec, a) for a in ("lookback", "horizon")):
            spec = cfg.spec
        windows = self.control_windows()
        slow, lookback = windows["sma_slow"], windows["momentum_lookback"]
        needs = {
            f"feature look-back {spec.lookback} + support {cfg.support} + horizon "
            f"{spec.horizon} (MetaStrategy's first adaptation)": spec.lookback
            + cfg.support
            + spec.horizon,
        }
        runs = (
            set(roster)
            if not isinstance(roster, bool)
            else {"SmaCross", "RecursiveLeastSquares", "TimeSeriesMomentum"}
            if roster
            else set()
        )
        if "SmaCross" in runs:
            needs[f"the SMA crossover's {slow}-bar window"] = slow
        if "RecursiveLeastSquares" in runs:
            needs[f"RecursiveLeastSquares' {RLS_SUPPORT}-bar support + look-back + horizon"] = (
                spec.lookback + RLS_SUPPORT + spec.horizon
            )
        if "TimeSeriesMomentum" in runs:
            needs[f"TimeSeriesMomentum's {lookback}-bar look-back"] = lookback + 1
        needed = max(needs.values())
        why = "; ".join(f"{v} for {k}" for k, v in needs.items())
        for name, (warmup, test) in self._fed().items():
            if warmup + test < needed:
                raise DataError(
                    f"{name}: {warmup + test} bars to feed ({warmup} of warm-up before "
                    f"{self.start.date()} and {test} in the test period), but this run needs "
                    f"at least {needed} ({why}); give a longer history or a later `start`"
                    + (", or leave a baseline out (`baselines`)" if len(needs) > 1 else "")
                )

    def _fed(self) -> dict[str, tuple[int, int]]:
        """Each feed's bars: (warm-up before ``start``, test period)."""
        out = {}
        for name, frame in self.frames.items():
            index = frame.index
            before = int((index < self.start).sum())
            test = index[index >= self.start]
            if self.end is not None:
                test = test[test <= self.end]
            out[name] = (min(before, self.cfg.warmup_bars), len(test))
        return out

    def bars_fed(self) -> int:
        """The fewest bars any feed gets (warm-up plus test period)."""
        return min(sum(parts) for parts in self._fed().values())

    def header(self, result: BacktestResult) -> str:
        """The period, assets, costs and cash of a run, in one line.

        Args:
            result: one backtest of the run (its period and bar frequency).

        Returns:
            The line.
        """
        period, freq = result.returns.index, result.frequency
        first, last = (
            (period[0].date(), period[-1].date())
            if freq.timeframe is None or freq.timeframe[0] not in ("Minutes", "Seconds")
            else (period[0], period[-1])
        )
        return (
            f"backtest {first} to {last} ({len(period):,} {freq.name} bars, "
            f"{freq.bars_per_year:,.0f} a year) on {', '.join(map(clean, self.frames))}; "
            f"{self.costs.describe()}; cash {self.cash:,.0f}"
        )
