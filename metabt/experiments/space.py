"""The search space of a sweep: which settings vary, over which values, checked up front.

A space maps settings (:data:`SETTINGS`, the config-file names) to a list of values (any
sampler) or, for TPE, a range ``{low, high, log, step}``; :func:`parse_space` checks it
with the config-file schema (:class:`metabt.config.files.Options`) and returns its
:class:`Dimension` objects, and :func:`apply_params` gives the configuration of one trial.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from pydantic import ValidationError

from metabt._checks import did_you_mean
from metabt.config.defaults import (
    ALGORITHM_NAMES,
    MODEL_TYPES,
    OBJECTIVES,
    SIZER_SETTINGS,
    RunConfig,
)
from metabt.config.files import Options
from metabt.errors import ConfigError
from metabt.learn.names import check_algorithm

__all__ = [
    "ALIASES",
    "Dimension",
    "SAMPLER_NAMES",
    "SETTINGS",
    "apply_params",
    "decode",
    "parse_space",
]

#: The samplers of :func:`metabt.experiments.sweep.sweep`.
SAMPLER_NAMES = ("grid", "tpe")
_INTS = (
    "adapt_every",
    "batch_size",
    "horizon",
    "inner_steps",
    "query",
    "smooth",
    "steps",
    "support",
)
_FLOATS = (
    "deadband",
    "inner_lr",
    "meta_lr",
    "no_trade_bps",
    "online_meta_lr",
    "rebalance_band",
    "signal_scale",
    "val_years",
)
_OTHER = {
    "algorithm": ALGORITHM_NAMES,
    "hidden": "widths",
    "model_type": MODEL_TYPES,
    "objective": OBJECTIVES,
}
_KINDS = {**dict.fromkeys(_INTS, "int"), **dict.fromkeys(_FLOATS, "float"), **_OTHER}
#: Settings a sweep may vary (config-file / flag names) -> kind: "int", "float",
#: "widths" (a list of positive ints) or the allowed choices.
SETTINGS: Mapping[str, Any] = dict(sorted(_KINDS.items()))
#: RunConfig field names accepted for the setting of another name.
ALIASES = {"meta_steps": "steps"}


@dataclass(frozen=True)
class Dimension:
    """One setting of the search space.

    Attributes:
        name: the setting (a key of :data:`SETTINGS`).
        choices: a categorical dimension's values (``hidden`` widths as JSON text such as
            ``"[8, 8]"``: Optuna stores only str, int, float, bool and None), or ().
        low, high: bounds of an int or float range (inclusive).
        log: sample the range on a log scale.
        step: the range's step (ints: default 1), or None.
    """

    name: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    def describe(self) -> Any:
        """The dimension as written in a space: its values, or its range."""
        if self.choices:
            return [decode(self.name, c) for c in self.choices]
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}

    def suggest(self, trial: optuna.trial.Trial) -> Any:
        """The trial's value of this setting, drawn by the study's sampler."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if SETTINGS[self.name] == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def _resolve(name: Any) -> str:
    key = ALIASES.get(str(name), str(name))
    if key not in SETTINGS:
        hint = did_you_mean(str(name), [*SETTINGS, *ALIASES])
        if name in {f.name for f in dataclasses.fields(RunConfig)}:
            hint += " (a RunConfig field no config file sets, so best.toml could not hold it)"
        raise ConfigError(
            f"search space: unknown setting {name!r}{hint}; a sweep can vary {', '.join(SETTINGS)}"
        )
    return key


def _check_value(name: str, value: Any) -> Any:
    """One value of ``name``, checked by the config-file schema; returns it normalised."""
    kind = SETTINGS[name]
    where = f"search space: {name}"
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: {value!r} is not a valid value; give a number or a name")
    if isinstance(kind, tuple):
        # a user model or learner family, by import path (imported only when built, and
        # only if trusted)
        user_path = name in ("model_type", "algorithm") and isinstance(value, str) and ":" in value
        if name == "algorithm" and user_path:
            check_algorithm(value)
        if value not in kind and not user_path:
            hint = did_you_mean(str(value), kind)
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(kind)}{hint}")
        return value
    if kind == "widths":
        value = [value] if isinstance(value, int) else value
    if kind == "int" and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{where}: {value!r} is not a whole number; give e.g. {round(value)}")
    try:
        checked = getattr(Options.model_validate({name: value}), name)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise ConfigError(f"{where}: {value!r} is not valid ({msg}); fix the value") from exc
    if kind == "widths":
        return json.dumps([int(v) for v in checked])
    return int(checked) if kind == "int" else float(checked)


def _range(name: str, spec: Mapping[str, Any]) -> Dimension:
    where = f"search space: {name}"
    kind = SETTINGS[name]
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: a range needs a numeric setting; give a list of values")
    for bad in sorted(set(spec) - {"low", "high", "log", "step"}):
        hint = did_you_mean(bad, ["low", "high", "log", "step"])
        raise ConfigError(
            f"{where}: unknown key {bad!r}{hint}; a range is {{low, high, log, step}}"
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs low and high, e.g. {{low = 1, high = 8}}")
    low, high = _check_value(name, spec["low"]), _check_value(name, spec["high"])
    if low > high:
        raise ConfigError(f"{where}: low {low!r} is above high {high!r}; swap them")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        if log:
            raise ConfigError(f"{where}: a log range takes no step; drop one of them")
        step = _check_value(name, step)
    return Dimension(name, low=low, high=high, log=log, step=step)


def parse_space(space: Mapping[str, Any], sampler: str) -> tuple[Dimension, ...]:
    """Check a search space and return its dimensions, sorted by name.

    Args:
        space: setting (:data:`SETTINGS`; ``meta_steps`` means ``steps``) -> a list of
            values, e.g. ``{"inner_lr": [0.01, 0.02], "hidden": [[8], [16, 16]]}``, or for
            TPE a range of an int or float setting: ``{"low": 0.005, "high": 0.1,
            "log": True}`` (optional ``step``).
        sampler: "grid" or "tpe".

    Returns:
        The dimensions.

    Raises:
        ConfigError: an empty space, an unknown setting (with the closest name), a range
            in a grid, an empty or duplicated list, or a value the setting does not take.
    """
    if sampler not in SAMPLER_NAMES:
        raise ConfigError(
            f"unknown sampler {sampler!r}{did_you_mean(str(sampler), SAMPLER_NAMES)}; "
            f"choose one of {', '.join(SAMPLER_NAMES)}"
        )
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(
            "search space is empty; give setting -> values, e.g. "
            '{"inner_lr": [0.01, 0.02], "support": [40, 60]}'
        )
    dims: dict[str, Dimension] = {}
    for raw_name, values in space.items():
        name = _resolve(raw_name)
        if name in dims:
            raise ConfigError(f"search space: {name} is given twice ({raw_name!r}); keep one")
        if isinstance(values, Mapping):
            if sampler == "grid":
                raise ConfigError(
                    f"search space: {name}: a grid needs a list of values, e.g. "
                    f"{name} = [1, 2]; ranges are for `sampler` tpe"
                )
            dims[name] = _range(name, values)
            continue
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"search space: {name}: give a list of values, got {values!r}")
        choices = tuple(_check_value(name, v) for v in values)
        if len(set(choices)) < len(choices):
            raise ConfigError(f"search space: {name} lists a value twice ({list(values)}); drop it")
        dims[name] = Dimension(name, choices=choices)
    return tuple(dims[name] for name in sorted(dims))


def decode(name: str, value: Any) -> Any:
    """A stored value of setting ``name`` as a config file writes it (``hidden``: a list).

    Args:
        name: the setting (a key of :data:`SETTINGS`).
        value: its value as the study stores it (``hidden`` as JSON text), or None.

    Returns:
        The value; ``hidden`` widths decoded from JSON into a list.
    """
    return json.loads(value) if SETTINGS[name] == "widths" and value is not None else value


def apply_params(cfg: RunConfig, params: Mapping[str, Any]) -> RunConfig:
    """``cfg`` with a trial's settings (config-file names; ``hidden`` as a list or JSON).

    Args:
        cfg: the base configuration.
        params: setting -> value (the names of :data:`SETTINGS` or :data:`ALIASES`).

    Returns:
        The configuration with those values.

    Raises:
        ConfigError: an unknown setting (with the closest name).
    """
    changes: dict[str, Any] = {}
    for raw, value in params.items():
        name = _resolve(raw)
        value = json.loads(value) if isinstance(value, str) and name == "hidden" else value
        if name == "hidden":
            changes["hidden"] = tuple(int(v) for v in value)
        elif name == "steps":
            changes["meta_steps"] = int(value)
        elif name == "horizon":
            changes["spec"] = dataclasses.replace(cfg.spec, horizon=int(value))
        elif name in SIZER_SETTINGS:
            changes["sizer"] = {**changes.get("sizer", cfg.sizer), name: float(value)}
        else:
            changes[name] = value
    return cfg.with_(**changes)
