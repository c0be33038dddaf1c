"""MetaStrategy: rolling MAML adaptation inside the backtest loop, trading through SignalSizer.

``SignalTrader`` is the base of every metabt strategy (one signal per data, one sizing
path); ``MetaStrategy`` computes its signal with a meta-learned model adapted on the most
recent realised bars.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import backtrader as bt
import numpy as np
import pandas as pd

from metabt._checks import as_date, reject_unknown_params
from metabt._stats import RollingMoments
from metabt.errors import ConfigError
from metabt.features import FeatureSpec, OnlineFeatures
from metabt.meta import MetaLearner
from metabt.sizers import SignalSizer

__all__ = ["Adapted", "Adapter", "MetaStrategy", "Signal", "SignalTrader"]


class Signal(bt.Indicator):
    """One data's signal, as a backtrader line (``signal``) that plots and can be read back.

    The owning strategy writes ``signal[0]`` in its ``next()``; bars without a signal
    (warm-up, not yet adapted) hold NaN.
    """

    lines = ("signal",)
    plotinfo: ClassVar[dict[str, Any]] = {"subplot": True, "plotname": "signal"}

    def next(self) -> None:
        """Nothing to compute: the strategy writes the value of the bar."""

    def once(self, start: int, end: int) -> None:
        """Nothing to compute in backtrader's vectorised (``runonce``) pass either.

        Defining it matters: an indicator that overrides only ``next`` gets backtrader's
        ``once_via_next``, which replays every bar of its data a second time in Python.
        """


class SignalTrader(bt.Strategy):
    """Base of metabt's strategies: one signal per data, positions set through SignalSizer.

    Each bar, :meth:`compute_signal` gives each data that has a new bar a signal (NaN = no
    view, go flat). :meth:`rebalance` is the one sizing path: the sizer's
    :meth:`~metabt.sizers.SignalSizer.target_weight` turns each signal and the data's
    realised volatility (:meth:`realised_vol`) into a target weight, the weights are scaled
    down to the portfolio's gross-leverage cap, the sizer's
    :meth:`~metabt.sizers.SignalSizer.shares_for_weight` turns each into shares (deadband
    included), and the differences are submitted as ``buy``/``sell`` orders, reductions
    first so that they free cash for the increases. Orders fill at the next bar's open
    (backtrader's default), so a decision at bar t never trades at t's close.

    Named apart from backtrader's own ``bt.SignalStrategy``, whose contract differs.
    Without a sizer in the Cerebro, a default ``SignalSizer()`` is used; another kind of
    sizer (``bt.sizers.FixedSize``, ``PercentSizer``, ...) is refused at start with a
    ``ConfigError``, never silently replaced. Fills, turnover and rejected orders are measured by
    :class:`metabt.analyzers.PortfolioAnalyzer`, not by the strategy.

    Params:
        trade_start (date | str | None): no orders before this date; bars before it are a
            warm-up period. Default None (trade from the first bar).
        gross_leverage (float): cap on the sum of |position value| over all data, as a
            multiple of portfolio value. Default 0.95: orders fill at the next bar's open,
            so a little cash absorbs overnight gaps and commission; an order the broker
            still rejects is retried at the next bar.

    A feed that ends before the others (a delisting, a shorter file) is closed one bar
    before its last, so the order fills at its last bar's open; it is listed in ``ended``.

    Attributes:
        signals (list[Signal]): the ``signal`` line of each data, in ``self.datas`` order.
        ended (dict[str, date]): data name -> the date its position was closed because its
            feed ends before the others.
        horizon (int | None): bars over which the signal forecasts a return; None for a
            strategy without a forecast. When set, ``SignalAnalyzer`` scores the signal
            against the realised forward return over ``horizon`` bars (IC).
    """

    params: Any = (("trade_start", None), ("gross_leverage", 0.95))
    horizon: int | None = None

    def __init__(self, **unknown: Any) -> None:
        super().__init__()
        reject_unknown_params(type(self).__name__, unknown, self.params)
        if not (math.isfinite(self.p.gross_leverage) and self.p.gross_leverage > 0):
            raise ConfigError(f"gross_leverage must be > 0, got {self.p.gross_leverage!r}")
        self._trade_start = as_date(self.p.trade_start, "trade_start")
        self.signals = [Signal(d) for d in self.datas]
        self._signal_lines: list[Any] = [sig.lines[0] for sig in self.signals]
        # each data's line objects, looked up once (backtrader resolves data.close by
        # attribute lookup on every access)
        self._bars = [(d.high, d.low, d.close, d.volume) for d in self.datas]
        self._signal_sizer: SignalSizer | None = None
        # backtrader gives every strategy a FixedSize before cerebro adds the user's sizer
        self._backtrader_default_sizer = self.getsizer()
        self._seen = [0] * len(self.datas)  # bars of each data already processed
        self._last = [math.nan] * len(self.datas)  # latest signal of each data
        self._last_log_close = [math.nan] * len(self.datas)
        self._vol: list[RollingMoments] = []  # log returns over the sizer's vol_lookback
        self._closing_bar: list[int] = []  # bar at which each early-ending feed is closed
        self._closed: set[int] = set()
        self.ended: dict[str, Any] = {}

    # ---- hooks for subclasses
    def compute_signal(self, i: int, data: bt.DataBase) -> float:  # pragma: no cover - abstract
        """The signal of data ``i`` at the current bar (NaN for none)."""
        raise NotImplementedError

    # ---- backtrader hooks
    def start(self) -> None:
        sizer = self.getsizer()
        if sizer is self._backtrader_default_sizer:  # no sizer added: metabt's default
            sizer = SignalSizer()
            self.setsizer(sizer)
        elif not isinstance(sizer, SignalSizer):
            raise ConfigError(
                f"{type(self).__name__} sizes its portfolio with metabt.SignalSizer "
                f"(volatility targets, gross-leverage cap), not {type(sizer).__name__}; "
                "use cerebro.addsizer(metabt.SignalSizer, target_vol=..., max_leverage=...) "
                "or add no sizer"
            )
        self._signal_sizer = sizer
        lookback = int(sizer.p.vol_lookback)
        self._vol = [RollingMoments((lookback,)) for _ in self.datas]
        # bars of each preloaded feed; a feed that ends before the others is closed
        lengths = [d.buflen() for d in self.datas]
        last = [d.datetime.array[n - 1] if n else math.nan for d, n in zip(self.datas, lengths)]
        end = max(last, default=math.nan)
        self._closing_bar = [n - 1 if t < end else -1 for n, t in zip(lengths, last)]

    def realised_vol(self, i: int) -> float:
        """Annualised realised volatility of data ``i`` at the current bar, for sizing.

        The sample std (ddof=1) of the last ``vol_lookback`` close-to-close log returns
        times ``sqrt(bars_per_year)`` (the sizer's params), from rolling moments updated
        once per bar (O(1), :class:`metabt._stats.RollingMoments`). NaN with fewer than
        ``vol_lookback + 1`` bars.
        """
        sizer = self._signal_sizer
        assert sizer is not None
        if self._seen[i] <= int(sizer.p.vol_lookback):
            return math.nan
        return self._vol[i].stds()[0] * math.sqrt(sizer.p.bars_per_year)

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
            if n == 0 or i in self._closed:
                continue
            if n > self._seen[i]:  # a new bar of this data (calendars may differ)
                self._seen[i] = n
                log_close = math.log(self._bars[i][2][0])
                if n > 1:
                    self._vol[i].push(log_close - self._last_log_close[i])
                self._last_log_close[i] = log_close
                self._last[i] = self.compute_signal(i, d)
                self._signal_lines[i][0] = self._last[i]
            if n == self._closing_bar[i] and self.trading():
                # this feed ends at its next bar, before the others: close now, filled at
                # its last bar's open (a position cannot fill after its data ends)
                self._closed.add(i)
                self.ended[d._name] = d.datetime.date(0)
                if self.getposition(d).size:
                    self.close(d)
                continue
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
        cap = self.p.gross_leverage
        weights = [sizer.target_weight(s, self.realised_vol(i)) for i, s in zip(active, signals)]
        gross = sum([abs(w) for w in weights])
        if gross > cap:
            weights = [w * (cap / gross) for w in weights]
        value = self.broker.getvalue()
        shares = sizer.shares_for_weight
        plan = []  # (data, weight, price, held, target)
        book = 0.0
        for i, w in zip(active, weights):
            data = self.datas[i]
            price = self._bars[i][2][0]
            held = self.getposition(data).size
            target = shares(w, price, value, current=held)
            plan.append((data, w, price, held, target))
            book += abs(target) * price
        if book > cap * value:
            # positions held inside their deadband pushed the book over the cap: go exact
            plan = [
                (d, w, p, c, shares(w, p, value, current=c, deadband=0.0)) for d, w, p, c, _ in plan
            ]
        # reductions first: they free cash for the increases
        orders = [(abs(t) >= abs(c), d, t - c) for d, _, _, c, t in plan if t != c]
        if len(orders) > 1:
            orders.sort(key=lambda o: o[0])
        for _, d, delta in orders:
            if delta > 0:
                self.buy(d, size=delta)
            else:
                self.sell(d, size=-delta)


@runtime_checkable
class Adapted(Protocol):
    """A model adapted to one support window (``metabt.meta.AdaptedModel``, ``LinearFit``)."""

    loss_before: float
    loss_after: float
    steps: int

    def predict_row(self, x: np.ndarray) -> float: ...


@runtime_checkable
class Adapter(Protocol):
    """What MetaStrategy adapts on each support window: a MetaLearner, or a baseline's
    adapter (``metabt.linear.RidgeAdapter``, ``RLSAdapter``).

    Attributes:
        feature_spec: the features and label the inputs come from.
        algorithm: its name (``maml``, ``erm``, ``ridge``, ...), checked by baselines.
        window: feature rows per model input (1 unless a sequence model).
    """

    feature_spec: FeatureSpec | None
    algorithm: str

    @property
    def window(self) -> int: ...

    def adapt(
        self, x_support: np.ndarray, y_support: np.ndarray, steps: int | None = None
    ) -> Adapted:
        """Fit on x (S, window * F) and y (S,) realised pairs; leave the adapter unchanged."""
        ...


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
    online: OnlineFeatures = field(init=False)
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=250))  # realised
    # realised errors of predictions made since the last drift-triggered adaptation
    drift_from: int = 0  # index (in adaptations) of that adaptation; 0 before any
    recent_errors: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.online = OnlineFeatures(self.spec)
        self.X = np.full((512, self.spec.n_features), np.nan, dtype=np.float32)

    def grow(self) -> None:
        extra = np.full_like(self.X, np.nan)
        self.X = np.vstack([self.X, extra])


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
        ConfigError: missing learner, a learner without feature spec, bad schedule values.
        CheckpointError: an unreadable or mismatched checkpoint.

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks".
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
                f"metabt.linear.RidgeAdapter, got {type(learner).__name__}"
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
        self.learner: Adapter = learner
        self.spec: FeatureSpec = learner.feature_spec
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

    # ---- per-bar bookkeeping
    def _record_bar(self, state: _AssetState, data: bt.DataBase) -> int:
        k = state.n
        if k == len(state.X):
            state.grow()
        high, low, close_line, volume = self._bars[state.index]
        close = close_line[0]
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

    def _maybe_adapt(self, state: _AssetState, data: bt.DataBase, k: int) -> None:
        state.since_adapt += 1
        trigger = "schedule"
        if state.model is not None and state.since_adapt < self.p.adapt_every:
            if not self._drifted(state):
                return
            trigger = "drift"
        last = k - self.horizon  # newest bar whose label is known
        first = last - self.p.support + 1
        if state.first_row < 0 or first < state.first_row + self.window - 1:
            return  # still in the feature warm-up: not enough realised pairs
        x = self._inputs(state, first, last)
        y = np.array(state.y[first : last + 1], dtype=np.float32)
        model = self.learner.adapt(x, y, steps=self.p.inner_steps)
        state.model = model
        state.since_adapt = 0
        state.model_index = len(self.adaptations)
        if trigger == "drift":  # judge the next drift on what the new model does
            state.drift_from = state.model_index
            state.recent_errors = []
        self._query_sq.append(0.0)
        self._query_n.append(0)
        self.adaptations.append(
            {
                "date": pd.Timestamp(data.datetime.date(0)),
                "data": data._name,
                "trigger": trigger,
                "support": last - first + 1,
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
        x = state.X[k] if self.window == 1 else self._inputs(state, k, k)[0]
        prediction = state.model.predict_row(x)
        state.pred[k] = prediction
        state.made_by[k] = state.model_index
        return prediction

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
