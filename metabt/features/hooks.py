"""User features: registered feature functions, references to them, a generic online path.

A *feature function* maps windows of bars to one value per window, the feature of the
LAST bar of each window. It receives one array of shape ``(..., lookback)`` float64 per
requested column (oldest bar first) and returns shape ``(...,)``. Offline,
``FeatureSpec.transform`` calls it on ``sliding_window_view`` windows of the whole frame
(in chunks); online, the same function is called on a ``(1, lookback)`` window of the
most recent bars. So the online feature equals the offline one by construction, and the
feature of bar t cannot read a bar after t (no window holds one)::

    @register_feature("rsi", lookback=lambda window=14: window + 1, columns=("close",))
    def rsi(close: np.ndarray, window: int = 14) -> np.ndarray: ...

    spec = FeatureSpec().with_features("examples.rsi_feature:rsi{\\"window\\": 21}")

This module sits below :mod:`metabt.features.spec` (which re-exports its public names): it
works on any object with the ``FeatureSpec`` interface and never imports it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
import pandas as pd

from metabt._checks import did_you_mean
from metabt._trust import current_path, import_object, trust
from metabt.data.ohlcv import COLUMNS
from metabt.errors import ConfigError, DataError

__all__ = [
    "FeatureFunction",
    "FeatureRef",
    "OnlineComputer",
    "WindowedOnline",
    "register_feature",
    "registered_features",
]

F = TypeVar("F", bound=Callable[..., Any])
Params = tuple[tuple[str, Any], ...]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REGISTRY: dict[str, FeatureFunction] = {}
_FIX_PATH = "install the module or put its directory on PYTHONPATH"


# ------------------------------------------------------------------ small helpers
def _freeze(value: Any, where: str) -> Any:
    """A JSON parameter value as a hashable one (lists become tuples)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, where) for v in value)
    raise ConfigError(
        f"{where}: parameter values must be finite numbers, strings, booleans, null or "
        f"lists of them (JSON), got {value!r}"
    )


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _import(path: str, what: str) -> Any:
    """The object at ``"package.module:Qual.name"``; the module must be trusted
    (:func:`metabt._trust.import_object`)."""
    return import_object(path, what)


def recordable_path(obj: Any, what: str) -> str:
    """``"module:QualName"`` of a module-level class or function; refuses what no import finds.

    Raises:
        ConfigError: ``obj`` is defined in ``__main__`` or inside a function.
    """
    path = f"{obj.__module__}:{obj.__qualname__}"
    if obj.__module__ == "__main__" or "<locals>" in obj.__qualname__:
        raise ConfigError(
            f"{what} {path} cannot be recorded: it is defined in a script or inside a "
            "function, so a checkpoint could not import it again; move it to a module "
            f"(a .py file) at top level and {_FIX_PATH}"
        )
    return path


def load_class(path: str, base: type) -> type:
    """The class at ``"module:QualName"``, a subclass of ``base`` (imports the module).

    Raises:
        ConfigError: the module cannot be imported, or the object is not such a class.
    """
    obj = _import(path, f"{base.__name__} class")
    if not isinstance(obj, type) or not issubclass(obj, base):
        raise ConfigError(
            f"{path!r} is not a subclass of {base.__name__}; the spec was written by other "
            f"code: restore the class or {_FIX_PATH}"
        )
    return obj


def _source_sha256(func: Callable[..., Any]) -> str | None:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.replace("\r\n", "\n").encode()).hexdigest()


# ------------------------------------------------------------------ registry
@dataclass(frozen=True, eq=False)
class FeatureFunction:
    """A registered feature function (see :func:`register_feature`).

    Attributes:
        name: registered name, e.g. ``"rsi"``.
        func: the function: one ``(..., lookback)`` float64 array per column -> ``(...,)``.
        columns: the bar columns it reads, passed positionally in this order.
        lookback: bars per window, an int or a callable of the parameters.
        params: (name, default) of each keyword parameter, in signature order
            (``inspect.Parameter.empty`` for a required one).
        any_params: the function takes ``**kwargs``.
    """

    name: str
    func: Callable[..., Any]
    columns: tuple[str, ...]
    lookback: int | Callable[..., int]
    params: Params
    any_params: bool

    @property
    def import_path(self) -> str:
        """``"module:qualname"`` of the function (may name ``__main__``)."""
        return f"{self.func.__module__}:{self.func.__qualname__}"

    @property
    def source_sha256(self) -> str | None:
        """SHA-256 (hex) of the function's source, or None where no source is available.

        Covers the ``def`` and its decorator only, not helpers it calls: a checkpoint
        notices edits to the function itself (see ``FeatureRef.from_dict``).
        """
        return _source_sha256(self.func)

    def bind(self, given: Mapping[str, Any]) -> Params:
        """Validated parameters, defaults filled in, as sorted (name, value) pairs.

        Raises:
            ConfigError: an unknown or missing parameter, or a non-JSON value.
        """
        where = f"feature {self.name!r} ({self.import_path})"
        names = [n for n, _ in self.params]
        unknown = [k for k in given if k not in names]
        if unknown and not self.any_params:
            hints = ", ".join(f"{k!r}{did_you_mean(str(k), names)}" for k in unknown)
            raise ConfigError(f"{where} has no parameter {hints}; parameters: {names}")
        values = {n: d for n, d in self.params if d is not inspect.Parameter.empty}
        values.update(given)
        missing = [n for n in names if n not in values]
        if missing:
            raise ConfigError(f'{where} needs parameter(s) {missing}, e.g. rsi{{"window": 14}}')
        return tuple(sorted((str(k), _freeze(v, where)) for k, v in values.items()))

    def window(self, params: Params) -> int:
        """Bars per window for these parameters (>= 1)."""
        kwargs = dict(params)
        value: Any = self.lookback
        if callable(value):
            sig = inspect.signature(value)
            if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                kwargs = {k: v for k, v in kwargs.items() if k in sig.parameters}
            try:
                value = value(**kwargs)
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"feature {self.name!r}: bad parameters {dict(params)} ({exc})"
                ) from exc
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(
                f"feature {self.name!r}: lookback must be an integer >= 1 (bars), got "
                f"{value!r} for parameters {dict(params)}"
            )
        return int(value)


def register_feature(
    name: str, *, lookback: int | Callable[..., int], columns: Sequence[str] = ("close",)
) -> Callable[[F], F]:
    """Decorator: register a feature function under ``name``.

    The function takes one window array per column, positionally, in ``columns`` order,
    each ``(..., lookback)`` float64 with the oldest bar first (read-only: do not write
    into it), then its parameters as keywords (JSON values: numbers, strings, booleans,
    lists). It returns the ``(...,)`` values at the last bar of each window, which must be
    finite for every full window (handle flat prices, zero volume, NaN in extra columns).
    The function is returned unchanged, so it can still be called directly.

    Re-registering a name from the same import path (a module reload) replaces it.

    Args:
        name: registered name, a Python identifier, e.g. ``"rsi"``.
        lookback: bars per window (including the current bar, >= 1): an int, or a
            callable of the parameters returning one, e.g. ``lambda window=14: window + 1``.
        columns: bar columns to read: any of open, high, low, close, volume, or the name of
            an extra numeric column of the frame (a data line of that name in a backtest).
            Default ("close",).

    Returns:
        The decorator.

    Raises:
        ConfigError: a bad name or column, a name registered by another function, a
            function with fewer positional parameters than columns, a bad lookback.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"register_feature: name must be a Python identifier, got {name!r}")
    cols = (columns,) if isinstance(columns, str) else tuple(columns)
    if not cols or any(not isinstance(c, str) or not _NAME.match(c) for c in cols):
        raise ConfigError(
            f"register_feature({name!r}): columns must be non-empty column names, e.g. "
            f"('close',) or ('high', 'low'); got {columns!r}"
        )
    if len(set(cols)) != len(cols):
        raise ConfigError(f"register_feature({name!r}): columns {cols} repeat a name")

    def decorate(func: F) -> F:
        sig = inspect.signature(func)
        positional = [p for p in sig.parameters.values() if p.kind <= p.POSITIONAL_OR_KEYWORD]
        if len(positional) < len(cols):
            raise ConfigError(
                f"register_feature({name!r}): {func.__qualname__} must take one positional "
                f"argument per column {cols}, then keyword parameters"
            )
        rest = list(sig.parameters.values())[len(cols) :]
        if func.__module__ != "__main__":  # registered by the user: its module is trusted
            trust(func.__module__)
        feature = FeatureFunction(
            name=name,
            func=func,
            columns=cols,
            lookback=lookback,
            params=tuple(
                (p.name, p.default)
                for p in rest
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ),
            any_params=any(p.kind is p.VAR_KEYWORD for p in rest),
        )
        old = _REGISTRY.get(name)
        if old is not None and old.import_path != feature.import_path:
            raise ConfigError(
                f"feature name {name!r} is already registered by {old.import_path}; "
                f"register {feature.import_path} under another name"
            )
        if all(d is not inspect.Parameter.empty for _, d in feature.params):
            feature.window(feature.bind({}))  # a bad lookback fails here, not at training
        _REGISTRY[name] = feature
        func.__metabt_feature__ = name  # type: ignore[attr-defined]
        return func

    return decorate


def registered_features() -> dict[str, FeatureFunction]:
    """Name -> :class:`FeatureFunction` of every feature registered so far (a copy)."""
    return dict(_REGISTRY)


def _lookup(name: str, path: str) -> FeatureFunction:
    """The registered function of a reference, importing its module when a path is given."""
    path = current_path(path)  # a path recorded before a module moved
    known = _REGISTRY.get(name)
    if known is not None and known.import_path == path:
        return known  # already imported and registered
    if path:
        obj = _import(path, "feature")
        registered = getattr(obj, "__metabt_feature__", None)
        if registered is None or registered not in _REGISTRY:
            raise ConfigError(
                f"feature {path!r} is not a registered feature function; decorate it with "
                "@metabt.features.register_feature(name, lookback=..., columns=...)"
            )
        if name and name != registered:
            raise ConfigError(
                f"feature {path!r} is registered as {registered!r}, not {name!r}; the "
                "module changed since the spec was written: restore it or retrain"
            )
        name = registered
    if name not in _REGISTRY:
        raise ConfigError(
            f"no feature named {name!r} is registered{did_you_mean(name, _REGISTRY)}; give "
            "its import path, e.g. 'examples.rsi_feature:rsi', or import its module first "
            f"(registered: {sorted(_REGISTRY)})"
        )
    feature = _REGISTRY[name]
    if path and feature.import_path != path:
        raise ConfigError(
            f"feature {name!r} is registered by {feature.import_path}, not {path}; "
            "use one import path per feature name"
        )
    return feature


# ------------------------------------------------------------------ references
@dataclass(frozen=True)
class FeatureRef:
    """A registered feature function with its parameters: one custom feature of a spec.

    Hashable and comparable; construction validates it (importing ``import_path`` when
    given, so that the module registers its features).

    Args:
        name: registered name, e.g. ``"rsi"``; may be "" when ``import_path`` is given.
        params: parameters, a mapping or (name, value) pairs; missing ones take the
            function's defaults. Stored as sorted (name, value) pairs.
        import_path: ``"package.module:function"``; "" looks the name up in the registry.

    Raises:
        ConfigError: an unknown feature or parameter, a module that cannot be imported.

    Example:
        >>> import examples.rsi_feature  # doctest: +SKIP
        >>> FeatureRef("rsi", {"window": 21}).label  # doctest: +SKIP
        'rsi(window=21)'
    """

    name: str
    params: Params = ()
    import_path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.import_path, str):
            raise ConfigError(
                f"FeatureRef: name and import_path must be strings, got {self.name!r}, "
                f"{self.import_path!r}"
            )
        feature = _lookup(self.name, self.import_path)
        given: Any = self.params
        if not isinstance(given, Mapping):
            try:
                given = dict(given)
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"FeatureRef {feature.name!r}: params must be a mapping, got {given!r}"
                ) from exc
        object.__setattr__(self, "name", feature.name)
        object.__setattr__(self, "import_path", feature.import_path)
        object.__setattr__(self, "params", feature.bind(given))
        feature.window(self.params)  # bad parameters fail here, not in the first transform

    @classmethod
    def parse(cls, text: str) -> FeatureRef:
        """A reference from its string form (command line, config files).

        Forms: ``"pkg.module:function"``, ``"pkg.module:function{\\"window\\": 21}"``
        (import path, then optional JSON object of parameters), or a registered name
        ``"rsi"`` / ``"rsi{\\"window\\": 21}"``.

        Raises:
            ConfigError: malformed text or JSON, an unknown feature or parameter.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"feature must be text like 'pkg.module:function', got {text!r}")
        head, brace, tail = text.strip().partition("{")
        params: Any = {}
        if brace:
            try:
                params = json.loads(brace + tail)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"feature {text!r}: parameters are not valid JSON ({exc}); write e.g. "
                    "'examples.rsi_feature:rsi{\"window\": 21}'"
                ) from exc
            if not isinstance(params, dict):
                raise ConfigError(f"feature {text!r}: parameters must be a JSON object")
        head = head.strip()
        pairs = tuple(params.items())
        return cls("", pairs, head) if ":" in head else cls(head, pairs)

    @classmethod
    def of(cls, feature: FeatureRef | str | Callable[..., Any], **params: Any) -> FeatureRef:
        """A reference from a FeatureRef, a string (:meth:`parse`) or a registered function.

        Keyword parameters override those of ``feature``.
        """
        if isinstance(feature, FeatureRef):
            merged = {**dict(feature.params), **params}
            return cls(feature.name, tuple(merged.items()), feature.import_path)
        if isinstance(feature, str):
            ref = cls.parse(feature)
            return cls.of(ref, **params) if params else ref
        name = getattr(feature, "__metabt_feature__", None)
        if not callable(feature) or name is None:
            raise ConfigError(
                f"{feature!r} is not a feature: pass a FeatureRef, 'pkg.module:function', a "
                "registered name or a function decorated with @register_feature"
            )
        return cls(name, tuple(params.items()))

    @property
    def function(self) -> FeatureFunction:
        """The registered :class:`FeatureFunction`."""
        return _lookup(self.name, "")

    @property
    def kwargs(self) -> dict[str, Any]:
        """The parameters as keyword arguments (lists for list values)."""
        return {k: _thaw(v) for k, v in self.params}

    @property
    def label(self) -> str:
        """Feature name in ``FeatureSpec.names``, e.g. ``"rsi(window=14)"``."""
        args = ", ".join(f"{k}={json.dumps(v)}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"

    def __str__(self) -> str:
        params = json.dumps(self.kwargs, sort_keys=True) if self.params else ""
        return f"{self.import_path}{params}"

    def to_dict(self) -> dict[str, Any]:
        """JSON record: name, params, import_path and sha256 of the function's source.

        Raises:
            ConfigError: the function lives in ``__main__`` or inside a function.
        """
        feature = self.function
        recordable_path(feature.func, "feature function")
        return {
            "name": self.name,
            "params": self.kwargs,
            "import_path": self.import_path,
            "sha256": feature.source_sha256,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, allow_changed: bool = False) -> FeatureRef:
        """Rebuild a recorded reference, importing its module, and check it is unchanged.

        Args:
            d: a :meth:`to_dict` record.
            allow_changed: accept a function whose source differs from the recorded
                SHA-256 (the model then sees features computed by other code than it was
                trained on). Default False.

        Raises:
            ConfigError: a bad record, a module that cannot be imported, different
                parameters, or (unless ``allow_changed``) changed source code.
        """
        if not isinstance(d, Mapping) or not {"name", "import_path"} <= set(d):
            raise ConfigError(
                f"a custom feature record needs 'name', 'params', 'import_path', got {d!r}"
            )
        recorded = dict(d.get("params") or {})
        path = str(d["import_path"])
        try:
            ref = cls(str(d["name"]), tuple(recorded.items()), path)
        except ConfigError as exc:
            raise ConfigError(
                f"the spec uses feature {d['name']!r} from {path}, which cannot be loaded: {exc}"
            ) from exc
        frozen = {k: _freeze(v, path) for k, v in recorded.items()}
        if dict(ref.params) != frozen:
            raise ConfigError(
                f"feature {path}: parameters {frozen} were recorded but the function now "
                f"gives {dict(ref.params)} (its signature changed); restore it or retrain"
            )
        want, have = d.get("sha256"), ref.function.source_sha256
        if want and have and want != have and not allow_changed:
            raise ConfigError(
                f"feature {ref.label} ({path}): its source code changed since the spec was "
                "recorded (SHA-256 differs), so the model would see other features than it "
                "was trained on; restore the code or retrain, or pass allow_changed=True "
                "to FeatureSpec.from_dict if the change cannot alter its values"
            )
        return ref


def as_refs(value: Any) -> tuple[FeatureRef, ...]:
    """Normalise FeatureSpec.custom: FeatureRefs, strings or registered functions.

    Raises:
        ConfigError: an unknown feature, or two features with the same label.
    """
    items = [value] if isinstance(value, (str, FeatureRef)) or callable(value) else value
    if not isinstance(items, Iterable):
        raise ConfigError(
            f"FeatureSpec.custom must be a tuple of features ('pkg.module:function', "
            f"FeatureRef, ...), got {value!r}"
        )
    refs = tuple(FeatureRef.of(item) for item in items)
    labels = [r.label for r in refs]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ConfigError(f"FeatureSpec.custom lists {twice} twice; list each feature once")
    return refs


def check_subclass(spec: Any) -> None:
    """A FeatureSpec subclass's names agree with n_features and end with the custom ones.

    Raises:
        ConfigError: they disagree (the fix: override ``base_names``).
    """
    names, n, kind = spec.names, spec.n_features, type(spec).__qualname__
    labels = [r.label for r in spec.custom]
    if len(names) != n:
        raise ConfigError(
            f"{kind}.names lists {len(names)} features but n_features is {n}; "
            "override base_names (the columns of _rows), not n_features"
        )
    if labels and names[len(names) - len(labels) :] != labels:
        raise ConfigError(
            f"{kind}.names must end with the custom features {labels}, got {names}; "
            "override base_names (the columns of _rows) instead of names"
        )


def spec_to_dict(spec: Any, base: type) -> dict[str, Any]:
    """``FeatureSpec.to_dict``: fields as JSON, plus "class" and "custom" when used."""
    out: dict[str, Any] = {}
    if type(spec) is not base:
        out["class"] = recordable_path(type(spec), f"{base.__name__} subclass")
    for f in fields(spec):
        value = getattr(spec, f.name)
        if f.name == "custom":
            if value:
                out["custom"] = [ref.to_dict() for ref in value]
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def spec_from_dict(cls: type, d: Mapping[str, Any], base: type, *, allow_changed: bool) -> Any:
    """``FeatureSpec.from_dict`` (see there)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{base.__name__}.from_dict needs a dict, got {type(d).__name__}")
    values = dict(d)
    target = load_class(str(values.pop("class")), cls) if "class" in values else cls
    known = [f.name for f in fields(target)]
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = [f"{key!r}{did_you_mean(str(key), known)}" for key in unknown]
        raise ConfigError(
            f"{base.__name__} has no field {', '.join(hints)}; known fields: {', '.join(known)}"
        )
    records = values.pop("custom", None) or []
    if isinstance(records, (str, Mapping)) or not isinstance(records, Iterable):
        raise ConfigError(f"{base.__name__} 'custom' must be a list of records, got {records!r}")
    values["custom"] = tuple(FeatureRef.from_dict(r, allow_changed=allow_changed) for r in records)
    # checkpoints written before label_clip existed trained on unclipped labels
    values.setdefault("label_clip", None)
    return target(**values)


class _Bound(NamedTuple):
    label: str
    path: str
    func: Callable[..., Any]
    columns: tuple[str, ...]
    window: int
    kwargs: dict[str, Any]


def bind(refs: Sequence[FeatureRef]) -> list[_Bound]:
    """What :func:`custom_rows` calls, resolved once per spec."""
    out = []
    for ref in refs:
        f = ref.function
        out.append(_Bound(ref.label, ref.import_path, f.func, f.columns, f.window(ref.params),
                          ref.kwargs))  # fmt: skip
    return out


def custom_rows(
    bound: Sequence[_Bound],
    windows: Mapping[str, np.ndarray],
    clip: float,
    first_bar: int | None = None,
    index: pd.Index | None = None,
) -> np.ndarray:
    """Custom feature values of windows of bars, clipped to ±clip.

    Args:
        bound: from :func:`bind`.
        windows: column -> (..., n) float64 windows, oldest first (n >= each lookback).
        clip: clip bound (standardised units).
        first_bar: bar number of the first window (for error messages); None: the window.
        index: the frame's index (dates in error messages), or None.

    Returns:
        (..., len(bound)) float64.

    Raises:
        DataError: a missing column; a function returning the wrong shape, a non-numeric
            or a non-finite value.
    """
    lead = next(iter(windows.values())).shape[:-1]
    out = np.empty((*lead, len(bound)))
    for k, b in enumerate(bound):
        where = f"feature {b.label} ({b.path})"
        missing = [c for c in b.columns if c not in windows]
        if missing:
            raise DataError(
                f"{where} reads column(s) {missing}, which the data lacks (has "
                f"{sorted(windows)}); keep them in the frame (or pass them as extra lines)"
            )
        try:
            y = np.asarray(b.func(*(windows[c][..., -b.window :] for c in b.columns), **b.kwargs),
                           dtype=np.float64)  # fmt: skip
        except (TypeError, ValueError) as exc:
            if "float" not in str(exc) and "number" not in str(exc):
                raise
            raise DataError(f"{where} returned a non-numeric value ({exc})") from exc
        if y.shape != lead:
            raise DataError(
                f"{where} returned shape {y.shape} for windows of shape {(*lead, b.window)}; "
                f"it must return {lead}: the value at the last bar of each window"
            )
        bad = ~np.isfinite(y)
        if bad.any():
            i = int(np.argmax(bad.reshape(-1)))
            if first_bar is None:
                at = "at the last bar of the window"
            else:
                at = f"at bar {first_bar + i}"
                if index is not None and first_bar + i < len(index):
                    at += f" ({index[first_bar + i]})"
            raise DataError(
                f"{where} returned {y.reshape(-1)[i]} {at}, past its {b.window}-bar warm-up; "
                "a feature must be finite for every full window: handle flat or missing "
                f"inputs (e.g. a floor, np.nan_to_num), or check its columns {b.columns}"
            )
        out[..., k] = y
    np.minimum(out, clip, out=out)
    np.maximum(out, -clip, out=out)
    return out


# ------------------------------------------------------------------ online
class OnlineComputer(Protocol):
    """What ``FeatureSpec.online()`` returns: feature rows bar by bar inside a backtest."""

    lookback: int
    bars: int

    def update(
        self,
        high: float,
        low: float,
        close: float,
        volume: float,
        *,
        open: float | None = None,
        extra: Mapping[str, float] | None = None,
    ) -> tuple[np.ndarray | None, float]:
        """Add the newest bar; return (its feature row or None in the warm-up, label scale)."""
        ...


class WindowedOnline:
    """Online rows of a spec with custom features or of a subclass: the last bars in a buffer.

    Keeps the last ``lookback`` bars of every column. Each bar, the custom feature
    functions run on these windows, exactly as ``transform`` runs them on its sliding
    windows; the built-in features come from ``base`` (an ``OnlineFeatures`` of the spec
    without custom features, a few µs per bar). Without ``base`` (a subclass that
    overrides the row or scale code), the whole row comes from the spec's own
    ``transform_window`` and ``scale_window`` (~100 µs per bar). Either way the rows equal
    ``transform`` (to float32 precision) by construction; :func:`check_causal` verifies it.

    Args:
        spec: a ``FeatureSpec`` (or subclass).
        base: online computer of the built-in features and label scale, or None.
    """

    def __init__(self, spec: Any, base: OnlineComputer | None = None) -> None:
        self.spec, self.base = spec, base
        self.lookback = int(spec.lookback)
        self.columns: tuple[str, ...] = tuple(spec.columns)
        self._bound = bind(spec.custom)
        self._needs_open = any("open" in b.columns for b in self._bound)
        self._names = (*COLUMNS, *self.columns)
        self._buf = np.full((len(self._names), 2 * self.lookback), np.nan)
        self._pos = 0
        self.bars = 0

    def update(
        self,
        high: float,
        low: float,
        close: float,
        volume: float,
        *,
        open: float | None = None,  # the bar field's name
        extra: Mapping[str, float] | None = None,
    ) -> tuple[np.ndarray | None, float]:
        """Add the newest bar; return its feature row and label scale.

        Args:
            high, low, close: prices of the bar (> 0).
            volume: its volume (>= 0).
            open: its open price; needed only when a feature reads ``open``.
            extra: value of each extra column in ``spec.columns`` at this bar.

        Returns:
            (row, scale) as ``OnlineFeatures.update``: row (F,) float32 or None during the
            first ``lookback - 1`` bars; scale the label divisor (NaN in the warm-up).

        Raises:
            DataError: a bad price or volume, a missing open or extra column, or a custom
                feature returning a bad value (bar named).
        """
        bar = self.bars
        if not (close > 0 and high > 0 and low > 0 and volume >= 0) or not math.isfinite(
            close + high + low + volume
        ):
            raise DataError(
                f"bar {bar}: prices must be finite and > 0 and volume >= 0, got high {high}, "
                f"low {low}, close {close}, volume {volume}; validate the feed with "
                "metabt.data.load_ohlcv"
            )
        if open is None and self._needs_open:
            raise DataError(f"bar {bar}: a feature reads the open price; pass update(open=...)")
        values = [math.nan if open is None else open, high, low, close, volume]
        if self.columns:
            extra = extra or {}
            missing = [c for c in self.columns if c not in extra]
            if missing:
                raise DataError(
                    f"bar {bar}: the features read extra column(s) {missing}; pass update("
                    f"extra={{name: value}}) with every column of spec.columns {self.columns}"
                )
            values += [extra[c] for c in self.columns]
        width, buf = self.lookback, self._buf
        if self._pos == buf.shape[1]:  # slide: keep the last lookback - 1 bars
            buf[:, : width - 1] = buf[:, self._pos - width + 1 :]
            self._pos = width - 1
        buf[:, self._pos] = values
        self._pos += 1
        self.bars += 1
        row, scale = None, math.nan
        if self.base is not None:
            row, scale = self.base.update(high, low, close, volume)
        if self.bars < width:
            return None, math.nan
        w = buf[:, self._pos - width : self._pos]
        try:
            if self.base is None:  # the spec's own window code
                more = {c: w[len(COLUMNS) + i] for i, c in enumerate(self.columns)}
                row = self.spec.transform_window(w[0], w[1], w[2], w[3], w[4], extra=more)
                return row, self.spec.scale_window(w[3])
            windows = {name: w[i][None, :] for i, name in enumerate(self._names)}
            more = custom_rows(self._bound, windows, self.spec.clip)[0].astype(np.float32)
        except DataError as exc:
            raise DataError(f"bar {bar}: {exc}") from exc
        return np.concatenate([row, more]), scale
