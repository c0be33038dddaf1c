"""Rolling support/query tasks over several assets and time windows, with no look-ahead."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from metabt._checks import as_timestamp, check_int
from metabt.data.ohlcv import ohlcv_arrays
from metabt.errors import ConfigError, DataError
from metabt.features.spec import FeatureSpec, stack_window
from metabt.learn.training import TaskBatch

__all__ = ["EXTRA_LAG", "PooledTaskSampler", "TaskSampler", "path_extras"]

#: Bars after a row until its P&L extras are realised: the return from the open of bar t+1
#: to the open of bar t+2 is known at bar t+2.
EXTRA_LAG = 2

Batch = tuple[Tensor, Tensor, Tensor, Tensor]


def _fmt(ts: pd.Timestamp | None) -> str:
    if ts is None:
        return "None"
    return str(ts.date()) if ts == ts.normalize() else str(ts)


def _ns(ts: pd.Timestamp) -> int:
    return int(ts.as_unit("ns").value)


def _longest_run(ok: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D bool array."""
    if not ok.any():
        return 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.view(np.int8), [0]])))
    return int((edges[1::2] - edges[::2]).max())


Span = tuple[pd.Timestamp, pd.Timestamp]


def _spans(exclude: Sequence[tuple[Any, Any]]) -> tuple[Span, ...]:
    """The excluded spans as (first, last) timestamps (tz-naive wall time), sorted.

    Raises:
        ConfigError: a span that is not two dates, or whose last date is before its first.
    """
    out = []
    for span in exclude:
        try:
            first, last = span
        except (TypeError, ValueError):
            raise ConfigError(f"exclude needs (first, last) date pairs, got {span!r}") from None
        a, b = as_timestamp(first, "exclude start"), as_timestamp(last, "exclude end")
        if a is None or b is None or b < a:
            raise ConfigError(f"an excluded span needs first <= last, got ({first}, {last})")
        out.append((a, b))
    return tuple(sorted(out))


def _clear_of(
    dates: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    spans: Sequence[Span],
    back: int,
    ahead: int,
) -> np.ndarray:
    """(sum T_i,) bool: True where no bar a row reads lies in an excluded span.

    Row s of an asset reads its bars s − ``back`` .. s + ``ahead`` (feature look-back, and
    the bars until its label and P&L inputs are realised); a bar is excluded when its date
    is within a span, both ends included.
    """
    clear = np.ones(len(dates), dtype=bool)
    for off, n in zip(offsets, lengths):
        d = dates[off : off + n]
        bad = np.zeros(n, dtype=bool)
        for first, last in spans:
            bad |= (d >= _ns(first)) & (d <= _ns(last))
        if not bad.any():
            continue
        # a row is clear when the window [s - back, s + ahead] (clipped) holds no bad bar
        cs = np.concatenate([[0], np.cumsum(bad)])
        s = np.arange(n)
        lo, hi = np.maximum(s - back, 0), np.minimum(s + ahead, n - 1)
        clear[off : off + n] = cs[hi + 1] - cs[lo] == 0
    return clear


Arrays = tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _load(
    owner: str,
    X: Sequence[np.ndarray],
    y: Sequence[np.ndarray],
    dates: Sequence[Any],
    names: Sequence[str] | None,
) -> Arrays:
    """Check and concatenate per-asset arrays.

    Returns:
        (names, offsets, lengths, X (sum T_i, F) float32, y (sum T_i,) float32,
        dates (sum T_i,) int64 ns, tz-naive wall time).

    Raises:
        DataError: X, y and dates of different lengths or shapes, unsorted dates, or
            different feature widths.
    """
    if not (len(X) == len(y) == len(dates)) or len(X) == 0:
        raise DataError(
            f"{owner} needs one X, y and dates entry per asset (at least one asset), "
            f"got {len(X)} X, {len(y)} y, {len(dates)} dates"
        )
    labels = [str(n) for n in names] if names is not None else [f"asset{i}" for i in range(len(X))]
    if len(labels) != len(X):
        raise DataError(f"names has {len(labels)} entries for {len(X)} assets")
    xs, ys, ds = [], [], []
    for name, x, lab, d in zip(labels, X, y, dates):
        x = np.asarray(x, dtype=np.float32)
        lab = np.asarray(lab, dtype=np.float32)
        try:
            d = pd.DatetimeIndex(d)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name}: dates are not dates ({exc})") from exc
        if d.tz is not None:
            d = d.tz_localize(None)
        if x.ndim != 2 or lab.shape != (len(d),) or x.shape[0] != len(d):
            raise DataError(
                f"{name}: X must be (T, F), y (T,) and dates (T,); got X {x.shape}, "
                f"y {lab.shape}, {len(d)} dates"
            )
        if not d.is_monotonic_increasing or not d.is_unique:
            raise DataError(
                f"{name}: dates must be strictly increasing; sort and de-duplicate them"
            )
        xs.append(x)
        ys.append(lab)
        ds.append(d.as_unit("ns").asi8)
    widths = {x.shape[1] for x in xs}
    if len(widths) != 1:
        raise DataError(f"all assets need the same number of features, got {sorted(widths)}")
    lengths = np.array([len(d) for d in ds])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return (
        labels,
        offsets,
        lengths,
        np.ascontiguousarray(np.concatenate(xs)),
        np.concatenate(ys),
        np.concatenate(ds),
    )


def path_extras(
    frame: pd.DataFrame, *, vol_lookback: int = 20, bars_per_year: float = 252.0
) -> dict[str, np.ndarray]:
    """Each bar's P&L inputs for :class:`metabt.learn.losses.PnLLoss`, as the backtest sees them.

    * ``"returns"``: ``O_{t+2} / O_{t+1} − 1``, the simple return a position set at the
      close of bar t earns (orders fill at the next open); NaN for the last two bars.
    * ``"vol"``: the sizer's annualised realised volatility at bar t
      (``SignalTrader.realised_vol``): the sample std (ddof=1) of the last
      ``vol_lookback`` close-to-close log returns times ``sqrt(bars_per_year)``; NaN
      before ``vol_lookback + 1`` bars.

    Args:
        frame: an OHLCV frame (``metabt.data.load_ohlcv``).
        vol_lookback: returns in the volatility window (bars, >= 2).
        bars_per_year: bars in a year (> 0).

    Returns:
        name -> (T,) float32 array.

    Raises:
        ConfigError: a bad ``vol_lookback`` or ``bars_per_year``.
        DataError: the frame is not OHLCV.
    """
    vol_lookback = check_int("vol_lookback", vol_lookback, 2)
    if not (isinstance(bars_per_year, (int, float)) and np.isfinite(bars_per_year)) or (
        bars_per_year <= 0
    ):
        raise ConfigError(f"bars_per_year must be a positive number, got {bars_per_year!r}")
    o, _, _, c, _ = ohlcv_arrays(frame)
    o, c = np.asarray(o, dtype=np.float64), np.asarray(c, dtype=np.float64)
    returns = np.full(len(o), np.nan)
    if len(o) > 2:
        returns[:-2] = o[2:] / o[1:-1] - 1.0
    log_ret = pd.Series(np.log(c)).diff()
    vol = log_ret.rolling(vol_lookback).std(ddof=1).to_numpy() * np.sqrt(bars_per_year)
    vol[~(vol > 0)] = np.nan
    return {"returns": returns.astype(np.float32), "vol": vol.astype(np.float32)}


def _frame_inputs(
    frames: Mapping[str, pd.DataFrame], spec: FeatureSpec, window: int, bars: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[pd.DatetimeIndex], str]:
    """X (features stacked over ``window``), y and dates of each frame, and the warm-up hint.

    ``bars`` is support + query of a task (bars), for the hint's minimum length.
    """
    if not isinstance(frames, Mapping) or not frames:
        raise ConfigError("from_frames needs a non-empty mapping of asset name -> DataFrame")
    if not isinstance(spec, FeatureSpec):
        raise ConfigError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
    X = [stack_window(spec.transform(f), window) for f in frames.values()]
    y = [spec.labels(f) for f in frames.values()]
    dates = [f.index for f in frames.values()]
    warmup = spec.lookback - 1 + int(window) - 1
    hint = (
        f"With this FeatureSpec the first {warmup} bars of each frame are feature warm-up, "
        f"so an asset needs at least {warmup + bars + 2 * spec.horizon - 1} "
        "bars (before end)."
    )
    return X, y, dates, hint


class TaskSampler:
    """Rolling support/query tasks over several assets and time windows.

    A task is anchored at bar a of one asset: its support rows are a .. a+S-1 and its query
    rows q0 .. q0+Q-1 with ``q0 = a+S-1+horizon``, so the query starts ``horizon`` bars
    after the support ends: the same gap as in deployment, where the newest realised label
    at bar t is that of bar t-horizon. Support and query are chronological blocks, never
    interleaved rows.

    Every row s a task uses has finite features ``X[s]``, a finite label ``y[s]``,
    ``date[s] >= start`` and a label realised strictly before ``end``:
    ``date[s + horizon] < end`` (a row whose realisation bar is past the end of the data is
    never used). With labels from ``FeatureSpec.labels``, no price dated on or after ``end``
    is therefore used. (Features of rows near ``start`` look back ``lookback - 1`` bars
    before ``start``: they use only the past.)

    Valid anchors are found once, vectorised; :meth:`sample` draws uniformly among all
    valid (asset, anchor) pairs, so an asset's weight is proportional to its task count.

    Args:
        X: per asset, (T_i, F) feature rows (cast to float32); F is the same for all.
        y: per asset, (T_i,) labels (cast to float32), NaN where unknown.
        dates: per asset, the T_i bar dates (anything ``pd.DatetimeIndex`` accepts),
            strictly increasing; tz-aware dates keep their wall time.
        support: S, support rows per task (bars, >= 1).
        query: Q, query rows per task (bars, >= 1).
        horizon: label horizon (bars, >= 1): the support/query gap and the label delay.
        start: no row dated before ``start`` is used; None = no bound. Default None.
        end: every used label is realised strictly before ``end``; None = no bound.
            Default None.
        names: asset names for messages. Default "asset0", "asset1", ...
        hint: a sentence appended to the "no valid task" error (e.g. how many bars of
            feature warm-up each asset spends). Default "".
        extras: name -> per asset (T_i,) P&L inputs of each row (``path_extras``); a row
            is then realised ``max(horizon, 2)`` bars later. Default None.
        exclude: (first, last) date spans, both ends included: a row that reads a bar
            dated within one (its ``lookback`` bars before it, itself, and the bars until
            its label and extras are realised) is unusable, so no task uses it. Default
            (): none.
        lookback: bars before a row that its feature row and label read, for
            ``exclude``. Default 0.

    Attributes:
        support, query, horizon (int): as given.
        start, end (pd.Timestamp | None): the date bounds.
        exclude (tuple[tuple[pd.Timestamp, pd.Timestamp], ...]): the excluded spans.
        lookback (int): as given.
        names (list[str]): asset names.

    Raises:
        ConfigError: bad sizes or dates, ``start >= end``, or no valid task (the message
            says how many bars a task needs and how many each asset has).
        DataError: X, y and dates of different lengths or shapes, or unsorted dates.
    """

    def __init__(
        self,
        X: Sequence[np.ndarray],
        y: Sequence[np.ndarray],
        dates: Sequence[pd.DatetimeIndex],
        *,
        support: int,
        query: int,
        horizon: int,
        start: Any = None,
        end: Any = None,
        names: Sequence[str] | None = None,
        hint: str = "",
        extras: Mapping[str, Sequence[np.ndarray]] | None = None,
        exclude: Sequence[tuple[Any, Any]] = (),
        lookback: int = 0,
    ) -> None:
        self._hint = f" {hint}" if hint else ""
        self.support = check_int("support", support, 1)
        self.query = check_int("query", query, 1)
        self.horizon = check_int("horizon", horizon, 1)
        self.names, self._offsets, self._lengths, self._X, self._y, self._dates = _load(
            "TaskSampler", X, y, dates, names
        )
        self._row_ok = np.isfinite(self._X).all(axis=1) & np.isfinite(self._y)
        self._extras: dict[str, np.ndarray] = {}
        for key, arrays in (extras or {}).items():
            if len(arrays) != len(self._lengths) or any(
                np.shape(a) != (n,) for a, n in zip(arrays, self._lengths)
            ):
                raise DataError(
                    f"extras[{key!r}] needs one (T_i,) array per asset, the labels' shape"
                )
            joined = np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays])
            self._row_ok &= np.isfinite(joined)
            self._extras[str(key)] = joined
        # bars after a row until everything it carries is realised
        self._lag = max(self.horizon, EXTRA_LAG) if self._extras else self.horizon
        self.lookback = check_int("lookback", lookback, 0)
        self.exclude = _spans(exclude)
        if self.exclude:  # rows reading an excluded bar, before or after them, are unusable
            self._row_ok &= _clear_of(
                self._dates, self._offsets, self._lengths, self.exclude, self.lookback, self._lag
            )
        self._support_idx = np.arange(self.support)
        self._query_idx = np.arange(self.query) + self.support - 1 + self.horizon
        self.start: pd.Timestamp | None = None
        self.end: pd.Timestamp | None = None
        self._anchors = np.zeros(0, dtype=np.intp)
        self._restrict(as_timestamp(start, "start"), as_timestamp(end, "end"))

    def _restrict(
        self, start: pd.Timestamp | None, end: pd.Timestamp | None, why: str = ""
    ) -> None:
        """Find the valid anchors (global row indices) for the date bounds [start, end)."""
        if start is not None and end is not None and start >= end:
            raise ConfigError(f"{why}start ({_fmt(start)}) must be before end ({_fmt(end)})")
        S, Q, h, lag = self.support, self.query, self.horizon, self._lag
        span = S - 1 + h + Q  # rows from the anchor to the last query row, inclusive
        anchors, usable = [], []
        for off, n in zip(self._offsets, self._lengths):
            ok = self._row_ok[off : off + n].copy()
            d = self._dates[off : off + n]
            if start is not None:
                ok &= d >= _ns(start)
            realised = np.zeros(n, dtype=bool)  # date[s + lag] exists (and is < end)
            realised[: max(n - lag, 0)] = True if end is None else d[lag:] < _ns(end)
            ok &= realised
            usable.append(ok)
            a = np.arange(max(n - span + 1, 0))
            cs = np.concatenate([[0], np.cumsum(ok)])
            q0 = a + S - 1 + h
            valid = (cs[a + S] - cs[a] == S) & (cs[q0 + Q] - cs[q0] == Q)
            anchors.append(off + a[valid])
        found = np.concatenate(anchors).astype(np.intp)
        if len(found) == 0:
            per_asset = ", ".join(
                f"{name}: {int(ok.sum())} usable rows, longest run {_longest_run(ok)}"
                for name, ok in zip(self.names, usable)
            )
            raise ConfigError(
                f"{why}no valid support/query task between start={_fmt(start)} and "
                f"end={_fmt(end)}: a task needs S-1+horizon+Q = {span} consecutive usable "
                f"rows (support {S}, gap {h}, query {Q}) plus {h} more bars to realise the "
                f"last label before end; a usable row has a finite feature row and label "
                f"({per_asset}). Use more bars, a wider date range, or a smaller support/query."
                + self._hint
            )
        self.start, self.end = start, end
        self._anchors = found

    @classmethod
    def from_frames(
        cls,
        frames: Mapping[str, pd.DataFrame],
        spec: FeatureSpec,
        *,
        support: int,
        query: int,
        start: Any = None,
        end: Any = None,
        window: int = 1,
        extras: bool = False,
        vol_lookback: int = 20,
        bars_per_year: float | None = None,
        exclude: Sequence[tuple[Any, Any]] = (),
    ) -> TaskSampler:
        """Tasks from OHLCV frames, with ``spec``'s features and labels.

        X of each asset is ``spec.transform(frame)`` (stacked with ``stack_window(X,
        window)`` when ``window > 1``), y is ``spec.labels(frame)``, the gap is
        ``spec.horizon``. Before the first task, each frame spends ``spec.lookback - 1 +
        window - 1`` bars of feature warm-up.

        Args:
            frames: asset name -> OHLCV DataFrame (``metabt.data.load_ohlcv``).
            spec: the features and label.
            support: S, support rows per task (bars).
            query: Q, query rows per task (bars).
            start: first date a used row may have. Default None.
            end: every used label is realised strictly before ``end``. Default None.
            window: feature rows per model input (1 for the MLP). Default 1.
            extras: also carry each query row's ``"returns"`` and ``"vol"``
                (:func:`path_extras`), and each support row's (``"support_returns"``,
                ``"support_vol"``, for a P&L inner loop; the returns not yet realised at
                the first query bar, the last ``2 - horizon`` rows, are 0), for a P&L
                objective: batches are then
                :class:`metabt.learn.training.TaskBatch` and every used row's return is
                realised before ``end`` (``date[s + max(horizon, 2)] < end``). Default False.
            vol_lookback: the sizer's volatility window (bars), for ``extras``. Default 20.
            bars_per_year: for ``extras``; None infers it from the dates
                (``metabt.data.bars.common_frequency``). Default None.
            exclude: (first, last) date spans, both ends included, whose bars no task
                may read: a task is dropped when any of its support or query rows reads
                an excluded bar through its features (``spec.lookback - 1 + window - 1``
                bars back), its label's causal scale (``spec.norm_window`` bars back), its
                label (``horizon`` bars ahead) or, with ``extras``, its P&L inputs (the
                volatility's ``vol_lookback`` bars back, the return 2 bars ahead).
                Combinatorial purged cross-validation passes its test groups widened by
                the purge and the embargo. Default (): none, every task as before.

        Returns:
            A TaskSampler whose rows are ``window * spec.n_features`` wide.

        Raises:
            ConfigError: no frames, a bad window, or no valid task (as the constructor,
                plus the feature warm-up in the message).
            DataError: a frame that is not valid OHLCV (see ``FeatureSpec.transform``).
        """
        X, y, dates, hint = _frame_inputs(frames, spec, window, support + query)
        back = int(spec.lookback) - 1 + int(window) - 1  # the features' look-back
        if getattr(spec, "scale_label", False):  # the label's causal scale
            back = max(back, int(getattr(spec, "norm_window", 0)))
        if extras:  # the sizer's volatility
            back = max(back, int(vol_lookback))
        arrays: dict[str, list[np.ndarray]] | None = None
        if extras:
            if bars_per_year is None:
                from metabt.data.bars import common_frequency

                indexes = {n: f.index for n, f in frames.items()}
                bars_per_year = common_frequency(indexes).bars_per_year
            per_asset = [
                path_extras(f, vol_lookback=vol_lookback, bars_per_year=bars_per_year)
                for f in frames.values()
            ]
            arrays = {k: [e[k] for e in per_asset] for k in ("returns", "vol")}
        return cls(
            X,
            y,
            dates,
            support=support,
            query=query,
            horizon=spec.horizon,
            start=start,
            end=end,
            names=list(frames),
            hint=hint,
            extras=arrays,
            exclude=exclude,
            lookback=back if exclude else 0,
        )

    # ------------------------------------------------------------------ properties
    @property
    def n_tasks(self) -> int:
        """Number of valid anchors, i.e. of distinct tasks, over all assets."""
        return len(self._anchors)

    @property
    def features(self) -> int:
        """Width F of a row (``window * n_features`` with ``from_frames``)."""
        return int(self._X.shape[1])

    @property
    def tasks_per_asset(self) -> dict[str, int]:
        """Number of valid anchors of each asset."""
        asset = np.searchsorted(self._offsets, self._anchors, side="right") - 1
        counts = np.bincount(asset, minlength=len(self.names))
        return {name: int(k) for name, k in zip(self.names, counts)}

    @property
    def date_range(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """(first date of a used row, last date whose price is used).

        The second is the realisation date of the last query label: ``date[q0+Q-1+horizon]``.
        """
        last = self._anchors + (self.support - 1 + self.horizon + self.query - 1 + self._lag)
        return (
            pd.Timestamp(int(self._dates[self._anchors].min())),
            pd.Timestamp(int(self._dates[last].max())),
        )

    # ------------------------------------------------------------------ batches
    def _gather(self, anchors: np.ndarray) -> Batch:
        s = anchors[:, None] + self._support_idx
        q = anchors[:, None] + self._query_idx
        batch = (
            torch.from_numpy(self._X[s]),
            torch.from_numpy(self._y[s]),
            torch.from_numpy(self._X[q]),
            torch.from_numpy(self._y[q]),
        )
        if not self._extras:
            return batch
        extra = {k: torch.from_numpy(v[q]) for k, v in self._extras.items()}
        # the support rows' path, for a P&L inner loop: a row's return is realised EXTRA_LAG
        # bars after it, so at the first query bar (where the adaptation trades) the last
        # EXTRA_LAG - horizon support rows' returns are not known yet: they earn 0
        unknown = max(EXTRA_LAG - self.horizon, 0)
        for key, name in (("returns", "support_returns"), ("vol", "support_vol")):
            if key in self._extras:
                rows = self._extras[key][s]
                if key == "returns" and unknown:
                    rows = rows.copy()
                    rows[:, self.support - unknown :] = 0.0
                extra[name] = torch.from_numpy(rows)
        return TaskBatch(*batch, extra)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Draw ``batch_size`` tasks uniformly (with replacement) from all valid anchors.

        Args:
            batch_size: B, tasks per batch (>= 1).
            rng: the generator of the draw (``np.random.default_rng(seed)``); the same
                generator state gives the same batch.

        Returns:
            xs (B, S, F), ys (B, S), xq (B, Q, F), yq (B, Q): float32 torch tensors.

        Raises:
            ConfigError: ``batch_size`` < 1 or ``rng`` not a numpy Generator.
        """
        batch_size = check_int("batch_size", batch_size, 1)
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(
                f"rng must be a numpy Generator (np.random.default_rng(seed)), got {rng!r}"
            )
        return self._gather(self._anchors[rng.integers(0, len(self._anchors), batch_size)])

    def fixed(self, n: int, seed: int = 0) -> Batch:
        """A deterministic batch of evenly spaced tasks (validation, evaluation).

        Anchors ``floor((i + u) * n_tasks / n)``, i = 0 .. n-1, in asset then date order,
        with the phase ``u`` in [0, 1) drawn from ``seed``: distinct tasks spread over all
        assets and dates. All tasks (each once) when ``n >= n_tasks``.

        Args:
            n: number of tasks wanted (>= 1).
            seed: seeds the phase ``u``. Default 0.

        Returns:
            xs, ys, xq, yq as :meth:`sample`, with B = min(n, n_tasks).

        Raises:
            ConfigError: ``n`` < 1.
        """
        n = check_int("n", n, 1)
        total = len(self._anchors)
        if n >= total:
            return self._gather(self._anchors)
        u = np.random.default_rng([int(seed), 0x7A5C]).random()
        pick = ((np.arange(n) + u) * (total / n)).astype(np.intp)
        return self._gather(self._anchors[np.minimum(pick, total - 1)])

    def split(self, at: Any) -> tuple[TaskSampler, TaskSampler]:
        """Chronological train/validation split at date ``at``.

        train keeps ``start`` and uses ``end = at`` (every train label is realised before
        ``at``; an earlier original ``end`` is kept); val uses ``start = at`` (every val row
        is dated on/after ``at``) and the original ``end``. No row is in both.

        Args:
            at: the split date (anything ``pd.Timestamp`` accepts).

        Returns:
            (train, val) TaskSamplers sharing this sampler's arrays.

        Raises:
            ConfigError: a bad date, or either side has no valid task.
        """
        at_ts = as_timestamp(at, "at")
        assert at_ts is not None
        train, val = copy.copy(self), copy.copy(self)
        train_end = at_ts if self.end is None else min(at_ts, self.end)
        val_start = at_ts if self.start is None else max(at_ts, self.start)
        train._restrict(self.start, train_end, why=f"split at {_fmt(at_ts)}, train part: ")
        val._restrict(val_start, self.end, why=f"split at {_fmt(at_ts)}, validation part: ")
        return train, val

    def __repr__(self) -> str:
        first, last = self.date_range
        return (
            f"TaskSampler({self.n_tasks} tasks over {len(self.names)} assets, support "
            f"{self.support}, query {self.query}, horizon {self.horizon}, features "
            f"{self.features}, {first.date()} .. {last.date()})"
        )


class PooledTaskSampler:
    """Cross-sectional tasks: every asset's rows over a window of dates (DoubleAdapt, Qlib).

    A task is anchored at date index a of the union calendar (every date on which at least
    one asset has a bar). Its support pool is every usable row of every asset dated on the
    support dates a .. a+S-1, its query pool every usable row dated on the query dates
    q0 .. q0+Q-1 with ``q0 = a+S-1+horizon``: the query window starts ``horizon`` dates
    after the support window ends, the deployment gap, as in :class:`TaskSampler`.

    A usable row has finite features and label, ``date >= start``, a label realised
    strictly before ``end``, and is *regular*: its label is realised exactly ``horizon``
    union dates later (the asset traded on every date of the horizon). Regular rows make
    the gap exact for every asset: each support label is realised by the first query date.
    Assets that start late or end early, or skip dates, simply contribute fewer rows.
    Every date of a window lies within the bounds: on or after ``start``, and realised
    (``horizon`` dates later) before ``end``.

    Fixed shapes (chosen over pad + mask, which the learners do not take): each task
    draws ``support_rows`` rows from its support pool and ``query_rows`` from its query
    pool, uniformly without replacement, kept in (date, asset) order; a window is a valid
    task only if its pools hold at least that many usable rows. So every batch is
    rectangular and feeds ``MetaLearner.fit`` unchanged.

    With ``demean=True`` each label is replaced by its cross-sectional excess: the label
    minus the mean label of the usable rows of its date (a cross-sectional portfolio cares
    about relative returns). Rows of a date with fewer than two usable rows are then
    dropped (no cross-section to demean against). The date's rows are all realised on the
    same date (regular rows), so demeaning uses no label a task could not see.

    Args:
        X: per asset, (T_i, F) feature rows (cast to float32); F is the same for all.
        y: per asset, (T_i,) labels (cast to float32), NaN where unknown.
        dates: per asset, the T_i bar dates, strictly increasing.
        support: S, support dates per task (bars of the union calendar, >= 1).
        query: Q, query dates per task (bars, >= 1).
        horizon: label horizon (bars, >= 1): the support/query gap and the label delay.
        support_rows: rows drawn from the support pool per task (>= 1). Default None: S.
        query_rows: rows drawn from the query pool per task (>= 1). Default None: Q.
        demean: labels minus their date's cross-sectional mean. Default False.
        start: no row dated before ``start`` is used; None = no bound. Default None.
        end: every used label is realised strictly before ``end``; None = no bound.
        names: asset names for messages. Default "asset0", "asset1", ...
        hint: a sentence appended to the "no valid task" error. Default "".

    Attributes:
        support, query, horizon, support_rows, query_rows (int), demean (bool): as given.
        start, end (pd.Timestamp | None): the date bounds.
        names (list[str]): asset names.

    Raises:
        ConfigError: bad sizes or dates, ``start >= end``, or no valid task.
        DataError: X, y and dates of different lengths or shapes, or unsorted dates.

    References:
        Zhao, Liu, Zhou et al. 2023, "DoubleAdapt: A Meta-learning Approach to Incremental
        Learning for Stock Trend Forecasting" (KDD): a task is all stocks over a date
        window (the rolling tasks of Qlib's DoubleAdapt / incremental-learning example).
    """

    def __init__(
        self,
        X: Sequence[np.ndarray],
        y: Sequence[np.ndarray],
        dates: Sequence[pd.DatetimeIndex],
        *,
        support: int,
        query: int,
        horizon: int,
        support_rows: int | None = None,
        query_rows: int | None = None,
        demean: bool = False,
        start: Any = None,
        end: Any = None,
        names: Sequence[str] | None = None,
        hint: str = "",
    ) -> None:
        self._hint = f" {hint}" if hint else ""
        self.support = check_int("support", support, 1)
        self.query = check_int("query", query, 1)
        self.horizon = check_int("horizon", horizon, 1)
        if support_rows is None:
            support_rows = self.support
        if query_rows is None:
            query_rows = self.query
        self.support_rows = check_int("support_rows", support_rows, 1)
        self.query_rows = check_int("query_rows", query_rows, 1)
        if not isinstance(demean, (bool, np.bool_)):
            raise ConfigError(f"demean must be True or False, got {demean!r}")
        self.demean = bool(demean)
        self.names, offsets, lengths, self._X, y_all, dates_ns = _load(
            "PooledTaskSampler", X, y, dates, names
        )
        h = self.horizon
        self._calendar = np.unique(dates_ns)  # union calendar, int64 ns
        u = np.searchsorted(self._calendar, dates_ns)  # union index of each row
        real = np.full(len(u), -1, dtype=np.intp)  # union index where the label is realised
        asset = np.zeros(len(u), dtype=np.intp)
        for k, (off, n) in enumerate(zip(offsets, lengths)):
            real[off : off + max(n - h, 0)] = u[off + h : off + n]
            asset[off : off + n] = k
        ok = np.isfinite(self._X).all(axis=1) & np.isfinite(y_all) & (real == u + h)
        y_all = y_all.copy()
        if self.demean:
            count = np.bincount(u[ok], minlength=len(self._calendar))
            total = np.bincount(u[ok], weights=y_all[ok], minlength=len(self._calendar))
            ok &= count[u] >= 2
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = total / count
            y_all[ok] = (y_all[ok] - mean[u[ok]]).astype(np.float32)
        self._y = y_all
        self._row_ok = ok
        self._asset = asset
        self._u = u
        order = np.lexsort((asset, u))  # rows in (date, asset) order
        self._order = order
        self._u_sorted = u[order]
        self._date_first = np.searchsorted(self._u_sorted, np.arange(len(self._calendar) + 1))
        self.start: pd.Timestamp | None = None
        self.end: pd.Timestamp | None = None
        self._anchors = np.zeros(0, dtype=np.intp)
        self._usable = ok
        self._restrict(as_timestamp(start, "start"), as_timestamp(end, "end"))

    def _restrict(
        self, start: pd.Timestamp | None, end: pd.Timestamp | None, why: str = ""
    ) -> None:
        """Find the valid anchors (union date indices) for the date bounds [start, end)."""
        if start is not None and end is not None and start >= end:
            raise ConfigError(f"{why}start ({_fmt(start)}) must be before end ({_fmt(end)})")
        S, Q, h = self.support, self.query, self.horizon
        cal = self._calendar
        T = len(cal)
        date_ok = np.ones(T, dtype=bool)  # regular rows of date t are realised at t + h
        date_ok[max(T - h, 0) :] = False  # no later date to realise a label
        if start is not None:
            date_ok &= cal >= _ns(start)
        if end is not None:
            realised = np.zeros(T, dtype=bool)
            realised[: max(T - h, 0)] = cal[h:] < _ns(end)
            date_ok &= realised
        usable = self._row_ok & date_ok[self._u]
        counts = np.bincount(self._u[usable], minlength=T)
        cs = np.concatenate([[0], np.cumsum(counts)])
        span = S - 1 + h + Q
        a = np.arange(max(T - span + 1, 0))
        q0 = a + S - 1 + h
        inside = np.concatenate([[0], np.cumsum(date_ok)])  # the whole window in bounds
        valid = (
            (inside[a + span] - inside[a] == span)
            & (cs[a + S] - cs[a] >= self.support_rows)
            & (cs[q0 + Q] - cs[q0] >= self.query_rows)
        )
        found = a[valid].astype(np.intp)
        if len(found) == 0:
            raise ConfigError(
                f"{why}no valid pooled task between start={_fmt(start)} and end={_fmt(end)}: "
                f"a task spans S-1+horizon+Q = {span} dates (support {S}, gap {h}, query "
                f"{Q}) and needs >= {self.support_rows} usable rows on its support dates and "
                f">= {self.query_rows} on its query dates; the {len(self.names)} assets have "
                f"{int(usable.sum())} usable rows over {T} dates, at most "
                f"{int(counts.max(initial=0))} per date. Use more bars or assets, a wider "
                "date range, or smaller support_rows/query_rows." + self._hint
            )
        self.start, self.end = start, end
        self._usable = usable
        self._anchors = found

    @classmethod
    def from_frames(
        cls,
        frames: Mapping[str, pd.DataFrame],
        spec: FeatureSpec,
        *,
        support: int,
        query: int,
        support_rows: int | None = None,
        query_rows: int | None = None,
        demean: bool = False,
        start: Any = None,
        end: Any = None,
        window: int = 1,
    ) -> PooledTaskSampler:
        """Pooled tasks from OHLCV frames, with ``spec``'s features and labels.

        As :meth:`TaskSampler.from_frames`; ``support`` and ``query`` count dates, and
        ``support_rows``, ``query_rows`` and ``demean`` are as in the constructor.

        Raises:
            ConfigError: no frames, a bad window, or no valid task.
            DataError: a frame that is not valid OHLCV.
        """
        X, y, dates, hint = _frame_inputs(frames, spec, window, support + query)
        return cls(
            X,
            y,
            dates,
            support=support,
            query=query,
            horizon=spec.horizon,
            support_rows=support_rows,
            query_rows=query_rows,
            demean=demean,
            start=start,
            end=end,
            names=list(frames),
            hint=hint,
        )

    # ------------------------------------------------------------------ properties
    @property
    def n_tasks(self) -> int:
        """Number of valid anchor dates, i.e. of distinct task windows."""
        return len(self._anchors)

    @property
    def features(self) -> int:
        """Width F of a row."""
        return int(self._X.shape[1])

    @property
    def rows_per_asset(self) -> dict[str, int]:
        """Usable rows of each asset within the date bounds."""
        counts = np.bincount(self._asset[self._usable], minlength=len(self.names))
        return {name: int(k) for name, k in zip(self.names, counts)}

    @property
    def date_range(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """(first support date, last date whose price is used).

        The second is the realisation date of the last used query label.
        """
        S, Q, h = self.support, self.query, self.horizon
        last_a = int(self._anchors.max())
        q0 = last_a + S - 1 + h
        per_date = np.bincount(self._u[self._usable], minlength=len(self._calendar))
        last_q = q0 + int(np.flatnonzero(per_date[q0 : q0 + Q]).max())
        return (
            pd.Timestamp(int(self._calendar[self._anchors.min()])),
            pd.Timestamp(int(self._calendar[last_q + h])),
        )

    @property
    def windows(self) -> pd.DataFrame:
        """The task windows, one row each, in the order ``pools``/``fixed`` index them.

        Columns: anchor (union-calendar index of the first support date), support_start,
        support_end, query_start, query_end (dates; the query starts ``horizon`` union
        dates after the support ends).
        """
        a = self._anchors
        q0 = a + self.support - 1 + self.horizon
        cal = self._calendar.astype("datetime64[ns]")
        return pd.DataFrame(
            {
                "anchor": a,
                "support_start": cal[a],
                "support_end": cal[a + self.support - 1],
                "query_start": cal[q0],
                "query_end": cal[q0 + self.query - 1],
            }
        )

    # ------------------------------------------------------------------ batches
    def pools(self, anchor: int) -> tuple[np.ndarray, np.ndarray]:
        """Global row indices of the support and query pools of the task at ``anchor``.

        Args:
            anchor: union-calendar date index of the first support date.

        Returns:
            (support rows, query rows), each in (date, asset) order.
        """
        first, S, Q = self._date_first, self.support, self.query
        q0 = anchor + S - 1 + self.horizon
        s = self._order[first[anchor] : first[anchor + S]]
        q = self._order[first[q0] : first[q0 + Q]]
        return s[self._usable[s]], q[self._usable[q]]

    def _gather(self, anchors: np.ndarray, rng: np.random.Generator) -> Batch:
        S_rows, Q_rows = [], []
        for a in anchors:
            s, q = self.pools(int(a))
            S_rows.append(s[np.sort(rng.choice(len(s), self.support_rows, replace=False))])
            Q_rows.append(q[np.sort(rng.choice(len(q), self.query_rows, replace=False))])
        s_idx, q_idx = np.stack(S_rows), np.stack(Q_rows)
        return (
            torch.from_numpy(self._X[s_idx]),
            torch.from_numpy(self._y[s_idx]),
            torch.from_numpy(self._X[q_idx]),
            torch.from_numpy(self._y[q_idx]),
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Draw ``batch_size`` task windows uniformly (with replacement), then their rows.

        Args:
            batch_size: B, tasks per batch (>= 1).
            rng: the generator of the draws; the same state gives the same batch.

        Returns:
            xs (B, support_rows, F), ys (B, support_rows), xq (B, query_rows, F),
            yq (B, query_rows): float32 torch tensors.

        Raises:
            ConfigError: ``batch_size`` < 1 or ``rng`` not a numpy Generator.
        """
        batch_size = check_int("batch_size", batch_size, 1)
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(
                f"rng must be a numpy Generator (np.random.default_rng(seed)), got {rng!r}"
            )
        anchors = self._anchors[rng.integers(0, len(self._anchors), batch_size)]
        return self._gather(anchors, rng)

    def fixed(self, n: int, seed: int = 0) -> Batch:
        """A deterministic batch of evenly spaced task windows (validation, evaluation).

        Windows are spread as in :meth:`TaskSampler.fixed`; their rows are drawn with a
        generator seeded by ``seed``. All windows (each once) when ``n >= n_tasks``.

        Args:
            n: number of tasks wanted (>= 1).
            seed: seeds the phase and the row draws. Default 0.

        Returns:
            xs, ys, xq, yq as :meth:`sample`, with B = min(n, n_tasks).

        Raises:
            ConfigError: ``n`` < 1.
        """
        n = check_int("n", n, 1)
        total = len(self._anchors)
        rng = np.random.default_rng([int(seed), 0x7A5C, 1])
        if n >= total:
            return self._gather(self._anchors, rng)
        pick = ((np.arange(n) + rng.random()) * (total / n)).astype(np.intp)
        return self._gather(self._anchors[np.minimum(pick, total - 1)], rng)

    def split(self, at: Any) -> tuple[PooledTaskSampler, PooledTaskSampler]:
        """Chronological train/validation split at date ``at``, as :meth:`TaskSampler.split`.

        Raises:
            ConfigError: a bad date, or either side has no valid task.
        """
        at_ts = as_timestamp(at, "at")
        assert at_ts is not None
        train, val = copy.copy(self), copy.copy(self)
        train_end = at_ts if self.end is None else min(at_ts, self.end)
        val_start = at_ts if self.start is None else max(at_ts, self.start)
        train._restrict(self.start, train_end, why=f"split at {_fmt(at_ts)}, train part: ")
        val._restrict(val_start, self.end, why=f"split at {_fmt(at_ts)}, validation part: ")
        return train, val

    def __repr__(self) -> str:
        first, last = self.date_range
        return (
            f"PooledTaskSampler({self.n_tasks} windows over {len(self.names)} assets, "
            f"support {self.support} dates ({self.support_rows} rows), query {self.query} "
            f"dates ({self.query_rows} rows), horizon {self.horizon}, demean {self.demean}, "
            f"features {self.features}, {first.date()} .. {last.date()})"
        )
