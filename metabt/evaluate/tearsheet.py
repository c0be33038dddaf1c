"""quantstats tearsheets that are right at any bar frequency.

:func:`write_tearsheet` writes quantstats' HTML report and then corrects it where its page
assumes daily bars or misses what it cannot see: day-named rows and charts on intraday or
longer bars are redone with quantstats' own functions on the right returns, drawdown cells
that quantstats leaves blank are filled from its own drawdown details, and the time in
market comes from the positions. Numbers come from quantstats and
:mod:`metabt.evaluate.metrics`; the file is written atomically.
"""

from __future__ import annotations

import html as _html
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from metabt._util import atomic_path, quiet_third_party, write_text
from metabt.data.bars import BarFrequency, infer_frequency
from metabt.errors import DataError
from metabt.evaluate.metrics import check_periods, check_returns
from metabt.evaluate.report import _page
from metabt.evaluate.sanitize import html

__all__ = ["write_tearsheet"]


def write_tearsheet(
    returns: pd.Series,
    benchmark: pd.Series | None,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    periods_per_year: int = 252,
    exposure: pd.Series | None = None,
) -> Path:
    """Write a quantstats HTML tearsheet of ``returns`` against ``benchmark``, atomically.

    The report is written to a temporary file in the target directory, then moved into
    place with ``os.replace``, so ``path`` is either the old file or the complete new one.
    Missing parent directories are created. Around the quantstats call only, matplotlib's
    "findfont" log records (quantstats asks for Arial, often not installed) and
    third-party Deprecation/PendingDeprecation/FutureWarnings are silenced; the logging
    and warning state is restored afterwards.

    quantstats (0.0.86) assumes daily bars in places; metabt corrects its page, and says
    so in a note under the header, where the bars are not daily (the spacing of
    ``returns``' dates, :func:`metabt.data.bars.infer_frequency`):

    - intraday bars: every figure stays per bar, annualised with ``periods_per_year`` (as
      the run's summary), except the rows quantstats computes per bar but names for a day
      (Expected Daily, Daily Value-at-Risk, Expected Shortfall, Best/Worst Day, Win Days)
      and the Daily Returns and Return Quantiles charts: these are computed by quantstats
      on the returns compounded within each calendar day, and the rows say so;
    - weekly, monthly, quarterly, yearly bars: those rows are named for the bar ("Best
      Month", "Monthly Value-at-Risk"; one that repeats a row quantstats already shows is
      dropped) and the two charts are redrawn per bar.

    At any frequency, the drawdown rows and the worst-drawdowns table quantstats leaves
    blank when the equity is below its start at every bar (a drawdown from the first bar
    that never recovers) are filled, with quantstats' own drawdown details. With
    ``exposure``, "Time in Market" is the share of bars that ended with a position (not
    quantstats' share of non-zero returns) and "Avg. Gross Exposure" is shown under it.
    A daily page without ``exposure`` whose drawdowns quantstats filled is left as
    quantstats wrote it.

    Args:
        returns (pd.Series): simple per-bar strategy returns (fraction), tz-naive
            DatetimeIndex.
        benchmark (pd.Series | None): simple per-bar benchmark returns on the same dates;
            its ``name`` is the benchmark's label in the report. None for no benchmark.
        path (str | os.PathLike): the HTML file to write.
        title (str | None): report title. Default None ("metabt tearsheet").
        periods_per_year (int): bars per year used to annualise. Default 252.
        exposure (pd.Series | None): gross exposure at each bar's close (sum of
            |position value| over portfolio value; 0 when flat), with a value on every date
            of ``returns`` (``QuantStatsAnalyzer``'s ``exposure``). Default None: quantstats'
            "Time in Market" (share of bars with a non-zero return).

    Returns:
        pathlib.Path: ``path``.

    Raises:
        DataError: ``returns``, ``benchmark`` or ``exposure`` is not a Series of numbers
            with a DatetimeIndex and a finite value, or ``exposure`` misses a date of
            ``returns``.
        ConfigError: bad ``periods_per_year``.

    A run without a single non-zero return (no trades) gets a short page that says so
    instead of quantstats' charts, which cannot be drawn for a flat series. Titles are
    HTML-escaped (:func:`metabt.evaluate.sanitize.html`).

    References:
        quantstats.reports.html (https://github.com/ranaroussi/quantstats).
    """
    r = check_returns(returns, "returns")
    periods = check_periods(periods_per_year)
    kwargs: dict[str, object] = {}
    b = None
    if benchmark is not None:
        b = check_returns(benchmark, "benchmark")
        # quantstats puts both titles into its HTML unescaped: escape them here
        kwargs["benchmark_title"] = html(benchmark.name or "Benchmark")
    held = None if exposure is None else _check_exposure(exposure, r.index)
    target = Path(path)
    if not (r.fillna(0.0) != 0.0).any():
        return write_text(target, _flat_page(r, title or "metabt tearsheet", periods))
    # quantstats opens the file itself, so it writes to the temporary name
    with atomic_path(target) as tmp, quiet_third_party():
        from quantstats import reports as qs_reports  # heavy: imported only where used

        qs_reports.html(
            r,
            b,
            title=html(title or "metabt tearsheet"),
            output=str(tmp),
            periods_per_year=periods,
            **kwargs,
        )
        page = tmp.read_text(encoding="utf-8")
        honest = _honest_page(page, r, b, periods=periods, exposure=held)
        if honest != page:
            tmp.write_text(honest, encoding="utf-8")
    return target


def _check_exposure(exposure: object, index: pd.DatetimeIndex) -> pd.Series:
    """``exposure`` on ``index`` (float64), or DataError naming the problem and the fix."""
    if not isinstance(exposure, pd.Series) or not isinstance(exposure.index, pd.DatetimeIndex):
        raise DataError(
            "exposure must be a pandas Series of gross exposure (fraction of equity) with a "
            f"DatetimeIndex, got {type(exposure).__name__}; pass e.g. QuantStatsAnalyzer's "
            "get_analysis()['exposure']"
        )
    try:
        values = exposure.astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataError(f"exposure must hold numbers (gross exposure per bar): {exc}") from exc
    if values.index.tz is not None:  # as the returns: wall times
        values = values.tz_localize(None)
    missing = ~index.isin(values.index)
    if missing.any():
        raise DataError(
            f"exposure has no value at {int(missing.sum())} of the {len(index)} bars of the "
            f"returns (first {index[missing][0]}); pass the gross exposure of every bar, "
            "e.g. QuantStatsAnalyzer's get_analysis()['exposure']"
        )
    values = values[~values.index.duplicated(keep="last")].reindex(index)
    if not np.isfinite(values.to_numpy()).all():
        raise DataError(
            "exposure is NaN or infinite at a bar of the returns; pass 0.0 for a bar "
            "without a position"
        )
    return values


#: The rows quantstats computes per bar but names for a day, in its order.
_DAY_ROWS = (
    "Expected Daily",
    "Daily Value-at-Risk",
    "Expected Shortfall (cVaR)",
    "Best Day",
    "Worst Day",
    "Win Days",
)


#: The drawdown rows of quantstats' metrics table (its ``_calc_dd``).
_DD_ROWS = (
    "Max Drawdown",
    "Max DD Date",
    "Max DD Period Start",
    "Max DD Period End",
    "Longest DD Days",
    "Avg. Drawdown",
    "Avg. Drawdown Days",
)


#: Lower-than-daily bars: (unit, adjective) of the backtrader timeframe.
_BAR_UNITS: dict[tuple[str, int], tuple[str, str]] = {
    ("Weeks", 1): ("Week", "Weekly"),
    ("Months", 1): ("Month", "Monthly"),
    ("Months", 3): ("Quarter", "Quarterly"),
    ("Years", 1): ("Year", "Yearly"),
}


#: What quantstats shows in a cell it could not fill ("%": an empty percentage).
_BLANK = ("", "-", "%")


def _bar_spacing(index: pd.DatetimeIndex) -> BarFrequency | None:
    """The bar spacing of ``index`` (its label and timeframe), or None if it shows none."""
    try:
        return infer_frequency(index)
    except DataError:  # fewer than 2 bars, or dates not strictly ascending: as quantstats
        return None


def _qs_window(r: pd.Series, b: pd.Series | None, times: int) -> tuple[pd.Series, pd.Series | None]:
    """The bars quantstats reports on: ``returns`` without NaN, then, with a benchmark,
    from the later of the two series' first non-zero returns, ``times`` times over
    (quantstats' ``_match_dates``: ``reports.html`` applies it once, for the drawdown table
    and the charts, and its ``metrics`` once more, for the metrics table)."""
    r = r.dropna()
    if b is None:
        return r, None
    b = b.reindex(r.index).dropna()
    for _ in range(times):
        if r.empty or b.empty:
            break
        first = max(r.ne(0).idxmax(), b.ne(0).idxmax())
        r, b = r.loc[first:], b.loc[first:]
    return r, b


def _daily(r: pd.Series) -> pd.Series:
    """Per-bar simple returns compounded within each calendar day, indexed by the day."""
    return (1.0 + r.fillna(0.0)).groupby(r.index.normalize()).prod().sub(1.0).rename(r.name)


def _percent(value: float) -> str:
    """A percentage as quantstats' metrics table shows it: two decimals, no padding."""
    if not math.isfinite(value):
        return "-"
    return f"{float(np.round(value, 2))}%"


class _Table:
    """quantstats' Key Performance Metrics table inside its page, edited row by row.

    Rows are ``<tr><td>label</td><td>benchmark</td><td>strategy</td></tr>`` (no benchmark
    column without one); the strategy is the last cell.
    """

    def __init__(self, page: str) -> None:
        heading = page.find("<h3>Key Performance Metrics</h3>")
        start = page.find("<table>", heading)
        end = page.find("</table>", start)
        self.found = heading >= 0 and start >= 0 and end >= 0
        if not self.found:
            start = end = len(page)
        self.head, self.body, self.tail = page[:start], page[start:end], page[end:]

    def _match(self, label: str) -> re.Match[str] | None:
        return re.search(r"<tr><td>" + re.escape(label) + r"</td>(.*?)</tr>\n?", self.body)

    def cells(self, label: str) -> list[str] | None:
        row = self._match(label)
        return None if row is None else re.findall(r"<td>(.*?)</td>", row.group(1))

    def set(self, label: str, cells: Sequence[str], new_label: str | None = None) -> None:
        row = self._match(label)
        if row is not None:
            self.body = (
                self.body[: row.start()] + _row(new_label or label, cells) + self.body[row.end() :]
            )

    def drop(self, label: str) -> None:
        row = self._match(label)
        if row is not None:
            self.body = self.body[: row.start()] + self.body[row.end() :]

    def insert_after(self, label: str, new_label: str, cells: Sequence[str]) -> None:
        row = self._match(label)
        if row is not None:
            self.body = self.body[: row.end()] + _row(new_label, cells) + self.body[row.end() :]

    def insert_before(self, label: str, new_label: str, cells: Sequence[str]) -> None:
        row = self._match(label)
        if row is not None:
            self.body = self.body[: row.start()] + _row(new_label, cells) + self.body[row.start() :]

    def page(self) -> str:
        return self.head + self.body + self.tail


def _row(label: str, cells: Sequence[str]) -> str:
    return "<tr>" + "".join(f"<td>{c}</td>" for c in [_html.escape(label), *cells]) + "</tr>\n"


def _honest_page(
    page: str,
    r: pd.Series,
    b: pd.Series | None,
    *,
    periods: int,
    exposure: pd.Series | None,
) -> str:
    """quantstats' page with what it gets wrong off daily bars corrected, and noted."""
    table = _Table(page)
    if not table.found:  # not the page this code knows: leave it as quantstats wrote it
        return page
    notes: list[str] = []
    spacing = _bar_spacing(r.index)
    timeframe = None if spacing is None else spacing.timeframe
    if spacing is None or timeframe is None or timeframe == ("Days", 1):
        page = table.page()  # daily bars: quantstats' own page
    elif timeframe[0] in ("MicroSeconds", "Seconds", "Minutes"):
        page = _intraday(table, r, b, spacing, periods, notes)
    else:  # k-day, weekly, monthly, ... bars
        page = _lower_than_daily(table, r, b, spacing, periods, notes)
    page = _fill_drawdowns(page, r, b, notes)
    if exposure is not None:
        page = _time_in_market(page, exposure, notes)
    if not notes:
        return page
    items = "".join(f"<li>{_html.escape(n)}</li>" for n in notes)
    box = (
        '<div id="metabt_notes" style="font-size:13px;color:#333;margin:8px 0">'
        f"<b>Read with these notes (metabt):</b><ul>{items}</ul></div>"
    )
    at = page.find("</h4>")
    if at < 0:
        return page
    at += len("</h4>")
    return page[:at] + "\n" + box + page[at:]


def _replace_chart(page: str, chart: str, svg: str) -> str:
    """``page`` with the figure in ``<div id="chart">`` replaced by ``svg``."""
    found = re.search(r'(<div id="' + re.escape(chart) + r'">)(.*?)(</div>)', page, re.S)
    if found is None:
        return page
    return page[: found.start(2)] + svg + page[found.end(2) :]


def _svg(draw: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The SVG text of a quantstats plot function (``savefig`` to memory, not shown)."""
    buffer = io.BytesIO()
    draw(*args, savefig={"fname": buffer, "format": "svg"}, show=False, **kwargs)
    return buffer.getvalue().decode()


def _figure_svg(fig: object) -> str:
    """The SVG text of a matplotlib Figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg")  # type: ignore[attr-defined]
    return buffer.getvalue().decode()


def _marked(label: str, mark: str) -> str:
    """``label`` with ``mark`` in parentheses, inside its own if it ends with one."""
    if label.endswith(")"):
        return f"{label[:-1]}, {mark})"
    return f"{label} ({mark})"


def _span(index: pd.DatetimeIndex) -> tuple[str, str]:
    """The first and last bar of ``index``: dates, with times if any bar has one."""
    fmt = "%Y-%m-%d" if (index == index.normalize()).all() else "%Y-%m-%d %H:%M"
    return index[0].strftime(fmt), index[-1].strftime(fmt)


def _daily_metrics(daily_r: pd.Series, daily_b: pd.Series | None) -> pd.DataFrame:
    """quantstats' metrics table of daily returns, called as ``reports.html`` calls it
    (only its unannualised, day-named rows are used)."""
    from quantstats import reports as qs_reports

    with warnings.catch_warnings():  # on a day or two, quantstats warns of too few returns
        warnings.simplefilter("ignore")
        table: pd.DataFrame = qs_reports.metrics(
            daily_r,
            daily_b,
            display=False,
            mode="full",
            sep=True,
            internal="True",
            compounded=True,
            prepare_returns=False,
            match_dates=False,
            benchmark_title=None if daily_b is None else daily_b.name,
            strategy_title="Strategy",
        )
    return table


def _intraday(
    table: _Table,
    r: pd.Series,
    b: pd.Series | None,
    spacing: BarFrequency,
    periods: int,
    notes: list[str],
) -> str:
    """Day-named rows and charts from the returns compounded within each calendar day."""
    from quantstats import plots as qs_plots

    mr, mb = _qs_window(r, b, times=2)
    daily_r = _daily(mr).rename("Strategy")
    daily_b = None if mb is None else _daily(mb).rename(str(mb.name or "Benchmark"))
    days = _daily_metrics(daily_r, daily_b)
    bars = f"{spacing.name} bars"
    mark = f"days compounded from {bars}"
    for label in _DAY_ROWS:
        cells = table.cells(label)
        if cells is None or label not in days.index:
            continue
        values = [_html.escape(str(v)) for v in days.loc[label].tolist()]
        if len(values) == len(cells):
            table.set(label, values, _marked(label, mark))
    page = table.page()
    hr, hb = _qs_window(r, b, times=1)
    chart_r = _daily(hr).rename("Strategy")
    chart_b = None if hb is None else _daily(hb).rename(str(hb.name or "Benchmark"))
    page = _replace_chart(
        page,
        "daily_returns",
        _svg(
            qs_plots.daily_returns,
            chart_r,
            chart_b,
            figsize=(8, 3),
            subtitle=False,
            ylabel="",
            prepare_returns=False,
        ),
    )
    page = _replace_chart(
        page,
        "returns_dist",
        _svg(
            qs_plots.distribution,
            chart_r,
            figsize=(8, 4),
            subtitle=False,
            title="Strategy",
            ylabel="",
            compounded=True,
            prepare_returns=False,
        ),
    )
    notes.append(
        f"{spacing.name.capitalize()} bars: every figure is per bar and annualised with "
        f"{periods:,} bars a year, as in the run's summary, except the rows marked "
        f'"{mark}" ({", ".join(_DAY_ROWS)}) and the Daily Returns and Return Quantiles '
        f"charts: quantstats computes those on the {bars}' returns compounded within each "
        "calendar day. Per-bar rows without a unit (Avg. Return, Avg. Win/Loss, Max "
        "Consecutive Wins/Losses, Kelly, ...) count bars; drawdown lengths are calendar days."
    )
    return page


def _lower_than_daily(
    table: _Table,
    r: pd.Series,
    b: pd.Series | None,
    spacing: BarFrequency,
    periods: int,
    notes: list[str],
) -> str:
    """Day-named rows renamed for the bar; the two per-day charts redrawn per bar."""
    unit, adjective = _BAR_UNITS.get(spacing.timeframe or ("", 0), ("", ""))
    generic = {  # bars of no calendar unit (2-day, 2-week, ...): named "bar"
        "Expected Daily": "Expected per Bar",
        "Daily Value-at-Risk": "Per-Bar Value-at-Risk",
        "Best Day": "Best Bar",
        "Worst Day": "Worst Bar",
        "Win Days": "Win Bars",
    }
    names = generic
    if unit:
        names = {
            "Expected Daily": f"Expected {adjective}",
            "Daily Value-at-Risk": f"{adjective} Value-at-Risk",
            "Best Day": f"Best {unit}",
            "Worst Day": f"Worst {unit}",
            "Win Days": f"Win {unit}",  # as quantstats' "Win Month", "Win Year"
        }
    renamed, dropped = [], []
    for label, name in names.items():
        cells = table.cells(label)
        if cells is None:
            continue
        twin = table.cells(name)
        if twin is not None and twin == cells:  # the same numbers already shown: one row
            table.drop(label)
            dropped.append(label)
            continue
        if twin is not None:  # that row aggregates several bars: keep this one apart
            name = f"{generic[label]} ({spacing.name})"
        table.set(label, cells, name)
        renamed.append(f"{label} -> {name}")
    page = table.page()
    hr, _ = _qs_window(r, b, times=1)
    title = f"{adjective} Returns" if unit else f"Returns per Bar ({spacing.name})"
    page = _replace_chart(page, "daily_returns", _bar_returns_svg(hr, title))
    page = _replace_chart(page, "returns_dist", _quantiles_svg(hr, adjective or "Per Bar"))
    said = (
        f"{spacing.name.capitalize()} bars ({periods:,} a year): quantstats computes its "
        "per-day rows on each bar"
    )
    if renamed:
        said += "; they are named for the bar here (" + ", ".join(renamed) + ")"
    if dropped:
        said += (
            ("; those" if not renamed else ", and those")
            + " that repeat a row with the same numbers are left out ("
            + ", ".join(dropped)
            + ")"
        )
    notes.append(
        said + f". The {title} and Return Quantiles charts are drawn per bar; drawdown "
        "lengths are calendar days."
    )
    return page


def _spacing_days(index: pd.DatetimeIndex) -> float:
    """The median spacing of the bars, days (1.0 for a single bar)."""
    if len(index) < 2:
        return 1.0
    return float(np.median(np.diff(index.as_unit("ns").asi8))) / 86_400e9


def _bar_returns_svg(r: pd.Series, title: str) -> str:
    """Each bar's return as a bar chart, titled ``title``."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(8, 3), dpi=100)
    ax = fig.subplots()
    values = r.fillna(0.0).to_numpy(dtype=np.float64) * 100.0
    colors = np.where(values >= 0, "#348dc1", "#af4b64")
    ax.bar(r.index, values, width=max(1.0, 0.8 * _spacing_days(r.index)), color=colors)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title(title, fontweight="bold")
    ax.yaxis.set_major_formatter(lambda y, _pos: f"{y:g}%")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return _figure_svg(fig)


def _quantiles_svg(r: pd.Series, label: str) -> str:
    """Box plots of the returns per bar (labelled ``label``) and compounded over each
    longer calendar period (month, quarter, year)."""
    from matplotlib.figure import Figure

    x = r.fillna(0.0)
    groups: dict[str, np.ndarray] = {label: x.to_numpy()}
    bar_days = _spacing_days(x.index)
    for name, rule, days in (("Monthly", "ME", 28), ("Quarterly", "QE", 90), ("Yearly", "YE", 365)):
        if days > 1.5 * bar_days and name not in groups:
            groups[name] = (1.0 + x).resample(rule).prod().sub(1.0).to_numpy()
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.subplots()
    ax.boxplot([v * 100.0 for v in groups.values()], tick_labels=list(groups))
    ax.set_title("Strategy - Return Quantiles", fontweight="bold")
    ax.yaxis.set_major_formatter(lambda y, _pos: f"{y:g}%")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return _figure_svg(fig)


def _drawdown_details(x: pd.Series) -> pd.DataFrame:
    """quantstats' drawdown details of returns ``x``, a drawdown from the first bar counted.

    quantstats drops its phantom starting point (equity 1.0 before the first bar) before it
    looks for drawdowns, so a series under its start at every bar has no drawdown start
    and no details. Here the point stays in: the details are quantstats'
    (``stats.drawdown_details``) of the same drawdown series with that point before it.
    """
    from quantstats import stats as qs_stats

    x = x.fillna(0.0)
    equity = (1.0 + x).cumprod().to_numpy(dtype=np.float64)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))  # the start, 1.0, is the first peak
    dd = pd.Series(equity / peak - 1.0, index=x.index)
    before = pd.Series([0.0], index=pd.DatetimeIndex([x.index[0] - pd.Timedelta(days=1)]))
    return qs_stats.drawdown_details(pd.concat([before, dd]))


def _dd_cells(x: pd.Series) -> dict[str, str]:
    """The seven drawdown cells of quantstats' metrics table for returns ``x``."""
    details = _drawdown_details(x)
    if details.empty:
        return {}
    worst = details.sort_values(by="max drawdown", ascending=True).iloc[0]
    return {
        "Max Drawdown": _percent(float(worst["max drawdown"])),
        "Max DD Date": str(worst["valley"]),
        "Max DD Period Start": str(worst["start"]),
        "Max DD Period End": str(worst["end"]),
        "Longest DD Days": str(int(details["days"].max())),
        "Avg. Drawdown": _percent(float(details["max drawdown"].mean())),
        "Avg. Drawdown Days": str(int(np.round(details["days"].mean()))),
    }


def _fill_drawdowns(page: str, r: pd.Series, b: pd.Series | None, notes: list[str]) -> str:
    """Fill the drawdown cells and the worst-drawdowns table quantstats left blank."""
    table = _Table(page)
    columns = 1 if b is None else 2
    changed = False
    if table.cells("Avg. Drawdown") is None and table.cells("Recovery Factor") is not None:
        # no drawdown at all for quantstats: it left out the average rows (the days one
        # it appends at the end of the table): put both back where they belong
        table.drop("Avg. Drawdown Days")
        for label in ("Avg. Drawdown", "Avg. Drawdown Days"):
            table.insert_before("Recovery Factor", label, ["-"] * columns)
        changed = True
    rows = {label: table.cells(label) for label in _DD_ROWS}
    if not any(cells and any(c in _BLANK for c in cells) for cells in rows.values()):
        return _fill_dd_table(table.page(), r, b, notes)
    mr, mb = _qs_window(r, b, times=2)
    series = [mr] if mb is None else [mb, mr]  # the table's columns: benchmark first
    filled = [_dd_cells(x) for x in series]
    for label, cells in rows.items():
        if not cells or len(cells) != len(series):
            continue
        new = [own.get(label, cell) if cell in _BLANK else cell for cell, own in zip(cells, filled)]
        if new != cells:
            table.set(label, new)
            changed = True
    if changed:
        notes.append(
            "Drawdown rows filled by metabt: quantstats leaves them blank when the equity is "
            "under its start at every bar (a drawdown from the first bar that has not "
            "recovered); they are quantstats' drawdown details with the starting equity "
            "counted as the first peak."
        )
    return _fill_dd_table(table.page(), r, b, notes)


def _fill_dd_table(page: str, r: pd.Series, b: pd.Series | None, notes: list[str]) -> str:
    """Fill quantstats' "Worst 10 Drawdowns" table if it has no row but the equity fell."""
    found = re.search(
        r'(<div id="ddinfo">\s*<h3>Worst 10 Drawdowns</h3>\s*)(<table>.*?</table>)', page, re.S
    )
    if found is None or "<td>" in found.group(2):
        return page
    hr, _ = _qs_window(r, b, times=1)
    details = _drawdown_details(hr)
    if details.empty:
        return page
    worst = details.sort_values(by="max drawdown", ascending=True)[:10]
    body = "".join(
        f"<tr><td>{_html.escape(str(start))}</td><td>{_html.escape(str(end))}</td>"
        f"<td>{float(depth):.2f}</td><td>{int(days)}</td></tr>\n"
        for start, end, depth, days in worst[["start", "end", "max drawdown", "days"]].itertuples(
            index=False, name=None
        )
    )
    table = (
        "<table>\n<thead>\n<tr><th>Started</th><th>Recovered</th><th>Drawdown</th>"
        f"<th>Days</th></tr>\n</thead>\n<tbody>\n{body}</tbody>\n</table>"
    )
    if not any("Drawdown rows filled" in n for n in notes):
        notes.append(
            "Worst 10 Drawdowns filled by metabt: quantstats leaves the table empty when the "
            "equity is under its start at every bar."
        )
    return page[: found.start(2)] + table + page[found.end(2) :]


def _time_in_market(page: str, exposure: pd.Series, notes: list[str]) -> str:
    """The strategy's "Time in Market" from its positions, and its mean gross exposure."""
    table = _Table(page)
    cells = table.cells("Time in Market")
    if cells is None:
        return page
    held = exposure.to_numpy(dtype=np.float64)
    share = float(np.mean(held != 0.0)) * 100.0
    mean = float(np.mean(np.abs(held))) * 100.0
    table.set("Time in Market", [*cells[:-1], _percent(share)])
    table.insert_after(
        "Time in Market", "Avg. Gross Exposure", [*(["-"] * (len(cells) - 1)), _percent(mean)]
    )
    first, last = _span(exposure.index)
    notes.append(
        f"Time in Market (strategy): the share of the {len(held):,} bars from {first} to "
        f"{last} that ended with a position, from the run's positions (quantstats counts "
        "bars with a non-zero return). Avg. Gross Exposure: the mean over those bars of the "
        "summed |position value| over the portfolio value."
    )
    return table.page()


def _flat_page(returns: pd.Series, title: str, periods_per_year: int) -> str:
    """The report of a run whose returns are all zero: no trades, nothing to plot."""
    first, last = returns.index[0].date(), returns.index[-1].date()
    return _page(
        title,
        paragraphs=[
            f"no trades: every one of the {len(returns)} bars from {first} to {last} has a "
            "zero return (the strategy never held a position), so there is no performance "
            "to chart. Check the signal (NaN or flat), the sizer (a position worth less "
            "than one share at this cash level) and the data window (enough bars for the "
            "feature warm-up and the first support set).",
            f"Annualised with {periods_per_year} bars a year, every return metric is 0 and "
            "risk-adjusted ratios are not applicable.",
        ],
    )
