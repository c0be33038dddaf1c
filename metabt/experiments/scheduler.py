"""The scheduler of the roster's units: training parts and backtests, each as soon as it can.

An experiment on the roster (:func:`metabt.experiments.compare.compare`,
:func:`metabt.experiments.walkforward.walkforward`) is made of (fold, seed) units
(:class:`Unit`), each of independent jobs run on an executor
(:mod:`metabt.experiments.executors`: this process, local processes or Ray) and scheduled
by what they need (:func:`run_units`): the training parts of every unit (the meta-learner,
ERM selected after adaptation and unadapted, scratch, the linear baselines' selection and
LightGBM, :data:`~metabt.experiments.roster.ROSTER_PARTS`) start at once, and the backtest
of every (unit, strategy) as soon as the parts it needs are done
(:data:`~metabt.experiments.roster.STRATEGY_NEEDS`; the controls need none);
the judging runs here. The results are the same, bit for bit, whatever the executor and
the order the units finish in.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pandas as pd
from tqdm.auto import tqdm

from metabt.analyzers import QuantStatsAnalyzer
from metabt.config.defaults import RunConfig
from metabt.data.ohlcv import frames_sha256
from metabt.evaluate.chart import ChartData, chart_data
from metabt.evaluate.ledger import Ledger, WindowCount, window_key
from metabt.evaluate.verdict import Run, Verdict, judge
from metabt.experiments.backtest import BacktestResult
from metabt.experiments.executors import Executor, SerialExecutor
from metabt.experiments.log import Log, silent
from metabt.experiments.parts import ROSTER_PARTS, RosterModels, run_bars_per_year, train_part
from metabt.experiments.resume import UnitStore
from metabt.experiments.roster import RosterEntry, needed_parts, roster_entries, untrained
from metabt.experiments.settings import RunSettings
from metabt.experiments.smoothing import choose_smoothing
from metabt.strategies.meta import SignalTrader

__all__ = [
    "FinishedStrategy",
    "JUDGING_IMPORTS",
    "SeedRun",
    "TRAIN_ORDER",
    "Unit",
    "ledger_count",
    "run_seed",
    "run_units",
]

#: The order the training parts are submitted in: the longest first (on the sample data
#: with 600 meta steps, meta ~10 s, each erm ~4 s, gbm ~1 s, linear and scratch under
#: 0.5 s; a backtest ~0.5 s).
TRAIN_ORDER = ("meta", "erm", "erm_static", "gbm", "linear", "scratch")
#: Modules :func:`metabt.evaluate.verdict.judge` imports on first use (the bootstrap, the
#: PSR's normal law, the Newey-West regressions, the metrics): about 2 s, imported in this
#: process while the last units run elsewhere rather than after them.
JUDGING_IMPORTS = ("arch.bootstrap", "scipy.stats", "statsmodels.api", "quantstats")


@dataclass
class SeedRun:
    """One (fold, seed) unit done: the models trained, the backtests, the judged table.

    Attributes:
        seed: the seed of training and of the bootstrap.
        models: what was trained before the test period.
        results: one backtest per strategy of the roster.
        table: one row per strategy, metrics plus :func:`metabt.evaluate.verdict.judge`'s
            columns and ``untrained``.
        verdict: MetaStrategy against the best non-meta baseline.
    """

    seed: int
    models: RosterModels
    results: list[BacktestResult]
    table: pd.DataFrame
    verdict: Verdict


@dataclass(frozen=True)
class Unit:
    """One (fold, seed) of an experiment: its roster trained strictly before ``start``.

    Attributes:
        settings: the shared data, costs and configuration (its ``train_frames`` are
            the ones trained on).
        seed: the seed of training and of the bootstrap (replaces ``cfg.seed``).
        start, end: the test period (default: ``settings.start`` / ``settings.end``).
        label: a line logged before the unit's training summary, or None.
        exclude: date spans (first, last) no training part reads a bar of (a CPCV split's
            test groups, purged and embargoed, :func:`metabt.experiments.parts.train_part`);
            () (the default): none, trained strictly before :attr:`first`.
        train_end: the training cut-off with ``exclude`` (the day after the last bar
            trained on); None (the default): :attr:`first`. Units with the same settings,
            seed, ``exclude`` and ``train_end`` (a CPCV split's test groups) share one
            training.
    """

    settings: RunSettings
    seed: int
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    label: str | None = None
    exclude: tuple[tuple[pd.Timestamp, pd.Timestamp], ...] = ()
    train_end: pd.Timestamp | None = None

    @property
    def cfg(self) -> RunConfig:
        """The configuration with this unit's seed."""
        return self.settings.cfg.with_(seed=self.seed)

    @property
    def first(self) -> pd.Timestamp:
        """The first test day: everything is trained strictly before it (without
        ``exclude``)."""
        return self.settings.start if self.start is None else self.start

    @property
    def cut(self) -> pd.Timestamp:
        """The training cut-off: every label trained on is realised before it."""
        return self.first if self.train_end is None else self.train_end


TrainJob = tuple[
    Mapping[str, pd.DataFrame],
    RunConfig,
    pd.Timestamp,
    str,
    bool,
    tuple[tuple[pd.Timestamp, pd.Timestamp], ...],
]
#: settings, name, strategy class, its kwargs, start, end, keep the chart's data?
BacktestJob = tuple[
    RunSettings, str, type[Any], dict[str, Any], pd.Timestamp | None, pd.Timestamp | None, bool
]


def _train_part(job: TrainJob) -> tuple[Any, list[str]]:
    """One training job of a roster (:data:`ROSTER_PARTS`) and its summary lines.

    :func:`metabt.experiments.roster.train_part`, the step
    :func:`metabt.experiments.roster.train_roster` takes for each part.
    """
    frames, cfg, end, part, progress, exclude = job
    return train_part(frames, cfg, end, part, progress=progress, exclude=exclude or None)


class FinishedStrategy:
    """What is kept of a backtrader strategy after its run: the feeds that ended early.

    Args:
        strategy: the strategy after its run.
        keep_chart: keep what the interactive chart draws (:attr:`chart`). Default False.

    Attributes:
        name: the strategy's class name.
        chart: :func:`metabt.evaluate.chart.chart_data` of the run when ``keep_chart``,
            else None (``write_chart`` draws it).
        ended: data name -> the day its feed ended, before the others (a SignalTrader's).
        targets_set, targets_rounded_away: a SignalTrader's counts of positions to open
            and of those whole units rounded to 0.
    """

    def __init__(self, strategy: Any, keep_chart: bool = False) -> None:
        self.name = type(strategy).__name__
        self.chart: ChartData | None = chart_data(strategy) if keep_chart else None
        trader = isinstance(strategy, SignalTrader)
        self.ended: dict[str, Any] = dict(strategy.ended) if trader else {}
        self.targets_set = int(strategy.targets_set) if trader else 0
        self.targets_rounded_away = int(strategy.targets_rounded_away) if trader else 0

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


def _detach(result: BacktestResult, keep_chart: bool = False) -> BacktestResult:
    """The result without the backtrader run (cerebro, feeds, lines): small, and it pickles.

    ``strategy`` keeps the feeds that ended early (``ended``) and ``analyzer`` its
    results and :meth:`tearsheet`; every table, series and log is kept as it is; with
    ``keep_chart``, the strategy keeps what the interactive chart draws.
    """
    return replace(
        result,
        strategy=FinishedStrategy(result.strategy, keep_chart),
        analyzer=cast(Any, _Rets(result.analyzer)),
    )


def _backtest(job: BacktestJob) -> BacktestResult:
    """One strategy of a roster backtested on its unit's test period, detached from its run;
    a signal-trading one first gets its ``smooth`` on the validation years
    (:func:`metabt.experiments.smoothing.choose_smoothing`); the roster's first keeps
    what the interactive chart draws."""
    settings, name, cls, kwargs, start, end, keep_chart = job
    choice = None
    if "smooth" in kwargs:
        first = settings.start if start is None else start
        choice = choose_smoothing(settings, name, cls, kwargs, first)
        kwargs = {**kwargs, **choice.kwargs}
    result = _detach(settings.run(cls, name, kwargs, start=start, end=end), keep_chart)
    if choice is not None:
        result.metrics["smooth"] = float(choice.smooth)
        result.metrics["no_trade_bps"] = float(choice.no_trade_bps)
    return replace(result, smoothing=choice)


class _Pending:
    """Stands for a training part not done yet in a roster built before it is."""

    def __init__(self, part: str) -> None:
        self.part = part

    @property
    def learner(self) -> _Pending:
        """Itself: a roster entry reads ``models.<part>.learner``."""
        return self

    def __repr__(self) -> str:
        return f"<pending {self.part}>"


def _partial_models(
    done: Mapping[str, Any], objective: str = "mse", bars_per_year: float = 252.0
) -> RosterModels:
    """The roster's models with the parts not in ``done`` (part -> result) left pending
    (``objective``: the run's, which selected the linear baselines' settings;
    ``bars_per_year``: the run's, which scales the controls' windows)."""
    meta, erm, erm_static, scratch, gbm = (
        done.get(part, _Pending(part)) for part in ("meta", "erm", "erm_static", "scratch", "gbm")
    )
    alpha, lam, selection = (
        done["linear"] if "linear" in done else (_Pending("linear"), _Pending("linear"), {})
    )
    return RosterModels(
        meta, erm, erm_static, scratch, gbm, alpha, lam, selection, objective=objective,
        bars_per_year=bars_per_year,
    )  # fmt: skip


def _roster_entry(
    entry: RosterEntry, done: Mapping[str, Any], cfg: RunConfig, bars_per_year: float = 252.0
) -> tuple[str, type[Any], dict[str, Any]]:
    """``entry`` built from the parts ``done`` at the run's ``bars_per_year``; refused if it
    reads a part it does not need."""
    kwargs = entry.kwargs(_partial_models(done, cfg.objective, bars_per_year), cfg)
    pending = sorted({v.part for v in kwargs.values() if isinstance(v, _Pending)})
    if pending:
        raise RuntimeError(
            f"roster strategy {entry.name!r} uses the training part(s) {', '.join(pending)}, "
            f"not in its needs {entry.needs} (metabt.experiments.roster.ROSTER); fix it"
        )
    return entry.name, entry.strategy, kwargs


def _import_judging() -> None:
    for name in JUDGING_IMPORTS:
        with contextlib.suppress(ImportError):  # judge then says what is missing
            importlib.import_module(name)


def _raise_if_failed(future: Future[Any]) -> None:
    """Raise the unit's exception now if it already failed (the serial executor)."""
    if future.done() and not future.cancelled() and future.exception() is not None:
        future.result()


def _untrained_column(
    table: pd.DataFrame, models: RosterModels, entries: Sequence[RosterEntry]
) -> pd.DataFrame:
    """``table`` with the ``untrained`` column (:func:`metabt.experiments.roster.untrained`
    of the unit's ``entries``)."""
    flags = untrained(models, entries)
    out = table.copy()
    out["untrained"] = [bool(flags.get(str(name), False)) for name in out.index]
    return out


def run_units(
    units: Sequence[Unit],
    *,
    executor: Executor | None = None,
    progress: bool = True,
    log: Log = silent,
    ledger_command: str | None = None,
    store: UnitStore | None = None,
) -> list[SeedRun]:
    """Train the roster of every unit, backtest every strategy, judge each unit.

    Every training job of every unit (:data:`~metabt.experiments.roster.ROSTER_PARTS`) is
    submitted to ``executor`` at once, the longest first (:data:`TRAIN_ORDER`: every
    unit's meta-learner, then every unit's ERM, ...), then the backtests that need no
    training (BuyAndHold, SmaCross); each other (unit, strategy) backtest of
    :data:`~metabt.experiments.roster.ROSTER` is submitted as soon as the training parts it
    needs are done, so that backtests run while the meta-learner trains. Each unit is
    judged here once all is done (when the units run elsewhere, the modules the judging
    imports, :data:`JUDGING_IMPORTS`, are imported here in a thread while the last
    backtests run). The results are stored by (unit, strategy) and the training summaries
    logged unit by unit, in order (a unit's once its training and that of the units before
    it are done), so neither depends on the executor or on the order the units finish in.

    Args:
        units: the (fold, seed) units.
        executor: where the units run (:class:`~metabt.experiments.executors.Executor`);
            None runs them here, one after the other.
        progress: show the units done (and, run here, the training progress bars).
        log: receives each unit's label and training summary lines.
        ledger_command: when given (e.g. ``"compare"``) and the unit's settings name a
            trial ledger (``RunSettings.ledger``), each unit's strategies are added to it
            under this command before the unit is judged, and the unit's DSR deflates over
            its test window's effective trials (:func:`ledger_count`). None: no ledger.
        store: where finished units are kept as they finish, and read instead of run when
            already there (a resumed run, :class:`metabt.experiments.resume.UnitStore`);
            each unit's key digests its settings, period, seed, data and the training
            parts it uses. None: nothing is kept.

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
    entries = [roster_entries(cfg) for cfg in cfgs]
    bars_per_year = [run_bars_per_year(u.settings.frames, u.cfg) for u in units]
    parts = [needed_parts(e) for e in entries]  # a --baselines roster trains fewer
    trained: list[dict[str, Any]] = [{} for _ in units]  # part -> result, per unit
    train_logs: list[dict[str, list[str]]] = [{} for _ in units]
    done: dict[tuple[int, int], BacktestResult] = {}
    started: set[tuple[int, int]] = set()
    keys: dict[Future[Any], tuple[int, str | int]] = {}  # -> (unit, part or strategy)
    order: dict[Future[Any], int] = {}  # -> submission number
    stored: dict[tuple[int, str | int], str] = {}  # -> the unit's key in ``store``
    digests = [_unit_digest(u) for u in units] if store is not None else []
    owner = _training_owners(units)  # unit -> the unit whose training it shares
    shared: dict[int, list[int]] = {}
    for k, o in enumerate(owner):
        shared.setdefault(o, []).append(k)
    logged = 0
    preload: threading.Thread | None = None
    total = sum(len(parts[k]) for k in shared) + sum(map(len, entries))
    bar = tqdm(total=total, desc="units", unit="unit", disable=not progress)

    def accept(slot: tuple[int, str | int], value: Any) -> None:
        """A finished unit's result, computed or read from ``store``."""
        nonlocal logged
        k, what = slot
        bar.update(1)
        if isinstance(what, int):
            done[k, what] = value
            return
        for j in shared[k]:  # the units sharing this training (only k, without exclude)
            trained[j][what] = value[0]
            train_logs[j][what] = value[1] if j == k else []
            if j != k and (k, what) in stored:
                stored[j, what] = stored[k, what]
        for j in shared[k]:
            submit_ready(j)
        while logged < len(units) and len(trained[logged]) == len(parts[logged]):
            _log_unit(units[logged], trained[logged], train_logs[logged], log)
            logged += 1

    def submit(slot: tuple[int, str | int], fn: Callable[[Any], Any], job: Any) -> None:
        if store is not None:
            k, what = slot
            needs = () if isinstance(what, str) else entries[k][what].needs
            stored[slot] = store.key(
                unit=digests[k],
                what=what if isinstance(what, str) else entries[k][what].name,
                parts=[stored[k, part] for part in needs],
            )
            hit, value = store.get(stored[slot])
            if hit:
                accept(slot, value)
                return
        future = executor.submit(fn, job)
        keys[future], order[future] = slot, len(order)
        _raise_if_failed(future)

    def submit_ready(k: int) -> None:
        for j, entry in enumerate(entries[k]):
            if (k, j) not in started and all(part in trained[k] for part in entry.needs):
                started.add((k, j))
                name, cls, kwargs = _roster_entry(entry, trained[k], cfgs[k], bars_per_year[k])
                u = units[k]
                # a backtest reads no training frame but each one's first bar, which sets
                # the validation hold-out its smoothing is chosen on (hold_out_years)
                firsts = {asset: f.iloc[:1] for asset, f in u.settings.train_frames.items()}
                settings = replace(u.settings, train_frames=firsts)
                job = (settings, name, cls, kwargs, u.start, u.end, j == 0)
                submit((k, j), _backtest, job)

    with bar:
        try:
            for part in TRAIN_ORDER:
                for k, u in enumerate(units):
                    if part not in parts[k] or owner[k] != k:
                        continue
                    submit(
                        (k, part),
                        _train_part,
                        (u.settings.train_frames, cfgs[k], u.cut, part, inner, u.exclude),
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
                    slot = keys.pop(future)
                    value = future.result()  # raises the unit's exception at once
                    if store is not None:
                        store.put(stored[slot], value)  # kept before it is used
                    accept(slot, value)
        except BaseException:
            executor.cancel(list(keys))
            raise
    if preload is not None:
        preload.join()
    runs = []
    for k, unit in enumerate(units):
        models = _partial_models(trained[k], unit.cfg.objective, bars_per_year[k])
        results = [done[k, j] for j in range(len(entries[k]))]
        _log_smoothing(unit, results, log)
        count = None
        if ledger_command is not None:
            count = ledger_count(unit.settings, results, ledger_command, seed=unit.seed)
        table, verdict = judge(
            results,
            horizon=unit.cfg.spec.horizon,
            seed=unit.seed,
            periods_per_year=results[0].frequency.periods,
            ledger=count,
        )
        table = _untrained_column(table, models, entries[k])
        runs.append(SeedRun(unit.seed, models, results, table, verdict))
    return runs


def _training_owners(units: Sequence[Unit]) -> list[int]:
    """For each unit, the first unit whose training it shares: itself, unless it has
    ``exclude`` and an earlier unit has the same settings object, seed, ``exclude`` and
    ``train_end`` (a CPCV split's test groups are trained once)."""
    first: dict[tuple[Any, ...], int] = {}
    out = []
    for k, u in enumerate(units):
        if not u.exclude:
            out.append(k)
            continue
        key = (id(u.settings), u.seed, u.exclude, u.train_end)
        out.append(first.setdefault(key, k))
    return out


def _unit_digest(unit: Unit) -> str:
    """What a unit's results depend on: its configuration (seed included), periods, costs,
    cash and data (trading and training frames)."""
    s = unit.settings
    return hashlib.sha256(
        json.dumps(
            {
                "cfg": unit.cfg.describe(),
                "start": str(s.start),
                "end": str(s.end),
                "unit": [str(unit.start), str(unit.end), unit.seed]
                + (
                    [[str(a), str(b)] for a, b in unit.exclude] + [str(unit.train_end)]
                    if unit.exclude
                    else []
                ),
                "cash": s.cash,
                "costs": str(s.costs),
                "frames": frames_sha256(s.frames),
                "train_frames": frames_sha256(s.train_frames),
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()


def ledger_count(
    settings: RunSettings,
    results: Sequence[Run],
    command: str,
    *,
    seed: int,
) -> WindowCount | None:
    """Add a run's strategies to the settings' trial ledger; the window's count after it.

    The window is the data's content and the test period's first and last bar
    (:func:`metabt.evaluate.ledger.window_key`); each strategy is stored with its name, the
    seed, its smoothing and the run's configuration, and its per-bar returns.

    Args:
        settings: the run's settings (``ledger``: the file, or None for no ledger).
        results: the run's backtests on one test window.
        command: what ran them (``"compare"``, ``"walkforward"``, ``"backtest"``).
        seed: the run's seed.

    Returns:
        The window's :class:`~metabt.evaluate.ledger.WindowCount`, this run included;
        None when the settings name no ledger.
    """
    if settings.ledger is None or not results:
        return None
    index = results[0].returns.index
    first, last = index[0], index[-1]
    ledger = Ledger(settings.ledger)
    window = window_key(settings.frames, first, last)
    config = settings.cfg.describe()
    trials = {
        r.name: (
            {
                "seed": seed,
                "smooth": getattr(getattr(r, "smoothing", None), "smooth", None),
                "config": config,
            },
            r.returns,
        )
        for r in results
    }
    ledger.record(window, first, last, command, trials)
    return ledger.count(window)


def _log_smoothing(unit: Unit, results: Sequence[BacktestResult], log: Log) -> None:
    """Each strategy's smoothing, as chosen on the validation years (one line each)."""
    chosen = [(r.name, r.smoothing) for r in results if r.smoothing is not None]
    if not chosen:
        return
    grid = ", ".join(str(n) for n in unit.cfg.smooth_grid) or str(unit.cfg.smooth)
    log(
        f"smoothing (bars of signals averaged) chosen per strategy on the validation years "
        f"from {{{grid}}}: the best validation net Sharpe with two-way turnover at most "
        f"{unit.cfg.max_val_turnover:g}x a year, else the lowest turnover"
    )
    for name, choice in chosen:
        log("  " + choice.line(name))


def _log_unit(
    unit: Unit, trained: Mapping[str, Any], lines: Mapping[str, list[str]], log: Log
) -> None:
    """A unit's label and training summary: the parts it trained, in ``ROSTER_PARTS``
    order, and the linear baselines' choices if it has them."""
    if unit.label is not None:
        log(unit.label)
    for part in ROSTER_PARTS:
        for line in lines.get(part, []):
            log(line)
    if "linear" in trained:
        log(_partial_models(trained, unit.cfg.objective).summary())


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
