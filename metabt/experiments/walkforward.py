"""Walk-forward evaluation: every fold trained strictly before it, the whole roster judged.

Yearly (or ``fold_years``) test folds; in each, :func:`metabt.experiments.compare.compare`'s
roster is trained on prices strictly before the fold and backtested on it (every (fold,
seed) a unit of :func:`metabt.experiments.scheduler.run_units`); each strategy's folds are
stitched into one out-of-sample run and judged with :func:`metabt.evaluate.verdict.judge`.

With ``cv="cpcv"`` the test window is cut into ``cv_groups`` contiguous groups of bars
instead, and each combinatorial purged cross-validation split (López de Prado 2018, ch. 7
and 12; :func:`metabt.evaluate.overfitting.cpcv_splits`) trains the roster on every bar
outside its ``cv_test_groups`` test groups, before and after them, less the purge and the
embargo (:func:`_cpcv`); the φ = C(N−1, k−1) backtest paths are stitched per strategy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metabt._util import atomic_dir, write_text
from metabt.data.bars import BarFrequency
from metabt.errors import ConfigError, DataError
from metabt.evaluate.ic import mean_ic
from metabt.evaluate.metrics import compute_metrics
from metabt.evaluate.overfitting import cpcv_paths, cpcv_splits
from metabt.evaluate.report import write_diagnostics
from metabt.evaluate.sanitize import csv_text
from metabt.evaluate.tearsheet import write_tearsheet
from metabt.evaluate.verdict import Verdict, aggregate_seeds, judge
from metabt.experiments.backtest import BacktestResult, Costs
from metabt.experiments.executors import SERIAL, Executor, ExecutorSpec, executor_scope
from metabt.experiments.log import Log, silent
from metabt.experiments.resume import UnitStore
from metabt.experiments.roster import roster_entries
from metabt.experiments.scheduler import SeedRun, Unit, ledger_count, run_units
from metabt.experiments.settings import RunSettings

__all__ = [
    "CV_METHODS",
    "FOLD_METRICS",
    "Stitched",
    "WalkForward",
    "cpcv_exclusions",
    "walkforward",
    "walkforward_folds",
]

#: How the test window is cut: yearly folds trained before each, or CPCV's splits.
CV_METHODS = ("walkforward", "cpcv")


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
        exposure: gross exposure at each bar of the stitched folds (the analyzers'
            ``exposure``), for the tearsheet's time in market; None when not recorded.
    """

    name: str
    returns: pd.Series
    metrics: dict[str, float]
    signals: dict[str, pd.DataFrame] | None
    frequency: BarFrequency = field(default_factory=lambda: BarFrequency("daily", 252.0))
    exposure: pd.Series | None = None


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
        paths: ``cv="cpcv"`` only: one row per (seed, path, strategy) with the path's
            stitched :data:`FOLD_METRICS` (each path covers every test bar once); None for
            walk-forward folds. With CPCV, ``table``'s ``fold`` is the test group (its
            ``split`` column the split), ``stitched`` and ``summary`` are of the paths'
            mean return per bar, and ``summary`` has ``path_sharpe_mean``,
            ``path_sharpe_sd`` and ``paths``.
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
    paths: pd.DataFrame | None = None

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
        extra = {}
        if self.paths is not None:
            extra["paths"] = write_text(out / "paths.csv", csv_text(self.paths))
        return {
            **extra,
            "folds": write_text(out / "folds.csv", csv_text(self.table)),
            "summary": write_text(out / "summary.csv", csv_text(self.summary.reset_index())),
            "tearsheet": write_tearsheet(
                meta.returns,
                self.benchmark,
                out / "walkforward.html",
                title=f"MetaStrategy walk-forward, {n} folds",
                periods_per_year=meta.frequency.periods,
                exposure=meta.exposure,
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
    cv: str = "walkforward",
    cv_groups: int = 6,
    cv_test_groups: int = 2,
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
        cv: "walkforward" (the default: ``fold_years`` folds, each trained before it) or
            "cpcv": combinatorial purged cross-validation of the test window
            (``cv_groups`` contiguous groups of bars, ``cv_test_groups`` tested per split;
            each split's roster trained on every bar outside its test groups, after them
            too, with the label horizon purged before each test group and an embargo
            of ``spec.lookback + support + query`` bars after it; see :func:`_cpcv`).
        cv_groups: CPCV's N (>= 2). Default 6.
        cv_test_groups: CPCV's k (1 <= k < N). Default 2.

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
    if cv not in CV_METHODS:
        raise ConfigError(f"`cv` must be one of {', '.join(CV_METHODS)}, got {cv!r}")
    if cv == "cpcv":
        if train_years is not None:
            raise ConfigError(
                "`train_years` (a rolling window before each fold) does not apply to cpcv, "
                "whose splits train on every bar outside their test groups; drop one"
            )
        if not (isinstance(cv_test_groups, int) and isinstance(cv_groups, int)) or not (
            1 <= cv_test_groups < cv_groups
        ):
            raise ConfigError(
                f"`cv_test_groups` {cv_test_groups!r} must be at least 1 and below `cv_groups` "
                f"{cv_groups!r} (each split tests some groups and trains on the others)"
            )
        return _cpcv(settings, seeds, cv_groups, cv_test_groups, executor, progress, log, store)
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
            for result in run.results:
                rows.append(_fold_row(run, result, seed=seed, fold=k))
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


def _fold_row(run: SeedRun, result: BacktestResult, **where: int) -> dict[str, Any]:
    """One row of the fold table: ``where`` (seed, fold, and a CPCV split), the strategy,
    its training and test ranges, bars, adaptations, ``untrained`` and
    :data:`FOLD_METRICS`."""
    train_range = run.models.meta.learner.train_range
    assert train_range is not None
    return {
        **where,
        "strategy": result.name,
        "train_start": train_range[0],
        "train_end": train_range[1],
        "test_start": str(result.returns.index[0].date()),
        "test_end": str(result.returns.index[-1].date()),
        "bars": len(result.returns),
        "adaptations": math.nan if result.adaptations is None else len(result.adaptations),
        "untrained": bool(run.table.loc[result.name, "untrained"]),
        **{key: result.metrics.get(key, math.nan) for key in FOLD_METRICS},
    }


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
    parts = [r.analyzer.get_analysis().get("exposure") for r in runs]
    exposure = None if any(p is None for p in parts) else pd.concat(parts).rename("exposure")
    return Stitched(name, returns, metrics, signals, frequency, exposure)


Span = tuple[pd.Timestamp, pd.Timestamp]


def cpcv_exclusions(
    calendar: pd.DatetimeIndex,
    offset: int,
    bounds: Sequence[tuple[int, int]],
    *,
    horizon: int,
    embargo: int,
) -> tuple[Span, ...]:
    """The date spans a CPCV split's training may not read: each test group widened by
    the purge before it and the embargo after it.

    Args:
        calendar: every bar's date, sorted (the purge and embargo reach past the test
            window into the history before it and the bars after it).
        offset: the position in ``calendar`` of the test window's first bar.
        bounds: each test group's (first, last) bar, counted from the test window's first
            (:attr:`metabt.evaluate.overfitting.Split.test_bounds`).
        horizon: the label horizon, bars: a label at t is realised at t + horizon, so the
            ``horizon`` bars before a test group are purged.
        embargo: bars dropped after each test group (at least ``horizon``).

    Returns:
        ((first date, last date), ...), both ends included, one per test group.
    """
    last = len(calendar) - 1
    return tuple(
        (
            pd.Timestamp(calendar[max(offset + a - horizon, 0)]),
            pd.Timestamp(calendar[min(offset + b + max(embargo, horizon), last)]),
        )
        for a, b in bounds
    )


def _cpcv(
    settings: RunSettings,
    seeds: list[int],
    n_groups: int,
    n_test_groups: int,
    executor: ExecutorSpec | Executor,
    progress: bool,
    log: Log,
    store: UnitStore | None,
) -> WalkForward:
    """Combinatorial purged cross-validation of the roster over the test window.

    The test window's bars (the union of the traded frames' dates from ``settings.start``
    to ``settings.end`` or the last bar) are cut into N contiguous groups; each of the
    C(N, k) splits trains the whole roster once (every part, :func:`train_part` with
    ``exclude``: the split's test groups widened by the purge of the label horizon before
    each and an embargo of ``spec.lookback + support + query`` bars after it,
    :func:`cpcv_exclusions`; the cut-off is the day after the window's last bar, so bars
    after a test group are trained on, and the validation hold-out is the last
    ``val_years`` of usable time before it, :func:`~metabt.experiments.parts.
    validation_split`) and backtests each of its k test groups from fresh cash (one
    :class:`~metabt.experiments.scheduler.Unit` per (split, group), the split's units
    sharing one training). Path p of :func:`~metabt.evaluate.overfitting.cpcv_paths`
    stitches, group by group, the p-th test of each group: φ = C(N−1, k−1) paths, each
    covering every test bar once. The smoothing is the run's ``smooth`` (no validation
    choice: the years before a test group may hold another test group of its split).
    """
    from metabt._checks import through_day

    paths = cpcv_paths(n_groups, n_test_groups)  # the counts checked before any work
    cfg = settings.cfg
    frames = list(settings.frames.values())
    last_bar = min(f.index[-1] for f in frames)
    if settings.end is not None and settings.end > last_bar:
        raise DataError(
            f"`end` {settings.end.date()} is after the last bar of the data "
            f"({last_bar.date()}); use `end` {last_bar.date()} or omit `end`"
        )
    calendar = frames[0].index
    for f in frames[1:]:
        calendar = calendar.union(f.index)
    calendar = pd.DatetimeIndex(calendar)
    stop = through_day(settings.end)
    inside = (calendar >= settings.start) & (
        np.ones(len(calendar), dtype=bool) if stop is None else calendar <= stop
    )
    bars = calendar[inside]
    if len(bars) < 2 * n_groups:
        raise ConfigError(
            f"`cv_groups` {n_groups}: the {len(bars)} test bars make groups of under 2 "
            "bars; use fewer `cv_groups` or a longer test window"
        )
    offset = int(np.flatnonzero(inside)[0])
    horizon = cfg.spec.horizon
    embargo = int(cfg.spec.lookback) + cfg.support + cfg.query
    splits = list(cpcv_splits(len(bars), n_groups, n_test_groups, horizon=horizon, embargo=embargo))
    groups = [(bars[g[0]], bars[g[-1]]) for g in np.array_split(np.arange(len(bars)), n_groups)]
    cut = pd.Timestamp(bars[-1]).normalize() + pd.Timedelta(days=1)
    run_settings = replace(settings, cfg=cfg.with_(smooth_grid=()))
    for first, last in groups:  # every group must be testable, checked before training
        group = replace(run_settings, start=first, end=last)
        group.check_history(roster=[e.name for e in roster_entries(cfg)])
    units, where = [], []
    for seed in seeds:
        for s, split in enumerate(splits):
            spans = cpcv_exclusions(
                calendar, offset, split.test_bounds, horizon=horizon, embargo=embargo
            )
            for g, (a, b) in zip(split.test_groups, split.test_bounds, strict=True):
                label = (
                    f"CPCV split {s + 1}/{len(splits)} (test groups "
                    f"{', '.join(str(t + 1) for t in split.test_groups)} of {n_groups}): "
                    f"group {g + 1}, test {bars[a].date()} to {bars[b].date()}"
                    + (f" (seed {seed})" if len(seeds) > 1 else "")
                )
                units.append(
                    Unit(run_settings, seed, bars[a], bars[b], label, spans, train_end=cut)
                )
                where.append((seed, s, g))
    with executor_scope(executor) as ex:
        runs = dict(
            zip(where, run_units(units, executor=ex, progress=progress, log=log, store=store))
        )
    rows: list[dict[str, Any]] = []
    path_rows: list[dict[str, Any]] = []
    per_seed: list[tuple[int, dict[str, Stitched], pd.DataFrame, Verdict]] = []
    logs, assets = [], {}
    for seed in seeds:
        for (sd, s, g), run in runs.items():
            if sd != seed:
                continue
            for result in run.results:
                rows.append(_fold_row(run, result, seed=seed, split=s + 1, fold=g + 1))
                if seed == seeds[0]:
                    assets[(s + 1, g + 1, result.name)] = result.assets
            if seed == seeds[0]:
                meta = run.results[0]
                assert meta.adaptations is not None
                logs.append(meta.adaptations.assign(split=s + 1, fold=g + 1))
        by_path: dict[str, list[Stitched]] = {}
        for p, path in enumerate(paths):
            tests = [
                {r.name: r for r in runs[seed, int(path[g]), g].results} for g in range(n_groups)
            ]
            for name in tests[0]:
                stitched = _stitch(name, [t[name] for t in tests])
                by_path.setdefault(name, []).append(stitched)
                path_rows.append(
                    {
                        "seed": seed,
                        "path": p + 1,
                        "strategy": name,
                        "bars": len(stitched.returns),
                        **{key: stitched.metrics.get(key, math.nan) for key in FOLD_METRICS},
                    }
                )
        mean = {name: _mean_path(name, series) for name, series in by_path.items()}
        table, verdict = judge(
            list(mean.values()),
            horizon=horizon,
            seed=seed,
            periods_per_year=next(iter(mean.values())).frequency.periods,
            ledger=ledger_count(settings, list(mean.values()), "walkforward", seed=seed),
        )
        sharpes = pd.DataFrame(
            {
                name: [p.metrics.get("sharpe", math.nan) for p in series]
                for name, series in by_path.items()
            }
        )
        table = table.assign(
            path_sharpe_mean=sharpes.mean().reindex(table.index),
            path_sharpe_sd=sharpes.std(ddof=1).reindex(table.index),
            paths=len(paths),
        )
        per_seed.append((seed, mean, table, verdict))
    _, mean0, _, verdict0 = per_seed[0]
    summary = _seed_summary([(s, t) for s, _, t, _ in per_seed])
    names = list(settings.frames)
    if "BuyAndHold" in mean0:
        benchmark = mean0["BuyAndHold"].returns.rename(
            f"BuyAndHold (equal-weight basket of {len(names)} assets)"
            if len(names) > 1
            else f"BuyAndHold ({names[0]})"
        )
    else:  # pragma: no cover - BuyAndHold always runs
        benchmark = mean0["MetaStrategy"].returns.rename(names[0])
    head = (
        f"CPCV, {n_groups} groups, {n_test_groups} tested per split: {len(splits)} splits, "
        f"{len(paths)} paths (verdict on the paths' mean return per bar): "
    )
    return WalkForward(
        table=pd.DataFrame(rows),
        stitched=mean0,
        summary=summary,
        verdict=verdict0,
        verdicts=[
            head + (v.text if len(per_seed) == 1 else f"seed {s}: {v.text}")
            for s, _, _, v in per_seed
        ],
        benchmark=benchmark,
        adaptations=pd.concat(logs, ignore_index=True),
        assets=pd.concat(assets, names=["split", "fold", "strategy", "asset"]),
        costs=settings.costs,
        paths=pd.DataFrame(path_rows),
    )


def _mean_path(name: str, paths: Sequence[Stitched]) -> Stitched:
    """A strategy's CPCV paths as one run: their mean return per bar (an equal share in
    each path); its IC is path 1's signals' (every test bar once)."""
    returns = pd.concat([p.returns for p in paths], axis=1).mean(axis=1).rename("returns")
    frequency = paths[0].frequency
    metrics = compute_metrics(returns, periods_per_year=frequency.periods)
    if paths[0].signals is not None:
        metrics.update(mean_ic(paths[0].signals))
    return Stitched(name, returns, metrics, paths[0].signals, frequency)


def _seed_summary(tables: Sequence[tuple[int, pd.DataFrame]]) -> pd.DataFrame:
    """The first seed's table, or the mean over seeds with ``_sd`` columns."""
    table0 = tables[0][1]
    if len(tables) == 1:
        return table0
    stats = aggregate_seeds(dict(tables))
    order = list(table0.columns)
    summary = pd.concat(
        [
            stats["mean"].unstack("metric")[order],
            stats["sd"].unstack("metric")[order].add_suffix("_sd"),
        ],
        axis=1,
    ).loc[list(table0.index)]
    summary.index.name = "strategy"
    return summary
