"""Walk-forward evaluation: every fold trained strictly before it, the whole roster judged.

Yearly (or ``fold_years``) test folds; in each, :func:`metabt.experiments.compare.compare`'s
roster is trained on prices strictly before the fold and backtested on it (every (fold,
seed) a unit of :func:`metabt.experiments.scheduler.run_units`); each strategy's folds are
stitched into one out-of-sample run and judged with :func:`metabt.evaluate.verdict.judge`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from metabt._util import atomic_dir, write_text
from metabt.data.bars import BarFrequency
from metabt.errors import ConfigError, DataError
from metabt.evaluate.ic import mean_ic
from metabt.evaluate.metrics import compute_metrics
from metabt.evaluate.report import write_diagnostics, write_tearsheet
from metabt.evaluate.sanitize import csv_text
from metabt.evaluate.verdict import Verdict, aggregate_seeds, judge
from metabt.experiments.backtest import BacktestResult, Costs
from metabt.experiments.executors import SERIAL, Executor, ExecutorSpec, executor_scope
from metabt.experiments.log import Log, silent
from metabt.experiments.resume import UnitStore
from metabt.experiments.roster import roster_entries
from metabt.experiments.scheduler import Unit, ledger_count, run_units
from metabt.experiments.settings import RunSettings

__all__ = ["FOLD_METRICS", "Stitched", "WalkForward", "walkforward", "walkforward_folds"]


def walkforward_folds(
    start: str | pd.Timestamp, end: str | pd.Timestamp, *, years: int = 1
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Consecutive test periods of ``years`` calendar years covering [start, end].

    Fold k tests [start + k·years, start + (k+1)·years − 1 day] (the last fold stops at
    ``end``); its model must be trained strictly before the fold's first day.

    Args:
        start: first test date. end: last test date (inclusive).
        years: calendar years per fold. Default 1.

    Returns:
        [(test_start, test_end), ...], contiguous and non-overlapping.

    Raises:
        ConfigError: end before start, or years < 1.
    """
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    if last < first:
        raise ConfigError(f"end {last.date()} is before start {first.date()}; swap them")
    if isinstance(years, bool) or not isinstance(years, int) or years < 1:
        raise ConfigError(f"years per fold must be a positive integer, got {years!r}")
    folds = []
    fold_start = first
    while fold_start <= last:
        nxt = fold_start + pd.DateOffset(years=years)
        folds.append((fold_start, min(nxt - pd.Timedelta(days=1), last)))
        fold_start = nxt
    return folds


FOLD_METRICS = (
    "sharpe",
    "cagr",
    "max_drawdown",
    "total_return",
    "hit_rate",
    "turnover_two_way",
    "ic",
    "rank_ic",
    "gross_sharpe",
    "cost_drag",
    "break_even_bps",
    "holding_bars",
    "long_share",
    "alpha_t",
    "beta",
    "smooth",
    "no_trade_bps",
)


@dataclass
class Stitched:
    """A strategy's out-of-sample folds joined into one run (what :func:`judge` reads).

    Attributes:
        name: the strategy.
        returns: the folds' returns, stitched (each fold from fresh cash).
        metrics: quantstats metrics of the stitched returns, plus the pooled IC.
        signals: data name -> signal vs forward return across the folds, or None.
        frequency: the bar frequency that annualised the metrics.
    """

    name: str
    returns: pd.Series
    metrics: dict[str, float]
    signals: dict[str, pd.DataFrame] | None
    frequency: BarFrequency = field(default_factory=lambda: BarFrequency("daily", 252.0))


@dataclass
class WalkForward:
    """Yearly folds, each trained strictly before it, every strategy of the roster.

    Attributes:
        table: one row per (seed, fold, strategy): ``train_start``, ``train_end``,
            ``test_start``, ``test_end``, bars, adaptations and :data:`FOLD_METRICS`.
        stitched: strategy -> its stitched out-of-sample run.
        summary: one row per strategy: metrics of the stitched returns with the
            significance columns of :func:`metabt.evaluate.verdict.judge`.
        verdict: MetaStrategy against the best non-meta baseline, on the stitched returns
            (the first seed).
        verdicts: the verdict line of every seed.
        benchmark: the tearsheets' benchmark on the stitched dates: the BuyAndHold row (the
            equal-weight basket), named as such.
        adaptations: MetaStrategy's adaptation log in every fold, with a ``fold`` column.
        assets: per-asset results, indexed by (fold, strategy, asset).
        costs: the costs every fold paid.
    """

    table: pd.DataFrame
    stitched: dict[str, Stitched]
    summary: pd.DataFrame
    verdict: Verdict
    verdicts: list[str]
    benchmark: pd.Series
    adaptations: pd.DataFrame
    assets: pd.DataFrame
    costs: Costs

    @property
    def returns(self) -> pd.Series:
        """MetaStrategy's stitched out-of-sample returns."""
        return self.stitched["MetaStrategy"].returns

    def metrics(self) -> dict[str, float]:
        """quantstats metrics of MetaStrategy's stitched out-of-sample returns."""
        meta = self.stitched["MetaStrategy"]
        return compute_metrics(meta.returns, periods_per_year=meta.frequency.periods)

    def write(self, out: Path, *, force: bool = False) -> dict[str, Path]:
        """Write folds.csv, summary.csv, walkforward.html, assets.csv and the diagnostics,
        as one set that replaces ``out`` whole at the end (:func:`metabt._util.atomic_dir`)."""
        with atomic_dir(out, force=force) as tmp:
            paths = self._write(tmp)
        return {key: out / path.relative_to(tmp) for key, path in paths.items()}

    def _write(self, out: Path) -> dict[str, Path]:
        n = int(self.table["fold"].max())
        meta = self.stitched["MetaStrategy"]
        return {
            "folds": write_text(out / "folds.csv", csv_text(self.table)),
            "summary": write_text(out / "summary.csv", csv_text(self.summary.reset_index())),
            "tearsheet": write_tearsheet(
                meta.returns,
                self.benchmark,
                out / "walkforward.html",
                title=f"MetaStrategy walk-forward, {n} folds",
                periods_per_year=meta.frequency.periods,
            ),
            "assets": write_text(out / "assets.csv", csv_text(self.assets.reset_index())),
            "diagnostics": write_diagnostics(
                meta.returns,
                self.benchmark,
                self.adaptations,
                meta.signals or {},
                out / "walkforward_diagnostics.html",
                title=f"MetaStrategy walk-forward, {n} folds: adaptation diagnostics",
            ),
        }


def walkforward(
    settings: RunSettings,
    *,
    fold_years: int = 1,
    train_years: int | None = None,
    seeds: Sequence[int] | None = None,
    executor: ExecutorSpec | Executor = SERIAL,
    progress: bool = True,
    log: Log = silent,
    store: UnitStore | None = None,
) -> WalkForward:
    """Walk-forward evaluation of the whole roster: each fold trained strictly before it.

    Args:
        settings: data, period (``start`` to ``end`` or the last bar), costs, config.
        fold_years: calendar years per test fold. Default 1.
        train_years: rolling training window in years; None trains on all history
            before each fold (expanding).
        seeds: seeds to repeat the whole walk-forward with (training included); None
            runs ``settings.cfg.seed`` only. Reports and the stitched runs are the first
            seed's; ``summary`` is the mean over seeds (with ``_sd`` columns).
        executor: where the units (the training jobs of every fold and seed, and one
            backtest per fold, seed and strategy as soon as what it needs is trained,
            :func:`metabt.experiments.scheduler.run_units`) run: an
            :class:`~metabt.experiments.executors.ExecutorSpec` (its executor is made for
            the run and closed after), or an open
            :class:`~metabt.experiments.executors.Executor` (left open). The results are
            the same whatever the executor. Default: serial, here.
        progress: show progress bars (the units done).
        log: receives one line per fold and the training summaries.
        store: keeps each finished unit, and gives back those a killed run finished
            (:class:`metabt.experiments.resume.UnitStore`); None keeps nothing.

    Returns:
        A :class:`WalkForward`.

    Raises:
        ConfigError: bad settings, no seed, too little training data for a fold, or Ray
            not installed for a "ray" spec.
        DataError: ``settings.end`` after the last bar of the data.
    """
    seeds = [settings.cfg.seed] if seeds is None else list(seeds)
    if not seeds:
        raise ConfigError("walkforward needs at least one seed, e.g. `seeds` 0 1 2")
    end = settings.end
    if end is None:
        end = max(f.index[-1] for f in settings.frames.values())
    last_bar = min(f.index[-1] for f in settings.frames.values())
    if settings.end is not None and settings.end > last_bar:
        raise DataError(
            f"`end` {settings.end.date()} is after the last bar of the data "
            f"({last_bar.date()}); folds there would have nothing to test: use `end` "
            f"{last_bar.date()} or omit `end`"
        )
    folds = walkforward_folds(settings.start, end, years=fold_years)
    for fold_start, fold_end in folds:  # every fold must be testable, checked before training
        fold = replace(settings, start=fold_start, end=fold_end)
        fold.check_history(roster=[e.name for e in roster_entries(settings.cfg)])
    units = []
    for seed in seeds:
        for k, (test_start, test_end) in enumerate(folds, 1):
            fold = settings
            if train_years is not None:  # rolling: only the last train_years before the fold
                first = test_start - pd.DateOffset(years=train_years)
                window = {name: f.loc[first:] for name, f in settings.train_frames.items()}
                fold = replace(settings, train_frames=window)
            label = f"fold {k}/{len(folds)}: test {test_start.date()} to {test_end.date()}" + (
                f" (seed {seed})" if len(seeds) > 1 else ""
            )
            units.append(Unit(fold, seed, test_start, test_end, label))
    with executor_scope(executor) as ex:
        seed_runs = iter(run_units(units, executor=ex, progress=progress, log=log, store=store))
    rows: list[dict[str, Any]] = []
    per_seed: list[tuple[int, dict[str, list[BacktestResult]], pd.DataFrame, Verdict]] = []
    logs, assets = [], {}
    for seed in seeds:
        parts: dict[str, list[BacktestResult]] = {}
        for k in range(1, len(folds) + 1):
            run = next(seed_runs)
            train_range = run.models.meta.learner.train_range
            assert train_range is not None
            for result in run.results:
                rows.append(
                    {
                        "seed": seed,
                        "fold": k,
                        "strategy": result.name,
                        "train_start": train_range[0],
                        "train_end": train_range[1],
                        "test_start": str(result.returns.index[0].date()),
                        "test_end": str(result.returns.index[-1].date()),
                        "bars": len(result.returns),
                        "adaptations": math.nan
                        if result.adaptations is None
                        else len(result.adaptations),
                        "untrained": bool(run.table.loc[result.name, "untrained"]),
                        **{key: result.metrics.get(key, math.nan) for key in FOLD_METRICS},
                    }
                )
                parts.setdefault(result.name, []).append(result)
                if seed == seeds[0]:
                    assets[(k, result.name)] = result.assets
            if seed == seeds[0]:
                meta = run.results[0]
                assert meta.adaptations is not None
                logs.append(meta.adaptations.assign(fold=k))
        stitched = [_stitch(name, runs) for name, runs in parts.items()]
        table, verdict = judge(
            stitched,
            horizon=settings.cfg.spec.horizon,
            seed=seed,
            periods_per_year=stitched[0].frequency.periods,
            ledger=ledger_count(settings, stitched, "walkforward", seed=seed),
        )
        per_seed.append((seed, parts, table, verdict))
    _, parts0, table0, verdict0 = per_seed[0]
    if len(per_seed) > 1:
        stats = aggregate_seeds({seed: table for seed, _, table, _ in per_seed})
        names = list(table0.index)
        order = list(table0.columns)
        summary = pd.concat(
            [
                stats["mean"].unstack("metric")[order],
                stats["sd"].unstack("metric")[order].add_suffix("_sd"),
            ],
            axis=1,
        ).loc[names]
        summary.index.name = "strategy"
    else:
        summary = table0
    names = list(settings.frames)
    if "BuyAndHold" in parts0:  # the equal-weight basket, as the BuyAndHold row holds it
        benchmark = _stitch("BuyAndHold", parts0["BuyAndHold"]).returns.rename(
            f"BuyAndHold (equal-weight basket of {len(names)} assets)"
            if len(names) > 1
            else f"BuyAndHold ({names[0]})"
        )
    else:
        benchmark = pd.concat([r.benchmark for r in parts0["MetaStrategy"]]).rename(names[0])
    return WalkForward(
        table=pd.DataFrame(rows),
        stitched={name: _stitch(name, runs) for name, runs in parts0.items()},
        summary=summary,
        verdict=verdict0,
        verdicts=[
            v.text if len(per_seed) == 1 else f"seed {s}: {v.text}" for s, _, _, v in per_seed
        ],
        benchmark=benchmark,
        adaptations=pd.concat(logs, ignore_index=True),
        assets=pd.concat(assets, names=["fold", "strategy", "asset"]),
        costs=settings.costs,
    )


def _stitch(name: str, runs: Sequence[BacktestResult]) -> Stitched:
    returns = pd.concat([r.returns for r in runs]).rename("returns")
    if not returns.index.is_monotonic_increasing or returns.index.has_duplicates:
        raise RuntimeError("walk-forward folds overlap; this is a bug in walkforward_folds")
    signals = None
    if runs[0].signals is not None:
        pairs: dict[str, list[pd.DataFrame]] = {}
        for r in runs:
            for asset, pair in (r.signals or {}).items():
                pairs.setdefault(asset, []).append(pair)
        signals = {asset: pd.concat(p) for asset, p in pairs.items()}
    frequency = runs[0].frequency
    metrics = compute_metrics(returns, periods_per_year=frequency.periods)
    if signals is not None:
        metrics.update(mean_ic(signals))
    return Stitched(name, returns, metrics, signals, frequency)
