"""Experiments: the training recipe, the main backtest, compare and walk-forward.

The library side of the ``metabt`` command: each function runs one experiment and returns
its results (tables, reports to write); the CLI only parses arguments and prints. Every
strategy of an experiment gets the same data, warm-up, costs, sizer and schedule
(:class:`RunSettings`, :meth:`RunConfig.strategy_kwargs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from metabt._util import write_text
from metabt.backtest import BacktestResult, Costs, run_backtest
from metabt.baselines import BuyAndHold, ErmAdapt, ScratchAdapt, SmaCross, StaticModel
from metabt.errors import ConfigError
from metabt.features import FeatureSpec
from metabt.meta import FitResult, MetaLearner
from metabt.metrics import compute_metrics, metrics_table, probabilistic_sharpe
from metabt.metrics import sharpe_difference_ci as _sharpe_difference_ci
from metabt.models import build_model
from metabt.report import write_comparison, write_diagnostics, write_tearsheet
from metabt.strategy import MetaStrategy
from metabt.tasks import TaskSampler

__all__ = [
    "Comparison",
    "DEMO",
    "MainRun",
    "RunConfig",
    "RunSettings",
    "TrainedLearner",
    "WalkForward",
    "check_no_leak",
    "compare",
    "main_backtest",
    "rejection_warnings",
    "train_learner",
    "walkforward",
    "walkforward_folds",
]

Log = Callable[[str], None]


def _silent(_: str) -> None:
    """The default ``log``: say nothing."""


@dataclass(frozen=True)
class RunConfig:
    """Everything the main job (``metabt backtest`` with no arguments) uses.

    Attributes:
        start: first date of the backtest; meta-training uses only data strictly before it.
        spec: the causal features and the label horizon (bars).
        model_type: "mlp" or "gru" (``metabt.models.MODEL_TYPES``); hidden: MLP widths;
            gru_hidden, gru_window: GRU size.
        algorithm: MetaLearner algorithm; inner_lr, inner_steps, meta_lr: its rates/steps.
        meta_steps: outer steps; batch_size: tasks per step.
        support, query: bars per support / query window (tasks and the strategy's support).
        adapt_every: bars between adaptations in the backtest.
        val_years: the last years before ``start`` held out as validation tasks.
        warmup_bars: bars fed before ``start`` so features and the first support are ready.
        sizer: SignalSizer params.
        seed: seeds model initialisation and task sampling.
    """

    start: str = "2008-01-01"
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    model_type: str = "mlp"
    hidden: tuple[int, ...] = (32, 32)
    gru_hidden: int = 32
    gru_window: int = 10
    algorithm: str = "maml"
    inner_lr: float = 0.02
    inner_steps: int = 5
    meta_lr: float = 1e-3
    meta_steps: int = 600
    batch_size: int = 16
    support: int = 60
    query: int = 20
    adapt_every: int = 5
    val_years: float = 2.0
    warmup_bars: int = 300
    sizer: Mapping[str, Any] = field(
        default_factory=lambda: {"target_vol": 0.10, "max_leverage": 1.0, "deadband": 0.05}
    )
    seed: int = 0

    def with_(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def strategy_kwargs(self) -> dict[str, Any]:
        """MetaStrategy params of this configuration (without the learner): the schedule."""
        return {"adapt_every": self.adapt_every, "support": self.support, "seed": self.seed}

    def model_config(self) -> dict[str, Any]:
        """The model's ``config()`` dict for ``metabt.models.build_model``.

        Raises:
            ConfigError: ``model_type`` is not one of ``metabt.models.MODEL_TYPES``.
        """
        if self.model_type == "gru":
            return {
                "type": "gru",
                "n_features": self.spec.n_features,
                "hidden": self.gru_hidden,
                "window": self.gru_window,
                "seed": self.seed,
            }
        return {
            "type": self.model_type,
            "n_features": self.spec.n_features,
            "hidden": list(self.hidden),
            "seed": self.seed,
        }

    def describe(self) -> dict[str, Any]:
        """The configuration as JSON primitives."""
        out = asdict(self)
        out["spec"] = self.spec.to_dict()
        return out


DEMO = RunConfig()


@dataclass
class TrainedLearner:
    """The outcome of :func:`train_learner`.

    Attributes:
        learner: the meta-trained learner (θ with the best validation loss).
        fit: what ``MetaLearner.fit`` did.
        val_zero_mse: validation query MSE of always predicting 0 (no view), the
            baseline a useful model must beat.
        seconds: wall time of the training, seconds.
    """

    learner: MetaLearner
    fit: FitResult
    val_zero_mse: float
    seconds: float = 0.0

    def summary(self, cfg: RunConfig, names: Sequence[str]) -> list[str]:
        """Lines that say what was trained, on what, and how well it validated."""
        learner, fit = self.learner, self.fit
        assert learner.train_range is not None
        lines = [
            f"meta-trained {learner.algorithm} ({cfg.model_type}, engine {learner.engine}) on "
            f"{', '.join(names)} from {learner.train_range[0]} to {learner.train_range[1]}: "
            f"{fit.steps} steps in {self.seconds:.1f}s; validation query MSE after "
            f"adaptation {fit.best_val_loss:.4f} (step {fit.best_step}) vs "
            f"{self.val_zero_mse:.4f} for always predicting zero"
        ]
        if fit.steps > 0 and fit.best_step == 0:
            lines.append(
                f"note: no validation check improved on the initial θ, so {learner.algorithm}'s "
                "kept θ is its initialisation (training did not generalise to the validation "
                "tasks); with the same seed it equals the scratch baseline's"
            )
        return lines


def train_learner(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig = DEMO,
    *,
    end: str | pd.Timestamp | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
) -> TrainedLearner:
    """Meta-train a learner on ``frames`` strictly before ``end`` (default ``cfg.start``).

    The last ``cfg.val_years`` years before ``end`` give the validation tasks (θ with the
    best validation query loss is kept); the rest give the training tasks. Every task's
    labels are realised before the split or before ``end`` respectively.

    Args:
        frames: name -> validated OHLCV frame.
        cfg: the configuration. Default :data:`DEMO`.
        end: cut-off date; no price on or after it is used. Default ``cfg.start``.
        checkpoint: optional path for the checkpoint (written atomically; resumes).
        progress: show a progress bar.

    Returns:
        A :class:`TrainedLearner` (learner, fit result, zero-prediction baseline).

    Raises:
        ConfigError: no data before ``end``, or too little for one task.
    """
    end_ts = pd.Timestamp(end if end is not None else cfg.start)
    first = min(f.index[0] for f in frames.values())
    if first >= end_ts:
        raise ConfigError(
            f"no training data before {end_ts.date()} (data starts {first.date()}); "
            "pick a later cut-off date or give earlier --train-data"
        )
    tic = time.perf_counter()
    split = end_ts - pd.DateOffset(days=round(365.25 * cfg.val_years))
    model = build_model(cfg.model_config())
    tasks = TaskSampler.from_frames(
        frames, cfg.spec, support=cfg.support, query=cfg.query, end=end_ts, window=model.window
    )
    train, val = tasks.split(split)
    learner = MetaLearner(
        model,
        algorithm=cfg.algorithm,
        inner_lr=cfg.inner_lr,
        inner_steps=cfg.inner_steps,
        meta_lr=cfg.meta_lr,
        seed=cfg.seed,
        feature_spec=cfg.spec,
    )
    result = learner.fit(
        train,
        cfg.meta_steps,
        batch_size=cfg.batch_size,
        val_tasks=val,
        checkpoint=checkpoint,
        progress=progress,
    )
    learner.train_range = (str(tasks.date_range[0])[:10], str(tasks.date_range[1])[:10])
    yq = val.fixed(64, cfg.seed)[3]
    zero = float((yq.double() ** 2).mean())
    return TrainedLearner(learner, result, zero, time.perf_counter() - tic)


def check_no_leak(learner: MetaLearner, start: pd.Timestamp) -> None:
    """Refuse a learner whose training range reaches the test period (honesty rule 2).

    Raises:
        ConfigError: the last training date is on or after ``start``.
    """
    if learner.train_range is not None and pd.Timestamp(learner.train_range[1]) >= start:
        raise ConfigError(
            f"the model was trained on data up to {learner.train_range[1]}, on or after the "
            f"backtest start {start.date()}; that would leak the test period into training. "
            "Use a later --start or a model trained before it"
        )


@dataclass(frozen=True)
class RunSettings:
    """What every strategy of an experiment shares: data, period, cash, costs, sizer.

    Attributes:
        frames: name -> validated OHLCV frame to trade.
        train_frames: name -> frame to meta-train on (other assets for transfer).
        start: first test date; training uses data strictly before it.
        end: last test date (inclusive); None for all data.
        cash: starting cash, currency units.
        costs: commission and slippage.
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

    def train(
        self, end: pd.Timestamp, *, algorithm: str | None = None, progress: bool, log: Log
    ) -> MetaLearner:
        """Meta-train on ``train_frames`` strictly before ``end``; log the summary."""
        cfg = self.cfg if algorithm is None else self.cfg.with_(algorithm=algorithm)
        trained = train_learner(self.train_frames, cfg, end=end, progress=progress)
        for line in trained.summary(cfg, list(self.train_frames)):
            log(line)
        check_no_leak(trained.learner, end)
        return trained.learner

    def header(self, result: BacktestResult) -> str:
        """The period, assets, costs and cash of a run, in one line."""
        period = result.returns.index
        return (
            f"backtest {period[0].date()} to {period[-1].date()} ({len(period)} bars) on "
            f"{', '.join(self.frames)}; {self.costs.describe()}; cash {self.cash:,.0f}"
        )


def rejection_warnings(results: Sequence[BacktestResult]) -> list[str]:
    """One warning line per strategy whose orders the broker rejected."""
    return [
        f"warning: {r.name}: the broker rejected {len(r.rejected_orders)} orders "
        "(insufficient cash at the next open)"
        for r in results
        if r.rejected_orders
    ]


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
        return self.results[0]

    @property
    def table(self) -> pd.DataFrame:
        return metrics_table({r.name: r.metrics for r in self.results})

    def summary(self) -> list[str]:
        """The header and the adaptation summary of MetaStrategy."""
        cfg, log = self.settings.cfg, self.meta.adaptations
        assert log is not None
        return [
            f"\n{self.settings.header(self.meta)}",
            f"MetaStrategy: {len(log)} adaptations (every {cfg.adapt_every} bars on the last "
            f"{cfg.support} realised bars, horizon {self.learner.horizon}); mean support MSE "
            f"{log['loss_before'].mean():.4f} before -> {log['loss_after'].mean():.4f} after; "
            f"backtest took {self.seconds:.1f}s",
        ]

    def write(self, report: Path) -> dict[str, Path]:
        """Write the tearsheet, the diagnostics page and the per-asset CSV beside it."""
        title = (
            f"MetaStrategy ({self.learner.algorithm}) vs buy-and-hold "
            f"{next(iter(self.settings.frames))}"
        )
        tearsheet = self.meta.tearsheet(report, title=title)
        diagnostics = self.meta.diagnostics(report.with_name(f"{report.stem}_diagnostics.html"))
        assets = write_text(
            report.with_name(f"{report.stem}_assets.csv"),
            self.meta.assets.reset_index().to_csv(index=False),
        )
        return {"tearsheet": tearsheet, "assets": assets, "diagnostics": diagnostics}


def main_backtest(
    settings: RunSettings,
    learner: MetaLearner | None = None,
    *,
    progress: bool = True,
    log: Log = _silent,
) -> MainRun:
    """The main job: (train, then) backtest MetaStrategy beside BuyAndHold and SmaCross.

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
    if learner is None:
        learner = settings.train(settings.start, progress=progress, log=log)
    check_no_leak(learner, settings.start)
    tic = time.perf_counter()
    meta = settings.run(
        MetaStrategy, "MetaStrategy", {"learner": learner, **settings.cfg.strategy_kwargs()}
    )
    seconds = time.perf_counter() - tic
    results = [
        meta,
        settings.run(BuyAndHold, "BuyAndHold"),
        settings.run(SmaCross, "SmaCross"),
    ]
    return MainRun(settings, learner, results, seconds)


COMPARE_NOTES = (
    "turnover is filled notional per year over average equity; ic/rank_ic: signal vs "
    "forward return; psr: probability that the true Sharpe > 0; sharpe_vs_erm: Sharpe "
    "minus ErmAdapt's, with a 95% paired bootstrap interval (lo, hi): if it contains 0, "
    "the difference could be noise; MetaDrift: MetaStrategy that also adapts when its "
    "realised error exceeds twice its usual level"
)
ASSET_NOTES = (
    "hit_rate: share of (asset, bar) pairs with a position whose P&L was positive "
    "(win_rate: share of positive portfolio bars); per asset (assets.csv): exposure = "
    "mean |position| / equity, contribution = P&L before costs as a fraction of "
    "starting cash"
)


@dataclass
class Comparison:
    """MetaStrategy beside its baselines on the same data, period, costs and sizer.

    Attributes:
        settings: the shared settings.
        results: one backtest per strategy, MetaStrategy first.
        table: one row per strategy (metrics, psr, sharpe_vs_erm with its interval).
        assets: per-asset results of every strategy, indexed by (strategy, asset).
        notes: lines that state the period, costs, training and how to read the columns.
    """

    settings: RunSettings
    results: list[BacktestResult]
    table: pd.DataFrame
    assets: pd.DataFrame
    notes: list[str]

    def write(self, out: Path) -> dict[str, Path]:
        """Write compare.csv/md, assets.csv/md, a tearsheet per strategy, index.html and
        the MetaStrategy diagnostics page into ``out``."""
        first = next(iter(self.settings.frames))
        tearsheets = {
            r.name: r.tearsheet(
                out / "tearsheets" / f"{r.name}.html", title=f"{r.name} vs buy-and-hold {first}"
            )
            for r in self.results
        }
        paths = write_comparison(
            self.table,
            tearsheets,
            out,
            title="metabt compare",
            notes=self.notes,
            assets=self.assets,
        )
        paths["diagnostics"] = self.results[0].diagnostics(out / "MetaStrategy_diagnostics.html")
        return paths


def compare(settings: RunSettings, *, progress: bool = True, log: Log = _silent) -> Comparison:
    """Meta-train (the chosen algorithm, erm and scratch) and backtest every strategy.

    The roster: MetaStrategy; MetaDrift (the same with the market observer,
    ``drift_threshold=2.0``); StaticModel (θ never adapted); ErmAdapt (a jointly trained
    model, the same adaptation); ScratchAdapt (the same adaptation from a random init);
    BuyAndHold; SmaCross. Each model is trained strictly before ``settings.start``.

    Args:
        settings: data, period, costs and configuration (``cfg.algorithm`` is the
            meta-learner's algorithm).
        progress: show training progress bars.
        log: receives the training summary lines.

    Returns:
        A :class:`Comparison`.

    Raises:
        ConfigError: bad settings, or too little training data.
    """
    cfg = settings.cfg
    learners = {
        algorithm: settings.train(settings.start, algorithm=algorithm, progress=progress, log=log)
        for algorithm in (cfg.algorithm, "erm", "scratch")
    }
    schedule = cfg.strategy_kwargs()
    meta = {"learner": learners[cfg.algorithm], **schedule}
    runs: list[tuple[str, type[Any], dict[str, Any]]] = [
        ("MetaStrategy", MetaStrategy, meta),
        # the same, plus the market observer: adapt when the error jumps
        ("MetaDrift", MetaStrategy, {**meta, "drift_threshold": 2.0}),
        ("StaticModel", StaticModel, meta),
        ("ErmAdapt", ErmAdapt, {"learner": learners["erm"], **schedule}),
        ("ScratchAdapt", ScratchAdapt, {"learner": learners["scratch"], **schedule}),
        ("BuyAndHold", BuyAndHold, {}),
        ("SmaCross", SmaCross, {}),
    ]
    results = [settings.run(cls, name, kwargs) for name, cls, kwargs in runs]
    erm = next(r for r in results if r.name == "ErmAdapt")
    for r in results:
        r.metrics["psr"] = probabilistic_sharpe(r.returns)
        diff, low, high = _sharpe_difference_ci(r.returns, erm.returns, seed=cfg.seed)
        r.metrics.update({"sharpe_vs_erm": diff, "sharpe_vs_erm_lo": low, "sharpe_vs_erm_hi": high})
    table = metrics_table({r.name: r.metrics for r in results})
    train_range = learners[cfg.algorithm].train_range
    assert train_range is not None
    notes = [
        settings.header(results[0]),
        f"meta-training ({cfg.algorithm}, erm, scratch baselines) on "
        f"{', '.join(settings.train_frames)} from {train_range[0]} to {train_range[1]}, "
        f"strictly before {settings.start.date()}",
        f"adaptation every {cfg.adapt_every} bars on the last {cfg.support} realised bars; "
        + COMPARE_NOTES,
        ASSET_NOTES,
    ]
    assets = pd.concat({r.name: r.assets for r in results}, names=["strategy", "asset"])
    return Comparison(settings, results, table, assets, notes)


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
    "turnover",
    "ic",
    "rank_ic",
)


@dataclass
class WalkForward:
    """Yearly folds, each meta-trained strictly before it, and their stitched returns.

    Attributes:
        table: one row per fold (``train_start``, ``train_end``, ``test_start``,
            ``test_end``, bars, adaptations and :data:`FOLD_METRICS`), index ``fold``.
        returns: the folds' out-of-sample returns, stitched (each fold from fresh cash).
        benchmark: buy-and-hold of the first data on the same dates.
        adaptations: every fold's adaptation log, with a ``fold`` column.
        signals: data name -> signal vs forward return across the folds.
        assets: per-asset results, indexed by (fold, asset).
        costs: the costs every fold paid.
    """

    table: pd.DataFrame
    returns: pd.Series
    benchmark: pd.Series
    adaptations: pd.DataFrame
    signals: dict[str, pd.DataFrame]
    assets: pd.DataFrame
    costs: Costs

    def metrics(self) -> dict[str, float]:
        """quantstats metrics of the stitched out-of-sample returns."""
        return compute_metrics(self.returns)

    def write(self, out: Path) -> dict[str, Path]:
        """Write folds.csv, walkforward.html, assets.csv and walkforward_diagnostics.html."""
        n = len(self.table)
        return {
            "folds": write_text(out / "folds.csv", self.table.reset_index().to_csv(index=False)),
            "tearsheet": write_tearsheet(
                self.returns,
                self.benchmark,
                out / "walkforward.html",
                title=f"MetaStrategy walk-forward, {n} folds",
            ),
            "assets": write_text(out / "assets.csv", self.assets.reset_index().to_csv(index=False)),
            "diagnostics": write_diagnostics(
                self.returns,
                self.benchmark,
                self.adaptations,
                self.signals,
                out / "walkforward_diagnostics.html",
                title=f"MetaStrategy walk-forward, {n} folds: adaptation diagnostics",
            ),
        }


def walkforward(
    settings: RunSettings,
    *,
    fold_years: int = 1,
    train_years: int | None = None,
    progress: bool = True,
    log: Log = _silent,
) -> WalkForward:
    """Walk-forward evaluation: each fold meta-trained strictly before it, then backtested.

    Args:
        settings: data, period (``start`` to ``end`` or the last bar), costs, config.
        fold_years: calendar years per test fold. Default 1.
        train_years: rolling training window in years; None trains on all history
            before each fold (expanding).
        progress: show training progress bars.
        log: receives one line per fold and the training summaries.

    Returns:
        A :class:`WalkForward`.

    Raises:
        ConfigError: bad settings, or too little training data for a fold.
    """
    end = settings.end
    if end is None:
        end = max(f.index[-1] for f in settings.frames.values())
    folds = walkforward_folds(settings.start, end, years=fold_years)
    rows, returns, benchmarks, logs, assets = [], [], [], [], {}
    pairs: dict[str, list[pd.DataFrame]] = {}
    for k, (test_start, test_end) in enumerate(folds, 1):
        fold = settings
        if train_years is not None:  # rolling: only the last train_years before the fold
            first = test_start - pd.DateOffset(years=train_years)
            window = {name: f.loc[first:] for name, f in settings.train_frames.items()}
            fold = replace(settings, train_frames=window)
        log(f"fold {k}/{len(folds)}: test {test_start.date()} to {test_end.date()}")
        learner = fold.train(test_start, progress=progress, log=log)
        assert learner.train_range is not None
        result = settings.run(
            MetaStrategy,
            f"fold {k}",
            {"learner": learner, **settings.cfg.strategy_kwargs()},
            start=test_start,
            end=test_end,
        )
        assert result.adaptations is not None
        rows.append(
            {
                "fold": k,
                "train_start": learner.train_range[0],
                "train_end": learner.train_range[1],
                "test_start": str(result.returns.index[0].date()),
                "test_end": str(result.returns.index[-1].date()),
                "bars": len(result.returns),
                "adaptations": len(result.adaptations),
                **{key: result.metrics[key] for key in FOLD_METRICS},
            }
        )
        returns.append(result.returns)
        benchmarks.append(result.benchmark)
        logs.append(result.adaptations.assign(fold=k))
        assets[k] = result.assets
        for name, pair in (result.signals or {}).items():
            pairs.setdefault(name, []).append(pair)
    stitched = pd.concat(returns).rename("returns")
    if not stitched.index.is_monotonic_increasing or stitched.index.has_duplicates:
        raise RuntimeError("walk-forward folds overlap; this is a bug in walkforward_folds")
    return WalkForward(
        table=pd.DataFrame(rows).set_index("fold"),
        returns=stitched,
        benchmark=pd.concat(benchmarks).rename(next(iter(settings.frames))),
        adaptations=pd.concat(logs, ignore_index=True),
        signals={name: pd.concat(parts) for name, parts in pairs.items()},
        assets=pd.concat(assets, names=["fold", "asset"]),
        costs=settings.costs,
    )
