"""The configuration of a run: every setting in one frozen dataclass, importable without torch.

The command line builds its defaults from :data:`DEMO` and its choices from the name
tuples here, so ``metabt --help`` and usage errors never import torch or backtrader.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from metabt.errors import ConfigError
from metabt.features.spec import FeatureSpec
from metabt.learn.names import (
    ALGORITHM_NAMES,
    ENGINE_NAMES,
    INNER_LR,
    INNER_LR_BY_ALGORITHM,
    INNER_OBJECTIVES,
    MODEL_TYPES,
    OBJECTIVES,
    PAIRED_ALGORITHMS,
    check_algorithm,
    default_inner_lr,
)

if TYPE_CHECKING:
    from metabt.learn.losses import PnLLoss

__all__ = [
    "ALGORITHM_NAMES",
    "DEMO",
    "ENGINE_NAMES",
    "INNER_LR",
    "INNER_LR_BY_ALGORITHM",
    "INNER_OBJECTIVES",
    "LIMITS",
    "LIST_LIMITS",
    "Limit",
    "MODEL_TYPES",
    "OBJECTIVES",
    "RunConfig",
    "SIZER_SETTINGS",
    "VAL_YEARS",
    "check_limit",
    "default_inner_lr",
]

#: The validation hold-out of a run whose history is at least 3 x as long, years.
VAL_YEARS = 2.0

#: Algorithms that imply their model type: with the default ``model_type="mlp"`` they build
#: the model of their own name (:meth:`RunConfig.model_config`).
_PAIRED = PAIRED_ALGORITHMS


class Limit(NamedTuple):
    """The accepted range of a numeric setting: ``low`` to ``high`` (both included, or
    ``low`` excluded when ``above``), in ``unit``; ``integer``: whole numbers only."""

    low: float
    high: float
    unit: str
    integer: bool = True
    above: bool = False

    def describe(self) -> str:
        """The range in words: ``"from 1 to 100,000 bars"``, ``"above 0, at most 100 years"``."""
        high = f"{self.high:,}" if self.integer else f"{self.high:,g}"
        if self.above:
            return f"above {self.low:,g}, at most {high} {self.unit}".rstrip()
        return f"from {self.low:,g} to {high} {self.unit}".rstrip()


def _int(high: int, unit: str, low: int = 1) -> Limit:
    return Limit(low, high, unit)


def _float(high: float, unit: str, *, above: bool = False) -> Limit:
    return Limit(0.0, high, unit, integer=False, above=above)


#: Bounds of every numeric setting (config-file / flag names; a list setting bounds each
#: item). Generous, so no honest run meets them, but finite, so a typo such as
#: ``batch_size = 9223372036854775807`` or ``val_years = 1e308`` is refused at once rather
#: than allocating memory for hours. The config-file schema
#: (:class:`metabt.config.files.Options`), the command's flags and :class:`RunConfig` all
#: check them.
LIMITS: Mapping[str, Limit] = {
    "adapt_every": _int(100_000, "bars"),
    "bars_per_year": _float(1e8, "bars a year", above=True),
    "batch_size": _int(100_000, "tasks"),
    "borrow": _float(100_000, "bps a year"),
    "capacity": _float(1e15, "", above=True),
    "cash": _float(1e15, "", above=True),
    "deadband": _float(100, "(fraction of equity)"),
    "checkpoint_every": _int(10_000_000, "steps"),
    "commission": _float(10_000, "bps"),
    "fold_years": _int(100, "years"),
    "hidden": _int(65_536, "units"),
    "horizon": _int(10_000, "bars"),
    "impact": _float(100, "(square-root law coefficient)"),
    "inner_lr": _float(1_000, "", above=True),
    "inner_steps": _int(10_000, "steps"),
    "ks": _int(1_200, "months"),
    "meta_lr": _float(1_000, "", above=True),
    "min_trade": _float(100, "(fraction of value)"),
    "name_cap": _float(100, "(fraction of value)"),
    "net_leverage": _float(100, "(multiple of value)"),
    "online_meta_lr": _float(1_000, ""),
    "participation": _float(1, "(fraction of a bar's volume)", above=True),
    "poll": _float(3_600, "seconds", above=True),
    "query": _int(100_000, "bars"),
    "rebalance_band": _float(0.99, "(fraction of the target weight)"),
    "rebalance_every": _int(100_000, "bars"),
    "report_every": _int(10_000_000, "bars", low=0),
    "no_trade_bps": _float(10_000, "bps"),
    "seed": _int(2**32 - 1, "", low=0),
    "signal_scale": _float(1e6, "(signal units)", above=True),
    "seeds": _int(2**32 - 1, "", low=0),
    "slippage": _float(10_000, "bps"),
    "smooth": _int(100_000, "bars"),
    "smooth_grid": _int(100_000, "bars"),
    "spread": _float(10_000, "bps"),
    "stagger_timeout": _float(604_800, "seconds", above=True),
    "steps": _int(10_000_000, "steps"),
    "support": _int(100_000, "bars"),
    "threads": _int(1_024, "threads"),
    "train_years": _int(100, "years"),
    "cv_groups": _int(64, "groups", low=2),
    "cv_test_groups": _int(63, "groups"),
    "trials": _int(100_000, "trials"),
    "turnover_budget": _float(100, "(fraction of value)", above=True),
    "val_folds": _int(100, "folds"),
    "val_years": _float(100, "years", above=True),
    "workers": _int(4_096, "workers"),
}
#: The most items of a list setting (``hidden``: layers).
LIST_LIMITS: Mapping[str, int] = {
    "capacity": 20,
    "hidden": 64,
    "ks": 100,
    "seeds": 1_000,
    "smooth_grid": 100,
    "baselines": 64,
}


def check_limit(name: str, value: Any, limit: Limit | None = None) -> Any:
    """``value`` if it is a number in the range of setting ``name`` (:data:`LIMITS`).

    Args:
        name: the setting, named in the message (in backticks, so the command line
            shows its flag).
        value: the value.
        limit: the range (default ``LIMITS[name]``).

    Returns:
        ``value`` unchanged.

    Raises:
        ConfigError: not a number (a bool, or a fraction for an integer setting), not
            finite, or out of range; the message names the setting, the range and the value.
    """
    limit = LIMITS[name] if limit is None else limit
    kind: type = numbers.Integral if limit.integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok:
        low_ok = value > limit.low if limit.above else value >= limit.low
        ok = math.isfinite(value) and low_ok and value <= limit.high
    if not ok:
        what = "an integer" if limit.integer else "a number"
        raise ConfigError(
            f"`{name}` must be {what} {limit.describe()}, got {value!r}; give a value in that range"
        )
    return value


@dataclass(frozen=True)
class RunConfig:
    """Everything the main job (``metabt backtest`` with no arguments) uses.

    Attributes:
        start: first date of the backtest; meta-training uses only data strictly before it.
        spec: the causal features and the label horizon (bars).
        model_type: one of ``metabt.learn.models.MODEL_TYPES`` ("cnp", "protonet" and "cavia"
            only with the algorithm of that name, which implies it), or the import path
            ``package.module:Class`` of a user ``torch.nn.Module`` built as
            ``Class(n_features=F, **model_kwargs)``; hidden: MLP widths; gru_hidden,
            gru_window: GRU size.
        model_kwargs: keyword arguments of a user model (JSON primitives).
        algorithm: MetaLearner algorithm: one of ``ALGORITHM_NAMES``, or the import path
            ``package.module:Class`` of a user's ``metabt.LearnerFamily`` subclass (checked
            here as text; imported when the learner is built, only if trusted); inner_lr,
            inner_steps, meta_lr: its rates/steps (inner_lr None: the algorithm's default,
            :func:`default_inner_lr`).
        meta_steps: outer steps; batch_size: tasks per step.
        support, query: bars per support / query window (tasks and the strategy's support).
        adapt_every: bars between adaptations in the backtest.
        smooth: bars of signals averaged into the traded signal (SignalTrader's ``smooth``),
            given to every signal-trading strategy of a run alike (not BuyAndHold).
            Default 20, chosen on the demo's validation years only by
            ``scripts/choose_smoothing.py`` (best validation net Sharpe with validation
            turnover at most 40x a year; its run: ``benchmarks/results/
            choose_smoothing_run.log``).
        smooth_grid: the candidates of ``metabt compare`` and ``walkforward``: each
            signal-trading strategy of the roster trades the one that does best on the
            validation years by one rule (:mod:`metabt.experiments.smoothing`); empty:
            every strategy trades ``smooth``. Default (1, 5, 10, 20).
        no_trade_bps: MetaStrategy's cost-derived no-trade region
            (``SignalTrader.no_trade_bps``, basis points of a fill) in ``metabt backtest``
            and ``sweep``, its forecast calibrated to return units on the validation
            window before each test period
            (:func:`metabt.experiments.smoothing.no_trade_kwargs`); in ``compare`` and
            ``walkforward``, the band each strategy tries (default there: the run's cost
            per fill). 0 (the default): off.
        max_val_turnover: that rule's cap on validation two-way turnover (multiple of
            equity a year). Default 40.
        objective: what the outer loop minimises and keep-best selects on: ``"mse"`` (the
            forecast's error) or ``"sharpe"`` / ``"utility"``, the after-cost P&L of the
            sized, smoothed query path (:class:`metabt.learn.losses.PnLLoss`).
        partial_adjustment: with a P&L objective, learn a partial-adjustment rate κ with θ
            (each bar the position moves κ of the way to the sized forecast; Gârleanu &
            Pedersen 2013); the checkpoint records κ and MetaStrategy trades at it.
            Default False (κ = 1).
        inner_objective: what the meta-training inner loop descends with a P&L
            objective: ``"mse"`` (the support labels' error, default) or ``"same"`` (the
            objective on the support path; maml, fomaml, metasgd, anil, cavia). The
            backtest's adaptation descends the support MSE either way.
        fill_cost_bps: cost of one fill for the P&L objectives, basis points of traded
            value: the run's flat cost per fill, commission plus half-spread plus slippage
            (:attr:`metabt.costs.Costs.per_fill_bps`; 5 + 0 + 2 by default). Square-root
            impact is not in it: it grows with a fill's size, which no constant per unit
            traded represents, and depends on the capital traded.
        borrow_bps: short-borrow fee for the P&L objectives, basis points a year.
        online_meta_lr: outer-loop rate of MetaStrategy's online meta-updates of θ
            during the backtest (0: off).
        portfolio: None trades each asset's own signal (MetaStrategy); a dict of
            ``metabt.strategies.portfolio.CrossSectionalStrategy`` params (cross_section, book,
            name_cap, net_leverage, min_trade, turnover_budget, rebalance_every) trades a
            cross-sectional book across the universe instead.
        baselines: the roster strategies of ``metabt compare`` and ``walkforward`` to run
            beside MetaStrategy and BuyAndHold, which always run (the subject and the
            benchmark); names of ``metabt.experiments.roster.ROSTER``, checked there.
            None: the whole roster.
        val_years: the last years before the cut-off held out as validation tasks; None
            (the default): :data:`VAL_YEARS`, or a third of the training history when that
            is shorter (:meth:`hold_out_years`), so a few months of intraday bars get a
            validation set too.
        warmup_bars: bars fed before ``start`` so features and the first support are ready.
        sizer: SignalSizer params; ``rebalance_band`` chosen on validation with ``smooth``
            by ``scripts/choose_smoothing.py``.
        seed: seeds model initialisation and task sampling.
    """

    start: str = "2008-01-01"
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    model_type: str = "mlp"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    hidden: tuple[int, ...] = (32, 32)
    gru_hidden: int = 32
    gru_window: int = 10
    algorithm: str = "maml"
    inner_lr: float | None = None
    inner_steps: int = 5
    meta_lr: float = 1e-3
    meta_steps: int = 600
    batch_size: int = 16
    support: int = 60
    query: int = 20
    adapt_every: int = 5
    smooth: int = 20
    smooth_grid: tuple[int, ...] = (1, 5, 10, 20)
    no_trade_bps: float = 0.0
    max_val_turnover: float = 40.0
    objective: str = "mse"
    partial_adjustment: bool = False
    inner_objective: str = "mse"
    fill_cost_bps: float = 7.0
    borrow_bps: float = 25.0
    online_meta_lr: float = 0.0
    portfolio: Mapping[str, Any] | None = None
    baselines: tuple[str, ...] | None = None
    val_years: float | None = None
    warmup_bars: int = 300
    sizer: Mapping[str, Any] = field(
        default_factory=lambda: {
            "target_vol": 0.10,
            "max_leverage": 1.0,
            "deadband": 0.05,
            "rebalance_band": 0.5,
            "signal_scale": 0.25,
        }
    )
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every numeric setting against :data:`LIMITS` (a sweep's trial or a
        library caller reaches here without the config-file schema or the flags), and that
        ``algorithm`` is a built-in name or reads as an import path (nothing is imported)."""
        check_algorithm(self.algorithm)
        for attr, name in _CHECKED.items():
            value = getattr(self, attr)
            if attr in ("inner_lr", "val_years") and value is None:
                continue
            if name in LIST_LIMITS:
                if len(value) > LIST_LIMITS[name]:
                    raise ConfigError(
                        f"`{name}` has {len(value)} values, at most {LIST_LIMITS[name]} are "
                        "allowed; give fewer"
                    )
                for item in value:
                    check_limit(name, item)
            else:
                check_limit(name, value, _OWN_LIMITS.get(attr))
        if self.baselines is not None:
            names = self.baselines
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ConfigError(
                    f"`baselines` must be a list of roster names, got {names!r}; e.g. "
                    "['RollingRidge', 'LightGBM']"
                )
            if len(names) > LIST_LIMITS["baselines"]:
                raise ConfigError(
                    f"`baselines` has {len(names)} names, at most "
                    f"{LIST_LIMITS['baselines']} are allowed; give fewer"
                )

    def hold_out_years(self, history_years: float) -> float:
        """The years held out for validation before a cut-off.

        Args:
            history_years: the training history's span, years (first bar to the cut-off).

        Returns:
            ``val_years`` if given; else :data:`VAL_YEARS` (2), or a third of
            ``history_years`` when that is shorter (a 2:1 split of the history into
            training and validation).
        """
        if self.val_years is not None:
            return float(self.val_years)
        return min(VAL_YEARS, max(history_years, 0.0) / 3)

    @property
    def inner_rate(self) -> float:
        """The inner-loop learning rate: ``inner_lr``, or the algorithm's default if None."""
        return default_inner_lr(self.algorithm) if self.inner_lr is None else self.inner_lr

    def with_(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def strategy_kwargs(self) -> dict[str, Any]:
        """MetaStrategy params of this configuration (without the learner): the schedule."""
        out: dict[str, Any] = {
            "adapt_every": self.adapt_every,
            "support": self.support,
            "seed": self.seed,
        }
        out["smooth"] = self.smooth
        if self.online_meta_lr:
            out["online_meta_lr"] = self.online_meta_lr
        if self.portfolio is not None:
            out.update(self.portfolio)
        return out

    def model_config(self) -> dict[str, Any]:
        """The model's ``config()`` dict for ``metabt.learn.models.build_model``.

        The algorithms "cnp", "protonet" and "cavia" run only on the model of their name:
        with ``model_type="mlp"`` (the default) they get it (widths from ``hidden``: the CNP
        takes the widest as H, ProtoNet and CAVIA all of them; embedding 16 and context 4
        dims by default); any other ``model_type`` is kept, and a mismatch is refused by
        ``MetaLearner`` (ConfigError).

        Raises:
            ConfigError: ``model_type`` is not one of ``metabt.learn.models.MODEL_TYPES``.
        """
        _check_model_kwargs(self.model_type, self.model_kwargs)
        kind = self.model_type if self.model_type in _PAIRED else None
        if self.model_type == "mlp" and self.algorithm in _PAIRED:
            kind = self.algorithm
        if kind == "cnp":
            width = max(self.hidden, default=32)
            return {
                "type": kind,
                "n_features": self.spec.n_features,
                "hidden": width,
                "seed": self.seed,
            }
        if kind is not None:
            return {
                "type": kind,
                "n_features": self.spec.n_features,
                "hidden": list(self.hidden),
                "seed": self.seed,
            }
        if ":" in self.model_type:  # a user module, by import path
            return {
                "type": self.model_type,
                "n_features": self.spec.n_features,
                **dict(self.model_kwargs),
            }
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

    def task_loss(self, bars_per_year: float) -> PnLLoss | None:
        """The P&L query loss of ``objective`` (None for ``"mse"``): the run's sizer,
        ``smooth`` and costs (``fill_cost_bps``; ``borrow_bps`` a year over
        ``bars_per_year`` bars), ``partial_adjustment`` and ``inner_objective``.

        Raises:
            ConfigError: an unknown objective or inner objective (with the valid ones).
        """
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"objective {self.objective!r} is unknown; use one of {', '.join(OBJECTIVES)}"
            )
        if self.inner_objective not in INNER_OBJECTIVES:
            raise ConfigError(
                f"inner_objective {self.inner_objective!r} is unknown; use one of "
                f"{', '.join(INNER_OBJECTIVES)}"
            )
        if self.objective == "mse":
            return None
        from metabt.learn.losses import PnLLoss

        sizer = {k: v for k, v in self.sizer.items() if k in _SIZER_LOSS_PARAMS}
        return PnLLoss(
            objective=self.objective,
            fill_cost=self.fill_cost_bps / 1e4,
            borrow_per_bar=self.borrow_bps / 1e4 / bars_per_year,
            smooth=self.smooth,
            partial_adjustment=bool(self.partial_adjustment),
            inner_objective=self.inner_objective,
            **sizer,
        )

    def describe(self) -> dict[str, Any]:
        """The configuration as JSON primitives."""
        out = asdict(self)
        out["inner_lr"] = self.inner_rate
        out["spec"] = self.spec.to_dict()
        return out


def _check_model_kwargs(model_type: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse keyword arguments a built-in model would ignore, and non-finite numbers.

    Raises:
        ConfigError: ``kwargs`` given for a built-in model type, or holding NaN or inf.
    """
    if kwargs and ":" not in model_type:
        raise ConfigError(
            f"model_kwargs {sorted(kwargs)} apply to a user model only (model_type "
            f"'package.module:Class'); the built-in {model_type!r} model takes its sizes from "
            "hidden (and gru_hidden, gru_window for 'gru'): drop model_kwargs"
        )

    def walk(value: Any, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"model_kwargs{where} is {value!r}: a model argument must be a finite number"
            )
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{where}[{k!r}]")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    walk(dict(kwargs), "")


#: RunConfig fields checked by its ``__post_init__`` -> the setting whose limit applies.
_CHECKED: Mapping[str, str] = {
    "adapt_every": "adapt_every",
    "batch_size": "batch_size",
    "borrow_bps": "borrow",
    "fill_cost_bps": "fill_cost_bps",
    "gru_hidden": "gru_hidden",
    "gru_window": "gru_window",
    "hidden": "hidden",
    "inner_lr": "inner_lr",
    "inner_steps": "inner_steps",
    "max_val_turnover": "max_val_turnover",
    "meta_lr": "meta_lr",
    "meta_steps": "meta_steps",
    "no_trade_bps": "no_trade_bps",
    "online_meta_lr": "online_meta_lr",
    "query": "query",
    "seed": "seed",
    "smooth": "smooth",
    "smooth_grid": "smooth_grid",
    "support": "support",
    "val_years": "val_years",
    "warmup_bars": "warmup_bars",
}
#: Limits of RunConfig fields that are not settings of their own name.
_OWN_LIMITS: Mapping[str, Limit] = {
    "fill_cost_bps": _float(30_000, "bps (commission plus half-spread plus slippage)"),
    "gru_hidden": LIMITS["hidden"],
    "gru_window": _int(100_000, "bars"),
    "max_val_turnover": _float(1e6, "(multiple of equity a year)", above=True),
    "meta_steps": LIMITS["steps"],
    "warmup_bars": _int(1_000_000, "bars", low=0),
}

#: The SignalSizer params the P&L objective's sizing map takes.
_SIZER_LOSS_PARAMS = ("signal_scale", "target_vol", "max_leverage")
#: SignalSizer settings a command-line flag, a config file or a sweep may change.
SIZER_SETTINGS = ("deadband", "rebalance_band", "signal_scale")


DEMO = RunConfig()
