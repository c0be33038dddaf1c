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
COMMANDS = ("train", "backtest", "compare", "walkforward", "sweep", "pricing")
#: Where an unknown-key message sends the reader for the valid settings (the command line
#: names its own command for the template, ``metabt.cli.main.flag_message``).
EVERY_SETTING = "the config template (metabt.config.files.example) lists every setting"

PosInt = Annotated[int, Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]
Files = list[str] | str


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
    bars_per_year: PosFloat | None = Field(
        None, description="bars per year (default: detected from the dates)"
    )
    # money and costs
    cash: PosFloat | None = Field(None, description="starting cash")
    commission: NonNegFloat | None = Field(None, description="commission, bps of traded value")
    slippage: NonNegFloat | None = Field(None, description="slippage, bps of price")
    borrow: NonNegFloat | None = Field(None, description="short-borrow fee, bps a year")
    # schedule
    adapt_every: PosInt | None = Field(None, description="bars between adaptations")
    smooth: PosInt | None = Field(None, description="forecasts averaged into the traded one")
    deadband: NonNegFloat | None = Field(
        None, description="no trade within this weight change (fraction of equity)"
    )
    rebalance_band: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] | None = Field(
        None, description="relative tolerance band on a position's size (fraction of target)"
    )
    signal_scale: PosFloat | None = Field(
        None, description="signal size that earns the full volatility-target weight"
    )
    smooth_grid: list[PosInt] | None = Field(
        None, description="compare, walkforward: smoothing candidates chosen on validation"
    )
    support: PosInt | None = Field(None, description="realised bars per support set")
    query: PosInt | None = Field(None, description="bars per training query set")
    horizon: PosInt | None = Field(None, description="label horizon, bars")
    # learner
    algorithm: str | None = Field(None, description="meta-learning algorithm")
    model_type: str | None = Field(None, description="mlp, gru or an import path module:Class")
    model_kwargs: dict[str, Any] | None = Field(None, description="user model keyword arguments")
    hidden: list[PosInt] | None = Field(None, description="MLP hidden widths")
    features: list[str] | None = Field(None, description="extra features (import paths)")
    benchmark: str | None = Field(None, description="benchmark OHLCV file for factor features")
    steps: PosInt | None = Field(None, description="meta-training outer steps")
    inner_steps: PosInt | None = Field(None, description="inner-loop steps per adaptation")
    inner_lr: PosFloat | None = Field(
        None, description="inner-loop learning rate (unset: 0.02, or 1.0 for cavia)"
    )
    meta_lr: PosFloat | None = Field(None, description="outer-loop learning rate")
    objective: str | None = Field(None, description="mse, sharpe or utility (meta-objective)")
    batch_size: PosInt | None = Field(None, description="tasks per outer step")
    val_years: PosFloat | None = Field(None, description="years held out for validation")
    online_meta_lr: NonNegFloat | None = Field(
        None, description="outer-loop rate of online meta-updates during the backtest (0 = off)"
    )
    seed: Seed | None = Field(None, description="seed")
    seeds: list[Seed] | None = Field(None, description="seeds to repeat the pipeline with")
    threads: PosInt | None = Field(None, description="torch/BLAS threads")
    quiet: bool | None = Field(None, description="no progress bar")
    # outputs
    model: str | None = Field(None, description="a trained checkpoint to backtest")
    ledger: str | None = Field(
        None, description='trial ledger file ("off": none; default $METABT_LEDGER)'
    )
    report: str | None = Field(None, description="backtest tearsheet path")
    out: str | None = Field(None, description="output checkpoint (train) or folder")
    checkpoint_every: PosInt | None = Field(None, description="train: save every N steps")
    # experiments
    fold_years: PosInt | None = Field(None, description="walkforward: years per fold")
    train_years: PosInt | None = Field(None, description="walkforward: rolling training years")
    executor: str | None = Field(None, description="serial, process or ray")
    workers: PosInt | None = Field(None, description="parallel workers")
    ray_address: str | None = Field(None, description="Ray cluster address")
    trials: PosInt | None = Field(None, description="sweep: number of trials")
    portfolio: str | None = Field(None, description="backtest: per-asset or cross-sectional")
    cross_section: str | None = Field(None, description="cross-sectional: rank or zscore")
    book: str | None = Field(None, description="cross-sectional: dollar-neutral or long-only")
    name_cap: NonNegFloat | None = Field(None, description="cross-sectional: name cap")
    net_leverage: NonNegFloat | None = Field(None, description="cross-sectional: net cap")
    min_trade: NonNegFloat | None = Field(None, description="cross-sectional: minimum trade")
    turnover_budget: PosFloat | None = Field(None, description="cross-sectional: budget")
    rebalance_every: PosInt | None = Field(None, description="cross-sectional: bars")
    sampler: str | None = Field(None, description="sweep: grid or tpe")
    val_folds: PosInt | None = Field(None, description="sweep: one-year validation folds")
    cv: str | None = Field(None, description="sweep: walkforward or cpcv (trial scoring)")
    ks: list[PosInt] | None = Field(None, description="pricing: months of history per model")
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
    return f"{label}: {loc}: {first['msg']} (got {first.get('input')!r})"


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
    "seeds": [0, 1, 2],
    "ray_address": "auto",
    "features": ['examples.rsi_feature:rsi{"window": 14}'],
    "model_kwargs": {"hidden": 64},
    "benchmark": "prices/SPY.csv",
    "trials": 20,
    "test_end": "2017-03",
    "portfolios": ["NoDur", "S1V1"],
    "turnover_budget": 0.1,
    "space": {"inner_lr": [0.01, 0.02, 0.05], "support": [40, 60]},
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
