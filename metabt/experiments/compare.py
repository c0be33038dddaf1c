"""Experiments: the main backtest and compare, judged the same way (walk-forward: its own module).

The library side of the ``metabt`` command: each function runs one experiment and returns
its results (tables, verdicts, reports to write); the CLI only parses arguments and
prints. Every strategy of an experiment gets the same data, warm-up, costs, sizer and
schedule (:class:`RunSettings`, :func:`metabt.experiments.roster.roster`), and every comparison is
judged by :func:`metabt.evaluate.verdict.judge`.

A comparison is made of independent units run on an executor (:mod:`metabt.experiments.executors`:
this process, local processes or Ray), scheduled by what they need (:func:`run_units`):
the training jobs of every (fold, seed) (the meta-learner, ERM, scratch and the linear
baselines' selection, :data:`ROSTER_PARTS`) start at once, and the backtest of every
(fold, seed, strategy) as soon as the parts it needs are done (:data:`STRATEGY_NEEDS`;
BuyAndHold and SmaCross need none); the judging runs here. The results are the same,
bit for bit, whatever the executor and the order the units finish in.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pandas as pd
from tqdm.auto import tqdm

from metabt._util import atomic_dir, staged_files, write_text
from metabt.analyzers import QuantStatsAnalyzer
from metabt.config.defaults import DEMO, RunConfig
from metabt.errors import ConfigError, DataError
from metabt.evaluate.metrics import metrics_table
from metabt.evaluate.report import write_comparison
from metabt.evaluate.verdict import Verdict, aggregate_seeds, judge
from metabt.experiments.backtest import BacktestResult, Costs, run_backtest
from metabt.experiments.executors import Executor, SerialExecutor, make_executor
from metabt.experiments.roster import (
    RLS_SUPPORT,
    RosterModels,
    check_no_leak,
    check_train_config,
    roster,
    select_linear,
    train_learner,
)
from metabt.learn.learner import MetaLearner
from metabt.strategies.baselines import BuyAndHold, SmaCross
from metabt.strategies.meta import MetaStrategy, SignalTrader
from metabt.strategies.portfolio import CrossSectionalStrategy

__all__ = [
    "Comparison",
    "JUDGING_IMPORTS",
    "MainRun",
    "ROSTER_PARTS",
    "RunSettings",
    "STRATEGY_NEEDS",
    "SeedRun",
    "TRAIN_ORDER",
    "Unit",
    "compare",
    "main_backtest",
    "rejection_warnings",
    "run_seed",
    "run_units",
    "verdict_lines",
]

Log = Callable[[str], None]


def _silent(_: str) -> None:
    """The default ``log``: say nothing."""


@dataclass(frozen=True)
class RunSettings:
    """What every strategy of an experiment shares: data, period, cash, costs, sizer.

    Attributes:
        frames: name -> validated OHLCV frame to trade.
        train_frames: name -> frame to meta-train on (other assets for transfer).
        start: first test date; training uses data strictly before it.
        end: last test date (inclusive); None for all data.
        cash: starting cash, currency units.
        costs: commission, slippage and short borrow.
        cfg: the learner, schedule and sizer configuration.

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

    def __post_init__(self) -> None:
        if self.end is not None and self.end < self.start:
            raise ConfigError(
                f"--end {self.end.date()} is before --start {self.start.date()}; swap them"
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
        """One backtest with the shared settings (``start``/``end`` override the period)."""
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
        """Meta-train on ``train_frames`` strictly before ``end``; log the summary."""
        trained = train_learner(self.train_frames, self.cfg, end=end, progress=progress)
        for line in trained.summary(self.cfg, list(self.train_frames)):
            log(line)
        check_no_leak(trained.learner, end)
        return trained.learner

    def check_history(self, *, roster: bool) -> None:
        """Refuse, before any work, data too short for every strategy of the run to trade.

        Each traded feed gets up to ``cfg.warmup_bars`` bars before ``start`` plus the test
        period. It needs the feature look-back, one support window and the horizon before
        MetaStrategy's first adaptation, and the SMA crossover's slow window (and, for a
        comparison, RecursiveLeastSquares' longer support).

        Args:
            roster: True for a comparison (every baseline), False for the main backtest.

        Raises:
            DataError: a feed with fewer bars than needed; the message gives the count
                needed and what each part is for.
        """
        spec, cfg = self.cfg.spec, self.cfg
        slow = int(dict(SmaCross.params._getitems())["slow"])
        needs = {
            f"feature look-back {spec.lookback} + support {cfg.support} + horizon "
            f"{spec.horizon} (MetaStrategy's first adaptation)": spec.lookback
            + cfg.support
            + spec.horizon,
            f"the SMA crossover's {slow}-bar window": slow,
        }
        if roster:
            needs[f"RecursiveLeastSquares' {RLS_SUPPORT}-bar support + look-back + horizon"] = (
                spec.lookback + RLS_SUPPORT + spec.horizon
            )
        needed = max(needs.values())
        why = "; ".join(f"{v} for {k}" for k, v in needs.items())
        for name, frame in self.frames.items():
            index = frame.index
            before = int((index < self.start).sum())
            test = index[index >= self.start]
            if self.end is not None:
                test = test[test <= self.end]
            fed = min(before, cfg.warmup_bars) + len(test)
            if fed < needed:
                raise DataError(
                    f"{name}: {fed} bars to feed ({min(before, cfg.warmup_bars)} of warm-up "
                    f"before {self.start.date()} and {len(test)} in the test period), but this "
                    f"run needs at least {needed} ({why}); give a longer history or a later "
                    "--start"
                )

    def header(self, result: BacktestResult) -> str:
        """The period, assets, costs and cash of a run, in one line."""
        period, freq = result.returns.index, result.frequency
        first, last = (
            (period[0].date(), period[-1].date())
            if freq.timeframe is None or freq.timeframe[0] not in ("Minutes", "Seconds")
            else (period[0], period[-1])
        )
        return (
            f"backtest {first} to {last} ({len(period):,} {freq.name} bars, "
            f"{freq.bars_per_year:,.0f} a year) on {', '.join(self.frames)}; "
            f"{self.costs.describe()}; cash {self.cash:,.0f}"
        )


def rejection_warnings(results: Sequence[BacktestResult]) -> list[str]:
    """Lines about what the run could not do as asked: rejected orders, feeds that ended.

    One warning per strategy whose orders the broker rejected, and one note per feed that
    ends before the others (its position was closed at its last bar).
    """
    lines = [
        f"warning: {r.name}: the broker rejected {len(r.rejected_orders)} orders "
        "(insufficient cash at the next open)"
        for r in results
        if r.rejected_orders
    ]
    lines += [
        f"no trades: {r.name} placed no order in the test period (its signal was NaN or flat, "
        "or every position was below one share); its metrics are those of holding cash"
        for r in results
        if r.metrics.get("turnover_two_way") == 0.0
    ]
    ended: dict[str, Any] = {}
    for r in results:  # a SignalTrader, or what a comparison keeps of one
        if isinstance(r.strategy, (SignalTrader, _Finished)):
            ended.update(r.strategy.ended)
    lines += [
        f"note: {name}'s data ends after {day}, before the other feeds; every strategy "
        "closed its position there (filled at its last bar's open)"
        for name, day in sorted(ended.items())
    ]
    return lines


@dataclass
class MainRun:
    """The main backtest: MetaStrategy beside buy-and-hold and an SMA crossover.

    Attributes:
        settings: the shared settings.
        learner: the meta-learner traded.
        results: MetaStrategy, BuyAndHold, SmaCross, in this order.
        seconds: wall time of the MetaStrategy backtest, seconds.
    """

    settings: RunSettings
    learner: MetaLearner
    results: list[BacktestResult]
    seconds: float

    @property
    def meta(self) -> BacktestResult:
        """MetaStrategy's backtest."""
        return self.results[0]

    @property
    def table(self) -> pd.DataFrame:
        """One row per strategy, one column per metric (``evaluate.metrics.metrics_table``)."""
        return metrics_table({r.name: r.metrics for r in self.results})

    def summary(self) -> list[str]:
        """The header and the adaptation summary of MetaStrategy."""
        cfg, log = self.settings.cfg, self.meta.adaptations
        assert log is not None
        return [
            f"\n{self.settings.header(self.meta)}",
            f"{self.meta.name}: {len(log)} adaptations (every {cfg.adapt_every} bars on the last "
            f"{cfg.support} realised bars, horizon {self.learner.horizon}); mean support MSE "
            f"{log['loss_before'].mean():.4f} before -> {log['loss_after'].mean():.4f} after; "
            f"backtest took {self.seconds:.1f}s",
        ]

    def write(self, report: Path) -> dict[str, Path]:
        """Write the tearsheet, the diagnostics page and the per-asset CSV beside it.

        The three files are written into a staging folder and moved into ``report``'s
        folder together at the end (:func:`metabt._util.staged_files`).
        """
        title = (
            f"{self.meta.name} ({self.learner.algorithm}) vs buy-and-hold "
            f"{next(iter(self.settings.frames))}; {self.meta.frequency.describe()}"
        )
        names = {
            "tearsheet": report.name,
            "diagnostics": f"{report.stem}_diagnostics.html",
            "assets": f"{report.stem}_assets.csv",
        }
        with staged_files(report.parent) as stage:
            self.meta.tearsheet(stage / names["tearsheet"], title=title)
            self.meta.diagnostics(stage / names["diagnostics"])
            write_text(stage / names["assets"], self.meta.assets.reset_index().to_csv(index=False))
        return {key: report.parent / name for key, name in names.items()}


def main_backtest(
    settings: RunSettings,
    learner: MetaLearner | None = None,
    *,
    progress: bool = True,
    log: Log = _silent,
) -> MainRun:
    """The main job: (train, then) backtest MetaStrategy beside BuyAndHold and SmaCross.

    With ``settings.cfg.portfolio`` set, the meta-learner trades a cross-sectional book
    (:class:`metabt.strategies.portfolio.CrossSectionalStrategy`, named "CrossSectional") instead.

    Args:
        settings: data, period, costs and configuration.
        learner: a trained learner; None trains one on ``settings.train_frames``
            strictly before ``settings.start``.
        progress: show training progress bars.
        log: receives the training summary lines.

    Returns:
        A :class:`MainRun`.

    Raises:
        ConfigError: the learner's training range reaches the test period; bad settings.
    """
    settings.check_history(roster=False)
    if learner is None:
        learner = settings.train(settings.start, progress=progress, log=log)
    check_no_leak(learner, settings.start)
    check_train_config(learner, settings.cfg, settings.frames)
    tic = time.perf_counter()
    cls, name = (
        (MetaStrategy, "MetaStrategy")
        if settings.cfg.portfolio is None
        else (CrossSectionalStrategy, "CrossSectional")
    )
    meta = settings.run(cls, name, {"learner": learner, **settings.cfg.strategy_kwargs()})
    seconds = time.perf_counter() - tic
    results = [
        meta,
        settings.run(BuyAndHold, "BuyAndHold"),
        settings.run(SmaCross, "SmaCross"),
    ]
    return MainRun(settings, learner, results, seconds)


COMPARE_NOTES = (
    "turnover_two_way: filled notional (buys plus sells) per year over average equity, "
    "turnover_one_way half of it; ic/rank_ic: signal vs close-to-close forward return, "
    "ic_t/rank_ic_t their Newey-West t-statistics (horizon lags), ic_tradable: vs the "
    "return from the next open (where orders fill); psr: probability that the true Sharpe "
    "> 0; dsr: deflated Sharpe over every strategy of the run; sharpe_vs_best: Sharpe "
    "minus the best non-meta baseline's, with a 95% stationary block-bootstrap interval "
    "(lo, hi; mean block length in bars): if it contains 0, the difference could be noise; "
    "MetaOnline (with --online-meta-lr): MetaStrategy whose θ takes online meta-updates; "
    "MetaDrift: MetaStrategy that also adapts when its realised error exceeds twice its "
    "usual level; untrained: the learner's kept θ is its initialisation"
)
ASSET_NOTES = (
    "hit_rate: share of (asset, bar) pairs with a position whose P&L was positive "
    "(win_rate: share of positive portfolio bars); per asset (assets.csv): exposure = "
    "mean |position| / equity, contribution = P&L before costs as a fraction of "
    "starting cash"
)


@dataclass
class SeedRun:
    """One seed of a comparison: the models trained, the backtests, the judged table.

    Attributes:
        seed: the seed of training and of the bootstrap.
        models: what was trained before the test period.
        results: one backtest per strategy of the roster.
        table: one row per strategy, metrics plus :func:`metabt.evaluate.verdict.judge`'s columns
            and ``untrained``.
        verdict: MetaStrategy against the best non-meta baseline.
    """

    seed: int
    models: RosterModels
    results: list[BacktestResult]
    table: pd.DataFrame
    verdict: Verdict


def _untrained_column(table: pd.DataFrame, models: RosterModels) -> pd.DataFrame:
    flags = {
        "MetaStrategy": models.meta.untrained,
        "MetaDrift": models.meta.untrained,
        "MetaOnline": models.meta.untrained,
        "StaticModel": models.meta.untrained,
        "ErmStatic": models.erm.untrained,
        "ErmAdapt": models.erm.untrained,
    }
    out = table.copy()
    out["untrained"] = [bool(flags.get(str(name), False)) for name in out.index]
    return out


#: The training jobs of one roster, each a unit of its own: the three learners of
#: :func:`metabt.experiments.roster.train_roster` and the linear baselines' selection.
ROSTER_PARTS = ("meta", "erm", "scratch", "linear")


@dataclass(frozen=True)
class Unit:
    """One (fold, seed) of an experiment: its roster trained strictly before ``start``.

    Attributes:
        settings: the shared data, costs and configuration (its ``train_frames`` are
            the ones trained on).
        seed: the seed of training and of the bootstrap (replaces ``cfg.seed``).
        start, end: the test period (default: ``settings.start`` / ``settings.end``).
        label: a line logged before the unit's training summary, or None.
    """

    settings: RunSettings
    seed: int
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    label: str | None = None

    @property
    def cfg(self) -> RunConfig:
        """The configuration with this unit's seed."""
        return self.settings.cfg.with_(seed=self.seed)

    @property
    def first(self) -> pd.Timestamp:
        """The first test day: everything is trained strictly before it."""
        return self.settings.start if self.start is None else self.start


TrainJob = tuple[Mapping[str, pd.DataFrame], RunConfig, pd.Timestamp, str, bool]
BacktestJob = tuple[
    RunSettings, str, type[Any], dict[str, Any], pd.Timestamp | None, pd.Timestamp | None
]


def _train_part(job: TrainJob) -> tuple[Any, list[str]]:
    """One training job of a roster (:data:`ROSTER_PARTS`) and its summary lines.

    The same steps as :func:`metabt.experiments.roster.train_roster`, one part at a time:
    a learner (``meta``/``erm``/``scratch``) returns a :class:`TrainedLearner`;
    ``linear`` returns (ridge alpha, RLS forgetting, the selection scores).
    """
    frames, cfg, end, part, progress = job
    if part != "linear":
        algo_cfg = cfg.with_(algorithm={"meta": cfg.algorithm}.get(part, part))
        trained = train_learner(frames, algo_cfg, end=end, progress=progress)
        check_no_leak(trained.learner, end)
        return trained, trained.summary(algo_cfg, list(frames))
    alpha, lam, scores, lines = select_linear(frames, cfg, end)
    return (alpha, lam, scores), lines


class _Finished:
    """What is kept of a backtrader strategy after its run: the feeds that ended early."""

    def __init__(self, strategy: Any) -> None:
        self.name = type(strategy).__name__
        self.ended: dict[str, Any] = (
            dict(strategy.ended) if isinstance(strategy, SignalTrader) else {}
        )

    def __repr__(self) -> str:
        return f"<finished {self.name}>"


class _Rets:
    """What is kept of the QuantStatsAnalyzer after its run: its results, its tearsheet."""

    def __init__(self, analyzer: Any) -> None:
        self.rets = dict(analyzer.get_analysis())

    def get_analysis(self) -> dict[str, Any]:
        """The analyzer's results (returns, benchmark, frequency, metrics)."""
        return self.rets

    def tearsheet(self, path: str | Path, title: str | None = None) -> Path:
        """The analyzer's tearsheet (``QuantStatsAnalyzer.tearsheet`` reads ``rets`` only)."""
        return QuantStatsAnalyzer.tearsheet(cast(Any, self), path, title=title)


def _detach(result: BacktestResult) -> BacktestResult:
    """The result without the backtrader run (cerebro, feeds, lines): small, and it pickles.

    ``strategy`` keeps the feeds that ended early (``ended``) and ``analyzer`` its
    results and :meth:`tearsheet`; every table, series and log is kept as it is.
    """
    return replace(
        result, strategy=_Finished(result.strategy), analyzer=cast(Any, _Rets(result.analyzer))
    )


def _backtest(job: BacktestJob) -> BacktestResult:
    """One strategy of a roster backtested on its unit's test period, detached from its run."""
    settings, name, cls, kwargs, start, end = job
    return _detach(settings.run(cls, name, kwargs, start=start, end=end))


#: The training parts (:data:`ROSTER_PARTS`) each strategy of
#: :func:`metabt.experiments.roster.roster` needs: its backtest starts as soon as these are
#: done. Checked on every run: a roster strategy missing here, or given a part not listed
#: here, is refused.
STRATEGY_NEEDS: dict[str, tuple[str, ...]] = {
    "MetaStrategy": ("meta",),
    "MetaOnline": ("meta",),
    "MetaDrift": ("meta",),
    "StaticModel": ("meta",),
    "ErmStatic": ("erm",),
    "ErmAdapt": ("erm",),
    "ScratchAdapt": ("scratch",),
    "RollingRidge": ("linear",),
    "RecursiveLeastSquares": ("linear",),
    "BuyAndHold": (),
    "SmaCross": (),
}
#: The order the training parts are submitted in: the longest first (on the sample data
#: with 600 meta steps, meta ~10 s, erm ~4 s, linear and scratch under 0.2 s; a backtest
#: ~0.5 s).
TRAIN_ORDER = ("meta", "erm", "linear", "scratch")


class _Pending:
    """Stands for a training part not done yet in a roster built before it is."""

    def __init__(self, part: str) -> None:
        self.part = part

    @property
    def learner(self) -> _Pending:
        """Itself: ``roster`` reads ``models.<part>.learner``."""
        return self

    def __repr__(self) -> str:
        return f"<pending {self.part}>"


def _partial_models(done: Mapping[str, Any]) -> RosterModels:
    """The roster's models with the parts not in ``done`` (part -> result) left pending."""
    meta, erm, scratch = (done.get(part, _Pending(part)) for part in ("meta", "erm", "scratch"))
    alpha, lam, selection = (
        done["linear"] if "linear" in done else (_Pending("linear"), _Pending("linear"), {})
    )
    return RosterModels(meta, erm, scratch, alpha, lam, selection)


def _needs(name: str) -> tuple[str, ...]:
    try:
        return STRATEGY_NEEDS[name]
    except KeyError:
        raise RuntimeError(
            f"roster strategy {name!r} has no entry in metabt.experiments.compare.STRATEGY_NEEDS "
            "(the training parts its backtest needs); add one"
        ) from None


def _roster_entry(
    done: Mapping[str, Any], cfg: RunConfig, j: int
) -> tuple[str, type[Any], dict[str, Any]]:
    """Strategy ``j`` of the roster built from the parts ``done``; refused if it needs more."""
    name, cls, kwargs = roster(_partial_models(done), cfg)[j]
    pending = sorted({v.part for v in kwargs.values() if isinstance(v, _Pending)})
    if pending:
        raise RuntimeError(
            f"roster strategy {name!r} uses the training part(s) {', '.join(pending)}, not in "
            f"its entry {STRATEGY_NEEDS.get(name)} of "
            "metabt.experiments.compare.STRATEGY_NEEDS; fix it"
        )
    return name, cls, kwargs


#: Modules :func:`metabt.evaluate.verdict.judge` imports on first use (the bootstrap, the PSR's
#: normal law, the Newey-West regressions, the metrics): about 2 s, imported in this
#: process while the last units run elsewhere rather than after them.
JUDGING_IMPORTS = ("arch.bootstrap", "scipy.stats", "statsmodels.api", "quantstats")


def _import_judging() -> None:
    for name in JUDGING_IMPORTS:
        with contextlib.suppress(ImportError):  # judge then says what is missing
            importlib.import_module(name)


def _raise_if_failed(future: Future[Any]) -> None:
    """Raise the unit's exception now if it already failed (the serial executor)."""
    if future.done() and not future.cancelled() and future.exception() is not None:
        future.result()


def run_units(
    units: Sequence[Unit],
    *,
    executor: Executor | None = None,
    progress: bool = True,
    log: Log = _silent,
) -> list[SeedRun]:
    """Train the roster of every unit, backtest every strategy, judge each unit.

    Every training job of every unit (:data:`ROSTER_PARTS`) is submitted to
    ``executor`` at once, the longest first (:data:`TRAIN_ORDER`: every unit's
    meta-learner, then every unit's ERM, ...), then the backtests that need no
    training (BuyAndHold, SmaCross); each other (unit, strategy) backtest of
    :func:`metabt.experiments.roster.roster` is submitted as soon as the training parts it needs
    (:data:`STRATEGY_NEEDS`) are done, so that backtests run while the meta-learner
    trains. Each unit is judged here once all is done (when the units run elsewhere,
    the modules the judging imports, :data:`JUDGING_IMPORTS`, are imported here in a
    thread while the last backtests run). The results are stored by
    (unit, strategy) and the training summaries logged unit by unit, in order (a
    unit's once its training and that of the units before it are done), so neither
    depends on the executor or on the order the units finish in.

    Args:
        units: the (fold, seed) units.
        executor: where the units run (:func:`metabt.experiments.executors.make_executor`); None
            runs them here, one after the other.
        progress: show the units done (and, run here, the training progress bars).
        log: receives each unit's label and training summary lines.

    Returns:
        One :class:`SeedRun` per unit, in order.

    Raises:
        ConfigError: too little data to train before a unit's test period.
        Exception: the first exception a unit raised; the units not started yet are
            cancelled.
    """
    executor = executor or SerialExecutor()
    remote = not isinstance(executor, SerialExecutor)  # the units run elsewhere
    inner = progress and not remote  # the training progress bars, run here only
    cfgs = [u.cfg for u in units]
    names = [[name for name, _, _ in roster(_partial_models({}), cfg)] for cfg in cfgs]
    needs = [[_needs(name) for name in unit_names] for unit_names in names]
    trained: list[dict[str, Any]] = [{} for _ in units]  # part -> result, per unit
    train_logs: list[dict[str, list[str]]] = [{} for _ in units]
    done: dict[tuple[int, int], BacktestResult] = {}
    started: set[tuple[int, int]] = set()
    keys: dict[Future[Any], tuple[int, str | int]] = {}  # -> (unit, part or strategy)
    order: dict[Future[Any], int] = {}  # -> submission number
    logged = 0
    preload: threading.Thread | None = None

    def submit(key: tuple[int, str | int], fn: Callable[[Any], Any], job: Any) -> None:
        future = executor.submit(fn, job)
        keys[future], order[future] = key, len(order)
        _raise_if_failed(future)

    def submit_ready(k: int) -> None:
        for j, need in enumerate(needs[k]):
            if (k, j) not in started and all(part in trained[k] for part in need):
                started.add((k, j))
                name, cls, kwargs = _roster_entry(trained[k], cfgs[k], j)
                u = units[k]
                job = (replace(u.settings, train_frames={}), name, cls, kwargs, u.start, u.end)
                submit((k, j), _backtest, job)

    total = len(units) * len(ROSTER_PARTS) + sum(map(len, names))
    with tqdm(total=total, desc="units", unit="unit", disable=not progress) as bar:
        try:
            for part in TRAIN_ORDER:
                for k, u in enumerate(units):
                    submit(
                        (k, part),
                        _train_part,
                        (u.settings.train_frames, cfgs[k], u.first, part, inner),
                    )
            for k in range(len(units)):
                submit_ready(k)  # the backtests that need no training
            while keys:
                if (
                    preload is None
                    and remote
                    and (len(keys) < executor.workers or logged == len(units))
                ):  # a worker is idle, or only backtests are left: import what the
                    # judging needs now rather than after the last of them
                    preload = threading.Thread(target=_import_judging, daemon=True)
                    preload.start()
                for future in sorted(executor.wait(list(keys)), key=order.__getitem__):
                    k, what = keys.pop(future)
                    value = future.result()  # raises the unit's exception at once
                    bar.update(1)
                    if isinstance(what, int):
                        done[k, what] = value
                        continue
                    trained[k][what], train_logs[k][what] = value
                    submit_ready(k)
                    while logged < len(units) and len(trained[logged]) == len(ROSTER_PARTS):
                        _log_unit(units[logged], trained[logged], train_logs[logged], log)
                        logged += 1
        except BaseException:
            executor.cancel(list(keys))
            raise
    if preload is not None:
        preload.join()
    runs = []
    for k, unit in enumerate(units):
        models = _partial_models(trained[k])
        results = [done[k, j] for j in range(len(names[k]))]
        table, verdict = judge(
            results,
            horizon=unit.cfg.spec.horizon,
            seed=unit.seed,
            periods_per_year=results[0].frequency.periods,
        )
        runs.append(SeedRun(unit.seed, models, results, _untrained_column(table, models), verdict))
    return runs


def _log_unit(
    unit: Unit, trained: Mapping[str, Any], lines: Mapping[str, list[str]], log: Log
) -> None:
    """A unit's label and training summary: the parts in :data:`ROSTER_PARTS` order."""
    if unit.label is not None:
        log(unit.label)
    for part in ROSTER_PARTS:
        for line in lines[part]:
            log(line)
    log(_partial_models(trained).summary())


def run_seed(
    settings: RunSettings,
    seed: int,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    progress: bool,
    log: Log,
    executor: Executor | None = None,
) -> SeedRun:
    """Train the roster strictly before the test period, backtest and judge every strategy.

    Args:
        settings: the shared data, costs and configuration.
        seed: the seed of training and of the bootstrap (replaces ``cfg.seed``).
        start, end: the test period (default: ``settings.start`` / ``settings.end``);
            everything is trained strictly before ``start``.
        progress: show progress bars.
        log: receives the training summary lines.
        executor: where the training jobs and backtests run (:func:`run_units`); None
            runs them here.

    Returns:
        A :class:`SeedRun`.

    Raises:
        ConfigError: too little data to train before ``start``.
    """
    unit = Unit(settings, seed, start, end)
    return run_units([unit], executor=executor, progress=progress, log=log)[0]


def _mean_table(runs: Sequence[SeedRun]) -> pd.DataFrame:
    """One row per strategy: each metric's mean over seeds, and ``<metric>_sd`` with seeds."""
    if len(runs) == 1:
        return runs[0].table
    stats = aggregate_seeds({r.seed: r.table for r in runs})
    mean = stats["mean"].unstack("metric")
    sd = stats["sd"].unstack("metric").add_suffix("_sd")
    order = list(runs[0].table.select_dtypes("number").columns)
    names = list(runs[0].table.index)
    table = pd.concat([mean[order], sd[[f"{c}_sd" for c in order]]], axis=1).loc[names]
    table.index.name = "strategy"
    table["untrained"] = [
        sum(bool(r.table.loc[n, "untrained"]) for r in runs) for n in names
    ]  # seeds in which that learner was untrained
    return table


def verdict_lines(runs: Sequence[SeedRun]) -> list[str]:
    """The verdict of each seed, and with several seeds how many show an edge."""
    if len(runs) == 1:
        return [runs[0].verdict.text]
    lines = [f"seed {r.seed}: {r.verdict.text}" for r in runs]
    edges = sum(r.verdict.edge for r in runs)
    baselines = sorted({r.verdict.baseline for r in runs})
    lines.append(
        f"verdict across {len(runs)} seeds: MetaStrategy shows an edge over the best "
        f"non-meta baseline ({', '.join(baselines)}) in {edges} of {len(runs)} seeds"
        + ("" if edges else ": no evidence of an edge")
    )
    return lines


@dataclass
class Comparison:
    """MetaStrategy beside every baseline on the same data, period, costs and sizer.

    Attributes:
        settings: the shared settings.
        runs: one :class:`SeedRun` per seed (the whole pipeline, training included).
        table: one row per strategy: metrics (the mean over seeds, with ``_sd`` columns
            when there are several) and ``untrained``.
        assets: per-asset results of every strategy of the first seed, indexed by
            (strategy, asset).
        notes: lines that state the period, costs, training and how to read the columns.
    """

    settings: RunSettings
    runs: list[SeedRun]
    table: pd.DataFrame
    assets: pd.DataFrame
    notes: list[str]

    @property
    def results(self) -> list[BacktestResult]:
        """The first seed's backtests."""
        return self.runs[0].results

    @property
    def verdicts(self) -> list[str]:
        """The verdict line of each seed (and a summary line with several seeds)."""
        return verdict_lines(self.runs)

    def write(self, out: Path, *, force: bool = False) -> dict[str, Path]:
        """Write compare.csv/md (and compare_seeds.csv), assets.csv/md, a tearsheet per
        strategy (first seed), index.html and the MetaStrategy diagnostics page.

        The set is written into a temporary folder that replaces ``out`` whole at the end
        (:func:`metabt._util.atomic_dir`): ``out`` never holds half a set.
        """
        with atomic_dir(out, force=force) as tmp:
            paths = self._write(tmp)
        return {key: out / path.relative_to(tmp) for key, path in paths.items()}

    def _write(self, out: Path) -> dict[str, Path]:
        first = next(iter(self.settings.frames))
        tearsheets = {
            r.name: r.tearsheet(
                out / "tearsheets" / f"{r.name}.html",
                title=f"{r.name} vs buy-and-hold {first}; {r.frequency.describe()}",
            )
            for r in self.results
        }
        paths = write_comparison(
            self.table,
            tearsheets,
            out,
            title="metabt compare",
            notes=[*self.notes, *self.verdicts],
            assets=self.assets,
        )
        if len(self.runs) > 1:
            stats = aggregate_seeds({r.seed: r.table for r in self.runs})
            paths["seeds"] = write_text(
                out / "compare_seeds.csv", stats.reset_index().to_csv(index=False)
            )
        paths["diagnostics"] = self.results[0].diagnostics(out / "MetaStrategy_diagnostics.html")
        return paths


def compare(
    settings: RunSettings,
    *,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
    log: Log = _silent,
    executor: str | Executor = "serial",
    workers: int = 1,
    ray_address: str | None = None,
) -> Comparison:
    """Train the roster, backtest every strategy and judge MetaStrategy, for each seed.

    The roster (:func:`metabt.experiments.roster.roster`): MetaStrategy, MetaDrift, StaticModel,
    ErmStatic, ErmAdapt, ScratchAdapt, RollingRidge, RecursiveLeastSquares, BuyAndHold,
    SmaCross, all trained strictly before ``settings.start``. Each seed repeats the whole
    pipeline, meta-training included.

    Args:
        settings: data, period, costs and configuration (``cfg.algorithm`` is the
            meta-learner's).
        seeds: seeds to run; None runs ``settings.cfg.seed`` only.
        progress: show progress bars (the units done).
        log: receives the training summary lines.
        executor: where the units (training jobs, and one backtest per seed and
            strategy as soon as what it needs is trained) run: "serial" (here),
            "process" (local processes), "ray", or an
            :class:`~metabt.experiments.executors.Executor` (left open). The results are the same
            whatever the executor. Default "serial".
        workers: units run at once (processes, or the CPUs of a local Ray). Default 1.
        ray_address: for "ray", the cluster to join; None starts a local Ray for the
            run and shuts it down after.

    Returns:
        A :class:`Comparison`.

    Raises:
        ConfigError: bad settings, no seed, too little training data, an unknown
            executor, ``workers`` < 1, or Ray not installed.
    """
    seeds = [settings.cfg.seed] if seeds is None else list(seeds)
    if not seeds:
        raise ConfigError("compare needs at least one seed, e.g. --seeds 0 1 2")
    settings.check_history(roster=True)
    units = [
        Unit(settings, seed, label=f"seed {seed}" if len(seeds) > 1 else None) for seed in seeds
    ]
    with _executor(executor, workers, ray_address) as ex:
        runs = run_units(units, executor=ex, progress=progress, log=log)
    cfg = settings.cfg
    first = runs[0]
    train_range = first.models.meta.learner.train_range
    assert train_range is not None
    notes = [
        settings.header(first.results[0]),
        f"meta-training ({cfg.algorithm}, erm, scratch baselines) on "
        f"{', '.join(settings.train_frames)} from {train_range[0]} to {train_range[1]}, "
        f"strictly before {settings.start.date()}"
        + (
            f"; seeds {', '.join(map(str, seeds))} (mean, and _sd across seeds)"
            if len(seeds) > 1
            else ""
        ),
        f"adaptation every {cfg.adapt_every} bars on the last {cfg.support} realised bars "
        f"(horizon {cfg.spec.horizon}); " + COMPARE_NOTES,
        ASSET_NOTES,
    ]
    assets = pd.concat({r.name: r.assets for r in first.results}, names=["strategy", "asset"])
    return Comparison(settings, runs, _mean_table(runs), assets, notes)


def _executor(
    executor: str | Executor, workers: int, ray_address: str | None
) -> contextlib.AbstractContextManager[Executor]:
    """The executor to run on: one made here is closed after the run, one given is not."""
    made = make_executor(executor, workers, ray_address)
    return contextlib.nullcontext(made) if made is executor else made
