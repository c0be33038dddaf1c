"""MetaStrategy: rolling MAML adaptation inside the backtest loop, trading through SignalSizer."""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import backtrader as bt
import numpy as np
import pandas as pd

from metabt._checks import as_date, reject_unknown_params
from metabt.errors import ConfigError
from metabt.features import FeatureSpec, OnlineFeatures
from metabt.meta import AdaptedModel, MetaLearner
from metabt.sizers import SignalSizer

__all__ = ["MetaStrategy", "Signal", "SignalStrategy"]


class Signal(bt.Indicator):
    """One data's signal, as a backtrader line (``signal``) that plots and can be read back.

    The owning strategy writes ``signal[0]`` in its ``next()``; bars without a signal
    (warm-up, not yet adapted) hold NaN.
    """

    lines = ("signal",)
    plotinfo: ClassVar[dict[str, Any]] = {"subplot": True, "plotname": "signal"}

    def next(self) -> None:
        """Nothing to compute: the strategy writes the value of the bar."""


class SignalStrategy(bt.Strategy):
    """Base of metabt's strategies: one signal per data, positions set through SignalSizer.

    Each bar, :meth:`compute_signal` gives each data that has a new bar a signal (NaN = no
    view, go flat); the sizer turns signals into target weights (volatility-targeted,
    capped per data), the portfolio's gross leverage is capped, and ``order_target_size``
    moves each position, reductions first so that they free cash for the increases.
    Orders fill at the next bar's open (backtrader's default), so a decision at bar t
    never trades at t's close.

    If the Cerebro's sizer is not a :class:`SignalSizer`, a default ``SignalSizer()`` is used.

    Params:
        trade_start (date | str | None): no orders before this date; bars before it are a
            warm-up period. Default None (trade from the first bar).
        gross_leverage (float): cap on the sum of |position value| over all data, as a
            multiple of portfolio value. Default 0.95: orders fill at the next bar's open,
            so a little cash absorbs overnight gaps and commission; an order the broker
            still rejects is recorded in ``rejected_orders`` and retried at the next bar.

    Attributes:
        signals (list[Signal]): the ``signal`` line of each data, in ``self.datas`` order.
        rejected_orders (list[dict]): orders the broker rejected (margin, cash), with date.
        traded_value (float): total notional of filled orders, currency units (turnover).
    """

    params: Any = (("trade_start", None), ("gross_leverage", 0.95))

    def __init__(self, **unknown: Any) -> None:
        super().__init__()
        reject_unknown_params(type(self).__name__, unknown, self.params)
        if not (math.isfinite(self.p.gross_leverage) and self.p.gross_leverage > 0):
            raise ConfigError(f"gross_leverage must be > 0, got {self.p.gross_leverage!r}")
        self._trade_start = as_date(self.p.trade_start, "trade_start")
        self.signals = [Signal(d) for d in self.datas]
        self.rejected_orders: list[dict[str, Any]] = []
        self.traded_value = 0.0
        self._signal_sizer: SignalSizer | None = None
        self._seen = [0] * len(self.datas)  # bars of each data already processed
        self._last = [math.nan] * len(self.datas)  # latest signal of each data

    # ---- hooks for subclasses
    def compute_signal(self, i: int, data: bt.DataBase) -> float:  # pragma: no cover - abstract
        """The signal of data ``i`` at the current bar (NaN for none)."""
        raise NotImplementedError

    def current_signal(self, data: bt.DataBase) -> float:
        """The latest signal of ``data`` (used by ``SignalSizer._getsizing``)."""
        return self._last[self.datas.index(data)]

    # ---- backtrader hooks
    def start(self) -> None:
        sizer = self.getsizer()
        if not isinstance(sizer, SignalSizer):
            sizer = SignalSizer()
            self.setsizer(sizer)
        self._signal_sizer = sizer

    def notify_order(self, order: bt.Order) -> None:
        if order.status == order.Completed:
            self.traded_value += abs(order.executed.size * order.executed.price)
        elif order.status in (order.Margin, order.Rejected):
            self.rejected_orders.append(
                {
                    "date": self.datas[0].datetime.date(0),
                    "data": order.data._name,
                    "size": order.created.size,
                    "status": order.getstatusname(),
                }
            )

    def realised_vol(self, i: int) -> float:
        """Annualised realised volatility of data ``i`` for sizing (the sizer's estimate)."""
        assert self._signal_sizer is not None
        return self._signal_sizer.realised_vol(self.datas[i])

    def trading(self) -> bool:
        """True once the current bar is on or after ``trade_start``."""
        return self._trade_start is None or self.datas[0].datetime.date(0) >= self._trade_start

    def prenext(self) -> None:
        self._step()

    def next(self) -> None:
        self._step()

    def _step(self) -> None:
        """Signals for the data that have a new bar; then rebalance if trading.

        Runs in ``prenext`` too, so bars are not lost while backtrader waits for the other
        data (different start dates) or for indicators' minimum periods.
        """
        active = []
        for i, d in enumerate(self.datas):
            n = len(d)
            if n == 0:
                continue
            if n > self._seen[i]:  # a new bar of this data (calendars may differ)
                self._seen[i] = n
                self._last[i] = self.compute_signal(i, d)
                self.signals[i].signal[0] = self._last[i]
            active.append(i)
        if active and self.trading():
            self.rebalance(active, [self._last[i] for i in active])

    def rebalance(self, active: list[int], signals: list[float]) -> None:
        """Move each active data's position to the sizer's target, with the gross-leverage cap.

        Args:
            active: indices (in ``self.datas``) of the data that have bars.
            signals: their current signals (NaN = go flat).
        """
        sizer = self._signal_sizer
        assert sizer is not None
        datas = [self.datas[i] for i in active]
        vols = [self.realised_vol(i) for i in active]
        weights = [sizer.target_weight(s, v) for s, v in zip(signals, vols)]
        gross = float(sum(abs(w) for w in weights))
        scale = min(1.0, self.p.gross_leverage / gross) if gross > 0 else 1.0
        value = self.broker.getvalue()
        prices = [d.close[0] for d in datas]
        current = [self.getposition(d).size for d in datas]

        def targets(deadband: float | None) -> list[int]:
            return [
                sizer.target_shares(
                    s, v, p, value, current=c, weight_scale=scale, deadband=deadband
                )
                for s, v, p, c in zip(signals, vols, prices, current)
            ]

        target = targets(None)
        if sum(abs(t) * p for t, p in zip(target, prices)) > self.p.gross_leverage * value:
            # positions held inside their deadband pushed the book over the cap: go exact
            target = targets(0.0)
        orders = [(abs(t) < abs(c), d, t) for d, t, c in zip(datas, target, current) if t != c]
        # reductions (flag True) sort first: they free cash for the increases
        for _, d, size in sorted(orders, key=lambda o: not o[0]):
            self.order_target_size(d, size)


@dataclass
class _AssetState:
    """Per-data buffers of MetaStrategy: closes, feature rows, label scales, labels."""

    spec: FeatureSpec
    capacity: int = 512
    n: int = 0
    close: np.ndarray = field(init=False)  # (capacity,) close of each bar
    X: np.ndarray = field(init=False)  # (capacity, F) float32 feature rows
    scale: np.ndarray = field(init=False)  # (capacity,) label scale of each bar
    y: np.ndarray = field(init=False)  # (capacity,) realised labels (NaN until known)
    model: AdaptedModel | None = None
    model_index: int = -1  # index of the current adaptation in MetaStrategy.adaptations
    since_adapt: int = 0
    online: OnlineFeatures = field(init=False)
    pred: np.ndarray = field(init=False)  # (capacity,) prediction made at each bar
    made_by: np.ndarray = field(init=False)  # (capacity,) adaptation index behind it
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=250))  # realised
    current_errors: list[float] = field(default_factory=list)  # of the current model

    def __post_init__(self) -> None:
        self.n_features = self.spec.n_features
        self.online = OnlineFeatures(self.spec)
        self.close = np.full(self.capacity, np.nan)
        self.X = np.full((self.capacity, self.n_features), np.nan, dtype=np.float32)
        self.scale = np.full(self.capacity, np.nan)
        self.y = np.full(self.capacity, np.nan, dtype=np.float32)
        self.pred = np.full(self.capacity, np.nan)
        self.made_by = np.full(self.capacity, -1, dtype=np.int64)

    def grow(self) -> None:
        extra = self.capacity
        self.close = np.concatenate([self.close, np.full(extra, np.nan)])
        self.X = np.vstack([self.X, np.full((extra, self.n_features), np.nan, dtype=np.float32)])
        self.scale = np.concatenate([self.scale, np.full(extra, np.nan)])
        self.y = np.concatenate([self.y, np.full(extra, np.nan, dtype=np.float32)])
        self.pred = np.concatenate([self.pred, np.full(extra, np.nan)])
        self.made_by = np.concatenate([self.made_by, np.full(extra, -1, dtype=np.int64)])
        self.capacity += extra


class MetaStrategy(SignalStrategy):
    """Trades the signal of a meta-learned model, re-adapted on a rolling schedule.

    At every bar t and for every data: the feature row x_t is computed from bars ≤ t with
    the checkpoint's ``FeatureSpec``; the label of bar t − horizon becomes known (it needs
    the close of bar t); every ``adapt_every`` bars the meta-init θ is adapted on the last
    ``support`` realised pairs (x_s, y_s), s ≤ t − horizon, and the adapted model φ gives
    the signal f_φ(x_t), which the sizer turns into a position. Each data is adapted on its
    own history from the same θ. No label that is not yet known is ever used.

    Params:
        learner (str | os.PathLike | MetaLearner): checkpoint path or a MetaLearner with a
            ``feature_spec``. Required.
        adapt_every (int): bars between adaptations. Default 5.
        support (int): realised (x, y) pairs per adaptation, in bars. Default 60.
        inner_steps (int | None): gradient steps per adaptation; None = the learner's.
        drift_threshold (float | None): market observer. When set, also adapt as soon as
            the mean realised squared error of the current model's last ``drift_window``
            predictions exceeds ``drift_threshold`` times the mean realised squared error
            of the last 250 predictions (the error "jumps"). Default None (schedule only).
        drift_window (int): realised predictions in the short error window, bars. Default 10.
        seed (int): kept in ``strategy.p.seed`` for the run's record; adaptation is
            deterministic (full-batch gradient descent, no sampling), so equal data,
            checkpoint and params give equal orders whatever the seed. Default 0.
        trade_start, gross_leverage: see :class:`SignalStrategy`.

    Attributes:
        learner (MetaLearner): the meta-learner (θ is never modified).
        horizon (int): label horizon in bars, from the checkpoint's feature spec.
        adaptations (list[dict]): one entry per adaptation: date, data, trigger
            ("schedule" or "drift"), support (pairs), loss_before, loss_after (support MSE),
            steps; see :meth:`adaptation_log` for the realised query loss.

    Raises:
        ConfigError: missing learner, a learner without feature spec, bad schedule values.
        CheckpointError: an unreadable or mismatched checkpoint.

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks".
    """

    #: subclasses that stand for a baseline require a learner of this algorithm
    required_algorithm: ClassVar[str | None] = None

    params: Any = (
        ("learner", None),
        ("adapt_every", 5),
        ("support", 60),
        ("inner_steps", None),
        ("seed", 0),
        ("drift_threshold", None),
        ("drift_window", 10),
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
        if not isinstance(learner, MetaLearner):
            raise ConfigError(
                f"learner must be a checkpoint path or MetaLearner, got {type(learner).__name__}"
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
                f"got {learner.algorithm!r}; train one with `metabt train --algorithm {required}`"
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
        self.learner: MetaLearner = learner
        self.spec: FeatureSpec = learner.feature_spec
        self.horizon: int = self.spec.horizon
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
        self._states = [_AssetState(self.spec) for _ in self.datas]

    # ---- per-bar bookkeeping
    def _record_bar(self, state: _AssetState, data: bt.DataBase) -> int:
        if state.n == state.capacity:
            state.grow()
        k = state.n
        close = data.close[0]
        state.close[k] = close
        state.n += 1
        row, scale = state.online.update(data.high[0], data.low[0], close, data.volume[0])
        if row is not None:
            state.X[k] = row
            state.scale[k] = scale
        s = k - self.horizon
        if s >= 0:  # the label of bar s is realised by the close of bar k = s + horizon
            state.y[s] = (math.log(close) - math.log(state.close[s])) / state.scale[s]
            if math.isfinite(state.pred[s]):  # the prediction made at bar s is now scored
                err = (state.pred[s] - float(state.y[s])) ** 2
                a = int(state.made_by[s])
                self._query_sq[a + 1] += err
                self._query_n[a + 1] += 1
                state.errors.append(err)
                if a == state.model_index:
                    state.current_errors.append(err)
        return k

    def _inputs(self, state: _AssetState, rows: np.ndarray) -> np.ndarray:
        """Model inputs of the given bar indices: (len(rows), window * F), oldest row first."""
        if self.window == 1:
            return state.X[rows]
        idx = rows[:, None] + np.arange(1 - self.window, 1)[None, :]
        if idx.min() < 0:
            return np.full((len(rows), self.window * self.spec.n_features), np.nan, np.float32)
        return state.X[idx].reshape(len(rows), -1)

    def _maybe_adapt(self, state: _AssetState, data: bt.DataBase, k: int) -> None:
        state.since_adapt += 1
        trigger = "schedule"
        if state.model is not None and state.since_adapt < self.p.adapt_every:
            if not self._drifted(state):
                return
            trigger = "drift"
        last = k - self.horizon  # newest bar whose label is known
        first = last - self.p.support + 1
        if first < 0:
            return
        rows = np.arange(first, last + 1)
        x = self._inputs(state, rows)
        y = state.y[rows]
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            return  # still in the feature warm-up: not enough realised pairs
        model = self.learner.adapt(x, y, steps=self.p.inner_steps)
        state.model = model
        state.since_adapt = 0
        state.model_index = len(self.adaptations)
        state.current_errors = []
        self._query_sq.append(0.0)
        self._query_n.append(0)
        self.adaptations.append(
            {
                "date": pd.Timestamp(data.datetime.date(0)),
                "data": data._name,
                "trigger": trigger,
                "support": len(rows),
                "loss_before": model.loss_before,
                "loss_after": model.loss_after,
                "steps": model.steps,
            }
        )

    def _drifted(self, state: _AssetState) -> bool:
        """True when the current model's recent realised error jumped (market observer)."""
        if self.p.drift_threshold is None:
            return False
        window = self.p.drift_window
        if len(state.current_errors) < window or len(state.errors) < 2 * window:
            return False
        recent = sum(state.current_errors[-window:]) / window
        usual = sum(state.errors) / len(state.errors)
        return recent > self.p.drift_threshold * usual

    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        state = self._states[i]
        k = self._record_bar(state, data)
        self._maybe_adapt(state, data, k)
        if state.model is None:
            return math.nan
        x = state.X[k : k + 1] if self.window == 1 else self._inputs(state, np.array([k]))
        if not np.isfinite(x).all():
            return math.nan
        prediction = float(state.model.predict(x)[0])
        state.pred[k] = prediction
        state.made_by[k] = state.model_index
        return prediction

    def realised_vol(self, i: int) -> float:
        """The sizer's volatility estimate, from this strategy's own buffer of closes."""
        assert self._signal_sizer is not None
        state = self._states[i]
        return self._signal_sizer.vol_from_closes(state.close[: state.n])

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
        yet), query_count (how many were scored).
        """
        columns = ["date", "data", "trigger", "support", "loss_before", "loss_after", "steps"]
        frame = pd.DataFrame(self.adaptations, columns=columns)
        counts = np.asarray(self._query_n[1:], dtype=float)
        sums = np.asarray(self._query_sq[1:], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["query_loss"] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        frame["query_count"] = counts.astype(int)
        return frame
