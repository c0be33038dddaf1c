"""The main backtest and compare: MetaStrategy beside its baselines, judged the same way.

The library side of ``metabt backtest`` and ``metabt compare``: each function runs one
experiment and returns its results (tables, verdicts, reports to write); the CLI only
parses arguments and prints. Every strategy of an experiment gets the same data, warm-up,
costs, sizer and schedule (:class:`~metabt.experiments.settings.RunSettings`,
:data:`metabt.experiments.roster.ROSTER`), and every comparison is judged by
:func:`metabt.evaluate.verdict.judge`. A comparison's units (one per seed) are trained and
backtested by :func:`metabt.experiments.scheduler.run_units` on the executor of an
:class:`~metabt.experiments.executors.ExecutorSpec`; walk-forward has its own module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from metabt._util import atomic_dir, staged_files, write_text
from metabt.errors import ConfigError
from metabt.evaluate.chart import write_chart
from metabt.evaluate.metrics import metrics_table
from metabt.evaluate.report import write_comparison
from metabt.evaluate.sanitize import clean, csv_text
from metabt.evaluate.verdict import aggregate_seeds
from metabt.experiments.backtest import BacktestResult, cost_warning
from metabt.experiments.cache import TrainingCache
from metabt.experiments.executors import SERIAL, Executor, ExecutorSpec, executor_scope
from metabt.experiments.log import Log, silent
from metabt.experiments.parts import checked_strategy
from metabt.experiments.resume import UnitStore
from metabt.experiments.roster import roster_entries
from metabt.experiments.scheduler import FinishedStrategy, SeedRun, Unit, run_units
from metabt.experiments.settings import RunSettings
from metabt.experiments.smoothing import no_trade_kwargs
from metabt.learn.learner import MetaLearner
from metabt.strategies.baselines import BuyAndHold, SmaCross
from metabt.strategies.meta import SignalTrader

__all__ = [
    "ASSET_NOTES",
    "COMPARE_NOTES",
    "Comparison",
    "IMPLAUSIBLE_IC",
    "IMPLAUSIBLE_SHARPE",
    "MainRun",
    "RunSettings",
    "basket_benchmark",
    "compare",
    "implausible_warnings",
    "main_backtest",
    "rejection_warnings",
    "traded_strategy",
    "verdict_lines",
]


def rejection_warnings(results: Sequence[BacktestResult]) -> list[str]:
    """Lines about what the run could not do as asked: rejected orders, feeds that ended.

    One warning per strategy whose orders the broker rejected, or whose positions whole
    units rounded to nothing (an asset priced above a position's value), or whose costs
    took more than half its P&L before costs (:func:`metabt.experiments.backtest.cost_warning`),
    and one note per feed that ends before the others (its position was closed at its last
    bar).

    Args:
        results: the backtests of a run (run here, or detached by the scheduler).

    Returns:
        The lines, empty when all went as asked.
    """
    lines = [
        f"warning: {clean(r.name)}: the broker rejected {len(r.rejected_orders)} orders "
        "(insufficient cash at the next open)"
        for r in results
        if r.rejected_orders
    ]
    lines += [
        f"no trades: {clean(r.name)} placed no order in the test period (its signal was NaN or "
        "flat, or every position was below one share); its metrics are those of holding cash"
        for r in results
        if r.metrics.get("turnover_two_way") == 0.0
    ]
    lines += implausible_warnings(results)
    lines += [line for r in results if (line := cost_warning(r)) is not None]
    for r in results:
        wanted = getattr(r.strategy, "targets_set", 0)
        lost = getattr(r.strategy, "targets_rounded_away", 0)
        if lost:
            lines.append(
                f"warning: {clean(r.name)}: whole units rounded {lost} of the {wanted} "
                f"positions it set out to open ({lost / wanted:.0%}) to nothing: each was "
                "worth less than one unit of its asset; trade fractions with --fractional "
                "(SignalSizer(fractional=True)), or more cash"
            )
    ended: dict[str, Any] = {}
    for r in results:  # a SignalTrader, or what a comparison keeps of one
        if isinstance(r.strategy, (SignalTrader, FinishedStrategy)):
            ended.update(r.strategy.ended)
    lines += [
        f"note: {clean(name)}'s data ends after {day}, before the other feeds; every strategy "
        "closed its position there (filled at its last bar's open)"
        for name, day in sorted(ended.items())
    ]
    return lines


#: On daily (or slower) bars, a net Sharpe or an IC above these is a reason to look for
#: look-ahead before believing it (real daily strategies after costs rarely exceed a Sharpe
#: of 2-3, and an IC of 0.05-0.1 is a strong daily forecast).
IMPLAUSIBLE_SHARPE = 4.0
IMPLAUSIBLE_IC = 0.3


def implausible_warnings(results: Sequence[BacktestResult]) -> list[str]:
    """A warning for each result too good for daily data: a leak is the likelier cause.

    On bars of daily or lower frequency (at most ~260 a year), a net Sharpe above
    :data:`IMPLAUSIBLE_SHARPE` or an IC above :data:`IMPLAUSIBLE_IC` gets a line naming
    the usual causes. It is a prompt to check, not a proof of a leak.

    Args:
        results: the backtests of a run.

    Returns:
        The lines, empty when nothing looks too good.
    """
    lines = []
    for r in results:
        if r.frequency.bars_per_year > 260:
            continue
        sharpe, ic = r.metrics.get("sharpe", math.nan), r.metrics.get("ic", math.nan)
        what = []
        if sharpe > IMPLAUSIBLE_SHARPE:
            what.append(f"a net Sharpe of {sharpe:.2f}")
        if ic > IMPLAUSIBLE_IC:
            what.append(f"an IC of {ic:.2f}")
        if what:
            lines.append(
                f"warning: {clean(r.name)}: {' and '.join(what)} on {r.frequency.name} bars is "
                "implausible for real data; look for look-ahead before believing it: a data "
                "column built from future prices (declare it to check_causal), features or "
                "labels that read later bars, prices adjusted with later information, or a "
                "universe chosen with hindsight (survivorship)"
            )
    return lines


@dataclass
class MainRun:
    """The main backtest: MetaStrategy beside buy-and-hold and an SMA crossover.

    Attributes:
        settings: the shared settings.
        learner: the meta-learner traded.
        results: MetaStrategy, BuyAndHold, SmaCross (when the data are long enough for its
            windows), in this order.
        seconds: wall time of the MetaStrategy backtest, seconds (NaN when its run was
            passed in, e.g. a paper run).
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
            f"{clean(self.meta.name)}: {len(log)} adaptations (every {cfg.adapt_every} bars on the "
            f"last {cfg.support} realised bars, horizon {self.learner.horizon}); mean support MSE "
            f"{log['loss_before'].mean():.4f} before -> {log['loss_after'].mean():.4f} after"
            + (f"; backtest took {self.seconds:.1f}s" if math.isfinite(self.seconds) else ""),
        ]

    def write(self, report: Path) -> dict[str, Path]:
        """Write the tearsheet, the diagnostics page, the per-asset CSV and the interactive
        chart (``<report stem>_chart.html``, :func:`metabt.evaluate.chart.write_chart` of
        the traded strategy) beside it.

        The four files are written into a staging folder and moved into ``report``'s
        folder together at the end (:func:`metabt._util.staged_files`).
        """
        basket = basket_benchmark(self.results, self.settings)
        title = (
            f"{self.meta.name} ({self.learner.algorithm}) vs {basket.name}; "
            f"{self.meta.frequency.describe()}"
        )
        names = {
            "tearsheet": report.name,
            "diagnostics": f"{report.stem}_diagnostics.html",
            "assets": f"{report.stem}_assets.csv",
            "chart": f"{report.stem}_chart.html",
        }
        with staged_files(report.parent) as stage:
            self.meta.tearsheet(stage / names["tearsheet"], title=title, benchmark=basket)
            chart_link = [("interactive chart (price, orders, equity, signal)", names["chart"])]
            self.meta.diagnostics(stage / names["diagnostics"], benchmark=basket, links=chart_link)
            write_text(stage / names["assets"], csv_text(self.meta.assets.reset_index()))
            write_chart(self.meta.strategy, stage / names["chart"], title=title)
        return {key: report.parent / name for key, name in names.items()}


def basket_benchmark(results: Sequence[BacktestResult], settings: RunSettings) -> pd.Series:
    """The tearsheets' benchmark: the BuyAndHold row's returns (the equal-weight basket of
    every asset, bought once, with the same costs), named as such; without that row, the
    first asset held (the analyzer's own benchmark).

    Args:
        results: a run's backtests (MetaStrategy first).
        settings: the run's settings (the asset names).

    Returns:
        Simple per-bar returns (fraction, float64) on the run's dates, named for the
        tearsheet's benchmark title.
    """
    held = next((r for r in results if r.name == "BuyAndHold"), None)
    if held is None:
        first = results[0]
        return first.benchmark.rename(f"buy-and-hold {next(iter(settings.frames))}")
    names = list(settings.frames)
    name = (
        f"BuyAndHold (equal-weight basket of {len(names)} assets)"
        if len(names) > 1
        else f"BuyAndHold ({names[0]})"
    )
    return held.returns.rename(name)


def main_backtest(
    settings: RunSettings,
    learner: MetaLearner | None = None,
    *,
    progress: bool = True,
    log: Log = silent,
    cache: TrainingCache | None = None,
    traded: BacktestResult | None = None,
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
        cache: where a learner trained now is kept, and read back instead of training when
            the data, settings and versions match (:class:`metabt.experiments.cache.
            TrainingCache`); None trains afresh.
        traded: the meta-learner's run when it already happened elsewhere (a paper run,
            :mod:`metabt.experiments.paper`, over the same bars); None backtests it here.

    Returns:
        A :class:`MainRun`.

    Raises:
        ConfigError: the learner's training range reaches the test period; bad settings.
    """
    settings.check_history(
        roster=False, spec=None if learner is None else getattr(learner, "feature_spec", None)
    )
    if learner is None and cache is not None:
        learner = cache.train(settings, settings.start, progress=progress, log=log)
    elif learner is None:
        learner = settings.train(settings.start, progress=progress, log=log)
    if traded is None:
        tic = time.perf_counter()
        cls, name, kwargs = traded_strategy(settings, learner, log=log)
        meta = settings.run(cls, name, kwargs)
        seconds = time.perf_counter() - tic
    else:
        # the checks traded_strategy makes before a backtest, for the run made elsewhere
        checked_strategy(learner, settings.cfg, settings.frames, settings.start)
        meta, seconds = traded, math.nan
    results = [
        meta,
        settings.run(BuyAndHold, "BuyAndHold"),
    ]
    windows = _sma_windows(settings)
    if settings.bars_fed() >= windows["slow"]:
        results.append(settings.run(SmaCross, "SmaCross", windows))
    else:  # a baseline never blocks the backtest: said, and left out
        log(
            f"SmaCross left out: its 50/200-day windows are {windows['fast']}/"
            f"{windows['slow']} bars at this run's bars, more than the "
            f"{settings.bars_fed()} bars fed"
        )
    return MainRun(settings, learner, results, seconds)


def traded_strategy(
    settings: RunSettings, learner: MetaLearner, *, log: Log = silent
) -> tuple[type[SignalTrader], str, dict[str, Any]]:
    """The main job's strategy for ``learner``, after checking the learner fits the run.

    The class is ``MetaStrategy``, or ``CrossSectionalStrategy`` (named "CrossSectional")
    with ``settings.cfg.portfolio``; its parameters are the learner, the run's schedule and
    smoothing (``cfg.strategy_kwargs()``) and the no-trade region calibrated on the
    validation years before ``settings.start`` (:func:`metabt.experiments.smoothing.
    no_trade_kwargs`). :func:`main_backtest` backtests it; ``metabt.experiments.paper``
    paper-trades it.

    Args:
        settings: the run's data, period and configuration.
        learner: the trained meta-learner.
        log: receives the calibration's line.

    Returns:
        (strategy class, its label, its keyword arguments).

    Raises:
        ConfigError: the learner's training range reaches ``settings.start``, or it trained
            with other support windows or bars than the run's.
    """
    cls, name = checked_strategy(learner, settings.cfg, settings.frames, settings.start)
    kwargs, line = no_trade_kwargs(
        settings, cls, name, {"learner": learner, **settings.cfg.strategy_kwargs()}, settings.start
    )
    if line is not None:
        log(line)
    return cls, name, kwargs


def _sma_windows(settings: RunSettings) -> dict[str, int]:
    """SmaCross's fast and slow windows at the run's bars (50/200 days)."""
    windows = settings.control_windows()
    return {"fast": windows["sma_fast"], "slow": windows["sma_slow"]}


COMPARE_NOTES = (
    "turnover_two_way: filled notional (buys plus sells) per year over average equity, "
    "turnover_one_way half of it; ic/rank_ic: signal vs close-to-close forward return "
    "(mean over assets), ic_pooled: pooled over every (asset, bar) pair, ic_t/rank_ic_t "
    "the pooled ICs' Driscoll-Kraay t-statistics (horizon lags), ic_tradable: pooled, vs "
    "the return from the next open (where orders fill); psr: probability that the true "
    "Sharpe > 0; dsr: deflated Sharpe over every strategy of the run; sharpe_vs_best: "
    "Sharpe minus the best non-meta baseline's, with a 95% stationary block-bootstrap "
    "interval (lo, hi; mean block length in bars, Politis-White on the difference's "
    "influence function; _half/_double: at half and twice it; fragile: 1 if they "
    "disagree): if it contains 0, the difference could be noise; smooth, no_trade_bps: "
    "each strategy's smoothing and no-trade band, chosen on the validation years; "
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
    """The verdict of each seed, and with several seeds how many show an edge.

    Args:
        runs: one judged unit per seed.

    Returns:
        One line per seed (one alone with a single seed), then the summary line.
    """
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
        strategy (first seed), index.html, the MetaStrategy diagnostics page and its
        interactive chart (``MetaStrategy_chart.html``).

        The set is written into a temporary folder that replaces ``out`` whole at the end
        (:func:`metabt._util.atomic_dir`): ``out`` never holds half a set.
        """
        with atomic_dir(out, force=force) as tmp:
            paths = self._write(tmp)
        return {key: out / path.relative_to(tmp) for key, path in paths.items()}

    def _write(self, out: Path) -> dict[str, Path]:
        basket = basket_benchmark(self.results, self.settings)
        tearsheets = {
            r.name: r.tearsheet(
                out / "tearsheets" / f"{r.name}.html",
                title=f"{r.name} vs {basket.name}; {r.frequency.describe()}",
                benchmark=basket,
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
            cost_curves={r.name: r.cost_sensitivity for r in self.results},
            run_cost_bps=self.results[0].cost_per_fill_bps,
            links=[(f"{self.results[0].name}: interactive chart", "MetaStrategy_chart.html")]
            if getattr(self.results[0].strategy, "chart", None) is not None
            else [],
        )
        if len(self.runs) > 1:
            stats = aggregate_seeds({r.seed: r.table for r in self.runs})
            paths["seeds"] = write_text(out / "compare_seeds.csv", csv_text(stats.reset_index()))
        chart = getattr(self.results[0].strategy, "chart", None)
        links = [("interactive chart", "MetaStrategy_chart.html")] if chart is not None else []
        paths["diagnostics"] = self.results[0].diagnostics(
            out / "MetaStrategy_diagnostics.html", links=links
        )
        # the interactive chart of the roster's first strategy (first seed), when its
        # detached result kept the chart's data (a result read from an older store has not)
        snapshot = getattr(self.results[0].strategy, "chart", None)
        if snapshot is not None:
            paths["chart"] = write_chart(
                snapshot, out / "MetaStrategy_chart.html", title=f"{self.results[0].name}: backtest"
            )
        return paths


def compare(
    settings: RunSettings,
    *,
    seeds: Sequence[int] | None = None,
    executor: ExecutorSpec | Executor = SERIAL,
    progress: bool = True,
    log: Log = silent,
    store: UnitStore | None = None,
) -> Comparison:
    """Train the roster, backtest every strategy and judge MetaStrategy, for each seed.

    The roster (:data:`metabt.experiments.roster.ROSTER`): MetaStrategy, MetaDrift,
    StaticModel, ErmStatic, ErmAdapt, ScratchAdapt, RollingRidge, RecursiveLeastSquares,
    BuyAndHold, SmaCross, all trained strictly before ``settings.start``. Each seed repeats
    the whole pipeline, meta-training included.

    Args:
        settings: data, period, costs and configuration (``cfg.algorithm`` is the
            meta-learner's).
        seeds: seeds to run; None runs ``settings.cfg.seed`` only.
        executor: where the units (training jobs, and one backtest per seed and
            strategy as soon as what it needs is trained) run: an
            :class:`~metabt.experiments.executors.ExecutorSpec` (its executor is made for
            the run and closed after), or an open
            :class:`~metabt.experiments.executors.Executor` (left open). The results are
            the same whatever the executor. Default: serial, here.
        progress: show progress bars (the units done).
        log: receives the training summary lines.
        store: keeps each finished unit, and gives back those a killed run finished
            (:class:`metabt.experiments.resume.UnitStore`); None keeps nothing.

    Returns:
        A :class:`Comparison`.

    Raises:
        ConfigError: bad settings, no seed, too little training data, or Ray not
            installed for a "ray" spec.
    """
    seeds = [settings.cfg.seed] if seeds is None else list(seeds)
    if not seeds:
        raise ConfigError("compare needs at least one seed, e.g. `seeds` 0 1 2")
    settings.check_history(roster=[e.name for e in roster_entries(settings.cfg)])
    units = [
        Unit(settings, seed, label=f"seed {seed}" if len(seeds) > 1 else None) for seed in seeds
    ]
    with executor_scope(executor) as ex:
        runs = run_units(
            units,
            executor=ex,
            progress=progress,
            log=log,
            ledger_command="compare",
            store=store,
        )
    cfg = settings.cfg
    first = runs[0]
    train_range = first.models.meta.learner.train_range
    assert train_range is not None
    notes = [
        settings.header(first.results[0]),
        f"meta-training ({cfg.algorithm}, erm, scratch baselines) on "
        f"{', '.join(map(clean, settings.train_frames))} from {train_range[0]} to "
        f"{train_range[1]}, "
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
