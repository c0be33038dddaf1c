"""The roster a comparison runs: every strategy declared once, with what it needs.

:data:`ROSTER` holds, per strategy, its name, class, keyword arguments (built from the
trained parts of :mod:`metabt.experiments.parts` and the :class:`RunConfig`), the training
parts it needs and whether it trades a trained learner; the strategy list (:func:`roster`),
the parts each backtest waits for (:data:`STRATEGY_NEEDS`) and the ``untrained`` column
(:func:`untrained`) are derived from it. Every strategy shares the same schedule, support,
label, sizer and ``smooth``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from metabt.config.defaults import RunConfig
from metabt.errors import ConfigError
from metabt.experiments.parts import (
    RLS_SUPPORT,
    ROSTER_PARTS,
    RosterModels,
    _ridge,
)
from metabt.strategies.baselines import (
    BuyAndHold,
    ConstantLong,
    ErmAdapt,
    ErmStatic,
    RecursiveLeastSquares,
    ScratchAdapt,
    SmaCross,
    StaticModel,
    TimeSeriesMomentum,
    control_windows,
)
from metabt.strategies.meta import MetaStrategy

__all__ = [
    "ALWAYS_RUN",
    "ROSTER",
    "ROSTER_PARTS",
    "RosterEntry",
    "STRATEGY_NEEDS",
    "needed_parts",
    "roster",
    "roster_entries",
    "untrained",
]


def _schedule(cfg: RunConfig) -> dict[str, Any]:
    """The schedule every adapting strategy shares (and the traded signal's ``smooth``)."""
    return {
        "adapt_every": cfg.adapt_every,
        "support": cfg.support,
        "seed": cfg.seed,
        "smooth": cfg.smooth,
    }


def _meta(models: RosterModels, cfg: RunConfig) -> dict[str, Any]:
    return {"learner": models.meta.learner, **_schedule(cfg)}


def _erm(models: RosterModels, cfg: RunConfig) -> dict[str, Any]:
    return {"learner": models.erm.learner, **_schedule(cfg)}


def _erm_static(models: RosterModels, cfg: RunConfig) -> dict[str, Any]:
    return {"learner": models.erm_static.learner, **_schedule(cfg)}


def _smooth(models: RosterModels, cfg: RunConfig) -> dict[str, Any]:
    return {"smooth": cfg.smooth}


def _sma(models: RosterModels, cfg: RunConfig) -> dict[str, Any]:
    """SmaCross's 50/200-day windows at the run's bars, and the run's smoothing."""
    windows = control_windows(models.bars_per_year)
    return {"fast": windows["sma_fast"], "slow": windows["sma_slow"], "smooth": cfg.smooth}


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


#: The roster, in table order: one declaration per strategy, from which :func:`roster`,
#: :data:`STRATEGY_NEEDS` and :func:`untrained` are derived. Every signal-trading entry
#: gets ``cfg.smooth``; every learned one is selected by its validation query MSE on the
#: same validation tasks, scored as it is traded.
ROSTER: tuple[RosterEntry, ...] = (
    # the meta-learner, re-adapted every adapt_every bars
    RosterEntry("MetaStrategy", MetaStrategy, _meta, ("meta",), trained=True),
    # with cfg.online_meta_lr > 0: its θ takes online meta-updates during the backtest
    RosterEntry(
        "MetaOnline",
        MetaStrategy,
        lambda m, cfg: {**_meta(m, cfg), "online_meta_lr": cfg.online_meta_lr},
        ("meta",),
        trained=True,
        enabled=lambda cfg: cfg.online_meta_lr > 0,
    ),
    # the market observer: also adapts when its realised error jumps
    RosterEntry(
        "MetaDrift",
        MetaStrategy,
        lambda m, cfg: {**_meta(m, cfg), "drift_threshold": 2.0},
        ("meta",),
        trained=True,
    ),
    # the meta-learner's own kept θ, never adapted: an ablation of adaptation (what the
    # rolling adaptation adds), not a separately selected static model (that is ErmStatic)
    RosterEntry("StaticModel", StaticModel, _meta, ("meta",), trained=True),
    # ERM's θ kept by its validation MSE unadapted, as it is traded
    RosterEntry("ErmStatic", ErmStatic, _erm_static, ("erm_static",), trained=True),
    # ERM's θ kept by its validation MSE after adaptation, fine-tuned like MetaStrategy
    RosterEntry("ErmAdapt", ErmAdapt, _erm, ("erm",), trained=True),
    # the same fine-tuning from a random initialisation
    RosterEntry(
        "ScratchAdapt",
        ScratchAdapt,
        lambda m, cfg: {"learner": m.scratch.learner, **_schedule(cfg)},
        ("scratch",),
    ),
    # ridge refitted on each support window (α from RIDGE_GRID; ∞: the zero forecast),
    # through MetaStrategy's adapter path like RollingRidge
    RosterEntry(
        "RollingRidge",
        MetaStrategy,
        lambda m, cfg: {"learner": _ridge(cfg.spec, m.ridge_alpha), **_schedule(cfg)},
        ("linear",),
    ),
    # recursive least squares with forgetting, updated every bar over RLS_SUPPORT bars
    RosterEntry(
        "RecursiveLeastSquares",
        RecursiveLeastSquares,
        lambda m, cfg: {
            "feature_spec": cfg.spec,
            "forgetting": m.rls_forgetting,
            "support": RLS_SUPPORT,
            "seed": cfg.seed,
            "smooth": cfg.smooth,
        },
        ("linear",),
    ),
    # gradient-boosted trees trained once on the training tasks' rows (static)
    RosterEntry(
        "LightGBM",
        MetaStrategy,
        lambda m, cfg: {"learner": m.gbm.learner, **_schedule(cfg)},
        ("gbm",),
    ),
    # controls, no training: 12-month time-series momentum (its look-back scaled to the
    # run's bars) and a constant long
    RosterEntry(
        "TimeSeriesMomentum",
        TimeSeriesMomentum,
        lambda m, cfg: {
            "lookback": control_windows(m.bars_per_year)["momentum_lookback"],
            "smooth": cfg.smooth,
        },
    ),
    RosterEntry("ConstantLong", ConstantLong, _smooth),
    # the equal-weight basket (no signal to smooth) and the SMA crossover
    RosterEntry("BuyAndHold", BuyAndHold),
    RosterEntry("SmaCross", SmaCross, _sma),
)

#: The training parts each strategy of :data:`ROSTER` needs (from its declaration): its
#: backtest starts as soon as these are done.
STRATEGY_NEEDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {entry.name: entry.needs for entry in ROSTER}
)


#: The entries every roster runs whatever ``RunConfig.baselines`` says: the subject and
#: the benchmark (the equal-weight basket every verdict and tearsheet is measured against).
ALWAYS_RUN: tuple[str, ...] = ("MetaStrategy", "BuyAndHold")


def roster_entries(cfg: RunConfig) -> list[RosterEntry]:
    """The entries of :data:`ROSTER` the roster of ``cfg`` has, in table order.

    Args:
        cfg: the configuration (MetaOnline needs ``online_meta_lr > 0``;
            ``cfg.baselines``, if given, keeps only those entries beside
            :data:`ALWAYS_RUN`).

    Returns:
        The enabled entries.

    Raises:
        ConfigError: a name in ``cfg.baselines`` that is not on the roster (the message
            lists the names).
    """
    entries = [entry for entry in ROSTER if entry.enabled(cfg)]
    if cfg.baselines is None:
        return entries
    names = [entry.name for entry in ROSTER]
    unknown = [n for n in cfg.baselines if n not in names]
    if unknown:
        hints = [difflib.get_close_matches(n, names, n=1) for n in unknown]
        hint = "; ".join(f"{n!r}: did you mean {h[0]!r}?" for n, h in zip(unknown, hints) if h)
        raise ConfigError(
            f"baselines: {', '.join(map(repr, unknown))} not on the roster"
            + (f" ({hint})" if hint else "")
            + f"; the names are {', '.join(names)}"
        )
    keep = set(cfg.baselines) | set(ALWAYS_RUN)
    return [entry for entry in entries if entry.name in keep]


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


def untrained(models: RosterModels, entries: Sequence[RosterEntry] = ROSTER) -> dict[str, bool]:
    """Strategy name -> True if it trades a learner whose kept θ is its initialisation.

    Args:
        models: what was trained (every part ``entries`` need done).
        entries: the roster's entries (default: all of :data:`ROSTER`).

    Returns:
        One flag per entry.
    """
    return {entry.name: entry.untrained(models) for entry in entries}


def needed_parts(entries: Sequence[RosterEntry]) -> tuple[str, ...]:
    """The training parts ``entries`` need, in :data:`ROSTER_PARTS` order.

    Args:
        entries: roster entries (e.g. :func:`roster_entries`).

    Returns:
        The parts, each once.
    """
    needs = {part for entry in entries for part in entry.needs}
    return tuple(part for part in ROSTER_PARTS if part in needs)
