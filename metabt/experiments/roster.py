"""The training recipe: one configuration, the learners it trains, the roster it compares.

:class:`RunConfig` holds every setting of a run (features, model, learner, schedule,
sizer); :func:`train_learner` meta-trains strictly before a date; :func:`train_roster`
trains everything a comparison needs (the meta-learner, a jointly trained ERM model, a
scratch model, and the linear baselines' penalties chosen on validation tasks) and
:func:`roster` lists the strategies, each with the same schedule, support and label.

The roster is declared once, in :data:`ROSTER`: per strategy its name, class, keyword
arguments, the training parts it needs and whether it trades a trained learner; the
strategy list (:func:`roster`), the parts each backtest waits for (:data:`STRATEGY_NEEDS`)
and the ``untrained`` column (:func:`untrained`) are derived from it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pandas as pd
import torch

from metabt.config.defaults import DEMO, RunConfig
from metabt.data.bars import check_same_bars, common_frequency
from metabt.errors import ConfigError
from metabt.experiments.log import Log, silent
from metabt.features.tasks import TaskSampler
from metabt.learn.learner import FitResult, MetaLearner
from metabt.learn.linear import RidgeAdapter, RLSAdapter, select_by_validation
from metabt.learn.models import build_model
from metabt.strategies.baselines import (
    BuyAndHold,
    ErmAdapt,
    ErmStatic,
    RecursiveLeastSquares,
    RollingRidge,
    ScratchAdapt,
    SmaCross,
    StaticModel,
)
from metabt.strategies.meta import MetaStrategy

__all__ = [
    "RIDGE_GRID",
    "RLS_DEFAULT",
    "RLS_GRID",
    "RLS_SUPPORT",
    "ROSTER",
    "ROSTER_PARTS",
    "RosterEntry",
    "RosterModels",
    "STRATEGY_NEEDS",
    "TrainedLearner",
    "check_no_leak",
    "check_train_config",
    "roster",
    "roster_entries",
    "select_linear",
    "train_learner",
    "train_roster",
    "untrained",
]

#: Ridge penalties tried on the validation tasks (fixed before any run).
RIDGE_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
#: RLS forgetting factors tried on the validation tasks (fixed before any run).
RLS_GRID = (0.95, 0.98, 0.99, 0.995, 1.0)
#: Realised pairs the RLS recursion runs over, bars.
RLS_SUPPORT = 200
#: RLS forgetting used when the validation window is too short to choose one.
RLS_DEFAULT = 0.99
#: Validation tasks drawn to select hyper-parameters and report validation losses.
VAL_TASKS = 64


@dataclass
class TrainedLearner:
    """The outcome of :func:`train_learner`.

    Attributes:
        learner: the trained learner.
        fit: what ``MetaLearner.fit`` did.
        val_loss: validation query MSE after adaptation of the kept θ.
        val_init_loss: the same at the initialisation (before any training).
        val_zero_mse: validation query MSE of always predicting 0 (no view), the
            baseline a useful model must beat.
        fixed_budget: True for joint training (``erm``): ``steps`` outer steps, last θ
            kept, no validation keep-best.
        seconds: wall time of the training, seconds.
    """

    learner: MetaLearner
    fit: FitResult
    val_loss: float
    val_init_loss: float
    val_zero_mse: float
    fixed_budget: bool = False
    seconds: float = 0.0

    @property
    def untrained(self) -> bool:
        """True when keep-best kept the initialisation: the result is not a trained model."""
        return not self.fixed_budget and self.fit.steps > 0 and self.fit.best_step == 0

    def bars(self) -> str:
        """The training bars' frequency, e.g. ``"daily bars, 252 a year"``."""
        record = self.learner.train_config or {}
        name, count = record.get("bar_frequency"), record.get("bars_per_year")
        if name is None or count is None:
            return "bars of unknown frequency"
        return f"{name} bars, {float(count):,.0f} a year"

    def summary(self, cfg: RunConfig, names: Sequence[str]) -> list[str]:
        """Lines that say what was trained, on what, and how well it validated."""
        learner, fit = self.learner, self.fit
        assert learner.train_range is not None
        if self.fixed_budget:
            how = (
                f"trained {learner.algorithm} ({cfg.model_config()['type']}, "
                f"engine {learner.engine}) "
                f"jointly on {_assets(names)} ({self.bars()}) from {learner.train_range[0]} to "
                f"{learner.train_range[1]}: {fit.steps} steps (a fixed budget, last θ kept) "
                f"in {self.seconds:.1f}s; validation query MSE after adaptation "
                f"{self.val_loss:.4f} (initialisation {self.val_init_loss:.4f})"
            )
        else:
            how = (
                f"meta-trained {learner.algorithm} ({cfg.model_config()['type']}, "
                f"engine {learner.engine}) "
                f"on {_assets(names)} ({self.bars()}) from {learner.train_range[0]} to "
                f"{learner.train_range[1]}: {fit.steps} steps in {self.seconds:.1f}s; "
                f"validation query MSE after adaptation {fit.best_val_loss:.4f} (step "
                f"{fit.best_step})"
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
                f"note: on validation, {learner.algorithm} after adaptation does not beat "
                f"predicting zero ({self.val_loss:.4f} vs {self.val_zero_mse:.4f}): expect "
                "no information in its signal"
            )
        return lines


def _assets(names: Sequence[str], shown: int = 6) -> str:
    """Asset names for a log line: all of a few, the first and last of a universe."""
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
) -> tuple[TaskSampler, TaskSampler, tuple[str, str]]:
    """Training and validation tasks strictly before ``end``, split ``val_years`` before it."""
    first = min(f.index[0] for f in frames.values())
    if first >= end:
        raise ConfigError(
            f"no training data before {end.date()} (data starts {first.date()}); "
            "pick a later cut-off date or give earlier training data"
        )
    split = end - pd.DateOffset(days=round(365.25 * cfg.val_years))
    tasks = TaskSampler.from_frames(
        frames, cfg.spec, support=support, query=cfg.query, end=end, window=window
    )
    try:
        train, val = tasks.split(split)
    except ConfigError as exc:
        part = "training" if "train part" in str(exc) else "validation"
        raise ConfigError(
            f"holding out the last {cfg.val_years:g} years before {end.date()} for validation "
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


def train_learner(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig = DEMO,
    *,
    end: str | pd.Timestamp | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    checkpoint_every: int = 50,
    progress: bool = True,
) -> TrainedLearner:
    """Train a learner on ``frames`` strictly before ``end`` (default ``cfg.start``).

    The last ``cfg.val_years`` years before ``end`` give the validation tasks, the rest
    the training tasks; every task's labels are realised before the split or before
    ``end`` respectively. Meta-learners (and ``scratch``) keep θ with the best validation
    loss; ``erm`` is ordinary joint training for a fixed, stated budget of
    ``cfg.meta_steps`` steps, its last θ kept (a keep-best at step 0 would silently make
    it the random initialisation).

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

    Returns:
        A :class:`TrainedLearner`.

    Raises:
        ConfigError: no data before ``end``, or too little for one task.
    """
    end_ts = pd.Timestamp(end if end is not None else cfg.start)
    # one bar frequency for all training frames (mixed daily/hourly is refused here); the
    # recorded name is always the detected spacing, so that a backtest compares like with
    # like whether or not bars_per_year was given
    frequency = common_frequency({name: frame.index for name, frame in frames.items()}, None)
    bars_per_year = cfg.sizer.get("bars_per_year") or frequency.bars_per_year
    tic = time.perf_counter()
    with torch.random.fork_rng():  # a user model initialises from torch's global generator
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model_config())
    window = int(getattr(model, "window", 1))
    train, val, date_range = _tasks(frames, cfg, end_ts, support=cfg.support, window=window)
    learner = MetaLearner(
        model,
        algorithm=cfg.algorithm,
        inner_lr=cfg.inner_rate,
        inner_steps=cfg.inner_steps,
        meta_lr=cfg.meta_lr,
        seed=cfg.seed,
        feature_spec=cfg.spec,
    )
    fixed = cfg.algorithm == "erm"
    val_batch = val.fixed(VAL_TASKS, cfg.seed)
    init_loss = learner.evaluate(*val_batch) if fixed else math.nan
    result = learner.fit(
        train,
        cfg.meta_steps,
        batch_size=cfg.batch_size,
        val_tasks=None if fixed else val,
        val_every=checkpoint_every,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
    )
    learner.train_range = date_range
    if fixed:
        val_loss = learner.evaluate(*val_batch)
    else:
        val_loss = result.best_val_loss
        init_loss = result.val_losses[0][1] if result.val_losses else math.nan
    zero = float((val_batch[3].double() ** 2).mean())
    trained = TrainedLearner(
        learner, result, val_loss, init_loss, zero, fixed, time.perf_counter() - tic
    )
    learner.train_config = {
        "support": cfg.support,
        "query": cfg.query,
        "horizon": cfg.spec.horizon,
        "val_years": cfg.val_years,
        "steps": result.steps,
        "fixed_budget": fixed,
        "untrained": trained.untrained,
        "val_loss": val_loss,
        "val_zero_mse": zero,
        "bar_frequency": frequency.name,
        "bars_per_year": float(bars_per_year),
    }
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


@dataclass
class RosterModels:
    """Everything a comparison trains strictly before its test period.

    Attributes:
        meta: the meta-learner (``cfg.algorithm``).
        erm: the jointly trained model (fixed budget).
        scratch: the random initialisation (no training).
        ridge_alpha: RollingRidge's penalty, chosen on the validation tasks.
        rls_forgetting: RecursiveLeastSquares' λ, chosen on the validation tasks.
        selection: hyper-parameter -> {value: validation query MSE} of both choices.
    """

    meta: TrainedLearner
    erm: TrainedLearner
    scratch: TrainedLearner
    ridge_alpha: float
    rls_forgetting: float
    selection: dict[str, dict[float, float]] = field(default_factory=dict)

    def summary(self) -> str:
        """The linear baselines' choices in one line."""
        ridge = self.selection.get("ridge_alpha", {})
        rls = self.selection.get("rls_forgetting", {})
        return (
            f"chosen on the validation tasks: RollingRidge alpha {self.ridge_alpha:g} "
            f"(query MSE {ridge.get(self.ridge_alpha, math.nan):.4f}), RecursiveLeastSquares "
            f"forgetting {self.rls_forgetting:g} (query MSE "
            f"{rls.get(self.rls_forgetting, math.nan):.4f}, over {RLS_SUPPORT} bars)"
        )


def select_linear(
    frames: Mapping[str, pd.DataFrame], cfg: RunConfig, end: pd.Timestamp
) -> tuple[float, float, dict[str, dict[float, float]], list[str]]:
    """Choose the linear baselines' settings on validation tasks strictly before ``end``.

    The ridge penalty from :data:`RIDGE_GRID` on the validation tasks of the learners
    (the last ``cfg.val_years`` before ``end``); the RLS forgetting factor from
    :data:`RLS_GRID` on validation tasks with RLS's longer support (:data:`RLS_SUPPORT`),
    or :data:`RLS_DEFAULT` when the validation window is too short for them.

    Args:
        frames: name -> validated OHLCV frame to train on.
        cfg: the configuration (features, support, query, ``val_years``, seed).
        end: cut-off date (the test period's first day).

    Returns:
        (ridge alpha, RLS forgetting, {"ridge_alpha": scores, "rls_forgetting": scores},
        note lines).

    Raises:
        ConfigError: too little data before ``end`` for the validation tasks.
    """
    spec = cfg.spec
    lines: list[str] = []
    _, val, _ = _tasks(frames, cfg, end, support=cfg.support)
    alpha, ridge_scores = select_by_validation(
        lambda a: RidgeAdapter(spec, a), RIDGE_GRID, val.fixed(VAL_TASKS, cfg.seed)
    )
    lam = RLS_DEFAULT
    rls_scores: dict[float, float] = {}
    try:  # the validation window only: RLS's longer support needs no training tasks
        split = end - pd.DateOffset(days=round(365.25 * cfg.val_years))
        val_rls = TaskSampler.from_frames(
            frames, spec, support=RLS_SUPPORT, query=cfg.query, start=split, end=end
        )
    except ConfigError as exc:
        lines.append(
            f"note: too little validation data to choose RecursiveLeastSquares' "
            f"forgetting ({exc}); using {RLS_DEFAULT}"
        )
    else:
        lam, rls_scores = select_by_validation(
            lambda f: RLSAdapter(spec, f), RLS_GRID, val_rls.fixed(VAL_TASKS, cfg.seed)
        )
    return alpha, lam, {"ridge_alpha": ridge_scores, "rls_forgetting": rls_scores}, lines


def train_roster(
    frames: Mapping[str, pd.DataFrame],
    cfg: RunConfig,
    end: pd.Timestamp,
    *,
    progress: bool = True,
    log: Log = silent,
) -> RosterModels:
    """Train the meta-learner, ERM and scratch, and choose the linear baselines' settings.

    Everything uses only ``frames`` strictly before ``end``; the linear baselines'
    ridge penalty and RLS forgetting factor are chosen by validation query MSE on the same
    validation tasks (the last ``cfg.val_years`` before ``end``) from grids fixed in code
    (:data:`RIDGE_GRID`, :data:`RLS_GRID`).

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
    names = list(frames)
    trained = {}
    for key, algorithm in (("meta", cfg.algorithm), ("erm", "erm"), ("scratch", "scratch")):
        algo_cfg = cfg.with_(algorithm=algorithm)
        trained[key] = train_learner(frames, algo_cfg, end=end, progress=progress)
        check_no_leak(trained[key].learner, end)
        for line in trained[key].summary(algo_cfg, names):
            log(line)
    alpha, lam, scores, lines = select_linear(frames, cfg, end)
    for line in lines:
        log(line)
    models = RosterModels(
        trained["meta"],
        trained["erm"],
        trained["scratch"],
        alpha,
        lam,
        scores,
    )
    log(models.summary())
    return models


def _schedule(cfg: RunConfig) -> dict[str, Any]:
    """The schedule every adapting strategy shares."""
    return {"adapt_every": cfg.adapt_every, "support": cfg.support, "seed": cfg.seed}


def _meta(models: RosterModels, cfg: RunConfig) -> dict[str, Any]:
    return {"learner": models.meta.learner, **_schedule(cfg)}


def _erm(models: RosterModels, cfg: RunConfig) -> dict[str, Any]:
    return {"learner": models.erm.learner, **_schedule(cfg)}


def _nothing(models: RosterModels, cfg: RunConfig) -> dict[str, Any]:
    return {}


def _always(cfg: RunConfig) -> bool:
    return True


@dataclass(frozen=True)
class RosterEntry:
    """One strategy of the roster: everything the experiments need to know about it.

    Attributes:
        name: its label in tables.
        strategy: the backtrader strategy class.
        kwargs: (models, cfg) -> the strategy's keyword arguments.
        needs: the training parts (:data:`ROSTER_PARTS`) ``kwargs`` reads; its backtest
            can start as soon as these are done.
        trained: True if it trades a learner kept by validation (its first part's), so
            that its ``untrained`` flag is that learner's
            (:attr:`TrainedLearner.untrained`).
        enabled: cfg -> whether the roster of ``cfg`` has it. Default: always.
    """

    name: str
    strategy: type[Any]
    kwargs: Callable[[RosterModels, RunConfig], dict[str, Any]] = _nothing
    needs: tuple[str, ...] = ()
    trained: bool = False
    enabled: Callable[[RunConfig], bool] = _always

    def untrained(self, models: RosterModels) -> bool:
        """True if its learner's kept θ is the initialisation (only for ``trained``)."""
        return self.trained and bool(getattr(models, self.needs[0]).untrained)


#: The training jobs of one roster, each a unit of its own when the roster is scheduled:
#: the three learners of :func:`train_roster` and the linear baselines' selection.
ROSTER_PARTS = ("meta", "erm", "scratch", "linear")

#: The roster, in table order: one declaration per strategy, from which :func:`roster`,
#: :data:`STRATEGY_NEEDS` and :func:`untrained` are derived. MetaStrategy; MetaOnline
#: (with ``cfg.online_meta_lr > 0``: its θ takes online meta-updates during the backtest);
#: MetaDrift (the market observer, ``drift_threshold=2.0``); StaticModel (the meta-init,
#: never adapted); ErmStatic and ErmAdapt (the jointly trained model, never / likewise
#: fine-tuned); ScratchAdapt (the same fine-tuning from a random initialisation);
#: RollingRidge and RecursiveLeastSquares (classical adaptive linear models on the same
#: features and labels); BuyAndHold (the equal-weight basket); SmaCross.
ROSTER: tuple[RosterEntry, ...] = (
    RosterEntry("MetaStrategy", MetaStrategy, _meta, ("meta",), trained=True),
    RosterEntry(
        "MetaOnline",
        MetaStrategy,
        lambda m, cfg: {**_meta(m, cfg), "online_meta_lr": cfg.online_meta_lr},
        ("meta",),
        trained=True,
        enabled=lambda cfg: cfg.online_meta_lr > 0,
    ),
    RosterEntry(
        "MetaDrift",
        MetaStrategy,
        lambda m, cfg: {**_meta(m, cfg), "drift_threshold": 2.0},
        ("meta",),
        trained=True,
    ),
    RosterEntry("StaticModel", StaticModel, _meta, ("meta",), trained=True),
    RosterEntry("ErmStatic", ErmStatic, _erm, ("erm",), trained=True),
    RosterEntry("ErmAdapt", ErmAdapt, _erm, ("erm",), trained=True),
    RosterEntry(
        "ScratchAdapt",
        ScratchAdapt,
        lambda m, cfg: {"learner": m.scratch.learner, **_schedule(cfg)},
        ("scratch",),
    ),
    RosterEntry(
        "RollingRidge",
        RollingRidge,
        lambda m, cfg: {"feature_spec": cfg.spec, "alpha": m.ridge_alpha, **_schedule(cfg)},
        ("linear",),
    ),
    RosterEntry(
        "RecursiveLeastSquares",
        RecursiveLeastSquares,
        lambda m, cfg: {
            "feature_spec": cfg.spec,
            "forgetting": m.rls_forgetting,
            "support": RLS_SUPPORT,
            "seed": cfg.seed,
        },
        ("linear",),
    ),
    RosterEntry("BuyAndHold", BuyAndHold),
    RosterEntry("SmaCross", SmaCross),
)

#: The training parts each strategy of :data:`ROSTER` needs (from its declaration): its
#: backtest starts as soon as these are done.
STRATEGY_NEEDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {entry.name: entry.needs for entry in ROSTER}
)


def roster_entries(cfg: RunConfig) -> list[RosterEntry]:
    """The entries of :data:`ROSTER` the roster of ``cfg`` has, in table order.

    Args:
        cfg: the configuration (MetaOnline needs ``online_meta_lr > 0``).

    Returns:
        The enabled entries.
    """
    return [entry for entry in ROSTER if entry.enabled(cfg)]


def roster(models: RosterModels, cfg: RunConfig) -> list[tuple[str, type[Any], dict[str, Any]]]:
    """The strategies of a comparison: (name, class, params), the same schedule for all.

    The entries of :data:`ROSTER` that ``cfg`` enables, each with its keyword arguments
    built from ``models`` and ``cfg``.

    Args:
        models: what was trained before the test period.
        cfg: the configuration (schedule, features, ``online_meta_lr``).

    Returns:
        [(name, strategy class, keyword arguments), ...] in table order.
    """
    return [(e.name, e.strategy, e.kwargs(models, cfg)) for e in roster_entries(cfg)]


def untrained(models: RosterModels) -> dict[str, bool]:
    """Strategy name -> True if it trades a learner whose kept θ is its initialisation.

    Args:
        models: what was trained (every part done).

    Returns:
        One flag per entry of :data:`ROSTER`.
    """
    return {entry.name: entry.untrained(models) for entry in ROSTER}
