"""The roster's training parts, each selected by one rule: the learners, the linear
baselines' penalties and LightGBM.

:func:`train_learner` meta-trains (or trains) strictly before a date and keeps the θ with the
lowest query MSE on the validation tasks (the last ``val_years`` before the test period),
scored as the strategy trades it (after adaptation, or unadapted for a static model);
:func:`select_linear` chooses RollingRidge's penalty and RecursiveLeastSquares' forgetting on
the same validation tasks; :func:`train_gbm` fits LightGBM with its rounds chosen by early
stopping on them. :func:`train_part` is one part (``meta``, ``erm``, ``erm_static``,
``scratch``, ``linear``, ``gbm``), :func:`train_roster` all of them. Grids and budgets are
fixed in code; a choice at the edge of its grid is said.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from metabt.config.defaults import DEMO, RunConfig
from metabt.data.bars import check_same_bars, common_frequency
from metabt.errors import ConfigError
from metabt.evaluate.sanitize import clean
from metabt.experiments.log import Log, silent
from metabt.features.tasks import TaskSampler
from metabt.learn.algorithms import resolve_algorithm
from metabt.learn.learner import FitResult, MetaLearner
from metabt.learn.linear import LinearFit, RidgeAdapter, RLSAdapter, select_by_validation
from metabt.learn.losses import PnLLoss
from metabt.learn.models import build_model
from metabt.learn.training import batch_extra
from metabt.learn.trees import GBM_ROUNDS, GBM_STOPPING, GbmAdapter
from metabt.strategies.meta import MetaStrategy
from metabt.strategies.portfolio import CrossSectionalStrategy
from metabt.strategies.trader import SignalTrader

__all__ = [
    "LEARNER_PARTS",
    "RIDGE_GRID",
    "RIDGE_ZERO",
    "RLS_DEFAULT",
    "RLS_GRID",
    "RLS_SUPPORT",
    "ROSTER_PARTS",
    "RosterModels",
    "Spans",
    "TrainedGbm",
    "TrainedLearner",
    "VAL_TASKS",
    "ZeroForecast",
    "check_excluded",
    "check_no_leak",
    "check_train_config",
    "checked_strategy",
    "hold_out_years",
    "run_bars_per_year",
    "select_linear",
    "train_gbm",
    "train_learner",
    "train_part",
    "train_roster",
    "validation_split",
]

#: The ridge "penalty" of the zero forecast (no view): α → ∞ with the intercept shrunk too
#: (RidgeAdapter leaves its intercept unpenalised, so its own α → ∞ limit, reached by 1e6,
#: is the support window's mean label, not zero).
RIDGE_ZERO = math.inf
#: Ridge penalties tried on the validation tasks (fixed before any run), up to both limits
#: of large α: the support-mean forecast (1e6) and the zero forecast (:data:`RIDGE_ZERO`).
RIDGE_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0, 1e4, 1e6, RIDGE_ZERO)
#: RLS forgetting factors tried on the validation tasks (fixed before any run), from a
#: memory of about 10 bars (0.9) to none forgotten (1.0).
RLS_GRID = (0.9, 0.95, 0.98, 0.99, 0.995, 1.0)
#: Realised pairs the RLS recursion runs over, bars.
RLS_SUPPORT = 200
#: RLS forgetting used when the validation window is too short to choose one.
RLS_DEFAULT = 0.99
#: Validation tasks drawn to select hyper-parameters and report validation losses.
VAL_TASKS = 64

#: Date spans (first, last), both ends included, that training may not read
#: (combinatorial purged cross-validation's test groups, purged and embargoed).
Spans = tuple[tuple[pd.Timestamp, pd.Timestamp], ...]


class ZeroForecast(RidgeAdapter):
    """The zero forecast (no view) as an adapter: ridge at α = ∞, its intercept shrunk too.

    The limit of :data:`RIDGE_GRID`: scored on the validation tasks beside the finite
    penalties, so the selection line says when no ridge beats predicting zero; RollingRidge
    itself trades the best finite penalty (a zero forecast would be a flat book, not a ridge).
    """

    algorithm = "zero"

    def __init__(self, feature_spec: Any) -> None:
        super().__init__(feature_spec, 1.0)
        self.alpha = RIDGE_ZERO

    def adapt(
        self, x_support: np.ndarray, y_support: np.ndarray, steps: int | None = None
    ) -> LinearFit:
        """The zero forecast, scored on the support window. x: (S, F), y: (S,)."""
        x = np.asarray(x_support, dtype=np.float64)
        y = np.asarray(y_support, dtype=np.float64)
        mse = float(y @ y) / max(len(y), 1)
        return LinearFit(np.zeros(x.shape[-1]), 0.0, mse, mse)

    def __repr__(self) -> str:
        return "ZeroForecast()"


def _ridge(spec: Any, alpha: float) -> RidgeAdapter:
    """RollingRidge's adapter: ridge with penalty ``alpha``, or the zero forecast at ∞.

    An ``alpha`` that is not a number (the scheduler's stand-in for a part not trained yet)
    is passed through, so that the scheduler sees which part the entry reads.
    """
    if not isinstance(alpha, (int, float)):
        return cast(RidgeAdapter, alpha)
    return ZeroForecast(spec) if alpha == RIDGE_ZERO else RidgeAdapter(spec, alpha)


def _edge(value: float, grid: Sequence[float]) -> str:
    """ " (at the edge of its grid)" when ``value`` is the grid's first or last value."""
    return " (at the edge of its grid)" if value in (min(grid), max(grid)) else ""


def _rule(val_steps: int | None, inner_steps: int) -> str:
    """How a learner's θ is scored on the validation tasks: adapted, or as it is."""
    if val_steps == 0:
        return "unadapted (0 inner steps, as it is traded)"
    return f"after {inner_steps if val_steps is None else val_steps} inner steps"


@dataclass
class TrainedLearner:
    """The outcome of :func:`train_learner`.

    Attributes:
        learner: the trained learner.
        fit: what ``MetaLearner.fit`` did (``best_step``: the kept step).
        val_loss: validation query MSE of the kept θ, scored by the selection rule.
        val_init_loss: the same at the initialisation (before any training).
        val_zero_mse: validation query MSE of always predicting 0 (no view), the
            baseline a useful model must beat.
        val_steps: the selection rule: the θ with the lowest validation query MSE is kept,
            scored after this many inner steps (None: the learner's own, for a learner
            adapted in the backtest; 0: unadapted, for one traded as it is).
        val_every: outer steps between validations.
        seconds: wall time of the training, seconds.
    """

    learner: MetaLearner
    fit: FitResult
    val_loss: float
    val_init_loss: float
    val_zero_mse: float
    val_steps: int | None = None
    val_every: int = 50
    seconds: float = 0.0

    @property
    def untrained(self) -> bool:
        """True when keep-best kept the initialisation: the result is not a trained model."""
        return self.fit.steps > 0 and self.fit.best_step == 0

    @property
    def parameters(self) -> int:
        """Number of trainable parameters of θ."""
        model = getattr(self.learner, "model", None)
        if model is None:
            return 0
        return sum(int(p.numel()) for p in model.parameters() if p.requires_grad)

    def bars(self) -> str:
        """The training bars' frequency, e.g. ``"daily bars, 252 a year"``."""
        record = self.learner.train_config or {}
        name, count = record.get("bar_frequency"), record.get("bars_per_year")
        if name is None or count is None:
            return "bars of unknown frequency"
        return f"{name} bars, {float(count):,.0f} a year"

    def summary(self, cfg: RunConfig, names: Sequence[str]) -> list[str]:
        """Lines that say what was trained, on what, by which rule, and how well it validated."""
        learner, fit = self.learner, self.fit
        assert learner.train_range is not None
        joint = learner.algorithm == "erm"
        verb = "trained" if joint else "meta-trained"
        scored = _rule(self.val_steps, learner.inner_steps)
        if fit.steps == 0:  # scratch: nothing was trained, so say what it is instead
            return [
                f"scratch baseline ({cfg.model_config()['type']}, engine {learner.engine}): "
                f"θ is the random initialisation of seed {cfg.seed}, not trained; "
                f"{learner.inner_steps} inner steps, {self.parameters:,} parameters; its "
                f"validation {objective_label(learner)} {scored} on {_assets(names)} "
                f"({self.bars()}) up to {learner.train_range[1]}: {self.val_loss:.4f} vs "
                f"{self.val_zero_mse:.4f} for always predicting zero"
            ]
        how = (
            f"{verb} {learner.algorithm} ({cfg.model_config()['type']}, engine "
            f"{learner.engine}){' jointly' if joint else ''} on {_assets(names)} "
            f"({self.bars()}) from {learner.train_range[0]} to {learner.train_range[1]}: "
            f"{fit.steps} outer steps of {cfg.batch_size} tasks, {learner.inner_steps} inner "
            f"steps, {self.parameters:,} parameters, {self.seconds:.1f}s; kept θ of step "
            f"{fit.best_step} (keep-best on the validation {objective_label(learner)} {scored}, "
            "checked every "
            f"{self.val_every} steps): {self.val_loss:.4f} (initialisation "
            f"{self.val_init_loss:.4f})"
        )
        lines = [f"{how} vs {self.val_zero_mse:.4f} for always predicting zero"]
        if self.untrained:
            lines.append(
                f"untrained: no validation check improved on the initial θ, so "
                f"{learner.algorithm}'s kept θ is its initialisation (training did not "
                "generalise to the validation tasks); with the same seed it equals the "
                "scratch baseline's"
            )
        if fit.steps > 0 and not self.val_loss < self.val_zero_mse:
            lines.append(
                f"note: on validation, {learner.algorithm} {scored} does not beat "
                f"predicting zero ({self.val_loss:.4f} vs {self.val_zero_mse:.4f}): expect "
                "no information in its signal"
            )
        return lines


def objective_label(learner: Any) -> str:
    """What the learner's validation loss is, for a log line."""
    config = getattr(getattr(learner, "loss", None), "config", None)
    return objective_text(config().get("objective", "mse") if callable(config) else "mse")


def objective_text(objective: str) -> str:
    """What a validation loss of ``objective`` (``RunConfig.objective``) is, for a log line."""
    if objective == "sharpe":
        return "after-cost loss (−Sharpe per bar of the sized query paths)"
    if objective == "utility":
        return "after-cost loss (−(mean − λ·var) of the sized query paths' P&L)"
    return "query MSE"


def _assets(names: Sequence[str], shown: int = 6) -> str:
    """Asset names for a log line: all of a few, the first and last of a universe."""
    names = [clean(n) for n in names]
    if len(names) <= shown:
        return ", ".join(names)
    return f"{len(names)} assets ({', '.join(names[:3])}, ..., {names[-1]})"


def _tasks(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig,
    end: pd.Timestamp,
    *,
    support: int,
    window: int = 1,
    extras: bool = False,
    bars_per_year: float | None = None,
    exclude: Spans | None = None,
) -> tuple[TaskSampler, TaskSampler, tuple[str, str]]:
    """Training and validation tasks strictly before ``end``, split ``val_years`` before it
    (with each query row's P&L inputs when ``extras``, for a P&L objective), none reading a
    bar of the ``exclude`` spans (:func:`validation_split` then skips them)."""
    first = min(f.index[0] for f in frames.values())
    if first >= end:
        raise ConfigError(
            f"no training data before {end.date()} (data starts {first.date()}); "
            "pick a later cut-off date or give earlier training data"
        )
    split = validation_split(frames, cfg, end, exclude)
    tasks = TaskSampler.from_frames(
        frames,
        cfg.spec,
        support=support,
        query=cfg.query,
        end=end,
        window=window,
        extras=extras,
        vol_lookback=int(cfg.sizer.get("vol_lookback", 20)),
        bars_per_year=bars_per_year,
        exclude=exclude or (),
    )
    try:
        train, val = tasks.split(split)
    except ConfigError as exc:
        part = "training" if "train part" in str(exc) else "validation"
        years = hold_out_years(frames, cfg, end)
        raise ConfigError(
            f"holding out the last {years:.3g} years before {end.date()} for validation "
            f"(split at {split.date()}) leaves no {part} task in data from {first.date()}: "
            + (
                "pass a smaller `val_years` (e.g. 0.25 for a year of hourly bars) or give a "
                "longer history"
                if part == "training"
                else "pass a larger `val_years`, or a smaller `support`/`query`"
            )
            + f". Details: {exc}"
        ) from exc
    date_range = (str(tasks.date_range[0])[:10], str(tasks.date_range[1])[:10])
    return train, val, date_range


def hold_out_years(frames: Mapping[str, pd.DataFrame], cfg: RunConfig, end: pd.Timestamp) -> float:
    """The years before ``end`` held out for validation (:meth:`RunConfig.hold_out_years` of
    the training history from the frames' first bar to ``end``)."""
    first = min(f.index[0] for f in frames.values())
    return cfg.hold_out_years((end - first).days / 365.25)


def validation_split(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig,
    end: pd.Timestamp,
    exclude: Spans | None = None,
) -> pd.Timestamp:
    """The first day of the validation hold-out before ``end`` (:func:`hold_out_years`):
    the training tasks' queries end before it, the validation tasks' start on it.

    With ``exclude`` (a CPCV split, trained up to the end of the data) the hold-out is as
    long but counted outside the excluded spans: the split date is moved back over every
    span it meets, so the validation tasks (which read no excluded bar) get the same
    stretch of usable time as a walk-forward fold's.

    Args:
        frames: the training frames (their first bar starts the history).
        cfg: the configuration (``val_years``).
        end: the cut-off (the test period's first day; for a CPCV split, the day after
            the last bar trained on).
        exclude: (first, last) date spans the training may not read. Default None.

    Returns:
        The split date.
    """
    days = round(365.25 * hold_out_years(frames, cfg, end))
    if not exclude:
        return pd.Timestamp(end - pd.DateOffset(days=days))
    left, cursor = pd.Timedelta(days=days), pd.Timestamp(end)
    for first, last in sorted(exclude, reverse=True):  # the latest span first
        if first >= cursor:
            continue
        free = max(cursor - pd.Timestamp(last), pd.Timedelta(0))
        if free >= left:
            break
        left -= free
        cursor = min(cursor, pd.Timestamp(first))
    return pd.Timestamp(cursor - left)


def run_bars_per_year(frames: Mapping[str, pd.DataFrame], cfg: RunConfig) -> float:
    """Bars a year of a run: the sizer's ``bars_per_year`` if given, else the frames' one
    detected frequency (:func:`metabt.data.bars.common_frequency` with the sizer's declared
    ``calendar``, which refuses mixed frequencies with a ConfigError, given or not).

    Args:
        frames: name -> validated OHLCV frame.
        cfg: the run's configuration.

    Returns:
        Bars per year (> 0).
    """
    indexes = {n: f.index for n, f in frames.items()}
    detected = common_frequency(indexes, None, cfg.sizer.get("calendar"))  # checks them
    return float(cfg.sizer.get("bars_per_year") or detected.bars_per_year)


def train_learner(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig = DEMO,
    *,
    end: str | pd.Timestamp | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    checkpoint_every: int = 50,
    progress: bool = True,
    val_steps: int | None = None,
    exclude: Spans | None = None,
) -> TrainedLearner:
    """Train a learner on ``frames`` strictly before ``end`` (default ``cfg.start``).

    The last ``cfg.val_years`` years before ``end`` give the validation tasks, the rest
    the training tasks; every task's labels are realised before the split or before
    ``end`` respectively. Every algorithm (meta-learners, ``erm``, ``scratch``) runs
    ``cfg.meta_steps`` outer steps and keeps the θ with the lowest validation query MSE,
    checked every ``checkpoint_every`` steps and scored as the learner is traded: after
    ``val_steps`` inner steps (None: the learner's own, for a learner adapted in the
    backtest; 0: unadapted, for one traded as it is, e.g. ErmStatic). A kept step 0 is
    flagged as untrained (:attr:`TrainedLearner.untrained`).

    Args:
        frames: name -> validated OHLCV frame.
        cfg: the configuration. Default :data:`DEMO`.
        end: cut-off date; no price on or after it is used. Default ``cfg.start``.
        checkpoint: optional path where the unfinished run is saved (atomically) every
            ``checkpoint_every`` steps, with everything needed to resume it.
        resume: continue the run saved at ``checkpoint`` (the final θ equals an
            uninterrupted run's). Default False (start afresh).
        checkpoint_every: outer steps between saves and validations. Default 50.
        progress: show a progress bar.
        val_steps: inner steps before a validation query is scored (the selection rule):
            None for the learner's own, 0 for a learner traded unadapted. Default None.
        exclude: (first, last) date spans no training or validation task reads (a CPCV
            split's test groups, purged and embargoed; ``end`` is then after them), recorded
            in ``learner.train_config["excluded"]`` for :func:`check_excluded`. Default
            None: none.

    Returns:
        A :class:`TrainedLearner`.

    Raises:
        ConfigError: no data before ``end``, or too little for one task.
    """
    end_ts = pd.Timestamp(end if end is not None else cfg.start)
    # one bar frequency for all training frames (mixed daily/hourly is refused here); the
    # recorded name is always the detected spacing, so that a backtest compares like with
    # like whether or not bars_per_year was given
    indexes = {name: frame.index for name, frame in frames.items()}
    frequency = common_frequency(indexes, None, cfg.sizer.get("calendar"))
    bars_per_year = cfg.sizer.get("bars_per_year") or frequency.bars_per_year
    tic = time.perf_counter()
    with torch.random.fork_rng():  # a user model initialises from torch's global generator
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model_config())
    window = int(getattr(model, "window", 1))
    loss = cfg.task_loss(float(bars_per_year))
    train, val, date_range = _tasks(
        frames,
        cfg,
        end_ts,
        support=cfg.support,
        window=window,
        extras=loss is not None,
        bars_per_year=float(bars_per_year),
        exclude=exclude,
    )
    learner = MetaLearner(
        model,
        # a family's import path from a file is imported only if trusted (never trusted here)
        algorithm=resolve_algorithm(cfg.algorithm),
        inner_lr=cfg.inner_rate,
        inner_steps=cfg.inner_steps,
        meta_lr=cfg.meta_lr,
        seed=cfg.seed,
        feature_spec=cfg.spec,
        loss=loss,
    )
    val_batch = val.fixed(VAL_TASKS, cfg.seed)
    result = learner.fit(
        train,
        cfg.meta_steps,
        batch_size=cfg.batch_size,
        val_tasks=val_batch,
        val_every=checkpoint_every,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        val_steps=val_steps,
    )
    learner.train_range = date_range
    val_loss = result.best_val_loss
    init_loss = result.val_losses[0][1] if result.val_losses else math.nan
    # predicting zero: the labels' mean square, or (P&L objectives) a flat book, which
    # earns nothing: Sharpe and utility 0
    zero = float((val_batch[3].double() ** 2).mean()) if loss is None else 0.0
    trained = TrainedLearner(
        learner,
        result,
        val_loss,
        init_loss,
        zero,
        val_steps,
        checkpoint_every,
        time.perf_counter() - tic,
    )
    learner.train_config = {
        "support": cfg.support,
        "query": cfg.query,
        "horizon": cfg.spec.horizon,
        "val_years": hold_out_years(frames, cfg, end_ts),
        "steps": result.steps,
        "kept_step": result.best_step,
        "val_steps": val_steps,
        "untrained": trained.untrained,
        "val_loss": val_loss,
        "val_zero_mse": zero,
        "objective": cfg.objective,
        # the traded smoothing the model is meant for (the P&L objective trains with it;
        # the demo's default is chosen on validation by scripts/choose_smoothing.py)
        "smooth": cfg.smooth,
        "bar_frequency": frequency.name,
        "bars_per_year": float(bars_per_year),
    }
    if exclude:
        learner.train_config["excluded"] = [[str(a), str(b)] for a, b in exclude]
    return trained


def check_train_config(
    learner: MetaLearner,
    cfg: RunConfig,
    frames: Mapping[str, pd.DataFrame] | None = None,
) -> None:
    """Refuse a backtest that differs from what the learner trained on.

    The meta-init is learned for support windows of one length, and for bars of one
    frequency (a horizon of 5 daily bars is not 5 hourly bars); adapting it on another is
    a different experiment. Checkpoints without a record (older ones) pass.

    Args:
        learner: the trained learner (its ``train_config``).
        cfg: the backtest's configuration.
        frames: the backtest's frames; their bar frequency is compared when given.

    Raises:
        ConfigError: the learner trained with another ``support``, or on bars of another
            frequency (mixed frequencies among ``frames`` are refused too).
    """
    record = learner.train_config or {}
    trained = record.get("support")
    if trained is not None and int(trained) != cfg.support:
        raise ConfigError(
            f"the model was trained on support windows of {trained} bars but the backtest "
            f"adapts on {cfg.support}; pass `support` {trained} or retrain with "
            f"`support` {cfg.support}"
        )
    if frames is None:
        return
    now = common_frequency({name: f.index for name, f in frames.items()}, None)
    check_same_bars(record.get("bar_frequency"), now)


def check_no_leak(learner: MetaLearner, start: pd.Timestamp) -> None:
    """Refuse a learner whose training range reaches the test period (honesty rule 2).

    Args:
        learner: the trained learner (its ``train_range``).
        start: the first test date.

    Raises:
        ConfigError: the last training date is on or after ``start``.
    """
    if learner.train_range is not None and pd.Timestamp(learner.train_range[1]) >= start:
        raise ConfigError(
            f"the model was trained on data up to {learner.train_range[1]}, on or after the "
            f"backtest start {start.date()}; that would leak the test period into training. "
            "Use a later `start` or a model trained before it"
        )


def checked_strategy(
    learner: MetaLearner,
    cfg: RunConfig,
    frames: Mapping[str, pd.DataFrame],
    start: pd.Timestamp,
) -> tuple[type[SignalTrader], str]:
    """The strategy class that trades ``learner`` in a run, and its label, after the checks
    that the learner fits the run (:func:`check_no_leak`, :func:`check_train_config`).

    Args:
        learner: the trained meta-learner.
        cfg: the run's configuration (``cfg.portfolio`` chooses the class).
        frames: the run's frames (their bar frequency is checked).
        start: the first test date.

    Returns:
        (``MetaStrategy``, "MetaStrategy"), or (``CrossSectionalStrategy``,
        "CrossSectional") when ``cfg.portfolio`` is set.

    Raises:
        ConfigError: the learner's training range reaches ``start``, or it trained with
            other support windows or bars than the run's.
    """
    check_no_leak(learner, start)
    check_train_config(learner, cfg, frames)
    if cfg.portfolio is None:
        return MetaStrategy, "MetaStrategy"
    return CrossSectionalStrategy, "CrossSectional"


def _merged(spans: Sequence[tuple[Any, Any]]) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Date spans (both ends included) joined where they overlap or touch, in order."""
    out: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for a, b in sorted((pd.Timestamp(a), pd.Timestamp(b)) for a, b in spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def check_excluded(learner: Any, spans: Sequence[tuple[Any, Any]]) -> None:
    """Refuse a learner that may have trained on a CPCV split's test bars (honesty rule 2
    for combinatorial purged cross-validation, where training also runs after the test).

    A learner trained with ``exclude`` (:func:`train_learner`) records its excluded spans in
    ``train_config["excluded"]``; each of ``spans`` (the split's test groups widened by the
    purge and the embargo) must lie inside one of them (spans that overlap or touch are
    joined first). A learner with no record passes only if its training range ends before
    the first span: trained strictly before the test, as in a walk-forward fold.

    Args:
        learner: the trained learner (``train_config``, ``train_range``).
        spans: (first, last) dates, both ends included, the learner must not have read.

    Raises:
        ConfigError: a span not covered by the recorded exclusions.
    """
    record = (getattr(learner, "train_config", None) or {}).get("excluded")
    needed = _merged(spans)
    if not needed:
        return
    if record is None:
        train_range = getattr(learner, "train_range", None)
        if train_range is not None and pd.Timestamp(train_range[1]) < needed[0][0]:
            return
        raise ConfigError(
            f"the model was trained on data up to "
            f"{None if train_range is None else train_range[1]} with no excluded spans "
            f"recorded, but the test starts {needed[0][0].date()}; that could leak the test "
            "bars into training. Train it with the split's exclusions"
        )
    have = _merged([(a, b) for a, b in record])
    for first, last in needed:
        if not any(a <= first and last <= b for a, b in have):
            raise ConfigError(
                f"the model's training excluded {', '.join(f'{a} to {b}' for a, b in record)}, "
                f"which does not cover the test span {first} to {last} (its test group, "
                "purge and embargo); that could leak the test bars into training"
            )


@dataclass
class TrainedGbm:
    """The outcome of :func:`train_gbm`: the LightGBM baseline, trained once.

    Attributes:
        learner: the :class:`~metabt.learn.trees.GbmAdapter` (its kept round count and
            validation curve).
        val_zero_mse: validation loss of always predicting 0: the query MSE, or 0 for a
            P&L objective (a flat book earns nothing).
        train_range: (first, last) date of the prices its training and validation rows use
            (as a learner's ``train_range``).
        seconds: wall time of the training, seconds.
        objective: the validation loss the round count was kept by (``RunConfig.objective``,
            the neural learners' rule).
        excluded: the date spans its training and validation rows read no bar of
            (:func:`train_gbm`'s ``exclude``). Default (): none.
    """

    learner: GbmAdapter
    val_zero_mse: float
    train_range: tuple[str, str]
    seconds: float = 0.0
    objective: str = "mse"
    excluded: Spans = ()

    def summary(self, names: Sequence[str]) -> list[str]:
        """The training line: the rule and the budget, the kept round count."""
        gbm = self.learner
        params = gbm.params
        line = (
            f"trained LightGBM (leaves {params.get('num_leaves')}, rate "
            f"{params.get('learning_rate')}) jointly on {_assets(names)} from "
            f"{self.train_range[0]} to {self.train_range[1]}: {gbm.train_rows:,} pooled "
            f"training rows, up to {GBM_ROUNDS} rounds, no inner steps (static), "
            f"{self.seconds:.1f}s; kept round {gbm.rounds} of {len(gbm.val_curve)} run "
            f"(keep-best on the validation {objective_text(self.objective)}, unadapted, as "
            f"it is traded; early "
            f"stopping after {GBM_STOPPING} rounds without improvement): "
            f"{gbm.val_loss:.4f} vs {self.val_zero_mse:.4f} for always predicting zero"
        )
        lines = [line]
        if not gbm.val_loss < self.val_zero_mse:
            lines.append(
                f"note: on validation, LightGBM does not beat predicting zero "
                f"({gbm.val_loss:.4f} vs {self.val_zero_mse:.4f}): expect no information "
                "in its signal"
            )
        return lines


@dataclass
class RosterModels:
    """Everything a comparison trains strictly before its test period.

    Attributes:
        meta: the meta-learner (``cfg.algorithm``).
        erm: the jointly trained model, θ kept by validation after adaptation (ErmAdapt).
        erm_static: the same training (seed, budget), θ kept by validation unadapted
            (ErmStatic).
        scratch: the random initialisation (no training).
        gbm: the LightGBM baseline.
        ridge_alpha: RollingRidge's penalty, the best finite one on the validation tasks
            (the zero forecast, :data:`RIDGE_ZERO`, is scored beside it).
        rls_forgetting: RecursiveLeastSquares' λ, chosen on the validation tasks.
        selection: hyper-parameter -> {value: validation loss} of both choices.
        objective: the validation loss of the linear choices (``RunConfig.objective``, the
            neural learners' rule): the query MSE or the after-cost P&L objective.
        bars_per_year: the run's bars a year (:func:`run_bars_per_year`): the controls'
            windows scale with it (:func:`metabt.strategies.baselines.control_windows`).
            Default 252 (daily bars).
    """

    meta: TrainedLearner
    erm: TrainedLearner
    erm_static: TrainedLearner
    scratch: TrainedLearner
    gbm: TrainedGbm
    ridge_alpha: float
    rls_forgetting: float
    selection: dict[str, dict[float, float]] = field(default_factory=dict)
    objective: str = "mse"
    bars_per_year: float = 252.0

    def summary(self) -> str:
        """The linear baselines' choices in one line (an edge choice is said so)."""
        ridge = self.selection.get("ridge_alpha", {})
        rls = self.selection.get("rls_forgetting", {})
        finite = [a for a in RIDGE_GRID if a != RIDGE_ZERO]
        score = "query MSE" if self.objective == "mse" else f"{self.objective} loss"
        return (
            f"chosen on the validation tasks by their {objective_text(self.objective)}: "
            f"RollingRidge alpha {self.ridge_alpha:g}"
            f"{_edge(self.ridge_alpha, finite)} "
            f"({score} {ridge.get(self.ridge_alpha, math.nan):.4f}; zero forecast "
            f"{ridge.get(RIDGE_ZERO, math.nan):.4f}; grid "
            f"{_grid(RIDGE_GRID)}), RecursiveLeastSquares forgetting {self.rls_forgetting:g}"
            f"{_edge(self.rls_forgetting, RLS_GRID) if rls else ''} ({score} "
            f"{rls.get(self.rls_forgetting, math.nan):.4f}, over {RLS_SUPPORT} bars; grid "
            f"{_grid(RLS_GRID)})"
        )


def _grid(grid: Sequence[float]) -> str:
    return ", ".join("∞ (zero forecast)" if v == RIDGE_ZERO else f"{v:g}" for v in grid)


def select_linear(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig,
    end: pd.Timestamp,
    exclude: Spans | None = None,
) -> tuple[float, float, dict[str, dict[float, float]], list[str]]:
    """Choose the linear baselines' settings on validation tasks strictly before ``end``.

    The ridge penalty from :data:`RIDGE_GRID` (up to the zero forecast) on the validation
    tasks of the learners (the last ``cfg.val_years`` before ``end``); the RLS forgetting
    factor from :data:`RLS_GRID` on validation tasks with RLS's longer support
    (:data:`RLS_SUPPORT`), or :data:`RLS_DEFAULT` when the validation window is too short
    for them.

    Args:
        frames: name -> validated OHLCV frame to train on.
        cfg: the configuration (features, support, query, ``val_years``, seed).
        end: cut-off date (the test period's first day).
        exclude: date spans no validation task reads (:func:`train_learner`). Default None.

    Returns:
        (ridge alpha, RLS forgetting, {"ridge_alpha": scores, "rls_forgetting": scores},
        note lines).

    Raises:
        ConfigError: too little data before ``end`` for the validation tasks.
    """
    spec = cfg.spec
    lines: list[str] = []
    bars_per_year = run_bars_per_year(frames, cfg)
    loss = cfg.task_loss(bars_per_year)
    _, val, _ = _tasks(
        frames,
        cfg,
        end,
        support=cfg.support,
        extras=loss is not None,
        bars_per_year=bars_per_year,
        exclude=exclude,
    )
    val_batch = val.fixed(VAL_TASKS, cfg.seed)
    _, ridge_scores = select_by_validation(
        lambda a: _ridge(spec, a), RIDGE_GRID, val_batch, _objective_score(loss, val_batch)
    )
    # RollingRidge trades a ridge: the best finite penalty. The zero forecast is scored
    # beside it (the grid's limit), and said when it does better: a flat row would not be
    # a ridge baseline, it would be cash.
    finite = {a: score for a, score in ridge_scores.items() if a != RIDGE_ZERO}
    alpha = min(finite, key=lambda a: finite[a])
    zero = ridge_scores.get(RIDGE_ZERO, math.nan)
    if zero < finite[alpha]:
        lines.append(
            f"note: on validation, the zero forecast beats every finite ridge penalty "
            f"({zero:.4f} vs {finite[alpha]:.4f} at alpha {alpha:g}): expect no information "
            "in RollingRidge's signal"
        )
    lam = RLS_DEFAULT
    rls_scores: dict[float, float] = {}
    try:  # the validation window only: RLS's longer support needs no training tasks
        split = validation_split(frames, cfg, end, exclude)
        val_rls = TaskSampler.from_frames(
            frames,
            spec,
            support=RLS_SUPPORT,
            query=cfg.query,
            start=split,
            end=end,
            extras=loss is not None,
            vol_lookback=int(cfg.sizer.get("vol_lookback", 20)),
            bars_per_year=bars_per_year,
            exclude=exclude or (),
        )
    except ConfigError as exc:
        lines.append(
            f"note: too little validation data to choose RecursiveLeastSquares' "
            f"forgetting ({exc}); using {RLS_DEFAULT}"
        )
    else:
        rls_batch = val_rls.fixed(VAL_TASKS, cfg.seed)
        lam, rls_scores = select_by_validation(
            lambda f: RLSAdapter(spec, f), RLS_GRID, rls_batch, _objective_score(loss, rls_batch)
        )
    return alpha, lam, {"ridge_alpha": ridge_scores, "rls_forgetting": rls_scores}, lines


def _objective_score(
    loss: PnLLoss | None, batch: Any
) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """The validation loss of the linear baselines' predictions on ``batch``: the run's P&L
    objective (``loss``, the neural learners' keep-best rule), or None for the query MSE."""
    if loss is None:
        return None
    extra = {k: v.to(torch.float64) for k, v in (batch_extra(batch) or {}).items()}

    def score(pred: np.ndarray, yq: np.ndarray) -> float:
        return float(loss.batch_mean(torch.from_numpy(pred), torch.from_numpy(yq), extra))

    return score


def _pooled_rows(tasks: TaskSampler) -> tuple[np.ndarray, np.ndarray]:
    """Every row a task of ``tasks`` uses (support or query), once, in asset and date order.

    Reads the sampler's row arrays and anchors (``TaskSampler`` has no public accessor).
    """
    offsets = np.concatenate([tasks._support_idx, tasks._query_idx])
    rows = np.unique((tasks._anchors[:, None] + offsets[None, :]).ravel())
    return tasks._X[rows], tasks._y[rows]


def train_gbm(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig,
    end: pd.Timestamp,
    exclude: Spans | None = None,
) -> TrainedGbm:
    """Train the LightGBM baseline on the training tasks' pooled rows, strictly before ``end``.

    The rows are those of the learners' training tasks (labels realised before the
    validation split); the round count is kept by the lowest query MSE on the same
    validation tasks (:data:`VAL_TASKS` of the last ``cfg.val_years``, their query rows),
    unadapted, as it is traded.

    Args:
        frames: name -> validated OHLCV frame to train on.
        cfg: the configuration (features, support, query, ``val_years``, seed).
        end: cut-off date (the test period's first day).
        exclude: date spans no training or validation row reads (:func:`train_learner`).
            Default None.

    Returns:
        :class:`TrainedGbm`.

    Raises:
        ConfigError: too little data before ``end``.
    """
    tic = time.perf_counter()
    bars_per_year = run_bars_per_year(frames, cfg)
    loss = cfg.task_loss(bars_per_year)
    train, val, dates = _tasks(
        frames,
        cfg,
        end,
        support=cfg.support,
        extras=loss is not None,
        bars_per_year=bars_per_year,
        exclude=exclude,
    )
    x, y = _pooled_rows(train)
    val_batch = val.fixed(VAL_TASKS, cfg.seed)
    xq, yq = val_batch[2], val_batch[3]
    xv = xq.numpy().reshape(-1, xq.shape[-1])
    yv = yq.numpy().reshape(-1)
    objective = _objective_score(loss, val_batch)
    score = None
    if objective is not None:
        target = yq.numpy().astype(np.float64)

        def score(pred: np.ndarray) -> float:  # LightGBM's rows are the tasks' query rows
            return objective(pred.reshape(target.shape), target)

    gbm = GbmAdapter.train(cfg.spec, x, y, xv, yv, seed=cfg.seed, score=score)
    # predicting zero: the labels' mean square, or (P&L objectives) a flat book: 0
    zero = float((yq.double() ** 2).mean()) if loss is None else 0.0
    return TrainedGbm(
        gbm, zero, dates, time.perf_counter() - tic, cfg.objective, tuple(exclude or ())
    )


def train_roster(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig,
    end: pd.Timestamp,
    *,
    progress: bool = True,
    log: Log = silent,
) -> RosterModels:
    """Train every part of the roster (:data:`ROSTER_PARTS`) strictly before ``end``.

    The meta-learner, ERM twice (the same seed and budget; θ kept after adaptation for
    ErmAdapt, unadapted for ErmStatic), scratch, the linear baselines' settings and the
    LightGBM model, every one selected by its query MSE on the same validation tasks (the
    last ``cfg.val_years`` before ``end``) from grids and budgets fixed in code
    (:data:`RIDGE_GRID`, :data:`RLS_GRID`, ``metabt.learn.trees.GBM_ROUNDS``).

    Args:
        frames: name -> validated OHLCV frame to train on.
        cfg: the configuration (``cfg.algorithm`` is the meta-learner's).
        end: cut-off date (the test period's first day).
        progress: show training progress bars.
        log: receives the summary lines.

    Returns:
        :class:`RosterModels`.

    Raises:
        ConfigError: too little data before ``end``; a learner whose training range
            reaches ``end``.
    """
    done = {part: train_part(frames, cfg, end, part, progress=progress) for part in ROSTER_PARTS}
    for part in ROSTER_PARTS:
        for line in done[part][1]:
            log(line)
    meta, erm, erm_static, scratch, gbm = (
        done[part][0] for part in ("meta", "erm", "erm_static", "scratch", "gbm")
    )
    alpha, lam, scores = done["linear"][0]
    models = RosterModels(
        meta, erm, erm_static, scratch, gbm, alpha, lam, scores, objective=cfg.objective,
        bars_per_year=run_bars_per_year(frames, cfg),
    )  # fmt: skip
    log(models.summary())
    return models


#: The learner parts of :data:`ROSTER_PARTS`: part -> (algorithm or None for
#: ``cfg.algorithm``, ``val_steps`` of the selection rule).
LEARNER_PARTS: Mapping[str, tuple[str | None, int | None]] = MappingProxyType(
    {
        "meta": (None, None),
        "erm": ("erm", None),
        "erm_static": ("erm", 0),
        "scratch": ("scratch", None),
    }
)


def train_part(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig,
    end: pd.Timestamp,
    part: str,
    *,
    progress: bool = True,
    exclude: Spans | None = None,
) -> tuple[Any, list[str]]:
    """One training part of the roster (:data:`ROSTER_PARTS`) and its summary lines.

    A learner part (:data:`LEARNER_PARTS`) returns a :class:`TrainedLearner`; ``linear``
    returns (ridge alpha, RLS forgetting, the selection scores); ``gbm`` a
    :class:`TrainedGbm`.

    Args:
        frames: name -> validated OHLCV frame to train on.
        cfg: the configuration.
        end: cut-off date (the test period's first day).
        part: one of :data:`ROSTER_PARTS`.
        progress: show the training progress bar.
        exclude: date spans no part reads a bar of (a CPCV split's test groups, purged and
            embargoed; ``end`` is then the day after the last bar trained on): the learners
            are checked by :func:`check_excluded` instead of :func:`check_no_leak`.
            Default None: trained strictly before ``end``.

    Returns:
        (the part's result, its summary lines).

    Raises:
        ConfigError: too little data before ``end``; a training range that reaches it;
            an unknown part.
    """
    if part in LEARNER_PARTS:
        algorithm, val_steps = LEARNER_PARTS[part]
        algo_cfg = cfg.with_(algorithm=algorithm or cfg.algorithm)
        trained = train_learner(
            frames, algo_cfg, end=end, progress=progress, val_steps=val_steps, exclude=exclude
        )
        if exclude:
            check_excluded(trained.learner, exclude)
        check_no_leak(trained.learner, end)
        return trained, trained.summary(algo_cfg, list(frames))
    if part == "linear":
        alpha, lam, scores, lines = select_linear(frames, cfg, end, exclude)
        return (alpha, lam, scores), lines
    if part == "gbm":
        gbm = train_gbm(frames, cfg, end, exclude)
        if pd.Timestamp(gbm.train_range[1]) >= end:  # honesty rule 2, as check_no_leak
            raise ConfigError(f"LightGBM's training rows reach {gbm.train_range[1]}, past {end}")
        return gbm, gbm.summary(list(frames))
    raise ConfigError(f"unknown roster part {part!r}; one of {', '.join(ROSTER_PARTS)}")


#: The training jobs of one roster, each a unit of its own when the roster is scheduled
#: (:func:`train_part`): the meta-learner, ERM selected after adaptation (``erm``) and
#: unadapted (``erm_static``), scratch, the linear baselines' selection and LightGBM.
ROSTER_PARTS = ("meta", "erm", "erm_static", "scratch", "linear", "gbm")
