"""MetaStrategy: rolling MAML adaptation inside the backtest loop, trading through SignalSizer.

``MetaStrategy`` computes its signal with a meta-learned model adapted on the most recent
realised bars; it trades through ``metabt.strategies.trader.SignalTrader`` (the base of every metabt
strategy, re-exported here: one signal per data, one sizing path).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import backtrader as bt
import numpy as np
import pandas as pd

from metabt.data.bars import check_same_bars
from metabt.errors import ConfigError
from metabt.features import as_spec
from metabt.features.spec import FeatureSpec, OnlineComputer, OnlineFeatures
from metabt.learn.adapter import Adapted, Adapter, BatchAdapter
from metabt.learn.learner import MetaLearner
from metabt.learn.online import LOG_COLUMNS, OnlineMeta
from metabt.strategies.trader import Signal, SignalTrader

__all__ = ["Adapted", "Adapter", "MetaStrategy", "Signal", "SignalTrader"]


@dataclass
class _AssetState:
    """Per-data buffers of MetaStrategy, one entry per bar.

    Scalars per bar live in Python lists (appending and reading a Python float is far
    cheaper than indexing a NumPy array one element at a time); the feature rows, which
    are sliced as support sets, live in a growing float32 array.
    """

    spec: FeatureSpec
    index: int  # of the data in MetaStrategy.datas
    n: int = 0  # bars seen
    first_row: int = -1  # first bar with a feature row (end of the feature warm-up)
    X: np.ndarray = field(init=False)  # (capacity, F) float32 feature rows
    log_close: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)  # label scale of each bar
    y: list[float] = field(default_factory=list)  # realised labels (NaN until known)
    pred: list[float] = field(default_factory=list)  # prediction made at each bar
    made_by: list[int] = field(default_factory=list)  # adaptation index behind it
    model: Adapted | None = None
    model_index: int = -1  # index of the current adaptation in MetaStrategy.adaptations
    since_adapt: int = 0
    online: OnlineComputer = field(init=False)
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=250))  # realised
    # realised errors of predictions made since the last drift-triggered adaptation
    drift_from: int = 0  # index (in adaptations) of that adaptation; 0 before any
    recent_errors: list[float] = field(default_factory=list)
    batch: tuple[Any, int] | None = None  # (BatchAdapted, slot) behind the current model

    def __post_init__(self) -> None:
        self.online = self.spec.online()  # the fast scalar path for the built-in features
        self.X = np.full((512, self.spec.n_features), np.nan, dtype=np.float32)

    def grow(self) -> None:
        extra = np.full_like(self.X, np.nan)
        self.X = np.vstack([self.X, extra])


class _Slot:
    """Task ``index`` of a ``BatchAdapted``, standing for its model (an :class:`Adapted`).

    The batch predicts all its tasks' rows in one ``predict_rows`` call, so the task's own
    ``AdaptedModel`` is built only when a row is predicted alone (``predict_row``).
    Used for the "kernel" and "head" backends, whose models carry no task context.
    """

    __slots__ = ("_model", "batch", "index", "loss_after", "loss_before", "steps")

    def __init__(self, batch: Any, index: int) -> None:
        self.batch = batch
        self.index = index
        self.loss_before = float(batch.loss_before[index])
        self.loss_after = float(batch.loss_after[index])
        self.steps: int = batch.steps
        self._model: Adapted | None = None

    def predict_row(self, x: np.ndarray) -> float:
        """The task model's prediction for one row (the model is built on first use)."""
        if self._model is None:
            self._model = self.batch.model(self.index)
        return self._model.predict_row(x)


def _extra_lines(columns: Sequence[str], data: bt.DataBase) -> list[tuple[str, Any]]:
    """The lines of ``data``'s extra columns that the features read (``FeatureSpec.columns``)."""
    out = []
    for name in columns:
        if name not in data.lines.getlinealiases():
            raise ConfigError(
                f"the features read column {name!r}, which data {data._name!r} lacks; load "
                "the frame with that column (e.g. metabt.features.factors.with_benchmark for "
                "'benchmark') and feed it with metabt.data.feed, so extra columns become lines"
            )
        out.append((name, getattr(data.lines, name)))
    return out


class MetaStrategy(SignalTrader):
    """Trades the signal of a meta-learned model, re-adapted on a rolling schedule.

    At every bar t and for every data: the feature row x_t is computed from bars ≤ t with
    the checkpoint's ``FeatureSpec``; the label of bar t − horizon becomes known (it needs
    the close of bar t); every ``adapt_every`` bars the meta-init θ is adapted on the last
    ``support`` realised pairs (x_s, y_s), s ≤ t − horizon, and the adapted model φ gives
    the signal f_φ(x_t), which the sizer turns into a position. Each data is adapted on its
    own history from the same θ. No label that is not yet known is ever used.

    Params:
        learner (str | os.PathLike | MetaLearner | Adapter): checkpoint path, a
            MetaLearner with a ``feature_spec``, or another :class:`Adapter` (the linear
            baselines). Required.
        adapt_every (int): bars between adaptations. Default 5.
        support (int): realised (x, y) pairs per adaptation, in bars. Default 60.
        inner_steps (int | None): gradient steps per adaptation; None = the learner's.
        drift_threshold (float | None): market observer. When set, also adapt as soon as
            the mean realised squared error of the last ``drift_window`` scored predictions
            exceeds ``drift_threshold`` times the mean realised squared error of the last
            250 (the error "jumps"). After a drift-triggered adaptation only predictions
            made from then on count, so one jump triggers once; scheduled adaptations do
            not reset the window (with adapt_every <= horizon, no model lives long enough
            to have its own predictions scored). Default None (schedule only).
        drift_window (int): realised predictions in the short error window, bars. Default 10.
        online_meta_lr (float): outer-loop learning rate of online meta-updates of θ during
            the backtest; 0 = off (θ fixed, as trained). Default 0. When > 0 (a
            MetaLearner only), adaptation a of a data at bar k (support bars k - horizon -
            support + 1 .. k - horizon) predicts bars k .. e_a, with e_a = k + adapt_every
            - 1, or the bar before that data's next adaptation if it comes sooner (a drift
            trigger). At bar e_a + horizon, the label of e_a is realised and the query (the
            bars k .. e_a with finite features and labels) is complete: after the signals
            of that bar, a private copy of θ takes one outer step (``meta_step``, Adam with
            lr = online_meta_lr) on that (support, query) pair. Adaptations from the next
            bar on start from the updated θ; the user's learner and checkpoint are never
            modified. See :attr:`theta_drift` and :meth:`theta_log`.
        batch_adapt (bool): when several data are due to adapt on the same bar, adapt them
            in one ``MetaLearner.adapt_batch`` call and predict their rows in one
            ``predict_rows`` call (equal to the per-data path to float precision). Used
            only when the learner is a ``metabt.learn.adapter.BatchAdapter`` (has
            ``adapt_batch``) and the signal is MetaStrategy's own
            (:meth:`_signal_is_per_asset`). Default True.
        seed (int): kept in ``strategy.p.seed`` for the run's record; adaptation is
            deterministic (full-batch gradient descent, no sampling), so equal data,
            checkpoint and params give equal orders whatever the seed. Default 0.
        trade_start, gross_leverage: see :class:`SignalTrader`.

    Attributes:
        learner (MetaLearner): the meta-learner (θ is never modified).
        horizon (int): label horizon in bars, from the checkpoint's feature spec.
        adaptations (list[dict]): one entry per adaptation: date, data, trigger
            ("schedule" or "drift"), support (pairs), loss_before, loss_after (support MSE),
            steps; see :meth:`adaptation_log` for the realised query loss.

    Raises:
        ConfigError: missing learner, a learner without feature spec, bad schedule values,
            a negative ``online_meta_lr``, or ``online_meta_lr > 0`` with an adapter that
            has no outer loop (RidgeAdapter, RLSAdapter).
        CheckpointError: an unreadable or mismatched checkpoint.

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks"; Zhao et al. 2023, "DoubleAdapt: A Meta-learning Approach to
        Incremental Learning for Stock Trend Forecasting" (online meta-updates of θ).
    """

    #: subclasses that stand for a baseline require a learner of this algorithm
    required_algorithm: ClassVar[str | None] = None
    horizon: int  # always set from the learner's feature spec

    params: Any = (
        ("learner", None),
        ("adapt_every", 5),
        ("support", 60),
        ("inner_steps", None),
        ("seed", 0),
        ("drift_threshold", None),
        ("drift_window", 10),
        ("online_meta_lr", 0.0),
        ("batch_adapt", True),
    )

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        learner = self.p.learner
        if learner is None:
            raise ConfigError(
                "MetaStrategy needs learner=<checkpoint path or MetaLearner>; "
                "train one with `metabt train`"
            )
        if isinstance(learner, (str, os.PathLike)):
            learner = MetaLearner.load(learner)
        if not isinstance(learner, Adapter):
            raise ConfigError(
                f"learner must be a checkpoint path, a MetaLearner or an adapter such as "
                f"metabt.learn.linear.RidgeAdapter, got {type(learner).__name__}"
            )
        if learner.feature_spec is None:
            raise ConfigError(
                "the learner has no feature_spec; create it with "
                "MetaLearner(model, feature_spec=FeatureSpec(...))"
            )
        required = self.required_algorithm
        if required is not None and learner.algorithm != required:
            raise ConfigError(
                f"{type(self).__name__} needs a learner trained with algorithm={required!r}, "
                f"got {learner.algorithm!r}; train one with algorithm={required!r}"
            )
        for name in ("adapt_every", "support"):
            value = getattr(self.p, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer (bars), got {value!r}")
        steps = self.p.inner_steps
        if steps is not None and (
            isinstance(steps, bool) or not isinstance(steps, int) or steps < 0
        ):
            raise ConfigError(f"inner_steps must be an integer >= 0 or None, got {steps!r}")
        self.learner: Adapter = learner
        spec = as_spec(learner.feature_spec)
        assert spec is not None  # checked above
        self.spec: FeatureSpec = spec
        self.horizon = self.spec.horizon
        self._label_clip = self.spec.label_clip
        self.window: int = learner.window
        drift = self.p.drift_threshold
        if drift is not None and not (isinstance(drift, (int, float)) and drift > 0):
            raise ConfigError(f"drift_threshold must be a number > 0 or None, got {drift!r}")
        window = self.p.drift_window
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ConfigError(f"drift_window must be an integer >= 2 (bars), got {window!r}")
        self.adaptations: list[dict[str, Any]] = []
        self._query_sq = [0.0]  # realised squared error per adaptation (index shifted by 1)
        self._query_n = [0]
        self._states = [_AssetState(self.spec, i) for i in range(len(self.datas))]
        self._date_cache: tuple[tuple[float, Any], pd.Timestamp] | None = None
        # user features may read the open and extra columns (lines of metabt.data.feed)
        self._rich = (
            not isinstance(self._states[0].online, OnlineFeatures) if self._states else False
        )
        self._extra = [_extra_lines(self.spec.columns, d) for d in self.datas]
        rate = self.p.online_meta_lr
        if isinstance(rate, bool) or not (
            isinstance(rate, (int, float)) and math.isfinite(rate) and rate >= 0
        ):
            raise ConfigError(
                f"online_meta_lr must be a number >= 0 (outer-loop learning rate; 0 = off), "
                f"got {rate!r}"
            )
        self._online = (
            OnlineMeta(learner, rate, self.p.adapt_every, self.horizon) if rate > 0 else None
        )
        self._batch_check: tuple[Adapter, bool] | None = None  # see _batch_adapter

    def start(self) -> None:
        """Set up sizing and the bar frequency; refuse bars of another kind than training's.

        Raises:
            ConfigError: the learner's checkpoint records another bar frequency (e.g. a
                model trained on daily bars backtested on hourly ones): its horizon, support
                and features count bars, so it must be retrained on these bars.
        """
        super().start()
        if multiprocessing.parent_process() is not None:
            # a worker process (backtrader's optstrategy pool, metabt's executors): one
            # intra-op thread, or every worker's torch would take every core
            import torch

            torch.set_num_threads(1)
        learner = self.learner
        record = learner.train_config if isinstance(learner, MetaLearner) else None
        if self.bar_frequency is not None:
            check_same_bars((record or {}).get("bar_frequency"), self.bar_frequency)

    def _adapter(self) -> Adapter:
        """What adapts: the private online copy of θ when online meta-updates are on."""
        return self.learner if self._online is None else self._online.learner

    def _batch_adapter(self) -> BatchAdapter | None:
        """The adapter when it adapts several windows in one call (a :class:`BatchAdapter`,
        e.g. a MetaLearner), else None. The ``isinstance`` check of a runtime protocol costs
        tens of microseconds, so it runs once per adapter, not once per bar."""
        adapter = self._adapter()
        check = self._batch_check
        if check is None or check[0] is not adapter:
            check = self._batch_check = (adapter, isinstance(adapter, BatchAdapter))
        return cast(BatchAdapter, adapter) if check[1] else None

    # ---- per-bar bookkeeping
    def _record_bar(self, state: _AssetState, data: bt.DataBase) -> int:
        k = state.n
        if k == len(state.X):
            state.grow()
        high, low, _, volume = self._bars[state.index]
        close = self._close[state.index]  # this bar's close, read once by SignalTrader
        if self._rich:
            i = state.index
            extra = {name: line[0] for name, line in self._extra[i]}
            row, scale = state.online.update(
                high[0], low[0], close, volume[0], open=data.open[0], extra=extra or None
            )
        else:
            row, scale = state.online.update(high[0], low[0], close, volume[0])
        if row is not None:
            state.X[k] = row
            if state.first_row < 0:
                state.first_row = k
        log_close = self._last_log_close[state.index]  # log(close), set by SignalTrader
        state.log_close.append(log_close)
        state.scale.append(scale)
        state.y.append(math.nan)
        state.pred.append(math.nan)
        state.made_by.append(-1)
        state.n = k + 1
        s = k - self.horizon
        if s >= 0:  # the label of bar s is realised by the close of bar k = s + horizon
            y = (log_close - state.log_close[s]) / state.scale[s]
            if self._label_clip is not None and math.isfinite(y):  # as FeatureSpec.labels
                y = min(max(y, -self._label_clip), self._label_clip)
            state.y[s] = y
            prediction = state.pred[s]
            if math.isfinite(prediction) and math.isfinite(y):  # now scored
                err = (prediction - y) ** 2
                a = state.made_by[s]
                self._query_sq[a + 1] += err
                self._query_n[a + 1] += 1
                state.errors.append(err)
                if a >= state.drift_from:
                    state.recent_errors.append(err)
        return k

    def _inputs(self, state: _AssetState, first: int, last: int) -> np.ndarray:
        """Model inputs of bars first..last: (last - first + 1, window * F), oldest row first.

        Requires ``first >= state.first_row + window - 1`` (every row already computed).
        """
        if self.window == 1:
            return state.X[first : last + 1]
        idx = np.arange(first, last + 1)[:, None] + np.arange(1 - self.window, 1)[None, :]
        return state.X[idx].reshape(last - first + 1, -1)

    def _due(self, state: _AssetState, k: int) -> tuple[np.ndarray, np.ndarray, str] | None:
        """The support set (x, y) and trigger when data adapts at bar k, else None."""
        state.since_adapt += 1
        trigger = "schedule"
        if state.model is not None and state.since_adapt < self.p.adapt_every:
            if not self._drifted(state):
                return None
            trigger = "drift"
        last = k - self.horizon  # newest bar whose label is known
        first = last - self.p.support + 1
        if state.first_row < 0 or first < state.first_row + self.window - 1:
            return None  # still in the feature warm-up: not enough realised pairs
        x = self._inputs(state, first, last)
        y = np.array(state.y[first : last + 1], dtype=np.float32)
        return x, y, trigger

    def _maybe_adapt(self, state: _AssetState, data: bt.DataBase, k: int) -> None:
        due = self._due(state, k)
        if due is not None:
            model = self._adapter().adapt(due[0], due[1], steps=self.p.inner_steps)
            self._adopt(state, data, k, model, due)

    def _adopt(
        self,
        state: _AssetState,
        data: bt.DataBase,
        k: int,
        model: Adapted,
        due: tuple[np.ndarray, np.ndarray, str],
        batch: tuple[Any, int] | None = None,
    ) -> None:
        """Make ``model`` (adapted at bar k on ``due``'s support set) data's current model."""
        x, y, trigger = due
        state.model = model
        state.batch = batch
        state.since_adapt = 0
        state.model_index = len(self.adaptations)
        if trigger == "drift":  # judge the next drift on what the new model does
            state.drift_from = state.model_index
            state.recent_errors = []
        self._query_sq.append(0.0)
        self._query_n.append(0)
        self.adaptations.append(
            {
                "date": self._bar_date(data),
                "data": data._name,
                "trigger": trigger,
                "support": len(y),
                "loss_before": model.loss_before,
                "loss_after": model.loss_after,
                "steps": model.steps,
            }
        )
        context = getattr(model, "context", None)  # CAVIA's adapted task embedding
        if context is not None:
            self.adaptations[-1]["context"] = np.asarray(context, dtype=np.float64).ravel()
        if self._online is not None:
            self._online.opened(state.index, state.model_index, k, x, y)

    def _bar_date(self, data: bt.DataBase) -> pd.Timestamp:
        """``pd.Timestamp(data.datetime.date(0))``, built once per bar time and time zone."""
        line = data.lines.datetime
        key = (line[0], line._tz)
        cached = self._date_cache
        if cached is None or cached[0] != key:
            cached = self._date_cache = (key, pd.Timestamp(line.date(0)))
        return cached[1]

    def _drifted(self, state: _AssetState) -> bool:
        """True when the current model's recent realised error jumped (market observer)."""
        if self.p.drift_threshold is None:
            return False
        window = self.p.drift_window
        if len(state.recent_errors) < window or len(state.errors) < 2 * window:
            return False
        recent = sum(state.recent_errors[-window:]) / window
        usual = sum(state.errors) / len(state.errors)
        return recent > self.p.drift_threshold * usual

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        state = self._states[i]
        k = self._record_bar(state, data)
        self._maybe_adapt(state, data, k)
        if state.model is None or k < state.first_row + self.window - 1:
            return math.nan
        prediction = state.model.predict_row(self._row(state, k))
        state.pred[k] = prediction
        state.made_by[k] = state.model_index
        return prediction

    def compute_signals(self, indices: list[int]) -> list[float]:
        """Signals of the data with a new bar; then the online meta-updates of the bar.

        Batched (one ``adapt_batch`` and one ``predict_rows`` call) when ``batch_adapt``
        and the learner allow it, else :meth:`compute_signal` for each data.
        """
        batched = (
            len(indices) > 1
            and self.p.batch_adapt
            and self._signal_is_per_asset()
            and self._batch_adapter() is not None
        )
        signals = self._signals_batched(indices) if batched else super().compute_signals(indices)
        if self._online is not None:
            self._online_updates(indices)
        return signals

    def _signal_is_per_asset(self) -> bool:
        """True when the signal is :meth:`MetaStrategy.compute_signal`'s, as batched; a
        subclass overriding :meth:`compute_signal` says here when it keeps it."""
        return type(self).compute_signal is MetaStrategy.compute_signal

    def _signals_batched(self, indices: list[int]) -> list[float]:
        """:meth:`compute_signal` for several data at once (same results, float precision)."""
        states = [self._states[i] for i in indices]
        bars = [self._record_bar(state, self.datas[state.index]) for state in states]
        groups: dict[int, list[tuple[_AssetState, int, Any]]] = {}  # by support length
        for state, k in zip(states, bars):
            due = self._due(state, k)
            if due is not None:
                groups.setdefault(len(due[1]), []).append((state, k, due))
        adapter = self._adapter()
        for group in groups.values():
            if len(group) == 1:
                state, k, due = group[0]
                model = adapter.adapt(due[0], due[1], steps=self.p.inner_steps)
                self._adopt(state, self.datas[state.index], k, model, due)
                continue
            xs = np.stack([due[0] for _, _, due in group])
            ys = np.stack([due[1] for _, _, due in group])
            batcher = self._batch_adapter()
            assert batcher is not None  # checked by compute_signals
            adapted = batcher.adapt_batch(xs, ys, steps=self.p.inner_steps)
            lazy = adapted.backend in ("kernel", "head")  # models without a task context
            for b, (state, k, due) in enumerate(group):
                model = _Slot(adapted, b) if lazy else adapted.model(b)
                self._adopt(state, self.datas[state.index], k, model, due, (adapted, b))
        out = [math.nan] * len(states)
        live = [
            j
            for j, (state, k) in enumerate(zip(states, bars))
            if state.model is not None and k >= state.first_row + self.window - 1
        ]
        batch = states[live[0]].batch if live else None
        if (
            batch is not None
            and len(batch[0]) == len(live)
            and all((states[j].batch or (None,))[0] is batch[0] for j in live)
        ):  # every model of one batch has a row now: one call
            live.sort(key=lambda j: states[j].batch[1])  # type: ignore[index]
            rows = np.stack([self._row(states[j], bars[j]) for j in live])
            values = batch[0].predict_rows(rows).tolist()
        else:
            values = [states[j].model.predict_row(self._row(states[j], bars[j])) for j in live]  # type: ignore[union-attr]
        for j, value in zip(live, values):
            state, k = states[j], bars[j]
            out[j] = state.pred[k] = value
            state.made_by[k] = state.model_index
        return out

    def _row(self, state: _AssetState, k: int) -> np.ndarray:
        """The model input of bar k: (window * F,)."""
        return state.X[k] if self.window == 1 else self._inputs(state, k, k)[0]

    def _online_updates(self, indices: list[int]) -> None:
        """One outer step of θ per adaptation whose query labels became all realised now."""
        online = self._online
        assert online is not None
        for i in indices:
            state = self._states[i]
            for entry in online.due(i, state.n - 1):
                yq = np.array(state.y[entry.start : entry.end + 1], dtype=np.float32)
                xq = self._inputs(state, entry.start, entry.end)
                keep = np.isfinite(yq) & np.isfinite(xq).all(axis=1)
                if keep.any():
                    data = self.datas[i]
                    online.step(entry, xq[keep], yq[keep], data.datetime.date(0), data._name)

    @property
    def theta_drift(self) -> list[dict[str, Any]]:
        """The online meta-updates of θ, one dict each (empty when ``online_meta_lr`` is 0).

        Keys: date (the bar whose close realised the query), data, update (0, 1, ...),
        adaptation (index in :attr:`adaptations`), query (rows), query_loss (query MSE
        after the inner loop, before the step), theta_drift (``||θ - θ₀||₂`` after the
        step, θ₀ = the learner's θ), theta_sha256 (digest of θ after the step: equal
        digests mean bit-identical θ).
        """
        return [] if self._online is None else self._online.log

    @property
    def online_learner(self) -> MetaLearner | None:
        """The private copy of the learner that online meta-updates train (None when off)."""
        return None if self._online is None else self._online.learner

    def theta_log(self) -> pd.DataFrame:
        """:attr:`theta_drift` as a DataFrame, one row per online meta-update."""
        if self._online is None:
            return pd.DataFrame(columns=LOG_COLUMNS)
        return self._online.frame()

    # ---- results
    def features(self, i: int = 0) -> np.ndarray:
        """Feature rows computed inside the backtest for data ``i``: (bars, F) float32."""
        state = self._states[i]
        return state.X[: state.n].copy()

    def adaptation_log(self) -> pd.DataFrame:
        """The adaptations as a DataFrame, one row each.

        Columns: date, data, trigger ("schedule" or "drift"), support (pairs), loss_before
        and loss_after (support MSE), steps, query_loss (realised MSE of the predictions
        this adapted model made, scored as their labels arrived; NaN if none was scored
        yet), query_count (how many were scored); for a learner whose adapted model has a
        task embedding (CAVIA's context vector), ``context`` ((C,) float64 ndarray).
        """
        columns = ["date", "data", "trigger", "support", "loss_before", "loss_after", "steps"]
        if any("context" in a for a in self.adaptations):
            columns.append("context")
        frame = pd.DataFrame(self.adaptations, columns=columns)
        counts = np.asarray(self._query_n[1:], dtype=float)
        sums = np.asarray(self._query_sq[1:], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["query_loss"] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        frame["query_count"] = counts.astype(int)
        return frame
