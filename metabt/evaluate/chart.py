"""Interactive Bokeh chart of a backtest: price and fills, equity, drawdown, signal, adaptations."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metabt._util import atomic_path
from metabt.errors import ConfigError
from metabt.evaluate.metrics import basket_returns
from metabt.evaluate.sanitize import clean

__all__ = ["ChartData", "chart", "chart_data", "fills", "write_chart"]

#: columns of :func:`fills`
FILL_COLUMNS = ["date", "data", "size", "price", "side", "kind", "position"]
_BUY, _SELL = "#2ca02c", "#d62728"
_PALETTE = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _dates(values: Sequence[float]) -> pd.DatetimeIndex:
    """backtrader's float dates (days since 0001-01-01, plus one) as tz-naive datetimes."""
    import backtrader as bt

    return pd.DatetimeIndex([bt.num2date(v) for v in values]).round("ms")


def fills(strategy: Any) -> pd.DataFrame:
    """Every fill of a finished run's orders, in the order they executed: the chart's markers.

    Read from the broker's order book (``strategy.broker.orders``, the orders this strategy
    submitted), one row per executed order.

    Args:
        strategy: a strategy after ``cerebro.run()``.

    Returns:
        pd.DataFrame with columns ``date`` (the bar the fill executed in, tz-naive),
        ``data`` (the data's name), ``size`` (shares, signed: + bought, − sold), ``price``
        (fill price), ``side`` ("buy" or "sell"), ``kind`` ("entry": the fill opens,
        increases or reverses a position; "exit": it only reduces or closes one) and
        ``position`` (shares held after the fill).
    """
    orders = getattr(getattr(strategy, "broker", None), "orders", None) or []
    rows: list[tuple[Any, ...]] = []
    held: dict[str, float] = {}
    for order in orders:
        size = float(order.executed.size)
        if order.owner is not strategy or not size:
            continue
        name = order.data._name
        before = held.get(name, 0.0)
        after = held[name] = before + size
        reduces = before != 0 and abs(after) < abs(before) and after * before >= 0
        rows.append(
            (order.executed.dt, name, size, float(order.executed.price), size > 0, reduces, after)
        )
    frame = pd.DataFrame(rows, columns=["dt", "data", "size", "price", "buy", "reduces", "pos"])
    frame.insert(0, "date", _dates(frame.pop("dt").tolist()))
    frame["side"] = np.where(frame.pop("buy").astype(bool), "buy", "sell")
    frame["kind"] = np.where(frame.pop("reduces").astype(bool), "exit", "entry")
    frame["position"] = frame.pop("pos")
    return frame[FILL_COLUMNS].sort_values("date", kind="stable").reset_index(drop=True)


def _equity(strategy: Any, clock: pd.DatetimeIndex) -> pd.Series:
    """The portfolio value per bar: an analyzer's ``equity``, else its ``returns``, else an
    observer's ``value`` line."""
    for analyzer in getattr(strategy, "analyzers", []):
        rets = analyzer.get_analysis()
        if isinstance(rets, dict) and isinstance(rets.get("equity"), pd.Series):
            return rets["equity"].astype(float)
    for analyzer in getattr(strategy, "analyzers", []):
        rets = analyzer.get_analysis()
        if isinstance(rets, dict) and isinstance(rets.get("returns"), pd.Series):
            return float(strategy.broker.startingcash) * (1.0 + rets["returns"]).cumprod()
    for observer in getattr(strategy, "observers", []):
        if "value" in getattr(observer.lines, "getlinealiases", lambda: ())():
            return pd.Series(np.asarray(observer.lines.value.array[: len(clock)]), clock)
    raise ConfigError(
        "the interactive chart needs the run's equity: cerebro.addanalyzer("
        "metabt.PortfolioAnalyzer) (or keep cerebro's standard Broker observer)"
    )


@dataclass
class ChartData:
    """What the chart draws of a finished run, without the run: small, and it pickles.

    Attributes:
        name: the strategy's class name (the default heading).
        prices: data name -> (bars, open/high/low/close) float64 frame, tz-naive index.
        fills: :func:`fills` of the run.
        equity: portfolio value per bar (currency units), tz-naive index.
        signals: data name -> its ``signal`` line per bar (a SignalTrader's; else empty).
        adaptations: a MetaStrategy's ``adaptations`` (dicts with date, data, trigger, ...).
    """

    name: str
    prices: dict[str, pd.DataFrame]
    fills: pd.DataFrame
    equity: pd.Series
    signals: dict[str, pd.Series] = field(default_factory=dict)
    adaptations: list[dict[str, Any]] = field(default_factory=list)


def chart_data(strategy: Any) -> ChartData:
    """Read what the chart draws off a strategy after ``cerebro.run()`` (no Bokeh needed).

    Args:
        strategy: a strategy after ``cerebro.run()``.

    Returns:
        A :class:`ChartData`.

    Raises:
        ConfigError: a strategy that has not run, or no equity to draw (see :func:`chart`).
    """
    if not getattr(strategy, "datas", None) or not len(strategy):
        raise ConfigError("the chart needs a strategy after cerebro.run(): it has no bars yet")
    clock = _dates(strategy.datetime.array[: len(strategy)])
    prices, signals = {}, {}
    lines = getattr(strategy, "signals", None) or []
    for i, data in enumerate(strategy.datas):
        n, name = len(data), data._name or f"data{i}"
        index = _dates(data.datetime.array[:n])
        columns = ("open", "high", "low", "close")
        prices[name] = pd.DataFrame(
            {k: np.asarray(getattr(data, k).array[:n], float) for k in columns}, index=index
        )
        if i < len(lines):
            values = np.asarray(lines[i].lines.signal.array[:n], float)
            signals[name] = pd.Series(values, index[: len(values)], name="signal")
    adaptations = [dict(a) for a in getattr(strategy, "adaptations", None) or []]
    return ChartData(
        name=type(strategy).__name__,
        prices=prices,
        fills=fills(strategy),
        equity=_equity(strategy, clock),
        signals=signals,
        adaptations=adaptations,
    )


def _figure(title: str, height: int, x_range: Any = None, **kwargs: Any) -> Any:
    from bokeh.plotting import figure

    extra = {} if x_range is None else {"x_range": x_range}
    fig = figure(
        title=title,
        height=height,
        x_axis_type="datetime",
        sizing_mode="stretch_width",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
        active_scroll="xwheel_zoom",
        **extra,
        **kwargs,
    )
    fig.xaxis.axis_label = "date"
    return fig


def _legend_outside(fig: Any) -> None:
    """Move the figure's legend above the plot (never over the data); a click hides a line."""
    if not fig.legend:
        return
    legend = fig.legend[0]
    legend.orientation = "horizontal"
    legend.click_policy = "hide"
    fig.add_layout(legend, "above")


def _hover(fig: Any, renderers: list[Any], fields: list[tuple[str, str]], fmt: str) -> None:
    from bokeh.models import HoverTool

    tips = [("date", f"@date{{{fmt}}}"), *fields]
    fig.add_tools(HoverTool(renderers=renderers, tooltips=tips, formatters={"@date": "datetime"}))


def chart(strategy: Any, *, style: str = "candlestick", title: str | None = None) -> Any:
    """The interactive chart of a finished run, as a Bokeh layout (not yet saved).

    Stacked figures sharing one zoomable date axis (``x_range``): for each data its price
    (candles, or the close for ``style="line"``) with the fills of :func:`fills` (▲ buy,
    ▼ sell; filled = entry, hollow = exit); the equity against the equal-weight basket of
    every data (:func:`metabt.evaluate.metrics.basket_returns`, started at the same
    value); the drawdown (fraction below the running peak); each data's ``signal`` line
    (a :class:`metabt.strategies.trader.SignalTrader`'s raw signal) and position
    (fraction of equity); and, for a MetaStrategy, its adaptations (one mark per
    adaptation, per data). Legends sit above the figures; a click hides a line. Every
    data name shown is passed through :func:`metabt.evaluate.sanitize.clean`.

    Args:
        strategy: a strategy after ``cerebro.run()``, or its :class:`ChartData` (what
            :func:`chart_data` reads off it; a detached result keeps it).
        style: "candlestick" (also "bar") draws candles; "line" the close. Default
            "candlestick".
        title: the page's heading. Default ``"<strategy class name>: backtest"``.

    Returns:
        bokeh.models.Column: the layout; its figures share one ``x_range``.

    Raises:
        ConfigError: a strategy that has not run, a bad style, or no equity to draw.
    """
    if style not in ("candlestick", "bar", "line"):
        raise ConfigError(f"chart style must be 'candlestick', 'bar' or 'line', got {style!r}")
    run = strategy if isinstance(strategy, ChartData) else chart_data(strategy)
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, NumeralTickFormatter
    from bokeh.models.widgets import Div

    clock = pd.DatetimeIndex(run.equity.index)
    fmt = "%F" if (clock == clock.normalize()).all() else "%F %H:%M"
    names = [clean(name) for name in run.prices]
    closes, figures = {}, []
    log = run.fills.copy()
    log["data"] = log["data"].map(clean)
    x_range = None
    for raw, name in zip(run.prices, names):
        frame = run.prices[raw].copy()
        n = len(frame)
        closes[name] = frame["close"]
        fig = _figure(title="", height=260, x_range=x_range)
        x_range = fig.x_range
        fig.yaxis.axis_label = f"{name} price"
        source = ColumnDataSource({"date": frame.index.to_numpy(), **_columns(frame)})
        if style == "line":
            price = fig.line("date", "close", source=source, color="black", legend_label="close")
        else:
            width = 0.6 * float(np.median(np.diff(frame.index.asi8)) / 1e6) if n > 1 else 1.0
            frame["color"] = np.where(frame["close"] >= frame["open"], _BUY, _SELL)
            source.data["color"] = frame["color"].to_numpy()
            fig.segment("date", "high", "date", "low", source=source, color="color")
            price = fig.vbar(
                "date", width, "open", "close", source=source, fill_color="color",
                line_color="color", legend_label="price",
            )  # fmt: skip
        price.name = f"price:{name}"
        _hover(
            fig, [price], [(k, f"@{k}{{0,0.00}}") for k in ("open", "high", "low", "close")], fmt
        )
        mine = log[log["data"] == name].copy()
        mine["marker"] = np.where(mine["side"] == "buy", "triangle", "inverted_triangle")
        mine["color"] = np.where(mine["side"] == "buy", _BUY, _SELL)
        for kind in ("entry", "exit"):
            part = ColumnDataSource(_columns(mine[mine["kind"] == kind]))
            marks = fig.scatter(
                "date", "price", source=part, marker="marker", size=11, line_color="color",
                fill_color="color" if kind == "entry" else None, line_width=2,
                legend_label=f"{kind} (▲ buy, ▼ sell)",
            )  # fmt: skip
            marks.name = f"fills:{name}:{kind}"
            tips = [("data", "@data"), ("side", "@side"), ("size", "@size{0,0.[0000]}")]
            _hover(fig, [marks], [*tips, ("price", "@price{0,0.00}")], fmt)
        _legend_outside(fig)
        figures.append(fig)

    equity = run.equity
    basket = basket_returns(closes, pd.DatetimeIndex(equity.index))
    basket_equity = float(equity.iloc[0]) * (1.0 + basket.fillna(0.0)).cumprod()
    curves = pd.DataFrame({"equity": equity.to_numpy(), "basket": basket_equity.to_numpy()})
    curves["date"] = equity.index
    curves["drawdown"] = curves["equity"] / curves["equity"].cummax() - 1.0
    source = ColumnDataSource(_columns(curves))
    fig = _figure("equity", 220, x_range)
    fig.yaxis.axis_label = "portfolio value"
    fig.yaxis.formatter = NumeralTickFormatter(format="0,0")
    lines = [
        fig.line("date", "equity", source=source, color="black", legend_label="strategy"),
        fig.line("date", "basket", source=source, color="gray", legend_label="equal-weight basket"),
    ]
    lines[0].name, lines[1].name = "equity", "basket"
    _hover(fig, lines, [("strategy", "@equity{0,0}"), ("basket", "@basket{0,0}")], fmt)
    _legend_outside(fig)
    figures.append(fig)
    fig = _figure("drawdown", 160, x_range)
    fig.yaxis.axis_label = "below peak"
    area = fig.varea("date", y1="drawdown", y2=0.0, source=source, fill_color=_SELL, fill_alpha=0.4)
    area.name = "drawdown"
    fig.yaxis.formatter = NumeralTickFormatter(format="0%")
    figures.append(fig)

    signals = {clean(name): line for name, line in run.signals.items()}
    figures.append(_signals_positions(signals, names, log, equity, closes, x_range, fmt))
    if run.adaptations:
        figures.append(_adaptations(run.adaptations, names, x_range, fmt))
    heading = clean(title or f"{run.name}: backtest")
    header = Div(text="", sizing_mode="stretch_width")
    header.text = f"<h2>{_html(heading)}</h2>"
    return column([header, *figures], sizing_mode="stretch_width")


def _columns(frame: pd.DataFrame) -> dict[str, Any]:
    """A frame's columns as a ColumnDataSource's data (Bokeh's own frame path warns)."""
    return {name: frame[name].to_numpy() for name in frame.columns}


def _html(text: str) -> str:
    import html

    return html.escape(text)


def _signals_positions(
    signals: dict[str, pd.Series],
    names: list[str],
    log: pd.DataFrame,
    equity: pd.Series,
    closes: dict[str, pd.Series],
    x_range: Any,
    fmt: str,
) -> Any:
    """One figure: each data's signal line (left axis) and position, fraction of equity."""
    from bokeh.models import ColumnDataSource, LinearAxis, Range1d

    fig = _figure("signal and positions", 220, x_range)
    fig.yaxis.axis_label = "signal"
    fig.extra_y_ranges = {"position": Range1d(start=-1.05, end=1.05)}
    fig.add_layout(LinearAxis(y_range_name="position", axis_label="position (of equity)"), "right")
    for i, name in enumerate(names):
        color = _PALETTE[i % len(_PALETTE)]
        close = closes[name]
        renderers = []
        if name in signals:
            line = signals[name]
            source = ColumnDataSource({"date": line.index, "signal": line.to_numpy()})
            sig = fig.line(
                "date", "signal", source=source, color=color, legend_label=f"{name} signal"
            )
            sig.name = f"signal:{name}"
            renderers.append(sig)
        mine = log[log["data"] == name]
        shares = mine.groupby("date")["size"].sum().cumsum().reindex(close.index).ffill()
        value = equity.reindex(close.index).ffill()
        weight = (shares.fillna(0.0) * close / value).where(value.notna())
        source = ColumnDataSource({"date": close.index, "position": weight.to_numpy()})
        pos = fig.step(
            "date", "position", source=source, mode="after", color=color, line_dash="dashed",
            y_range_name="position", legend_label=f"{name} position",
        )  # fmt: skip
        pos.name = f"position:{name}"
        _hover(fig, [pos], [("position", "@position{0.0%}")], fmt)
        if renderers:
            _hover(fig, renderers, [("signal", "@signal{0.0000}")], fmt)
    _legend_outside(fig)
    return fig


def _adaptations(
    adaptations: list[dict[str, Any]], names: list[str], x_range: Any, fmt: str
) -> Any:
    """One figure: a mark per adaptation, one row per data, coloured by trigger."""
    from bokeh.models import ColumnDataSource

    frame = pd.DataFrame(adaptations)
    frame["date"] = pd.to_datetime(frame["date"])
    frame["data"] = frame["data"].map(clean)
    frame["trigger"] = frame.get("trigger", "schedule").map(clean)
    keep = [c for c in ("date", "data", "trigger", "loss_before", "loss_after") if c in frame]
    rows = sorted(set(names) | set(frame["data"]))
    fig = _figure("adaptations", 60 + 24 * len(rows), x_range, y_range=rows)
    fig.yaxis.axis_label = "data"
    for trigger, color in (("schedule", "#1f77b4"), ("drift", "#ff7f0e")):
        part = frame.loc[frame["trigger"] == trigger, keep]
        marks = fig.scatter(
            "date", "data", source=ColumnDataSource(_columns(part)), marker="dash", size=12,
            line_width=2, color=color, legend_label=trigger,
        )  # fmt: skip
        marks.name = f"adaptations:{trigger}"
        tips = [("data", "@data"), ("trigger", "@trigger")]
        if "loss_after" in keep:
            tips += [("support loss", "@loss_before{0.0000} → @loss_after{0.0000}")]
        _hover(fig, [marks], tips, fmt)
    _legend_outside(fig)
    return fig


def write_chart(
    strategy: Any,
    path: str | os.PathLike[str],
    *,
    style: str = "candlestick",
    title: str | None = None,
) -> Path:
    """Write :func:`chart` to a standalone HTML file (Bokeh's JavaScript inline: works offline).

    Args:
        strategy: a strategy after ``cerebro.run()``, or its :class:`ChartData`.
        path: the ``.html`` file to write (parent folders are created; written atomically).
        style: see :func:`chart`.
        title: see :func:`chart`; also the page's ``<title>``.

    Returns:
        The path written.

    Raises:
        ConfigError: see :func:`chart`.

    References:
        Bokeh docs, "Embedding Bokeh content: standalone documents"
        (``bokeh.embed.file_html``, ``bokeh.resources.INLINE``).
    """
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    layout = chart(strategy, style=style, title=title)
    name = strategy.name if isinstance(strategy, ChartData) else type(strategy).__name__
    page = file_html(layout, INLINE, title=clean(title or f"{name}: backtest"))
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return Path(path)
