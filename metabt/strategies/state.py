"""A strategy's state after a bar: what it holds, decides from and owes the broker.

:func:`capture` reads a running :class:`metabt.strategies.trader.SignalTrader` (so
``MetaStrategy`` and ``CrossSectionalStrategy``) after a bar and returns a
:class:`StrategyState`: the bar, the broker (cash, value, positions, open orders), the
signal path (each data's last forecast, the smoothing window of recent forecasts, the
partial-adjustment path), the realised-volatility inputs and, for a ``MetaStrategy``, the
adaptation schedule (bars since the last adaptation, adaptations so far), each data's adapted
parameters φ and the online-updated θ.

**Format** (version :data:`STATE_FORMAT`): one ``.npz`` file (NumPy's zip of ``.npy``
arrays). Entry ``__meta__`` is the JSON text of the scalar state; every other entry is a
float64 array named ``<group>/<data>/<name>``. It is written to a temporary file and renamed
over the old one (:func:`save_state`), so a reader sees the previous state or the new one,
never half of either. :func:`load_state` reads it with ``allow_pickle=False``: the file can
hold only numbers and text, never objects, so loading it imports and runs nothing.

**Restoring.** A strategy's state is a deterministic function of the bars it was fed, its
learner and its settings (the strategy draws no random numbers after construction), so
metabt restores a strategy by *replaying* the stored bars through a new one on backtrader's
simulated broker, then checks that the rebuilt state equals the saved one with
:func:`differences` (``metabt paper`` does this on every restart). Replaying rather than
writing the saved buffers back into a new strategy keeps one code path for both: there is
no second, untested way for the state to enter a strategy.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np

from metabt._util import atomic_path
from metabt._version import __version__
from metabt.errors import ConfigError

__all__ = [
    "MAX_STATE_BYTES",
    "STATE_FORMAT",
    "StateSaver",
    "StrategyState",
    "capture",
    "differences",
    "load_state",
    "save_state",
]

#: The version of the state file's layout; :func:`load_state` refuses any other.
STATE_FORMAT = 1

#: Largest state file :func:`load_state` reads, bytes (and the largest array it inflates).
MAX_STATE_BYTES = 256 * 2**20

_META = "__meta__"


@dataclass(frozen=True)
class StrategyState:
    """One strategy's state after one bar.

    Attributes:
        meta: JSON-ready scalars and lists: ``format``, ``metabt``, ``strategy`` (class
            name), ``bar`` (ISO time of the last bar), ``datas`` (names), ``bars`` (bars
            seen per data), ``cash``, ``value`` (currency), ``positions`` (per data:
            ``size`` in units and average ``price``), ``open_orders`` (per order: data,
            size, kind), ``signal`` (each data's last traded signal), ``smoothing`` (each
            data's window of recent forecasts, oldest first), ``adjusted`` (the
            partial-adjustment path w_{t-1}), ``closed`` (data closed early), and for a
            ``MetaStrategy`` ``adaptations`` (count), ``since_adapt`` and ``model_index``
            per data, ``predictions`` (each data's last 5 forecasts); for a
            ``CrossSectionalStrategy`` also ``book`` (its rebalance count, pooled-model
            schedule and target weights).
        arrays: float64 arrays: ``phi/<data>/<param>`` (each data's adapted parameters φ,
            when the adapted model exposes them; ``phi/pool/<param>`` the pooled model of a
            ``CrossSectionalStrategy``), ``theta/online`` (the online-updated θ,
            flattened, when ``online_meta_lr > 0``), ``vol/<data>`` (the rolling moments
            behind the realised volatility: count, shift, window, sums, squares).
    """

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _num(value: Any) -> float | None:
    """A float for JSON (NaN and infinities as None)."""
    x = float(value)
    return x if math.isfinite(x) else None


def _phi(model: Any) -> Mapping[str, np.ndarray] | None:
    """The adapted parameters of a data's current model, when it exposes them."""
    if model is None:
        return None
    inner = getattr(model, "batch", None)
    if inner is not None and hasattr(model, "index"):  # a slot of a BatchAdapted
        model = inner.model(model.index)
    numpy_params = getattr(model, "_numpy_params", None)
    if numpy_params is not None:
        return numpy_params
    params = getattr(model, "_params", None)
    if params is not None:
        return {k: v.detach().cpu().numpy() for k, v in params.items()}
    coef = getattr(model, "coef", None)  # a linear fit (ridge, RLS)
    if coef is not None:
        return {"coef": np.asarray(coef), "intercept": np.asarray(getattr(model, "intercept", 0))}
    return None


def capture(strategy: Any) -> StrategyState:
    """The state of a running ``SignalTrader`` after its latest bar.

    Args:
        strategy: a :class:`metabt.strategies.trader.SignalTrader` (``MetaStrategy``,
            ``CrossSectionalStrategy`` or a baseline) inside or after ``cerebro.run()``.

    Returns:
        A :class:`StrategyState` (see its attributes).

    Raises:
        ConfigError: ``strategy`` is not a SignalTrader.
    """
    from metabt.strategies.meta import MetaStrategy
    from metabt.strategies.trader import SignalTrader

    if not isinstance(strategy, SignalTrader):
        raise ConfigError(
            f"capture reads a metabt SignalTrader (MetaStrategy, CrossSectionalStrategy, a "
            f"baseline), got {type(strategy).__name__}"
        )
    datas = list(strategy.datas)
    names = [d._name or f"data{i}" for i, d in enumerate(datas)]
    broker = strategy.broker
    bar = strategy.datas[0].datetime.datetime(0).isoformat() if len(strategy) else None
    positions = {}
    for name, d in zip(names, datas):
        pos = strategy.getposition(d)
        positions[name] = {"size": float(pos.size), "price": float(pos.price)}
    listed = getattr(broker, "get_orders_open", None)
    open_orders = [
        {
            "data": o.data._name,
            "size": float(o.created.size),
            "kind": "buy" if o.isbuy() else "sell",
            "exectype": int(o.exectype),
        }
        for o in (listed() if listed is not None else ())
    ]
    meta: dict[str, Any] = {
        "format": STATE_FORMAT,
        "metabt": __version__,
        "strategy": type(strategy).__name__,
        "bar": bar,
        "datas": names,
        "bars": [int(n) for n in strategy._seen],
        "cash": float(broker.getcash()),
        "value": float(broker.getvalue()),
        "positions": positions,
        "open_orders": open_orders,
        "signal": [_num(s) for s in strategy._last],
        "smoothing": [[_num(s) for s in h] for h in strategy._history],
        "adjusted": [_num(w) for w in strategy._adjusted],
        "closed": sorted(names[i] for i in strategy._closed),
    }
    arrays: dict[str, np.ndarray] = {}
    for name, moments in zip(names, getattr(strategy, "_vol", ())):
        arrays[f"vol/{name}"] = np.array(
            [moments.count, moments._shift, *moments._values, *moments._sums, *moments._squares],
            dtype=np.float64,
        )
    if isinstance(strategy, MetaStrategy):
        states = strategy._states
        meta["adaptations"] = len(strategy.adaptations)
        meta["since_adapt"] = [int(s.since_adapt) for s in states]
        meta["model_index"] = [int(s.model_index) for s in states]
        meta["predictions"] = [[_num(p) for p in s.pred[-5:]] for s in states]
        for name, s in zip(names, states):
            phi = _phi(s.model)
            for key, value in (phi or {}).items():
                arrays[f"phi/{name}/{key}"] = np.asarray(value, dtype=np.float64)
        online = strategy._online
        if online is not None:
            arrays["theta/online"] = online.theta()
        if hasattr(strategy, "_pool_index"):  # a CrossSectionalStrategy's book
            meta["book"] = {
                "ticks": int(strategy._ticks),
                "pool_since": int(strategy._pool_since),
                "pool_index": int(strategy._pool_index),
                "targets": {
                    str(k): {n: _num(w) for n, w in v.items()}
                    for k, v in sorted(strategy._targets.items(), key=lambda kv: str(kv[0]))
                },
            }
            for key, value in (_phi(strategy._pool_model) or {}).items():
                arrays[f"phi/pool/{key}"] = np.asarray(value, dtype=np.float64)
    return StrategyState(meta=meta, arrays=arrays)


def save_state(state: StrategyState, path: str | os.PathLike[str], *, sync: bool = True) -> Path:
    """Write ``state`` to ``path`` (``.npz``) atomically: a temporary file, then a rename.

    Args:
        state: what :func:`capture` returned.
        path: the state file; its folder must exist.
        sync: flush the file to disk (``fsync``) before the rename, so that it survives a
            power loss, not only a killed process. Default True.

    Returns:
        The path written.

    Raises:
        ConfigError: the folder does not exist, or the state is larger than
            :data:`MAX_STATE_BYTES`.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(f"state file {target}: folder {target.parent} does not exist")
    buffer = io.BytesIO()
    payload = {_META: np.array(json.dumps(state.meta, sort_keys=True))}
    payload.update({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in state.arrays.items()})
    np.savez(buffer, **payload)  # type: ignore[arg-type]
    data = buffer.getvalue()
    if len(data) > MAX_STATE_BYTES:
        raise ConfigError(
            f"state file {target}: {len(data):,} bytes is over the {MAX_STATE_BYTES:,}-byte "
            "limit; a strategy's state should be far smaller (check the number of assets)"
        )
    with atomic_path(target, sync=sync) as tmp:
        tmp.write_bytes(data)
    return target


def load_state(path: str | os.PathLike[str]) -> StrategyState:
    """Read a state file written by :func:`save_state`.

    Only numbers and text are read (``numpy.load(allow_pickle=False)``): no object in the
    file is unpickled, imported or called.

    Args:
        path: the ``.npz`` state file.

    Returns:
        The :class:`StrategyState`.

    Raises:
        ConfigError: the file is missing, too large, not a metabt state file, of another
            format version, or holds a non-numeric array.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"state file {source} does not exist")
    size = source.stat().st_size
    if size > MAX_STATE_BYTES:
        raise ConfigError(
            f"state file {source}: {size:,} bytes is over the {MAX_STATE_BYTES:,}-byte limit"
        )
    try:
        with zipfile.ZipFile(source) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
        if inflated > MAX_STATE_BYTES:
            raise ConfigError(
                f"state file {source}: it inflates to {inflated:,} bytes, over the "
                f"{MAX_STATE_BYTES:,}-byte limit; it is not a metabt state file"
            )
        with np.load(source, allow_pickle=False) as archive:
            if _META not in archive.files:
                raise ConfigError(
                    f"state file {source} has no {_META} entry: it was not written by metabt"
                )
            meta = json.loads(str(archive[_META]))
            arrays = {}
            for key in archive.files:
                if key == _META:
                    continue
                value = archive[key]
                if value.dtype.kind != "f":
                    raise ConfigError(f"state file {source}: entry {key!r} is not a float array")
                arrays[key] = value
    except (zipfile.BadZipFile, ValueError, OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"state file {source} is not a metabt state file ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ConfigError(
            f"state file {source} has format {found!r}; this metabt reads format "
            f"{STATE_FORMAT}: resume it with the metabt version that wrote it "
            f"({meta.get('metabt') if isinstance(meta, dict) else 'unknown'})"
        )
    return StrategyState(meta=meta, arrays=arrays)


def differences(saved: StrategyState, rebuilt: StrategyState, *, limit: int = 10) -> list[str]:
    """Where two states differ (exactly: a replay must rebuild the same floats).

    Args:
        saved: the state written before a restart.
        rebuilt: the state rebuilt by replaying the same bars.
        limit: at most this many differences are listed.

    Returns:
        One line per difference (empty when equal), e.g. ``"cash: 99871.2 != 99871.5"``.
    """
    out: list[str] = []
    skip = {"metabt"}  # a restart under a newer metabt is not a difference of state
    for key in sorted(set(saved.meta) | set(rebuilt.meta)):
        if key in skip:
            continue
        a, b = saved.meta.get(key), rebuilt.meta.get(key)
        if a != b:
            out.append(f"{key}: {_short(a)} != {_short(b)}")
    for key in sorted(set(saved.arrays) | set(rebuilt.arrays)):
        a_arr, b_arr = saved.arrays.get(key), rebuilt.arrays.get(key)
        if a_arr is None or b_arr is None:
            out.append(f"{key}: only in the {'rebuilt' if a_arr is None else 'saved'} state")
        elif a_arr.shape != b_arr.shape or not np.array_equal(a_arr, b_arr, equal_nan=True):
            out.append(f"{key}: the arrays differ")
    return out[:limit]


class StateSaver(bt.Analyzer):
    """Saves the strategy's state after every bar: ``cerebro.addanalyzer(StateSaver,
    path="state.npz")``, for a Cerebro you run yourself (a live store's feeds and broker).

    Each bar's state replaces the previous one atomically (:func:`save_state`), so after a
    crash the file holds the last bar completed. To check a restarted strategy, feed it the
    same bars again (a store's backfill) and compare ``capture(strategy)`` with
    ``load_state(path)`` by :func:`differences` at the saved bar.

    Params:
        path (str | os.PathLike): the state file (its folder must exist).
        every (int, default 1): save every ``every`` bars.

    Raises:
        ConfigError: at start, a missing folder or ``every`` < 1.
    """

    params = (("path", None), ("every", 1))

    def start(self) -> None:
        if self.p.path is None or not Path(self.p.path).parent.is_dir():
            raise ConfigError(
                f"StateSaver needs path=<state file in an existing folder>, got {self.p.path!r}"
            )
        if isinstance(self.p.every, bool) or not (
            isinstance(self.p.every, int) and self.p.every >= 1
        ):
            raise ConfigError(f"StateSaver: every must be an integer >= 1, got {self.p.every!r}")
        self._bars = 0

    def next(self) -> None:
        self._bars += 1
        if self._bars % self.p.every == 0:
            save_state(capture(self.strategy), self.p.path)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."
