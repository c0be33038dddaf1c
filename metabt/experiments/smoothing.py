"""Each strategy's traded smoothing, chosen on the validation years by one rule.

A signal-trading strategy trades the mean of its last ``smooth`` signals
(:class:`metabt.strategies.trader.SignalTrader`). Which ``smooth`` is a trading decision,
so every roster entry gets its own, chosen by the same rule on the same data: the
validation years before the test period (the ``val_years`` whose tasks selected the
learners' θ), never the test period. Each candidate of ``RunConfig.smooth_grid`` is
backtested there with the run's costs and sizer; the rule (fixed before any run):

* the best validation net Sharpe among the candidates whose validation two-way turnover
  is at most ``RunConfig.max_val_turnover`` (40x a year by default);
* if none qualifies, the one with the lowest validation turnover.

A candidate with no validation Sharpe (it never traded) never wins. A strategy whose
validation backtest cannot run, or never trades (too little history before the test
period), keeps ``RunConfig.smooth``, and its choice says why.

Then, for a strategy with a forecast (a ``horizon``: its validation run scores signals),
the cost-derived no-trade region (``SignalTrader``'s ``no_trade_bps`` and
``forecast_scale``, after Davis & Norman 1990) is tried at the chosen ``smooth``: the
forecast is calibrated to return units on the validation run (``forecast_scale``: the
least-squares slope, through the origin, of the h-bar return from the next open on the
traded signal, pooled over assets), ``no_trade_bps`` is the run's cost per fill, and the
band is kept only if that validation run is better by the same rule (a higher net Sharpe
at turnover within the cap, or a lower turnover when the cap was not met). A forecast
with no positive slope on validation gets no band: it has no expected gain to weigh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from metabt.errors import ConfigError, DataError
from metabt.experiments.parts import hold_out_years

if TYPE_CHECKING:
    from metabt.experiments.settings import RunSettings

K = TypeVar("K")

__all__ = [
    "SmoothingChoice",
    "choose_smoothing",
    "forecast_scale",
    "no_trade_kwargs",
    "pick",
    "validation_window",
]


@dataclass(frozen=True)
class SmoothingChoice:
    """One strategy's smoothing, and the validation runs it was chosen from.

    Attributes:
        smooth: the chosen bars of signals averaged.
        rows: candidate -> (validation net Sharpe, validation two-way turnover a year).
        window: (first, last) validation date, or None when nothing was run.
        reason: how it was chosen (the rule, a fallback, or why nothing was run).
    """

    smooth: int
    rows: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None
    reason: str = ""
    no_trade_bps: float = 0.0
    forecast_scale: float | None = None
    band: str = ""

    @property
    def kwargs(self) -> dict[str, Any]:
        """The strategy params this choice sets."""
        out: dict[str, Any] = {"smooth": self.smooth}
        if self.no_trade_bps > 0:
            out.update(no_trade_bps=self.no_trade_bps, forecast_scale=self.forecast_scale)
        return out

    def line(self, name: str) -> str:
        """A log line: ``name``'s choice and every candidate's Sharpe and turnover."""
        if not self.rows:
            return f"{name}: smooth {self.smooth} ({self.reason})"
        runs = ", ".join(
            f"{n}: {sharpe:.2f} at {turnover:.0f}x" for n, (sharpe, turnover) in self.rows.items()
        )
        band = f"; {self.band}" if self.band else ""
        return f"{name}: smooth {self.smooth} ({self.reason}; net Sharpe at turnover: {runs}){band}"


def pick(rows: Mapping[K, tuple[float, float]], max_turnover: float) -> tuple[K, str]:
    """The rule: the best net Sharpe with turnover <= ``max_turnover``, else the lowest
    turnover.

    Args:
        rows: candidate (a ``smooth``, or any key, e.g. (objective, smooth)) -> (net Sharpe,
            two-way turnover a year); a NaN Sharpe never wins.
        max_turnover: the turnover cap (multiple of equity a year).

    Returns:
        (the chosen candidate, how it was chosen).

    Raises:
        ConfigError: no candidate.
    """
    if not rows:
        raise ConfigError("no smoothing candidate to choose from; give a non-empty smooth_grid")
    traded = {k: v for k, v in rows.items() if not math.isnan(v[0])} or dict(rows)
    ok = {k: v for k, v in traded.items() if v[1] <= max_turnover}
    if ok:
        return max(ok, key=lambda k: ok[k][0]), f"best net Sharpe at <= {max_turnover:g}x"
    low = min(traded, key=lambda k: traded[k][1])
    return low, f"none at <= {max_turnover:g}x: lowest turnover"


def validation_window(first: pd.Timestamp, val_years: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The validation years before ``first``: the training split's (``train_learner``)."""
    start = first - pd.DateOffset(days=round(365.25 * val_years))
    return pd.Timestamp(start), first - pd.Timedelta(days=1)


def choose_smoothing(
    settings: RunSettings,
    name: str,
    strategy: type[Any],
    kwargs: Mapping[str, Any],
    first: pd.Timestamp,
) -> SmoothingChoice:
    """Backtest ``strategy`` on the validation years with every candidate; apply the rule.

    Args:
        settings: the run's data, costs, sizer and ``cfg`` (``smooth_grid``,
            ``max_val_turnover``, ``val_years``, ``smooth``).
        name: the strategy's label.
        strategy: its class; ``kwargs`` its keyword arguments (their ``smooth`` is
            replaced by each candidate).
        first: the first test date: the validation years end the day before.

    Returns:
        A :class:`SmoothingChoice`; ``cfg.smooth`` with an empty grid or too little
        history for a validation backtest.
    """
    cfg = settings.cfg
    grid = tuple(cfg.smooth_grid)
    if not grid:
        return SmoothingChoice(cfg.smooth, reason="fixed by the run's smooth")
    if len(grid) == 1:
        return SmoothingChoice(grid[0], reason="the only candidate")
    start, end = validation_window(first, hold_out_years(settings.train_frames, cfg, first))
    rows: dict[int, tuple[float, float]] = {}
    results: dict[int, Any] = {}
    for n in grid:
        try:
            result = settings.run(strategy, name, {**kwargs, "smooth": n}, start=start, end=end)
            results[n] = result
        except (ConfigError, DataError) as exc:
            return SmoothingChoice(
                cfg.smooth,
                reason=f"kept the run's smooth: no validation backtest before {first.date()} "
                f"({' '.join(str(exc).split())[:160]})",
            )
        rows[n] = (float(result.metrics["sharpe"]), float(result.metrics["turnover_two_way"]))
    if all(math.isnan(sharpe) for sharpe, _ in rows.values()):
        return SmoothingChoice(
            cfg.smooth,
            rows,
            (start, end),
            f"kept the run's smooth: no candidate traded in {start.date()}..{end.date()} "
            "(too few bars after warm-up)",
        )
    chosen, reason = pick(rows, cfg.max_val_turnover)
    choice = SmoothingChoice(chosen, rows, (start, end), f"{reason}, {start.date()}..{end.date()}")
    return _try_band(settings, name, strategy, kwargs, choice, results[chosen])


def forecast_scale(signals: Mapping[str, pd.DataFrame], smooth: int) -> float:
    """Return units per unit of traded signal, on a validation run's signals.

    The least-squares slope through the origin of the simple h-bar return from the next
    open (``expm1`` of the ``tradable`` column of :func:`metabt.analyzers.signal_frames`)
    on the traded signal: the mean of the last ``smooth`` signals (recomputed from the
    recorded raw ones), pooled over assets.

    Args:
        signals: data name -> frame with ``signal`` and ``tradable`` columns.
        smooth: bars of signals averaged into the traded one.

    Returns:
        The slope (return per unit signal over the horizon); NaN without usable rows.
    """
    xs, ys = [], []
    for frame in signals.values():
        traded = frame["signal"].rolling(smooth, min_periods=1).mean()
        ok = traded.notna() & frame["tradable"].notna()
        xs.append(traded[ok].to_numpy())
        ys.append(np.expm1(frame["tradable"][ok].to_numpy()))
    x = np.concatenate(xs) if xs else np.zeros(0)
    y = np.concatenate(ys) if ys else np.zeros(0)
    denom = float(x @ x)
    return float(x @ y) / denom if denom > 0 else math.nan


def no_trade_kwargs(
    settings: RunSettings,
    strategy: type[Any],
    name: str,
    kwargs: Mapping[str, Any],
    first: pd.Timestamp,
) -> tuple[dict[str, Any], str | None]:
    """``kwargs`` with the run's no-trade region (``cfg.no_trade_bps``), its forecast scale
    calibrated on the validation window before ``first``.

    The strategy is backtested with ``kwargs`` on the validation years before ``first``
    (the training hold-out, :func:`validation_window`); :func:`forecast_scale` of that run
    turns its signal into return units, so ``SignalTrader`` can compare the forecast
    return of a trade with ``no_trade_bps``. No price on or after ``first`` is used.

    Args:
        settings: the run's data, costs and ``cfg`` (``no_trade_bps``; 0 returns
            ``kwargs`` unchanged).
        strategy: the strategy class (it must declare ``no_trade_bps``); ``name`` its label.
        kwargs: its keyword arguments (the learner, schedule, ``smooth``).
        first: the first test date.

    Returns:
        (keyword arguments, a log line or None). Without a usable positive forecast slope
        on validation the region is left off, and the line says why.

    Raises:
        ConfigError: ``strategy`` has no no-trade region.
    """
    cost = float(settings.cfg.no_trade_bps)
    if cost <= 0:
        return dict(kwargs), None
    if "no_trade_bps" not in _params(strategy):
        raise ConfigError(f"{name} has no no-trade region (no_trade_bps); set it to 0")
    smooth = int(kwargs.get("smooth", settings.cfg.smooth))
    start, end = validation_window(
        first, hold_out_years(settings.train_frames, settings.cfg, first)
    )
    try:
        result = settings.run(strategy, name, kwargs, start=start, end=end)
    except DataError as exc:
        return dict(kwargs), f"{name}: no no-trade region (no validation run: {exc})"
    scale = forecast_scale(result.signals or {}, smooth)
    window = f"{start.date()} to {end.date()}"
    if not (math.isfinite(scale) and scale > 0):
        return dict(kwargs), (
            f"{name}: no no-trade region: the forecast's slope on the validation years "
            f"({window}) is {scale:.3g}, not a positive return per unit signal"
        )
    line = (
        f"{name}: no-trade region at {cost:g} bps a fill, forecast scale {scale:.3g} (return "
        f"per unit signal over the horizon, calibrated on {window})"
    )
    return {**kwargs, "no_trade_bps": cost, "forecast_scale": scale}, line


def _better(new: tuple[float, float], old: tuple[float, float], cap: float) -> bool:
    """The rule between two runs: within the cap, the higher net Sharpe; else lower turnover."""
    if math.isnan(new[0]):
        return False
    if new[1] <= cap:
        return old[1] > cap or math.isnan(old[0]) or new[0] > old[0]
    return old[1] > cap and new[1] < old[1]


def _try_band(
    settings: RunSettings,
    name: str,
    strategy: type[Any],
    kwargs: Mapping[str, Any],
    choice: SmoothingChoice,
    result: Any,
) -> SmoothingChoice:
    """The no-trade region at the chosen smooth, kept if it wins on validation."""
    if result.signals is None or "no_trade_bps" not in _params(strategy):
        return choice
    scale = forecast_scale(result.signals, choice.smooth)
    if not (math.isfinite(scale) and scale > 0):
        return replace(choice, band=f"no no-trade band: forecast slope {scale:.3g} on validation")
    cost = settings.cfg.no_trade_bps or settings.costs.per_fill_bps
    if cost <= 0:
        return choice
    start, end = choice.window or (None, None)
    trial = {**kwargs, "smooth": choice.smooth, "no_trade_bps": cost, "forecast_scale": scale}
    banded = settings.run(strategy, name, trial, start=start, end=end)
    row = (float(banded.metrics["sharpe"]), float(banded.metrics["turnover_two_way"]))
    base = choice.rows[choice.smooth]
    what = (
        f"no-trade band at {cost:g} bps (forecast scale {scale:.3g}): net Sharpe "
        f"{row[0]:.2f} at {row[1]:.0f}x"
    )
    if _better(row, base, settings.cfg.max_val_turnover):
        return replace(choice, no_trade_bps=cost, forecast_scale=scale, band=f"{what}, kept")
    return replace(choice, band=f"{what}, not kept")


def _params(strategy: type[Any]) -> tuple[str, ...]:
    """The backtrader params a strategy class declares."""
    params = getattr(strategy, "params", None)
    names = getattr(params, "_getkeys", None)
    return tuple(names()) if callable(names) else ()
