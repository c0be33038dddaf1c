"""Headless charts of a backtest: backtrader's plot to PNG, or the interactive Bokeh chart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from metabt._util import atomic_path, quiet_third_party
from metabt.errors import ConfigError
from metabt.evaluate.sanitize import chart_label

__all__ = ["plot"]


def plot(
    strategy: Any,
    path: str | os.PathLike[str],
    *,
    style: str = "candlestick",
    size: tuple[float, float] = (16.0, 9.0),
    dpi: int = 100,
) -> Path:
    """Save the chart of a finished run: a PNG, or an interactive HTML page for ``.html``.

    The file's suffix picks the format: ``.html`` (or ``.htm``) writes the interactive
    Bokeh chart of :func:`metabt.evaluate.chart.write_chart` (price with the fills, equity
    against the equal-weight basket, drawdown, signal and positions, adaptations, on one
    zoomable date axis; ``size`` and ``dpi`` do not apply, the page fills the window's
    width); any other suffix writes backtrader's chart as a PNG, as follows.

    ``cerebro.plot()`` opens a window (backtrader asks matplotlib for TkAgg), which fails
    on a server. This draws the same chart (each data's bars and volume, its indicators,
    the strategy's ``signal`` lines and, when the run had backtrader's ``BuySell``
    observer, the orders) with matplotlib's non-interactive Agg backend and writes it
    atomically. pyplot's previous backend is restored afterwards where it can be. Data
    names are drawn as they are (:func:`metabt.evaluate.sanitize.chart_label`: no control
    character, a ``$`` pair is not mathtext); each data's ``_name`` is restored after.

    Args:
        strategy: a strategy after ``cerebro.run()`` (e.g. ``cerebro.run()[0]``, or
            ``metabt.experiments.backtest.BacktestResult.strategy``).
        path: the file to write (parent folders are created): ``.html`` for the
            interactive chart, else a PNG.
        style: backtrader's bar style: "candlestick", "bar" or "line" (the HTML chart
            draws candles for the first two). Default "candlestick".
        size: figure size in inches (width, height). Default (16, 9).
        dpi: resolution, dots per inch. Default 100.

    Returns:
        The path written.

    Raises:
        ConfigError: a strategy that has not run (no bars), or a bad style; for HTML, a
            run with no equity to draw (see :func:`metabt.evaluate.chart.chart`).

    References:
        backtrader docs, "Plotting" (``backtrader.plot.Plot``).
    """
    if style not in ("candlestick", "bar", "line"):
        raise ConfigError(f"plot style must be 'candlestick', 'bar' or 'line', got {style!r}")
    if not getattr(strategy, "datas", None) or not len(strategy):
        raise ConfigError("plot needs a strategy after cerebro.run(): it has no bars yet")
    if Path(path).suffix.lower() in (".html", ".htm"):
        from metabt.evaluate.chart import write_chart

        return write_chart(strategy, path, style=style)
    with quiet_third_party():
        import matplotlib.pyplot as plt
        from backtrader import plot as bt_plot  # asks matplotlib for TkAgg on import

        previous = plt.get_backend()
        plt.switch_backend("Agg")  # after backtrader's request: nothing can open a window
        figures: list[Any] = []
        # backtrader labels each data by its _name: drawn as a chart label for the plot only
        names = [(data, data._name) for data in strategy.datas]
        try:
            for data, name in names:
                data._name = chart_label(name) if name else name
            figures = bt_plot.Plot(style=style).plot(strategy, iplot=False)
            figure = figures[0]
            figure.set_size_inches(*size)
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format="png", dpi=dpi)
        finally:
            for data, name in names:
                data._name = name
            for figure in figures:  # only ours: a user's open figures stay
                plt.close(figure)
            try:
                plt.switch_backend(previous)
            except ImportError:  # an interactive backend with no display: stay on Agg
                pass
    return Path(path)
