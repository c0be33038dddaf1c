"""Configuration files for the ``metabt`` command: TOML, validated with a pydantic schema.

A config file holds the same settings as the command's flags, with underscores
(``adapt_every = 5`` for ``--adapt-every 5``). Keys at the top level apply to every command
that has that option; a table named after a command (``[train]``, ``[compare]``, ...)
applies to that command only and wins over the top level. Flags given on the command line
win over both. Unknown keys are errors with the closest valid name; values are checked by
the schema (:class:`Options`) and then by the same converters as the flags.

``metabt config --example`` prints a documented template (:func:`example`).

Source: pydantic documentation, "Models" and "Validation errors"; TOML v1.0.0
(``tomllib``, Python 3.11+).
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metabt._checks import did_you_mean, read_small_text
from metabt.config.defaults import LIMITS, LIST_LIMITS
from metabt.errors import ConfigError

__all__ = [
    "COMMANDS",
    "ConfigFile",
    "EVERY_SETTING",
    "Options",
    "example",
    "load_config",
    "options_for",
]

#: Commands that read a config file (a table of that name holds settings for it only).
COMMANDS = ("train", "backtest", "compare", "walkforward", "sweep", "pricing", "paper")
#: Where an unknown-key message sends the reader for the valid settings (the command line
#: names its own command for the template, ``metabt.cli.main.flag_message``).
EVERY_SETTING = "the config template (metabt.config.files.example) lists every setting"

Files = list[str] | str


def _bound(name: str) -> Any:
    """The schema constraint of numeric setting ``name``: its range in
    :data:`metabt.config.defaults.LIMITS` (finite, for floats)."""
    limit = LIMITS[name]
    gt, ge = (limit.low, None) if limit.above else (None, limit.low)
    if limit.integer:
        return Field(gt=gt, ge=ge, le=int(limit.high))
    return Field(gt=gt, ge=ge, le=limit.high, allow_inf_nan=False)


def _doc(name: str, text: str) -> Any:
    """An optional setting's field: ``text`` with its range (and most items) appended."""
    note = LIMITS[name].describe()
    most = LIST_LIMITS.get(name)
    if most is not None:
        return Field(None, max_length=most, description=f"{text} (each {note}; at most {most})")
    return Field(None, description=f"{text} ({note})")


class Options(BaseModel):
    """Every setting a config file may hold (all optional; the flag's default otherwise).

    Units: dates as ``YYYY-MM-DD`` (TOML dates or strings), costs in basis points, windows
    in bars, durations in years.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # data and period
    data: Files | None = Field(None, description="OHLCV files to trade (CSV, .csv.gz, Parquet)")
    train_data: Files | None = Field(None, description="files to meta-train on (default: data)")
    start: dt.date | str | None = Field(None, description="first backtest date")
    end: dt.date | str | None = Field(None, description="last backtest date")
    train_end: dt.date | str | None = Field(
        None, description="train, pricing: last training date (month)"
    )
    bars_per_year: Annotated[float, _bound("bars_per_year")] | None = _doc(
        "bars_per_year", "bars per year (default: detected from the dates)"
    )
    # money and costs
    cash: Annotated[float, _bound("cash")] | None = _doc("cash", "starting cash")
    asset_class: str | None = Field(
        None,
        description="equity, fx, crypto or futures: the default costs, units and calendar "
        "(unset: US-equity costs, calendar from the dates)",
    )
    commission: Annotated[float, _bound("commission")] | None = _doc(
        "commission", "commission, bps of traded value (unset: the asset class's)"
    )
    spread: Annotated[float, _bound("spread")] | None = _doc(
        "spread", "half the bid-ask spread, bps of price (unset: the asset class's)"
    )
    slippage: Annotated[float, _bound("slippage")] | None = _doc(
        "slippage", "slippage, bps of price (unset: the asset class's)"
    )
    borrow: Annotated[float, _bound("borrow")] | None = _doc(
        "borrow", "short-borrow fee, bps a year (unset: the asset class's)"
    )
    impact: Annotated[float, _bound("impact")] | None = _doc(
        "impact", "square-root market impact coefficient k (0: off)"
    )
    participation: Annotated[float, _bound("participation")] | None = _doc(
        "participation", "largest fill, fraction of its bar's volume (unset: no cap)"
    )
    capacity: list[Annotated[float, _bound("capacity")]] | None = _doc(
        "capacity", "backtest: net Sharpe at each of these capitals (capacity curve)"
    )
    # schedule
    adapt_every: Annotated[int, _bound("adapt_every")] | None = _doc(
        "adapt_every", "bars between adaptations"
    )
    smooth: Annotated[int, _bound("smooth")] | None = _doc(
        "smooth", "forecasts averaged into the traded one"
    )
    deadband: Annotated[float, _bound("deadband")] | None = _doc(
        "deadband", "no trade within this weight change (fraction of equity)"
    )
    rebalance_band: Annotated[float, _bound("rebalance_band")] | None = _doc(
        "rebalance_band", "relative tolerance band on a position's size"
    )
    fractional: bool | None = Field(
        None, description="hold fractions of a unit (crypto, FX), not whole shares"
    )
    no_trade_bps: Annotated[float, _bound("no_trade_bps")] | None = _doc(
        "no_trade_bps",
        "MetaStrategy's no-trade region: trade only when the forecast return pays this cost "
        "of a fill (0: off; compare, walkforward: the band each strategy tries)",
    )
    cache: bool | None = Field(
        None,
        description="backtest: reuse a model trained on the same data and settings "
        "(false: train afresh)",
    )
    signal_scale: Annotated[float, _bound("signal_scale")] | None = _doc(
        "signal_scale", "signal size that earns the full volatility-target weight"
    )
    baselines: list[str] | None = Field(
        None,
        max_length=LIST_LIMITS["baselines"],
        description="compare, walkforward: the roster strategies to run beside MetaStrategy "
        "and BuyAndHold (default: all)",
    )
    smooth_grid: list[Annotated[int, _bound("smooth_grid")]] | None = _doc(
        "smooth_grid", "compare, walkforward: smoothing candidates chosen on validation"
    )
    support: Annotated[int, _bound("support")] | None = _doc(
        "support", "realised bars per support set"
    )
    query: Annotated[int, _bound("query")] | None = _doc("query", "bars per training query set")
    horizon: Annotated[int, _bound("horizon")] | None = _doc("horizon", "label horizon, bars")
    # learner
    algorithm: str | None = Field(None, description="meta-learning algorithm")
    model_type: str | None = Field(None, description="mlp, gru or an import path module:Class")
    model_kwargs: dict[str, Any] | None = Field(None, description="user model keyword arguments")
    hidden: list[Annotated[int, _bound("hidden")]] | None = _doc("hidden", "MLP hidden widths")
    features: list[str] | None = Field(None, description="extra features (import paths)")
    benchmark: str | None = Field(None, description="benchmark OHLCV file for factor features")
    steps: Annotated[int, _bound("steps")] | None = _doc("steps", "meta-training outer steps")
    inner_steps: Annotated[int, _bound("inner_steps")] | None = _doc(
        "inner_steps", "inner-loop steps per adaptation"
    )
    inner_lr: Annotated[float, _bound("inner_lr")] | None = _doc(
        "inner_lr", "inner-loop learning rate (unset: 0.02, or 1.0 for cavia)"
    )
    meta_lr: Annotated[float, _bound("meta_lr")] | None = _doc(
        "meta_lr", "outer-loop learning rate"
    )
    objective: str | None = Field(None, description="mse, sharpe or utility (meta-objective)")
    partial_adjustment: bool | None = Field(
        None, description="learn a partial-adjustment rate with a P&L objective"
    )
    inner_objective: str | None = Field(
        None, description="mse or same: what the meta-training inner loop descends"
    )
    batch_size: Annotated[int, _bound("batch_size")] | None = _doc(
        "batch_size", "tasks per outer step"
    )
    val_years: Annotated[float, _bound("val_years")] | None = _doc(
        "val_years",
        "years held out for validation (unset: 2, or a third of the training history when "
        "that is shorter)",
    )
    online_meta_lr: Annotated[float, _bound("online_meta_lr")] | None = _doc(
        "online_meta_lr", "outer-loop rate of online meta-updates during the backtest (0 = off)"
    )
    seed: Annotated[int, _bound("seed")] | None = _doc("seed", "seed")
    seeds: list[Annotated[int, _bound("seeds")]] | None = _doc(
        "seeds", "seeds to repeat the pipeline with"
    )
    threads: Annotated[int, _bound("threads")] | None = _doc("threads", "torch/BLAS threads")
    quiet: bool | None = Field(None, description="no progress bar")
    # outputs
    model: str | None = Field(None, description="a trained checkpoint to backtest")
    ledger: str | None = Field(
        None, description='trial ledger file ("off": none; default $METABT_LEDGER)'
    )
    report: str | None = Field(None, description="backtest tearsheet path")
    out: str | None = Field(None, description="output checkpoint (train) or folder")
    checkpoint_every: Annotated[int, _bound("checkpoint_every")] | None = _doc(
        "checkpoint_every", "train: save every N steps"
    )
    # paper trading
    state: str | None = Field(None, description="paper: the state folder (metabt writes it)")
    poll: Annotated[float, _bound("poll")] | None = _doc(
        "poll", "paper: seconds between looks at the followed files"
    )
    until: dt.date | str | None = Field(
        None, description="paper: stop once the last bar on or before this date is processed"
    )
    stagger_timeout: Annotated[float, _bound("stagger_timeout")] | None = _doc(
        "stagger_timeout",
        "paper: seconds to wait for lagging files before a bar time is processed without them "
        "(unset: wait for every file)",
    )
    report_every: Annotated[int, _bound("report_every")] | None = _doc(
        "report_every", "paper: bars between tearsheet and chart refreshes (0: at the end only)"
    )
    accept_broker: bool | None = Field(
        None,
        description="paper: on restart, take the broker's cash and positions when they differ "
        "from the saved state",
    )
    # experiments
    fold_years: Annotated[int, _bound("fold_years")] | None = _doc(
        "fold_years", "walkforward: years per fold"
    )
    train_years: Annotated[int, _bound("train_years")] | None = _doc(
        "train_years", "walkforward: rolling training years"
    )
    executor: str | None = Field(None, description="serial, process or ray")
    workers: Annotated[int, _bound("workers")] | None = _doc("workers", "parallel workers")
    ray_address: str | None = Field(None, description="Ray cluster address")
    trials: Annotated[int, _bound("trials")] | None = _doc("trials", "sweep: number of trials")
    portfolio: str | None = Field(None, description="backtest: per-asset or cross-sectional")
    cross_section: str | None = Field(None, description="cross-sectional: rank or zscore")
    book: str | None = Field(None, description="cross-sectional: dollar-neutral or long-only")
    name_cap: Annotated[float, _bound("name_cap")] | None = _doc(
        "name_cap", "cross-sectional: name cap"
    )
    net_leverage: Annotated[float, _bound("net_leverage")] | None = _doc(
        "net_leverage", "cross-sectional: net cap"
    )
    min_trade: Annotated[float, _bound("min_trade")] | None = _doc(
        "min_trade", "cross-sectional: minimum trade"
    )
    turnover_budget: Annotated[float, _bound("turnover_budget")] | None = _doc(
        "turnover_budget", "cross-sectional: budget"
    )
    rebalance_every: Annotated[int, _bound("rebalance_every")] | None = _doc(
        "rebalance_every", "cross-sectional: bars"
    )
    sampler: str | None = Field(None, description="sweep: grid or tpe")
    val_folds: Annotated[int, _bound("val_folds")] | None = _doc(
        "val_folds", "sweep: one-year validation folds"
    )
    cv: str | None = Field(
        None, description="sweep: walkforward or cpcv (trial scoring); walkforward: the same"
    )
    cv_groups: Annotated[int, _bound("cv_groups")] | None = _doc(
        "cv_groups", "walkforward cpcv: groups of the test window"
    )
    cv_test_groups: Annotated[int, _bound("cv_test_groups")] | None = _doc(
        "cv_test_groups", "walkforward cpcv: groups tested per split"
    )
    ks: list[Annotated[int, _bound("ks")]] | None = _doc(
        "ks", "pricing: months of history per model"
    )
    test_end: str | None = Field(None, description="pricing: last test month")
    portfolios: list[str] | None = Field(None, description="pricing: portfolios")
    nonlinear: bool | None = Field(None, description="pricing: a small MLP, not linear")
    space: dict[str, Any] | str | None = Field(
        None, description="sweep: search space (a table, or a TOML file)"
    )


class ConfigFile(Options):
    """A config file: top-level options plus one optional table per command."""

    train: Options | None = None
    backtest: Options | None = None
    compare: Options | None = None
    walkforward: Options | None = None
    sweep: Options | None = None
    pricing: Options | None = None
    paper: Options | None = None


def _known() -> list[str]:
    return [*Options.model_fields, *COMMANDS]


def _check_keys(raw: Mapping[str, Any], label: str) -> None:
    """Unknown keys, with the closest valid name (pydantic says only "extra inputs")."""
    for key, value in raw.items():
        where = label
        if key in COMMANDS and isinstance(value, Mapping):
            for inner in value:
                if inner not in Options.model_fields:
                    hint = did_you_mean(str(inner), Options.model_fields)
                    raise ConfigError(
                        f"{where}: [{key}] has no setting {inner!r}{hint}; {EVERY_SETTING}"
                    )
            continue
        if key not in Options.model_fields:
            raise ConfigError(
                f"{where}: unknown setting {key!r}{did_you_mean(str(key), _known())}; "
                f"{EVERY_SETTING}"
            )


def _explain(exc: ValidationError, label: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"] if not str(part).startswith("function"))
    # a union reports one error per member: name the key, the message and the value once
    loc = loc.split(".list[")[0].split(".str")[0].split(".date")[0]
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 80 else shown[:60] + "..."
    message = f"{label}: {loc}: {first['msg']} (got {shown})"
    name = next((part for part in reversed(loc.split(".")) if not part.isdigit()), loc)
    field = Options.model_fields.get(name)
    if first["type"] in _RANGE_ERRORS and field is not None and field.description:
        message += f"; allowed for {name}: {field.description}"
    return message


#: pydantic error types of a value out of range (the field's description gives the range).
_RANGE_ERRORS = (
    "finite_number",
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_long",
)


def load_config(path: str | os.PathLike[str]) -> ConfigFile:
    """Read and validate a TOML config file.

    Args:
        path: the ``.toml`` file.

    Returns:
        The validated :class:`ConfigFile`.

    Raises:
        ConfigError: the file is missing or unreadable, is not valid TOML (with the line),
            holds an unknown key (with the closest valid one) or a bad value (with the key,
            the problem and the value).
    """
    file = Path(path)
    label = str(file)
    if file.suffix.lower() not in (".toml", ""):
        raise ConfigError(f"config file {label}: config files are TOML; use a .toml file")
    text = read_small_text(file, f"config file {label}")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {label}: not valid TOML: {exc}") from exc
    _check_keys(raw, label)
    try:
        return ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, label)) from exc


def options_for(config: ConfigFile, command: str) -> dict[str, Any]:
    """The settings of one command: the top level, overridden by the command's table.

    Args:
        config: a loaded config file.
        command: one of :data:`COMMANDS`.

    Returns:
        setting name -> value, only the settings the file sets.
    """
    values = config.model_dump(exclude_none=True, include=set(Options.model_fields))
    table = getattr(config, command, None)
    if table is not None:
        values.update(table.model_dump(exclude_none=True))
    return values


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Example values shown for settings without a default.
EXAMPLES: Mapping[str, Any] = {
    "data": ["prices/SPY.csv", "prices/QQQ.csv"],
    "train_data": ["prices/IWM.csv"],
    "end": "2017-12-31",
    "train_end": "2008-01-01",
    "bars_per_year": 252,
    "inner_lr": 0.02,
    "ledger": "runs/ledger.sqlite",
    "model": "models/maml.pt",
    "out": "models/maml.pt",
    "train_years": 5,
    "val_years": 2,
    "seeds": [0, 1, 2],
    "ray_address": "auto",
    "features": ['examples.rsi_feature:rsi{"window": 14}'],
    "model_kwargs": {"hidden": 64},
    "baselines": ["RollingRidge", "LightGBM"],
    "benchmark": "prices/SPY.csv",
    "trials": 20,
    "test_end": "2017-03",
    "portfolios": ["NoDur", "S1V1"],
    "turnover_budget": 0.1,
    "space": {"inner_lr": [0.01, 0.02, 0.05], "support": [40, 60]},
    "asset_class": "equity",
    "commission": 5.0,
    "spread": 0.0,
    "slippage": 2.0,
    "borrow": 25.0,
    "participation": 0.1,
    "capacity": [1e5, 1e6, 1e7, 1e8],
    "state": "paper/maml",
    "until": "2017-12-31",
    "stagger_timeout": 600,
}


def example(defaults: Mapping[str, Mapping[str, Any]]) -> str:
    """A documented config template: every setting, commented out, with its default.

    Settings every command has are listed at the top level, the others under their
    command's table. A setting without a default shows an example value.

    Args:
        defaults: command -> {setting: default} (the flags' defaults; ``metabt.cli.parser``
            passes them so the template always matches the command line).

    Returns:
        TOML text. Uncommenting any setting line gives a valid file.
    """
    lines = [
        "# metabt configuration (TOML). Use: metabt <command> --config run.toml",
        "# Top-level settings apply to every command that has them; a [command] table",
        "# applies to that command only; flags on the command line win over both.",
        "# Units: dates YYYY-MM-DD, costs in basis points, windows in bars.",
    ]
    order = list(Options.model_fields)
    tables = {command: dict(values) for command, values in defaults.items()}
    shared = [key for key in order if all(key in values for values in tables.values()) and tables]
    fields = Options.model_fields

    def emit(key: str, value: Any) -> None:
        note = fields[key].description or key
        if value is None or value == [] or value == {}:
            value = EXAMPLES.get(key)
            # "unset: ..." descriptions already say what an unset setting means
            if value is not None and "unset:" not in note:
                note += " (no default; an example)"
        lines.append(f"# {note}")
        lines.append(f"# {key} = {_toml_value(value) if value is not None else '...'}")

    lines.append("")
    for key in shared:
        emit(key, next(iter(tables.values()))[key])
    for command, values in tables.items():
        lines += ["", f"[{command}]"]
        for key in order:
            if key in values and key not in shared:
                emit(key, values[key])
    return "\n".join(lines) + "\n"
