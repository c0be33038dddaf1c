"""Cross-sectional universe portfolios: rank or z-score every asset's signal, hold a book.

:class:`CrossSectionalStrategy` is a :class:`~metabt.strategies.meta.MetaStrategy` whose
positions come from the cross-section of the signals rather than from each signal alone:
each rebalance, the signals of the assets that have one are ranked (or z-scored) across
assets and turned into target weights of a long-only or dollar-neutral book under
per-name, gross and net caps (:func:`cross_sectional_weights`); then a minimum trade size
and a turnover budget decide how far the held positions move toward the targets.

Units: every weight, cap, ``min_trade`` and ``turnover_budget`` is a fraction of portfolio
value (0.05 = 5% of equity, signed for weights); ``rebalance_every`` counts trading bars.

References:
    Zhao, Liu, Zhou et al. 2023, "DoubleAdapt: A Meta-learning Approach to Incremental
    Learning for Stock Trend Forecasting" (KDD), and Qlib's ``TopkDropoutStrategy``:
    cross-sectional scores turned into a portfolio of the top names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from metabt._checks import check_support
from metabt.errors import ConfigError
from metabt.strategies.meta import Adapted, MetaStrategy

__all__ = ["BOOKS", "CROSS_SECTIONS", "CrossSectionalStrategy", "cross_sectional_weights"]

#: how signals are compared across assets
CROSS_SECTIONS = ("rank", "zscore")
#: the kinds of book
BOOKS = ("dollar_neutral", "long_only")


def _number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
    )


def _scores(signals: np.ndarray, cross_section: str) -> np.ndarray:
    """Centred cross-sectional scores (mean 0) of finite signals."""
    if cross_section == "rank":
        ranks = pd.Series(signals).rank(method="average").to_numpy()
        return ranks - (len(signals) + 1) / 2.0
    spread = float(signals.std())
    if not spread > 0:  # every signal equal: no view across assets
        return np.zeros_like(signals)
    return (signals - signals.mean()) / spread


def _capped(score: np.ndarray, budget: float, cap: float) -> np.ndarray:
    """Weights >= 0 proportional to ``score`` > 0, summing to ``budget``, each <= ``cap``.

    Water-filling: names whose proportional share exceeds the cap are held at the cap and
    the rest of the budget is shared among the others in proportion to their scores. When
    every scored name is at the cap, the weights sum to less than ``budget``.
    """
    w = np.zeros_like(score)
    free = score > 0
    left = budget
    while left > 0 and free.any():
        idx = np.flatnonzero(free)
        share = left * score[idx] / score[idx].sum()
        over = share > cap
        if not over.any():
            w[idx] = share
            break
        w[idx[over]] = cap
        free[idx[over]] = False
        left -= cap * int(over.sum())
    return w


def cross_sectional_weights(
    signals: Sequence[float] | np.ndarray,
    *,
    cross_section: str = "rank",
    book: str = "dollar_neutral",
    gross_leverage: float = 1.0,
    net_leverage: float = 1.0,
    name_cap: float = 1.0,
    min_names: int = 2,
) -> np.ndarray:
    """Target weights of a cross-sectional book from one signal per asset (pure).

    1. Scores: the finite signals are ranked (``"rank"``: average ranks of ties, minus
       their mean) or z-scored (``"zscore"``: minus the mean, over the population std)
       across assets, so scores have mean 0. NaN signals (no view) get weight 0.
    2. Book: ``"long_only"`` holds the names with a positive score (the top of the
       cross-section) with weights proportional to their scores, investing
       ``min(gross_leverage, net_leverage)``; ``"dollar_neutral"`` holds the positive
       scores long and the negative ones short, each side ``gross_leverage / 2`` in
       proportion to |score|, so the weights sum to 0.
    3. Caps: no |weight| above ``name_cap`` (water-filling: a capped name's excess goes to
       the uncapped names of its side, in proportion to their scores). When a side cannot
       place its budget under the cap, the book invests less; a dollar-neutral book then
       places the other side on the same, smaller budget (still neutral).

    Args:
        signals: one signal per asset (signal units; NaN = no view).
        cross_section: ``"rank"`` or ``"zscore"``. Default ``"rank"``.
        book: ``"dollar_neutral"`` or ``"long_only"``. Default ``"dollar_neutral"``.
        gross_leverage: sum of |weights| (fraction of portfolio value). Default 1.0.
        net_leverage: cap on |sum of weights| (fraction of portfolio value); binds only a
            long-only book. Default 1.0.
        name_cap: cap on each |weight| (fraction of portfolio value). Default 1.0.
        min_names: fewer finite signals than this give an empty book (all 0). Default 2.

    Returns:
        float64 weights, one per asset, never NaN: ``sum |w| <= gross_leverage``,
        ``|sum w| <= net_leverage`` (0 for dollar-neutral, to float error) and
        ``|w| <= name_cap``.

    Raises:
        ConfigError: an unknown cross_section or book, or a cap that is not a number >= 0.
    """
    if cross_section not in CROSS_SECTIONS:
        raise ConfigError(
            f"cross_section must be one of {', '.join(CROSS_SECTIONS)}, got {cross_section!r}"
        )
    if book not in BOOKS:
        raise ConfigError(f"book must be one of {', '.join(BOOKS)}, got {book!r}")
    for name, value in (
        ("gross_leverage", gross_leverage),
        ("net_leverage", net_leverage),
        ("name_cap", name_cap),
    ):
        if not (_number(value) and value >= 0):
            raise ConfigError(
                f"{name} must be a number >= 0 (fraction of portfolio value), got {value!r}"
            )
    s = np.asarray(signals, dtype=float).reshape(-1)
    weights = np.zeros(len(s))
    ok = np.isfinite(s)
    if ok.sum() < max(int(min_names), 1):
        return weights
    score = _scores(s[ok], cross_section)
    if book == "long_only":
        weights[ok] = _capped(np.maximum(score, 0.0), min(gross_leverage, net_leverage), name_cap)
        return weights
    longs = _capped(np.maximum(score, 0.0), gross_leverage / 2.0, name_cap)
    shorts = _capped(np.maximum(-score, 0.0), gross_leverage / 2.0, name_cap)
    side = min(longs.sum(), shorts.sum())
    if side <= 0:
        return weights
    if longs.sum() > side:  # re-place the larger side on the smaller one's budget
        longs = _capped(np.maximum(score, 0.0), side, name_cap)
    if shorts.sum() > side:
        shorts = _capped(np.maximum(-score, 0.0), side, name_cap)
    weights[ok] = longs - shorts
    return weights


class CrossSectionalStrategy(MetaStrategy):
    """A universe portfolio: meta-learned signals compared across assets, one book.

    Each bar, every asset's signal is computed as in :class:`MetaStrategy` (each asset
    adapted on its own recent history from the same θ, or, with ``pooled_adaptation``,
    one model adapted on all assets' recent rows). Every ``rebalance_every`` trading
    bars the book is rebalanced:

    1. Targets: :func:`cross_sectional_weights` of the active assets' signals (an asset
       without a signal yet, e.g. a late starter still in its warm-up, is left out of
       the cross-section and held flat), logged in :meth:`weights_log`.
    2. Minimum trade: a name whose |target - current weight| is below ``min_trade`` does
       not trade (its position is kept), except an exit to a target of 0, which always
       trades so that no residue is left.
    3. Turnover budget: if the remaining changes add up to more than
       ``turnover_budget``, every change is scaled by the same factor (proportionally,
       not largest first), so the traded value is the budget and the new book lies on the
       straight line from the held book to the targets: it keeps the targets' dollar
       neutrality and caps whenever the held book has them.
    4. Orders: each planned weight becomes shares with the sizer's
       :meth:`~metabt.sizers.SignalSizer.shares_for_weight` (truncated toward zero, no
       deadband; the sizer's volatility target is not used), logged in
       ``weights_log(planned=True)``; reductions are submitted first, and every order
       fills at the next bar's open with the broker's costs.

    Held weights drift from the targets with prices between a decision (at the close)
    and its fill (next open) and between rebalances, by the share rounding, and by up to
    ``min_trade`` for names that do not trade; the traded value of a rebalance can exceed
    the budget by the rounding (less than one share per name) and by the overnight move.
    A feed that ends early is closed by :class:`~metabt.strategies.meta.SignalTrader` one bar
    before its end and leaves the cross-section.

    Params:
        cross_section (str): ``"rank"`` or ``"zscore"``. Default ``"rank"``.
        book (str): ``"dollar_neutral"`` (weights sum to 0) or ``"long_only"`` (the
            names above the cross-sectional mean). Default ``"dollar_neutral"``.
        name_cap (float): cap on each |target weight|, fraction of portfolio value.
            Default 0.25.
        net_leverage (float): cap on |sum of target weights|, fraction of portfolio
            value (binds a long-only book). Default 1.0.
        min_trade (float): smallest weight change that trades, fraction of portfolio
            value. Default 0 (every change trades).
        turnover_budget (float | None): most value traded per rebalance (sum of |weight
            changes|), fraction of portfolio value; None = no budget. Default None.
        rebalance_every (int): trading bars between rebalances (1 = every bar). Default 1.
        min_names (int): fewer assets with a signal than this give an empty (flat) book.
            Default 2.
        pooled_adaptation (bool): adapt one model, every ``adapt_every`` dates, on the
            pooled realised pairs of every asset (each asset's last ``support`` bars
            whose labels are realised by the close of the previous date, one bar later
            than per-asset adaptation; it waits for at least ``support`` pooled pairs) and
            predict every asset with it; the adaptation log then has one row per
            adaptation with ``data == "pooled"``. This relies on MetaStrategy's per-asset
            buffers (``_states``, ``_record_bar``, ``_inputs``). Default False (each asset
            adapted on its own).
        gross_leverage (float): sum of |target weights|, fraction of portfolio value
            (the book invests all of it when the caps allow). Default 0.95.
        learner, adapt_every, support, inner_steps, seed, trade_start: see
            :class:`MetaStrategy` (``drift_threshold`` is refused with pooled adaptation).

    Raises:
        ConfigError: a param out of range (named, with the valid range), besides the
            errors of :class:`MetaStrategy`.

    References:
        Zhao et al. 2023 ("DoubleAdapt", KDD) and Qlib: a model adapted on all stocks of
        a date window, its scores ranked across stocks into a portfolio.
    """

    params: Any = (
        ("cross_section", "rank"),
        ("book", "dollar_neutral"),
        ("name_cap", 0.25),
        ("net_leverage", 1.0),
        ("min_trade", 0.0),
        ("turnover_budget", None),
        ("rebalance_every", 1),
        ("min_names", 2),
        ("pooled_adaptation", False),
    )

    def __init__(self, **unknown: Any) -> None:
        super().__init__(**unknown)
        p = self.p
        if p.no_trade_bps:
            raise ConfigError(
                "CrossSectionalStrategy trades a cross-section with its own turnover controls "
                "(min_trade, turnover_budget, rebalance_every); no_trade_bps applies to "
                "MetaStrategy's per-asset book: set it to 0 here"
            )
        if p.cross_section not in CROSS_SECTIONS:
            raise ConfigError(
                f"cross_section must be one of {', '.join(CROSS_SECTIONS)}, got {p.cross_section!r}"
            )
        if p.book not in BOOKS:
            raise ConfigError(f"book must be one of {', '.join(BOOKS)}, got {p.book!r}")
        for name in ("name_cap", "net_leverage", "min_trade"):
            value = getattr(p, name)
            low_ok = value >= 0 if name != "name_cap" else value > 0
            if not (_number(value) and low_ok):
                bound = "> 0" if name == "name_cap" else ">= 0"
                raise ConfigError(
                    f"{name} must be a number {bound} (fraction of portfolio value, e.g. "
                    f"0.05 for 5%), got {value!r}"
                )
        budget = p.turnover_budget
        if budget is not None and not (_number(budget) and budget > 0):
            raise ConfigError(
                f"turnover_budget must be a number > 0 (fraction of portfolio value traded "
                f"per rebalance, e.g. 0.2) or None for no budget, got {budget!r}"
            )
        for name, low in (("rebalance_every", 1), ("min_names", 2)):
            value = getattr(p, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(p.pooled_adaptation, (bool, np.bool_)):
            raise ConfigError(
                f"pooled_adaptation must be True or False, got {p.pooled_adaptation!r}"
            )
        if p.pooled_adaptation and p.drift_threshold is not None:
            raise ConfigError(
                "drift_threshold works per asset; with pooled_adaptation=True leave it None "
                "(the pooled model follows the adapt_every schedule)"
            )
        if p.pooled_adaptation and p.online_meta_lr:
            # the online meta-update pairs one asset's support with its realised query;
            # the pooled model has no such pair, so the updates would silently never run
            raise ConfigError(
                f"online_meta_lr={p.online_meta_lr!r} works with per-asset adaptation only: "
                "with pooled_adaptation=True no (support, realised query) pair of one asset "
                "exists to meta-update on; set online_meta_lr=0, or pooled_adaptation=False"
            )
        self._ticks = 0  # trading bars seen by rebalance
        self._targets: dict[Any, dict[str, float]] = {}
        self._planned: dict[Any, dict[str, float]] = {}
        self._pool_date: Any = None
        self._pool_since = 0
        self._pool_model: Adapted | None = None
        self._pool_index = -1

    # ---- signals
    def compute_signal(self, i: int, data: bt.DataBase) -> float:
        """The signal of data ``i``: per-asset adaptation, or the pooled model's prediction."""
        if not self.p.pooled_adaptation:
            return super().compute_signal(i, data)
        return self._pooled_signal(i, data)

    def _signal_is_per_asset(self) -> bool:
        """Per-asset adaptation is MetaStrategy's signal: its batched path applies."""
        return not self.p.pooled_adaptation

    def _pooled_signal(self, i: int, data: bt.DataBase) -> float:
        """The pooled model's prediction for data ``i`` (adapting it first when due)."""
        now = data.datetime.date(0)
        if now != self._pool_date:  # the first data with a bar of a new date
            self._pool_date = now
            self._pool_since += 1
            if self._pool_model is None or self._pool_since >= self.p.adapt_every:
                self._adapt_pooled(now)
        state = self._states[i]
        k = self._record_bar(state, data)
        model = self._pool_model
        if model is None or state.first_row < 0 or k < state.first_row + self.window - 1:
            return math.nan
        x = state.X[k] if self.window == 1 else self._inputs(state, k, k)[0]
        prediction = model.predict_row(x)
        state.pred[k] = prediction
        state.made_by[k] = self._pool_index
        return prediction

    def _adapt_pooled(self, now: Any) -> None:
        """Adapt one model on every live asset's last ``support`` realised pairs.

        Runs before any asset records the bar of ``now``, so every label used was
        realised by the close of an earlier date.
        """
        xs, ys = [], []
        for state in self._states:
            if self.datas[state.index]._name in self.ended or state.first_row < 0:
                continue
            last = state.n - 1 - self.horizon  # newest bar whose label is realised
            first = max(last - self.p.support + 1, state.first_row + self.window - 1)
            if last < first:
                continue
            x = self._inputs(state, first, last)
            y = np.asarray(state.y[first : last + 1], dtype=np.float32)
            keep = np.isfinite(y) & np.isfinite(x).all(axis=1)
            xs.append(x[keep])
            ys.append(y[keep])
        rows = sum(len(y) for y in ys)
        if rows < self.p.support:  # fewer realised pairs than one asset's support
            return
        x_all, y_all = np.concatenate(xs), np.concatenate(ys)
        check_support(x_all, y_all)
        model = self.learner.adapt(x_all, y_all, steps=self.p.inner_steps)
        self._pool_model = model
        self._pool_since = 0
        self._pool_index = len(self.adaptations)
        self._query_sq.append(0.0)
        self._query_n.append(0)
        self.adaptations.append(
            {
                "date": pd.Timestamp(now),
                "data": "pooled",
                "trigger": "schedule",
                "support": rows,
                "loss_before": model.loss_before,
                "loss_after": model.loss_after,
                "steps": model.steps,
            }
        )

    # ---- the book
    def rebalance(self, active: list[int], signals: list[float]) -> None:
        """Every ``rebalance_every`` trading bars: targets, min trade, turnover budget, orders.

        Args:
            active: indices (in ``self.datas``) of the data that have bars.
            signals: their current signals (NaN = no view: left out of the cross-section).
        """
        self._ticks += 1
        if (self._ticks - 1) % self.p.rebalance_every:
            return
        value = self.broker.getvalue()
        if not (math.isfinite(value) and value > 0):
            return
        self.cancel_open(active)  # what a participation cap left unfilled: sized anew
        p = self.p
        target = cross_sectional_weights(
            signals,
            cross_section=p.cross_section,
            book=p.book,
            gross_leverage=p.gross_leverage,
            net_leverage=p.net_leverage,
            name_cap=p.name_cap,
            min_names=p.min_names,
        )
        datas = [self.datas[i] for i in active]
        prices = np.array([d.close[0] for d in datas], dtype=float)
        held = np.array([self.getposition(d).size for d in datas], dtype=float)
        current = held * prices / value
        change = target - current
        change[(np.abs(change) < p.min_trade) & (target != 0)] = 0.0
        traded = float(np.abs(change).sum())
        if p.turnover_budget is not None and traded > p.turnover_budget:
            change *= p.turnover_budget / traded
        sizer = self._signal_sizer
        assert sizer is not None
        new = [
            int(c)
            if dw == 0
            else sizer.shares_for_weight(w + dw, px, value, current=c, deadband=0, rebalance_band=0)
            for w, dw, px, c in zip(current, change, prices, held)
        ]
        date = max(d.datetime.date(0) for d in datas)
        self._targets[date] = {d._name: float(w) for d, w in zip(datas, target)}
        self._planned[date] = {d._name: n * px / value for d, n, px in zip(datas, new, prices)}
        # reductions first: they free cash for the increases
        orders = [(abs(n) >= abs(c), d, n - int(c)) for d, n, c in zip(datas, new, held) if n != c]
        orders.sort(key=lambda o: o[0])
        for _, d, delta in orders:
            if delta > 0:
                self.buy(d, size=delta)
            else:
                self.sell(d, size=-delta)

    # ---- results
    def weights_log(self, planned: bool = False) -> pd.DataFrame:
        """Target weights of every rebalance: a date x asset DataFrame.

        Args:
            planned: False (default) for the targets of :func:`cross_sectional_weights`
                (caps respected exactly); True for the weights the submitted orders aim at
                (after the minimum trade, the turnover budget and share rounding, at the
                decision bar's close).

        Returns:
            One row per rebalance date (``DatetimeIndex`` named ``date``), one column per
            data in ``self.datas`` order, fractions of portfolio value; NaN for a data
            without a bar yet or already closed.
        """
        log = self._planned if planned else self._targets
        names = [d._name for d in self.datas]
        frame = pd.DataFrame.from_dict(log, orient="index").reindex(columns=names)
        frame.index = pd.DatetimeIndex(frame.index, name="date")
        return frame.astype(float)
