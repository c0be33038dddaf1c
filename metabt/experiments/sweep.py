"""Hyper-parameter search (grid or TPE) scored on validation folds before a held-out period.

A sweep takes the settings of every experiment
(:class:`~metabt.experiments.settings.RunSettings`): its ``start`` is the first day of the
held-out period (``test_start`` in the outputs), its ``cfg`` the base configuration. A
trial is that :class:`~metabt.config.defaults.RunConfig` with the trial's values
(:func:`metabt.experiments.space.apply_params`) scored on the last ``val_folds`` calendar
years before ``test_start``: in each fold the learner is trained strictly before the fold
(:func:`metabt.experiments.roster.train_learner`) and MetaStrategy is backtested on it with
costs (:func:`metabt.experiments.backtest.run_backtest`); the score is the mean over the
folds of the annualised Sharpe ratio after costs. Every trial receives frames cut before
``test_start``, so none reads a price of the held-out period. With ``cv="cpcv"`` a trial
is scored instead by combinatorial purged cross-validation over the same years
(:func:`_score_cpcv`: a split trains before its first test group, the only training
metabt's pipeline allows). The search space is checked and applied by
:mod:`metabt.experiments.space`.

The search is Optuna's: ``GridSampler`` or ``TPESampler``, the study in ``sweep.db``
(SQLite) in the output folder. A re-run on the folder runs only the missing trials, and
again any trial a kill interrupted. Parallel workers (processes or Ray tasks, through
:mod:`metabt.experiments.executors`) each load the study from that storage and optimise
their share (Optuna's multi-process pattern). The trials tried (:attr:`SweepResult.n_trials`) and
the variance of their per-bar Sharpe ratios are kept to deflate the held-out result for
the search (:func:`metabt.evaluate.significance.deflated_sharpe_ratio`). Each complete trial's
validation returns are stored with it in ``sweep.db`` (so a resumed sweep has them all):
the chosen trial's deflated Sharpe on validation over the complete trials
(:meth:`SweepResult.validation_dsr`) and the probability of backtest overfitting of the
choice (:attr:`SweepResult.pbo`, :func:`metabt.evaluate.overfitting.pbo`) come from them.

Sources: Akiba, Sano, Yanase, Ohta, Koyama (2019), "Optuna: A Next-generation
Hyperparameter Optimization Framework", KDD; Bergstra, Bardenet, Bengio, Kégl (2011),
"Algorithms for Hyper-Parameter Optimization", NeurIPS (TPE); Bailey and López de Prado
(2014), "The Deflated Sharpe Ratio", J. Portfolio Management 40(5); Optuna docs, "Easy
Parallelization" and ``GridSampler``; Bailey, Borwein, López de Prado and Zhu (2017),
"The Probability of Backtest Overfitting", J. Computational Finance 20(4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import tomli_w
from tqdm.auto import tqdm

from metabt._checks import as_timestamp
from metabt._util import check_output_path, staged_files, write_text
from metabt.config.defaults import SIZER_SETTINGS, RunConfig
from metabt.data.ohlcv import frames_sha256
from metabt.errors import ConfigError, DataError, MetabtError
from metabt.evaluate.overfitting import PBOResult, cpcv_paths, cpcv_splits, pbo
from metabt.evaluate.sanitize import csv_text, markdown_frame
from metabt.evaluate.significance import deflated_sharpe, expected_max_sharpe
from metabt.experiments.backtest import Costs, run_backtest
from metabt.experiments.executors import SERIAL, Executor, ExecutorSpec, executor_scope, run_unit
from metabt.experiments.parts import check_no_leak, run_bars_per_year, train_learner
from metabt.experiments.record import plain
from metabt.experiments.settings import RunSettings
from metabt.experiments.smoothing import no_trade_kwargs
from metabt.experiments.space import SETTINGS, Dimension, apply_params, decode, parse_space
from metabt.experiments.walkforward import walkforward_folds
from metabt.strategies.meta import MetaStrategy

__all__ = [
    "CV_METHODS",
    "DB_NAME",
    "DEFAULT_TPE_TRIALS",
    "ERROR_ATTR",
    "MAX_STORED_BARS",
    "RETURNS_ATTR",
    "SweepResult",
    "TABLE_NOTES",
    "sweep",
    "validation_folds",
]

#: Settings only the commands that backtest have (not ``metabt train``).
STRATEGY_SETTINGS = (
    "adapt_every",
    "deadband",
    "no_trade_bps",
    "online_meta_lr",
    "rebalance_band",
    "signal_scale",
    "smooth",
)
#: Trials of a TPE sweep when ``n_trials`` is not given.
DEFAULT_TPE_TRIALS = 20
#: The files of a sweep's folder.
DB_NAME, LOCK_NAME = "sweep.db", "sweep.lock"
#: User attribute that marks a trial failed by its configuration (not interrupted).
ERROR_ATTR = "error"
#: User attribute holding a complete trial's validation returns (``{"index", "values"}``),
#: stored with the trial so that a resumed sweep has every finished trial's series.
RETURNS_ATTR = "validation_returns"
#: Validation bars above which a trial's returns are not stored (the DSR and PBO are n/a):
#: keeps ``sweep.db`` bounded (about 20 bytes a bar a trial).
MAX_STORED_BARS = 20_000
#: CSCV blocks of the sweep's PBO (C(16, 8) = 12870 combinations).
PBO_BLOCKS = 16
#: How trials are scored: one-year walk-forward folds, or CPCV over the same years.
CV_METHODS = ("walkforward", "cpcv")
HELD_OUT_NOTE = (
    "the held-out period (test_start on) was never seen: every trial received frames cut "
    "before test_start and validation folds ending the day before it; keep that period "
    "for the final evaluation of the best configuration"
)


#: What the trial table's columns mean (printed under it and written into ``trials.md``).
TABLE_NOTES = (
    "score: what the search maximises, the mean over validation folds (or CPCV paths) of "
    "each fold's annualised Sharpe after costs; sharpe_per_bar: one Sharpe of all folds' "
    "validation returns pooled, per bar and not annualised (what the validation DSR "
    "deflates; it weighs folds by their bars, so it can rank trials differently from "
    "score); ic: mean information coefficient of the folds; turnover: mean two-way "
    "turnover a year"
)


def validation_folds(
    test_start: pd.Timestamp, val_folds: int
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The ``val_folds`` one-year validation folds that end the day before ``test_start``.

    Args:
        test_start: first day of the held-out period.
        val_folds: one-year folds before it.

    Returns:
        [(fold start, fold end), ...], oldest first, the last ending the day before
        ``test_start``.

    Raises:
        ConfigError: ``val_folds`` is not a positive integer.
    """
    if isinstance(val_folds, bool) or not isinstance(val_folds, int) or val_folds < 1:
        raise ConfigError(
            f"val_folds must be a positive integer (validation years), got {val_folds!r}"
        )
    first = test_start - pd.DateOffset(years=val_folds)
    return walkforward_folds(first, test_start - pd.Timedelta(days=1), years=1)


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class _Job:
    """One worker's share of the trials (pickled to processes and Ray tasks)."""

    storage: str
    study_name: str
    sampler: str
    dims: tuple[Dimension, ...]
    seed: int
    n_trials: int
    frames: Mapping[str, pd.DataFrame]
    cfg: RunConfig
    folds: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]
    costs: Costs
    test_start: pd.Timestamp
    cv: str = "walkforward"
    #: CPCV: the validation bars' dates, the groups, the groups tested per split
    bars: tuple[pd.Timestamp, ...] = ()
    cv_groups: int = 6
    cv_test_groups: int = 2
    bars_per_year: float = 252.0


def _strategy_kwargs(
    job: _Job, cfg: RunConfig, learner: Any, first: pd.Timestamp
) -> dict[str, Any]:
    """MetaStrategy's keyword arguments for a test span starting at ``first``: the trial's
    schedule, and its no-trade region (``cfg.no_trade_bps``) with the forecast scale
    calibrated on the validation years before ``first`` (no later price is used)."""
    kwargs = {"learner": learner, **cfg.strategy_kwargs()}
    if cfg.no_trade_bps <= 0:
        return kwargs
    settings = RunSettings(
        frames=job.frames, train_frames=job.frames, start=first, costs=job.costs, cfg=cfg
    )
    return no_trade_kwargs(settings, MetaStrategy, "MetaStrategy", kwargs, first)[0]


def _score(job: _Job, cfg: RunConfig) -> dict[str, Any]:
    """Train before each fold, backtest on it; the mean Sharpe after costs and more."""
    latest = max(f.index[-1] for f in job.frames.values())
    if latest >= job.test_start:  # the proof obligation of the held-out period
        raise RuntimeError(f"a trial received a price of {latest.date()}, in the held-out period")
    if job.cv == "cpcv":
        return _score_cpcv(job, cfg)
    sharpes, ics, turnovers, returns = [], [], [], []
    for fold_start, fold_end in job.folds:
        trained = train_learner(job.frames, cfg, end=fold_start, progress=False)
        check_no_leak(trained.learner, fold_start)
        result = run_backtest(
            MetaStrategy,
            job.frames,
            start=fold_start,
            end=fold_end,
            warmup_bars=cfg.warmup_bars,
            costs=job.costs,
            strategy_kwargs=_strategy_kwargs(job, cfg, trained.learner, fold_start),
            sizer_kwargs=dict(cfg.sizer),
        )
        sharpe = float(result.metrics.get("sharpe", math.nan))
        if not math.isfinite(sharpe):
            raise DataError(
                f"the Sharpe ratio of validation fold {fold_start.date()} is undefined (no "
                "return variance: the strategy never held a position)"
            )
        sharpes.append(sharpe)
        ics.append(float(result.metrics.get("ic", math.nan)))
        turnovers.append(float(result.metrics.get("turnover_two_way", math.nan)))
        returns.append(result.returns)
    return _scores(pd.concat(returns), sharpes, ics, turnovers)


def _score_cpcv(job: _Job, cfg: RunConfig) -> dict[str, Any]:
    """Score over the CPCV splits of the validation bars: the mean annualised Sharpe of
    the backtest paths.

    The validation bars are cut into ``cv_groups`` groups; every split tests
    ``cv_test_groups`` of them (:func:`metabt.evaluate.overfitting.cpcv_splits`, purge of
    the trial's horizon, embargo of its feature look-back plus support plus query bars).
    metabt trains a learner on one contiguous period before the bars it trades
    (:func:`~metabt.experiments.parts.train_learner`, checked by ``check_no_leak``), so a
    split trains only on its training bars before its first test group (and the history
    before the validation bars): ``train_learner(end=`` the first test bar ``)``, whose
    rule that every label is realised before ``end`` is the splitter's purge. Training
    bars between or after test groups are not used, so the embargo removes nothing that
    is trained on. Each test group is backtested with that learner (MetaStrategy adapting
    on the bars before each decision, as always). Path p of
    :func:`~metabt.evaluate.overfitting.cpcv_paths` joins, group by group, the p-th test
    of each group into one series over all validation bars; the stored returns are the
    paths' mean per bar.
    """
    embargo = int(cfg.spec.lookback) + cfg.support + cfg.query
    splits = list(
        cpcv_splits(
            len(job.bars),
            job.cv_groups,
            job.cv_test_groups,
            horizon=cfg.spec.horizon,
            embargo=embargo,
        )
    )
    learners: dict[int, dict[str, Any]] = {}  # first test group -> MetaStrategy's kwargs
    tests: dict[tuple[int, int], Any] = {}  # (first test group, group) -> its backtest
    for split in splits:
        first = split.test_groups[0]
        if first not in learners:  # the same training for every split with this first group
            end = job.bars[split.test[0]]
            trained = train_learner(job.frames, cfg, end=end, progress=False)
            check_no_leak(trained.learner, end)
            learners[first] = _strategy_kwargs(job, cfg, trained.learner, end)
        for group, (a, b) in zip(split.test_groups, split.test_bounds, strict=True):
            if (first, group) not in tests:
                tests[first, group] = run_backtest(
                    MetaStrategy,
                    job.frames,
                    start=job.bars[a],
                    end=job.bars[b],
                    warmup_bars=cfg.warmup_bars,
                    costs=job.costs,
                    strategy_kwargs=learners[first],
                    sizer_kwargs=dict(cfg.sizer),
                )
    series = [
        pd.concat([tests[splits[s].test_groups[0], g].returns for g, s in enumerate(path)])
        for path in cpcv_paths(job.cv_groups, job.cv_test_groups)
    ]
    sharpes = []
    for p, returns in enumerate(series):
        sd = float(returns.std(ddof=1))
        if not sd > 0:
            raise DataError(
                f"the Sharpe ratio of CPCV path {p} is undefined (no return variance: the "
                "strategy never held a position)"
            )
        sharpes.append(float(returns.mean()) / sd * math.sqrt(job.bars_per_year))
    ics = [float(r.metrics.get("ic", math.nan)) for r in tests.values()]
    turnovers = [float(r.metrics.get("turnover_two_way", math.nan)) for r in tests.values()]
    return _scores(pd.concat(series, axis=1).mean(axis=1), sharpes, ics, turnovers)


def _scores(
    series: pd.Series, sharpes: list[float], ics: list[float], turnovers: list[float]
) -> dict[str, Any]:
    """A trial's scores: the mean of its fold (or path) Sharpe ratios, and the per-bar
    Sharpe ratio, IC and turnover of its validation returns ``series`` (stored with it)."""
    pooled = series.to_numpy(dtype=float)
    sd = float(np.std(pooled, ddof=1)) if len(pooled) > 1 else math.nan
    return {
        RETURNS_ATTR: _stored_returns(series),
        "score": float(np.mean(sharpes)),
        "fold_sharpes": sharpes,
        "ic": float(np.nanmean(ics)) if np.isfinite(ics).any() else math.nan,
        "turnover": float(np.mean(turnovers)),
        "sharpe_per_bar": float(np.mean(pooled)) / sd if sd > 0 else math.nan,
        "bars": len(pooled),
    }


def _stored_returns(series: pd.Series) -> dict[str, list[Any]] | None:
    """A trial's validation returns as JSON lists (dates as ISO strings); None when longer
    than :data:`MAX_STORED_BARS`."""
    if len(series) > MAX_STORED_BARS:
        return None
    index = pd.DatetimeIndex(series.index)
    daily = bool((index == index.normalize()).all())
    dates = index.strftime("%Y-%m-%d") if daily else index.map(pd.Timestamp.isoformat)
    return {"index": list(dates), "values": [float(v) for v in series.to_numpy(dtype=float)]}


def _trial_returns(
    trials: Sequence[optuna.trial.FrozenTrial],
) -> tuple[dict[int, pd.Series], list[int]]:
    """The stored validation returns of complete trials, and the trials without them."""
    series, missing = {}, []
    for t in trials:
        stored = t.user_attrs.get(RETURNS_ATTR)
        if not stored:
            missing.append(t.number)
            continue
        index = pd.DatetimeIndex(pd.to_datetime(stored["index"]))
        series[t.number] = pd.Series(stored["values"], index=index, dtype=float)
    return series, missing


def _objective(trial: optuna.trial.Trial, job: _Job) -> float:
    params = {dim.name: dim.suggest(trial) for dim in job.dims}
    decoded = {name: decode(name, value) for name, value in params.items()}
    try:
        cfg = apply_params(job.cfg, decoded)
        scores = run_unit(functools.partial(_score, job), cfg)  # one thread, fixed seeds
    except MetabtError as exc:  # this configuration cannot run on this data
        trial.set_user_attr(ERROR_ATTR, str(exc))
        raise
    for key, value in scores.items():
        trial.set_user_attr(key, value)
    return float(scores["score"])


def _storage(url: str) -> optuna.storages.RDBStorage:
    # SQLite serialises writers; wait for the lock rather than failing under contention.
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})


def _open_study(url: str, name: str, path: Path) -> optuna.Study:
    """The sweep's study in ``path`` (created if new); a file that is not a usable sweep
    database (corrupt, truncated, text, read-only, another program's) is a ConfigError
    naming it and the fix, not a storage traceback."""
    import sqlalchemy.exc

    try:
        return optuna.create_study(
            storage=_storage(url), study_name=name, direction="maximize", load_if_exists=True
        )
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise ConfigError(
            f"{path} is not a usable sweep database ({reason}); make it writable, or "
            "remove it (its trials are lost) or pass another `out` folder"
        ) from exc


def _sampler(job: _Job, worker: int) -> optuna.samplers.BaseSampler:
    if job.sampler == "grid":  # the same seed in every worker: one shuffled grid order
        return optuna.samplers.GridSampler(
            {dim.name: list(dim.choices) for dim in job.dims}, seed=job.seed
        )
    return optuna.samplers.TPESampler(seed=job.seed + worker)


def _run_job(unit: tuple[_Job, int]) -> int:
    """A worker: load the study from the shared storage and optimise its share of trials."""
    job, worker = unit
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=job.study_name, storage=_storage(job.storage), sampler=_sampler(job, worker)
    )
    study.optimize(
        functools.partial(_objective, job=job), n_trials=job.n_trials, catch=(MetabtError,)
    )
    return job.n_trials


# --------------------------------------------------------------------------- results


@dataclass
class SweepResult:
    """What a sweep found, from every trial in its study (this run's and earlier runs').

    Attributes:
        table: one row per trial: ``number``, the settings, ``score`` (mean validation
            Sharpe after costs, annualised), ``sharpe_per_bar`` (of the pooled validation
            returns, not annualised), ``ic`` (mean), ``turnover`` (mean two-way, per
            year), ``state`` (COMPLETE, FAIL, ...), ``duration_s`` and ``error``.
        best_params, best_value, best_number: the best trial's settings (``hidden`` a
            list), score and number.
        cfg: the base configuration with ``best_params``.
        test_start: first day of the held-out period.
        folds: the validation folds, (start, end) dates (``cv`` "cpcv": the CPCV groups).
        settings: sampler, space, seed and the other settings of the sweep.
        returns: trial number -> its validation returns (simple, per bar), for every
            complete trial that has them stored.
        unstored: complete trials without stored returns (run by an older metabt, or
            longer than :data:`MAX_STORED_BARS`): the DSR and PBO are n/a with them.
        inputs: what the held-out backtest needs besides the learner's settings, written
            into ``best.toml``: ``data``, ``train_data`` and ``benchmark`` (absolute paths),
            ``sha256`` (path -> SHA-256 of each file, written as comments), ``end``,
            ``cash`` and the costs (``commission``, ``slippage``, ``borrow``).
    """

    table: pd.DataFrame
    best_params: dict[str, Any]
    best_value: float
    best_number: int
    cfg: RunConfig
    test_start: pd.Timestamp
    folds: list[tuple[pd.Timestamp, pd.Timestamp]]
    settings: dict[str, Any] = field(default_factory=dict)
    returns: dict[int, pd.Series] = field(default_factory=dict)
    unstored: list[int] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)

    def _count(self, state: str, error: bool | None = None) -> int:
        rows = self.table[self.table["state"] == state]
        if error is not None:
            rows = rows[rows["error"].astype(bool) == error]
        return len(rows)

    @property
    def n_complete(self) -> int:
        """Trials that gave a score."""
        return self._count("COMPLETE")

    @property
    def n_failed(self) -> int:
        """Trials whose configuration could not run on the data (the error is recorded)."""
        return self._count("FAIL", error=True)

    @property
    def n_interrupted(self) -> int:
        """Trials stopped by a kill or a crash (each was run again)."""
        return self._count("FAIL", error=False)

    @property
    def n_trials(self) -> int:
        """Configurations tried (complete plus failed; interrupted ones are not counted,
        their re-runs are): N of the deflated Sharpe ratio."""
        return self.n_complete + self.n_failed

    @property
    def sharpe_variance(self) -> float:
        """Variance (ddof=1) of the complete trials' per-bar Sharpe ratios: V of the
        deflated Sharpe ratio; NaN with fewer than two trials."""
        values = self.table.loc[self.table["state"] == "COMPLETE", "sharpe_per_bar"].dropna()
        return float(values.var(ddof=1)) if len(values) > 1 else math.nan

    def expected_max_sharpe(self) -> float:
        """The per-bar Sharpe the best of :attr:`n_trials` skill-less trials would show
        (:func:`metabt.evaluate.significance.expected_max_sharpe`); 0 for one trial, NaN unknown."""
        if self.n_trials <= 1:
            return 0.0
        var = self.sharpe_variance
        return expected_max_sharpe(self.n_trials, var) if math.isfinite(var) else math.nan

    def _unavailable(self) -> str:
        """Why no overfitting statistic can be computed ("" when one can)."""
        if self.n_complete == 0:
            return "no complete trial"
        if self.unstored:
            shown = ", ".join(str(n) for n in self.unstored[:5])
            more = ", ..." if len(self.unstored) > 5 else ""
            return (
                f"trial(s) {shown}{more} have no stored validation returns (run by an older "
                f"metabt, or more than {MAX_STORED_BARS} bars)"
            )
        return ""

    def validation_dsr(self) -> tuple[float, str]:
        """The best trial's deflated Sharpe ratio on validation, over the complete trials.

        :func:`metabt.evaluate.significance.deflated_sharpe` of the best trial's validation
        returns with N = :attr:`n_complete` and V the variance of the complete trials'
        per-bar validation Sharpe ratios (from their returns). It is an in-sample number
        (the trials were chosen on these returns); the held-out period is the test.

        Returns:
            (DSR, "") or (NaN, the reason it is n/a).
        """
        reason = self._unavailable()
        if reason:
            return math.nan, reason
        trials = {str(number): r for number, r in self.returns.items()}
        value = deflated_sharpe(self.returns[self.best_number], trials)
        if not math.isfinite(value):
            return math.nan, f"trial {self.best_number}'s validation returns have no variance"
        return value, ""

    @functools.cached_property
    def pbo(self) -> PBOResult:
        """The probability of backtest overfitting of the sweep's choice (CSCV, 16 blocks)
        on the complete trials' validation returns, bars every trial has
        (:func:`metabt.evaluate.overfitting.pbo`); n/a with a reason below 16 trials."""
        reason = self._unavailable()
        if reason:
            return PBOResult(math.nan, np.empty(0), self.n_complete, 0, PBO_BLOCKS, reason)
        matrix = pd.concat(self.returns, axis=1).sort_index()
        return pbo(matrix, n_blocks=PBO_BLOCKS)

    def summary(self) -> dict[str, Any]:
        """The contents of ``sweep.json`` (JSON primitives, NaN as null)."""
        out = {
            **{f"n_{k}": getattr(self, f"n_{k}") for k in ("trials", "complete", "failed")},
            "n_interrupted": self.n_interrupted,
            "best_value": self.best_value,
            "best_number": self.best_number,
            "best_params": self.best_params,
            "sharpe_variance_per_bar": self.sharpe_variance,
            "expected_max_sharpe_per_bar": self.expected_max_sharpe(),
            **self._overfitting(),
            "test_start": str(self.test_start.date()),
            "validation_folds": [[str(a.date()), str(b.date())] for a, b in self.folds],
            "held_out": HELD_OUT_NOTE,
            **self.settings,
        }
        return plain(out, nan_as_null=True)

    def _overfitting(self) -> dict[str, Any]:
        dsr, dsr_reason = self.validation_dsr()
        result = self.pbo
        return {
            "validation_dsr": dsr,
            "validation_dsr_note": dsr_reason
            or (
                f"deflated Sharpe of trial {self.best_number} on validation, over "
                f"{self.n_complete} complete trials (in-sample: the trials were chosen on it)"
            ),
            "pbo": result.pbo,
            "pbo_note": result.describe(),
        }

    def best_toml(self) -> str:
        """``best.toml``: the best configuration as a metabt config file.

        Learner settings sit at the top level (every command has them); the schedule
        (``adapt_every``, ``online_meta_lr``) and ``start = test_start`` under
        ``[backtest]``, ``[compare]`` and ``[walkforward]``; ``train_end = test_start``
        under ``[train]``. ``metabt backtest --config best.toml`` evaluates it on the
        held-out period.
        """
        cfg = self.cfg
        special = {
            "steps": cfg.meta_steps,
            "horizon": cfg.spec.horizon,
            "hidden": list(cfg.hidden),
            "inner_lr": cfg.inner_rate,  # the rate used (None in cfg: the algorithm's default)
            **{name: cfg.sizer[name] for name in SIZER_SETTINGS},
        }
        value = {name: special.get(name, getattr(cfg, name, None)) for name in SETTINGS}
        top = {k: v for k, v in value.items() if k not in STRATEGY_SETTINGS} | {"seed": cfg.seed}
        if cfg.model_kwargs:
            top["model_kwargs"] = dict(cfg.model_kwargs)
        start = self.test_start.date()
        run = {name: value[name] for name in STRATEGY_SETTINGS} | {"start": start}
        given = {k: v for k, v in self.inputs.items() if v is not None and k != "sha256"}
        for key in (
            "data",
            "train_data",
            "benchmark",
            "asset_class",
            "commission",
            "spread",
            "slippage",
            "borrow",
            "impact",
            "participation",
        ):
            if key in given:  # settings every command that reads them has
                top[key] = given[key]
        for key in ("end", "cash"):
            if key in given:
                run[key] = given[key]
        doc = {
            **top,
            "train": {"train_end": start},
            **{command: dict(run) for command in ("backtest", "compare", "walkforward")},
        }
        head = (
            f"# metabt sweep: best of {self.n_trials} trials (trial {self.best_number}, mean "
            f"validation Sharpe {self.best_value:.4f}).\n# Chosen on validation folds before "
            f"{start}; that held-out period was never read by any trial.\n"
        )
        if cfg.spec.custom:
            head += "# The sweep used custom features: pass the same --feature flags again.\n"
        for path, digest in self.inputs.get("sha256", {}).items():
            head += f"# data file {path}: SHA-256 {digest}\n"
        return head + tomli_w.dumps(doc)

    def write(self, out: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``trials.csv``, ``trials.md``, ``best.toml`` and ``sweep.json`` into ``out``.

        The four files are staged and moved in together (each move atomic), beside the
        study's ``sweep.db``.

        Returns:
            name -> path of each file.
        """
        folder = Path(out)
        shown = self.table.drop(columns=["error"]).copy()
        with staged_files(folder) as tmp:
            write_text(tmp / "trials.csv", csv_text(self.table))
            write_text(
                tmp / "trials.md",
                markdown_frame(shown).to_markdown(index=False, floatfmt=".4g")
                + f"\n\n{TABLE_NOTES}.\n",
            )
            write_text(tmp / "best.toml", self.best_toml())
            write_text(tmp / "sweep.json", json.dumps(self.summary(), indent=2) + "\n")
        return {
            name: folder / name for name in ("trials.csv", "trials.md", "best.toml", "sweep.json")
        }


def _table(study: optuna.Study, dims: Sequence[Dimension]) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        row: dict[str, Any] = {"number": t.number}
        row |= {d.name: decode(d.name, t.params.get(d.name)) for d in dims}
        row["score"] = t.value if t.value is not None else math.nan
        row |= {key: t.user_attrs.get(key, math.nan) for key in ("sharpe_per_bar", "ic")}
        row["turnover"] = t.user_attrs.get("turnover", math.nan)
        row["state"] = t.state.name
        row["duration_s"] = t.duration.total_seconds() if t.duration is not None else math.nan
        row["error"] = t.user_attrs.get(ERROR_ATTR, "")
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the sweep


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``sweep.lock`` for the run: one sweep per folder (released even by a kill)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        yield
        return
    with open(folder / LOCK_NAME, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConfigError(
                f"`out` {folder}: another sweep is running on this folder; wait for it or "
                "use another `out`"
            ) from exc
        yield  # closing the file releases the lock


def _recover(study: optuna.Study) -> None:
    """Fail the trials a kill left running and queue each one (and crashed ones) again.

    No worker runs (the caller holds the lock), so a RUNNING trial's process died; a
    failed trial without a configuration error crashed. Each is queued once by Optuna's
    ``RetryHeartbeatStaleTrialCallback``, which copies its parameters and system
    attributes (a ``GridSampler``'s grid point) into a new waiting trial.
    """
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=True)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
    for t in trials:
        interrupted = t.state == optuna.trial.TrialState.FAIL and ERROR_ATTR not in t.user_attrs
        if interrupted and t.number not in retried:
            retry(study, t)


def _done(study: optuna.Study) -> int:
    """Trials with a result: complete, or failed by their configuration."""
    return sum(
        t.state == optuna.trial.TrialState.COMPLETE
        or (t.state == optuna.trial.TrialState.FAIL and ERROR_ATTR in t.user_attrs)
        for t in study.get_trials(deepcopy=False)
    )


@contextlib.contextmanager
def _progress(url: str, name: str, first: int, total: int, *, enabled: bool) -> Iterator[None]:
    """A tqdm bar of the trials done (``first`` before the run), polled from the storage."""
    if not enabled or total <= 0:
        yield
        return
    stop = threading.Event()

    def poll() -> None:
        study = optuna.load_study(study_name=name, storage=_storage(url))
        with tqdm(total=total, desc="trials", unit="trial") as bar:
            while True:
                finished = stop.wait(0.5)
                bar.update(min(total, _done(study) - first) - bar.n)
                if finished:
                    return

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _check_settings(study: optuna.Study, settings: dict[str, Any], out: Path) -> None:
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
        return
    keys = [*settings, *(key for key in stored if key not in settings)]
    changed = [key for key in keys if stored.get(key) != settings.get(key)]
    if changed:
        raise ConfigError(
            f"`out` {out} holds a sweep with other {', '.join(changed)} (see its sweep.json); "
            "resume it with the same settings and data, or use another `out`"
        )


def _shares(n: int, workers: int) -> list[int]:
    base, extra = divmod(n, workers)
    return [base + (i < extra) for i in range(workers) if base + (i < extra) > 0]


def sweep(
    settings: RunSettings,
    *,
    space: Mapping[str, Any],
    out: str | os.PathLike[str],
    sampler: str = "tpe",
    n_trials: int | None = None,
    val_folds: int = 2,
    seed: int | None = None,
    executor: ExecutorSpec | Executor = SERIAL,
    progress: bool = True,
    cv: str = "walkforward",
    cv_groups: int = 6,
    cv_test_groups: int = 2,
    inputs: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Search ``space`` for the configuration with the best validation Sharpe after costs.

    Every trial trains and backtests on ``settings.frames`` cut before ``settings.start``
    (``test_start``, the first day of the held-out period), in ``val_folds`` one-year
    validation folds ending the day before it (:func:`validation_folds`), with
    ``settings.costs``; ``settings.cfg`` is the base configuration each trial changes.
    ``settings.train_frames``, ``end`` and ``cash`` are not used (the validation backtests
    start from :func:`metabt.experiments.backtest.run_backtest`'s default cash). The study
    lives in ``out/sweep.db``: a re-run with the same ``out`` runs only the missing trials,
    and again those a kill interrupted. The outputs (:meth:`SweepResult.write`) are written
    at the end.

    Args:
        settings: data (``frames``; only bars before ``start`` are used), the held-out
            period's first day (``start``), costs and the base configuration (``cfg``).
        space: setting -> values or (TPE) a range, see
            :func:`metabt.experiments.space.parse_space`.
        out: the sweep's folder (created): ``sweep.db`` and the outputs.
        sampler: "tpe" (Optuna's ``TPESampler``; each worker seeded ``seed + i``) or
            "grid" (``GridSampler``, every combination once, seeded order). Default "tpe".
        n_trials: trials with a result wanted in the study (complete or failed by their
            configuration; interrupted trials do not count). Default: the grid's size for
            "grid", :data:`DEFAULT_TPE_TRIALS` (20) for "tpe".
        val_folds: one-year validation folds before ``settings.start``. Default 2.
        seed: the sampler's seed; None uses ``settings.cfg.seed``.
        executor: where the workers run, an
            :class:`~metabt.experiments.executors.ExecutorSpec` (made for the run and
            closed after) or an open :class:`~metabt.experiments.executors.Executor` (left
            open): each worker loads the study from ``sweep.db`` and runs its share of the
            trials on one thread (on a Ray cluster, ``out`` must be on a file system every
            node sees). Default: serial, here.
        progress: show a progress bar of the trials done.
        cv: how a trial is scored: "walkforward" (default; train before each one-year
            fold, backtest on it, the mean fold Sharpe) or "cpcv" (combinatorial purged
            cross-validation over the same ``val_folds`` years: ``cv_groups`` groups,
            ``cv_test_groups`` tested per split, the mean Sharpe of the backtest paths;
            a split trains on the bars before its first test group, see
            :func:`_score_cpcv`).
        cv_groups: CPCV groups of the validation bars (>= 2). Default 6.
        cv_test_groups: CPCV groups tested per split (1 <= k < ``cv_groups``). Default 2.
        inputs: the data files, period end, cash and costs to record in ``best.toml`` so
            that its held-out backtest runs as printed (:attr:`SweepResult.inputs`).

    Returns:
        A :class:`SweepResult` of every trial of the study.

    Raises:
        ConfigError: a bad space, sampler, ``n_trials``, ``val_folds``, date or ``out``;
            Ray not installed for a "ray" spec; no data before the first validation fold;
            ``out`` holds a sweep with other settings or is in use; every trial failed
            (after writing the outputs).
    """
    frames, cfg, costs = settings.frames, settings.cfg, settings.costs
    seed = cfg.seed if seed is None else seed
    if cv not in CV_METHODS:
        raise ConfigError(
            f"`cv` must be one of {', '.join(CV_METHODS)} (how trials are scored), got {cv!r}"
        )
    dims = parse_space(space, sampler)
    grid_size = math.prod(len(d.choices) for d in dims) if sampler == "grid" else None
    if n_trials is None:
        n_trials = grid_size if grid_size is not None else DEFAULT_TPE_TRIALS
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(
            f"n_trials must be a positive integer (trials to run), got {n_trials!r}; "
            "e.g. `n_trials` 20"
        )
    if grid_size is not None and n_trials > grid_size:
        raise ConfigError(
            f"the grid has {grid_size} combinations, fewer than the {n_trials} trials asked; "
            f"pass `n_trials` {grid_size} (or omit it) or widen the grid"
        )
    test_ts = as_timestamp(settings.start, "start")
    assert test_ts is not None
    folds = validation_folds(test_ts, val_folds)
    folder = check_output_path(out, "`out`", kind="dir")
    held = {name: f.loc[f.index < test_ts] for name, f in frames.items()}
    first = max((f.index[0] for f in held.values() if len(f)), default=None)
    if first is None or any(len(f) == 0 for f in held.values()) or first >= folds[0][0]:
        raise ConfigError(
            f"the data before `start` {test_ts.date()} does not reach back before the "
            f"first validation fold ({folds[0][0].date()}), so no trial could train; use an "
            "earlier history, fewer `val_folds` or a later `start`"
        )
    latest = max(f.index[-1] for f in held.values())
    empty = [
        (a, b)
        for a, b in folds
        if not any(((f.index >= a) & (f.index <= b)).any() for f in held.values())
    ]
    if empty:
        raise ConfigError(
            f"`start` {test_ts.date()}: the data ends on {latest.date()}, so validation "
            f"fold{'s' if len(empty) > 1 else ''} "
            f"{', '.join(f'{a.date()} to {b.date()}' for a, b in empty)} (the "
            f"{val_folds} year(s) before `start`) hold no bar; pass a `start` at "
            "most a day after the data's last bar, or fewer `val_folds`"
        )
    cv_settings: dict[str, Any] = {}
    bars: tuple[pd.Timestamp, ...] = ()
    if cv == "cpcv":
        cpcv_paths(cv_groups, cv_test_groups)  # the counts checked before any work
        span = pd.DatetimeIndex(sorted(set().union(*(f.index for f in held.values()))))
        bars = tuple(span[span >= folds[0][0]])
        if len(bars) < 2 * cv_groups:
            raise ConfigError(
                f"`cv_groups` {cv_groups}: the {len(bars)} validation bars make groups of "
                "under 2 bars; use fewer `cv_groups` or more `val_folds`"
            )
        groups = np.array_split(np.arange(len(bars)), cv_groups)
        folds = [(bars[g[0]], bars[g[-1]]) for g in groups]
        # only a CPCV sweep stores its cv settings: older walk-forward folders still resume
        cv_settings = {"cv": cv, "cv_groups": cv_groups, "cv_test_groups": cv_test_groups}
    bars_per_year = run_bars_per_year(held, cfg)
    pool_scope = executor_scope(executor)  # made (Ray checked) before any work
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{(folder / DB_NAME).resolve()}"
    stored = {
        "sampler": sampler,
        "space": {d.name: d.describe() for d in dims},
        "seed": seed,
        "val_folds": val_folds,
        **cv_settings,
        "test_start": str(test_ts.date()),
        "config": json.loads(json.dumps(cfg.describe(), default=str)),
        "costs": dataclasses.asdict(costs),
        "data": frames_sha256(held)[:16],
    }
    study_name = "metabt-sweep"
    job = _Job(
        *(url, study_name, sampler, dims, seed, 0, held, cfg, tuple(folds), costs, test_ts),
        cv=cv,
        bars=bars,
        cv_groups=cv_groups,
        cv_test_groups=cv_test_groups,
        bars_per_year=bars_per_year,
    )
    tic = time.perf_counter()
    with _locked(folder):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = _open_study(url, study_name, folder / DB_NAME)
        _check_settings(study, json.loads(json.dumps(stored, default=str)), folder)
        _recover(study)
        done = _done(study)
        missing = max(n_trials - done, 0)
        with pool_scope as pool:
            units = [
                (dataclasses.replace(job, n_trials=share), i)
                for i, share in enumerate(_shares(missing, pool.workers))
            ]
            with _progress(url, study_name, done, missing, enabled=progress):
                pool.map(_run_job, units, desc="sweep workers", progress=False)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        best = max(complete, key=lambda t: (float(t.value or 0.0), -t.number), default=None)
        params = {k: decode(k, v) for k, v in (best.params if best else {}).items()}
        returns, unstored = _trial_returns(complete)
        result = SweepResult(
            _table(study, dims),
            params,
            float(best.value or 0.0) if best else math.nan,
            best.number if best else -1,
            apply_params(cfg, params),
            test_ts,
            folds,
            {"cv": cv, **stored, "seconds_this_run": round(time.perf_counter() - tic, 1)},
            returns,
            unstored,
            dict(inputs or {}),
        )
        result.write(folder)
    if result.n_complete == 0:
        errors = result.table.loc[result.table["error"].astype(bool), "error"]
        raise ConfigError(
            f"every trial of the sweep failed; the first: {errors.iloc[0] if len(errors) else '?'}"
        )
    return result
