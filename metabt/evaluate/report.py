"""Reports of metabt runs: diagnostics pages, comparison tables and their HTML pages.

Drawing and writing only; the numbers come from :mod:`metabt.evaluate.metrics`. The
quantstats tearsheets are :mod:`metabt.evaluate.tearsheet`'s. Every file is written
atomically (:func:`metabt._util.atomic_path`).
"""

from __future__ import annotations

import io
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from metabt._util import atomic_path, quiet_third_party, write_text
from metabt.errors import DataError
from metabt.evaluate.metrics import check_returns
from metabt.evaluate.sanitize import chart_label, clean, csv_text
from metabt.evaluate.sanitize import markdown as _markdown

__all__ = [
    "COUNT_METRICS",
    "ONE_DECIMAL_METRICS",
    "PERCENT_METRICS",
    "context_components",
    "format_table",
    "write_comparison",
    "write_cost_curve",
    "write_diagnostics",
]

#: Metrics shown as percentages by :func:`format_table`.
PERCENT_METRICS = frozenset(
    {
        "cagr",
        "max_drawdown",
        "volatility",
        "total_return",
        "win_rate",
        "hit_rate",
        "exposure",
        "contribution",
        "long_share",
        "alpha",
    }
)
COUNT_METRICS = frozenset({"bars", "adaptations", "untrained"})
#: Metrics shown with one decimal: basis points and bars.
ONE_DECIMAL_METRICS = frozenset({"break_even_bps", "holding_bars"})

_STYLE = (
    "body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#f3f3f3}"
)
#: The one template of every HTML page metabt writes itself; jinja2 escapes every value.
_PAGE = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>{{ title }}</title>"
    "<style>{{ style }}</style></head><body><h1>{{ title }}</h1>"
    "{% if notes %}<ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}"
    '{% for l in links %}<p><a href="{{ l.href }}">{{ l.text }}</a></p>{% endfor %}'
    "{% for p in paragraphs %}<p>{{ p }}</p>{% endfor %}"
    "{% for t in tables %}{% if t.heading %}<h2>{{ t.heading }}</h2>{% endif %}"
    "<table><tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr>"
    "{% for row in t.rows %}<tr>{% for cell in row %}<td>"
    '{% if cell.href %}<a href="{{ cell.href }}">{{ cell.text }}</a>'
    "{% else %}{{ cell.text }}{% endif %}</td>{% endfor %}</tr>{% endfor %}</table>"
    "{% endfor %}"
    "{% if image %}<img alt='{{ image_alt }}' src='data:image/png;base64,{{ image }}'>"
    "{% endif %}</body></html>"
)


def _page(
    title: str,
    *,
    notes: Sequence[str] = (),
    paragraphs: Sequence[str] = (),
    tables: Sequence[Mapping[str, object]] = (),
    image: str = "",
    image_alt: str = "",
    links: Sequence[tuple[str, str]] = (),
) -> str:
    """An HTML page from :data:`_PAGE`, rendered by jinja2 with autoescape.

    Every text (titles, notes, data names, cell values, links) is HTML-escaped by
    construction, so a hostile file name cannot inject markup or script, and passes
    :func:`metabt.evaluate.sanitize.clean` (no control or bidi character reaches the page).

    Args:
        title: the page title and heading.
        notes: bullet points under the heading.
        links: (text, relative path) of pages beside this one, linked under the notes.
        paragraphs: paragraphs after them.
        tables: each ``{"heading": str, "header": [str], "rows": [[{"text", "href"}]]}``.
        image: a base64 PNG shown at the end, or "".
        image_alt: its alt text.

    Returns:
        The page.
    """
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_PAGE).render(
        title=clean(title),
        style=_STYLE,
        notes=[clean(n) for n in notes],
        paragraphs=[clean(p) for p in paragraphs],
        links=[{"text": clean(t), "href": _cells([t], [h])[0]["href"]} for t, h in links],
        tables=list(tables),
        image=image,
        image_alt=clean(image_alt),
    )


def _cells(values: Sequence[object], hrefs: Sequence[str | None] = ()) -> list[dict[str, object]]:
    """Table cells for :func:`_page`: cleaned texts; links relative paths, percent-encoded."""
    links = list(hrefs) + [None] * (len(values) - len(hrefs))
    return [
        {"text": clean(v), "href": None if h is None else quote(h)} for v, h in zip(values, links)
    ]


def _table_section(
    df: pd.DataFrame, heading: str = "", links: Mapping[str, str] | None = None
) -> dict:
    """A metrics-like table for :func:`_page`: index levels first, values as in the text."""
    names = [clean(n) for n in df.index.names]
    rows = []
    for key, row in df.iterrows():
        keys = [clean(k) for k in (key if isinstance(key, tuple) else (key,))]
        values = [_format_cell(str(c), row[c]) for c in df.columns]
        rows.append(_cells([*keys, *values], [(links or {}).get(keys[0])]))
    return {"heading": clean(heading), "header": [*names, *map(clean, df.columns)], "rows": rows}


def _format_cell(column: str, value: object) -> str:
    if isinstance(value, numbers.Real):
        return _format_value(column, float(value))
    return str(value)


# ---------------------------------------------------------------------------------------
# What metabt corrects on quantstats' page (quantstats 0.0.86, reports.html / metrics)


def write_comparison(
    table: pd.DataFrame,
    tearsheets: Mapping[str, Path],
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    notes: Sequence[str] = (),
    assets: pd.DataFrame | None = None,
    cost_curves: Mapping[str, pd.Series] | None = None,
    run_cost_bps: float | None = None,
    links: Sequence[tuple[str, str]] = (),
) -> dict[str, Path]:
    """Write a strategy comparison: CSV, Markdown and an HTML index of the tearsheets.

    Args:
        table: one row per strategy (index named ``strategy``), one column per metric, as
            from :func:`metrics_table`.
        tearsheets: strategy name -> its tearsheet file (linked from the index page).
        out_dir: destination folder (created if missing).
        title: heading of the Markdown and HTML pages.
        notes: lines printed above the table (period, costs, training range...).
        assets: optional per-asset results, indexed by (strategy, asset), columns as
            ``metabt.evaluate.metrics.asset_results``; written to ``assets.csv`` and
            ``assets.md`` and shown on the index page.
        cost_curves: optional strategy name -> net Sharpe by cost per fill in bps
            (``BacktestResult.cost_sensitivity``); drawn by :func:`write_cost_curve` into
            ``cost_sensitivity.png`` and shown at the end of the index page.
        run_cost_bps: the run's own cost per fill (``BacktestResult.cost_per_fill_bps``),
            marked on that chart; None for no mark.
        links: (text, relative path) of other pages of the run (e.g. the interactive
            chart), linked under the notes.

    Returns:
        ``{"csv": ..., "markdown": ..., "html": ...}`` paths (plus ``assets_csv`` and
        ``assets_markdown`` with ``assets``, ``cost_curve`` with ``cost_curves``), each
        written atomically.

    Names (strategies, assets), the title and the notes are escaped for each format where
    they are written (:mod:`metabt.evaluate.sanitize`): text CSV cells never start a
    formula, Markdown never breaks a row or renders markup, HTML is autoescaped.
    """
    out = Path(out_dir)
    csv = write_text(out / "compare.csv", csv_text(table.reset_index()))
    lines = [
        f"# {_markdown(title)}",
        "",
        *(f"- {_markdown(n)}" for n in notes),
        "",
        format_table(table, markdown=True),
    ]
    md = write_text(out / "compare.md", "\n".join(lines) + "\n")
    sheets = {
        clean(name): Path(os.path.relpath(link, out)).as_posix()
        for name, link in tearsheets.items()
    }
    sections = [_table_section(table, "", sheets)]
    paths: dict[str, Path] = {"csv": csv, "markdown": md}
    if assets is not None:
        paths["assets_csv"] = write_text(out / "assets.csv", csv_text(assets.reset_index()))
        flat = assets.reset_index(level=list(range(1, assets.index.nlevels)))
        asset_lines = [
            f"# {_markdown(title)}: per asset",
            "",
            format_table(flat, markdown=True),
        ]
        paths["assets_markdown"] = write_text(out / "assets.md", "\n".join(asset_lines) + "\n")
        sections.append(_table_section(assets, "Per asset"))
    paragraphs = ["Each strategy name links to its quantstats tearsheet."]
    image = ""
    if cost_curves:
        import base64

        paths["cost_curve"] = write_cost_curve(
            cost_curves, out / "cost_sensitivity.png", run_cost_bps
        )
        image = base64.b64encode(paths["cost_curve"].read_bytes()).decode("ascii")
        paragraphs.append(_COST_CURVE_NOTE)
    page = _page(
        title,
        notes=notes,
        paragraphs=paragraphs,
        tables=sections,
        image=image,
        image_alt="net Sharpe against the cost per fill",
        links=links,
    )
    paths["html"] = write_text(out / "index.html", page)
    return paths


_COST_CURVE_NOTE = (
    "Cost sensitivity (chart below, cost_sensitivity.png): each strategy's net Sharpe had "
    "every fill cost 0 to 20 bps of its value (commission plus slippage, short borrow as "
    "paid), its positions held as they were; the dashed line is this run's cost per fill. "
    "break_even_bps is where the mean net return reaches 0."
)


def write_cost_curve(
    curves: Mapping[str, pd.Series] | Sequence[object],
    path: str | os.PathLike[str],
    run_cost_bps: float | None = None,
    *,
    title: str = "Net Sharpe against the cost per fill",
) -> Path:
    """Draw each strategy's net Sharpe against the cost per fill as a PNG, atomically.

    One line per strategy (x: cost per fill, bps of the traded value; y: annualised net
    Sharpe, :func:`metabt.evaluate.costs.cost_sensitivity`), a horizontal line at 0 and a
    dashed vertical line at the run's own cost per fill.

    Args:
        curves: strategy name -> Sharpe indexed by cost in bps, or backtest results (each
            with ``name`` and ``cost_sensitivity``, e.g. ``BacktestResult``).
        path: the PNG to write (parent folders are created).
        run_cost_bps: the run's cost per fill, bps (commission plus slippage,
            ``BacktestResult.cost_per_fill_bps``); None or NaN for no line.
        title: the chart's title.

    Returns:
        Path: ``path``.

    Raises:
        DataError: no curve, or a curve that is not a Series.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    if isinstance(curves, Mapping):
        named = [(clean(k), v) for k, v in curves.items()]
    else:
        named = [
            (clean(getattr(r, "name", "")), getattr(r, "cost_sensitivity", None)) for r in curves
        ]
    if not named:
        raise DataError("write_cost_curve: no strategy to draw; pass name -> cost_sensitivity")
    for name, curve in named:
        if not isinstance(curve, pd.Series):
            raise DataError(
                f"write_cost_curve: the curve of {name!r} is a {type(curve).__name__}, not a "
                "pandas Series of Sharpe ratios indexed by cost in bps "
                "(BacktestResult.cost_sensitivity)"
            )
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.subplots()
    for name, curve in named:
        x = curve.index.to_numpy(dtype=np.float64)
        ax.plot(
            x, curve.to_numpy(dtype=np.float64), marker="o", markersize=3, label=chart_label(name)
        )
    ax.axhline(0.0, color="black", linewidth=0.8)
    if run_cost_bps is not None and math.isfinite(run_cost_bps):
        ax.axvline(
            run_cost_bps,
            color="gray",
            linestyle="--",
            linewidth=1.0,
            label=f"this run: {run_cost_bps:g} bps per fill",
        )
    ax.set_xlabel("cost per fill (commission + slippage), bps of traded value")
    ax.set_ylabel("net Sharpe (annualised)")
    ax.set_title(chart_label(title))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp, quiet_third_party():
        fig.savefig(tmp, format="png")
    return target


def write_diagnostics(
    returns: pd.Series,
    benchmark: pd.Series | None,
    adaptations: pd.DataFrame,
    signals: Mapping[str, pd.DataFrame],
    path: str | os.PathLike[str],
    *,
    title: str,
    ic_window: int = 63,
    links: Sequence[tuple[str, str]] = (),
) -> Path:
    """A companion page to the tearsheet: is the adaptation working?

    Three panels, on the test period: the equity curve (with the benchmark); per
    adaptation, the support MSE before and after adaptation and the realised query MSE
    of the predictions that adapted model made (scored once their labels arrived), as
    ``ic_window``-bar rolling means; and the rolling information coefficient (Pearson
    correlation of the signal with the realised forward return) of each data.

    Args:
        returns: simple per-bar strategy returns.
        benchmark: simple per-bar benchmark returns, or None.
        adaptations: ``MetaStrategy.adaptation_log()``.
        signals: data name -> DataFrame with ``signal`` and ``forward`` columns
            (``metabt.analyzers.signal_frames``).
        path: the HTML file to write (atomically; the figure is embedded as a PNG).
        title: page title.
        ic_window: bars in the rolling means and rolling IC. Default 63 (a quarter).
        links: (text, relative path) of other pages of the run (e.g. the interactive
            chart), linked under the title.

    Returns:
        The path written.
    """
    import base64

    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    r = check_returns(returns, "returns")
    log = adaptations[adaptations["date"] >= r.index[0]].set_index("date").sort_index()
    pcs = context_components(log)
    fig = Figure(figsize=(11, 9 if pcs is None else 12.5), dpi=100)
    if pcs is None:
        ax_eq, ax_loss, ax_ic = fig.subplots(3, 1, sharex=True)
    else:
        grid = fig.add_gridspec(4, 1, height_ratios=(1, 1, 1, 1.3))
        ax_eq = fig.add_subplot(grid[0])
        ax_loss = fig.add_subplot(grid[1], sharex=ax_eq)
        ax_ic = fig.add_subplot(grid[2], sharex=ax_eq)
        ax_ctx = fig.add_subplot(grid[3])
        days = pcs.index.map(pd.Timestamp.toordinal).to_numpy(dtype=float)
        dots = ax_ctx.scatter(pcs["pc1"], pcs["pc2"], c=days, cmap="viridis", s=9)
        ax_ctx.plot(pcs["pc1"], pcs["pc2"], color="lightgray", linewidth=0.5, zorder=0)
        bar = fig.colorbar(dots, ax=ax_ctx)
        ticks = np.linspace(days.min(), days.max(), 5)
        bar.set_ticks(ticks.tolist())
        bar.set_ticklabels([str(pd.Timestamp.fromordinal(int(t)).date()) for t in ticks])
        ax_ctx.set_xlabel("context PC1")
        ax_ctx.set_ylabel("context PC2")
        ax_ctx.set_title("task embedding (CAVIA context) after each adaptation, by date")
    ax_eq.plot((1 + r).cumprod(), label="strategy", color="tab:blue")
    if benchmark is not None:
        b = check_returns(benchmark, "benchmark")
        ax_eq.plot((1 + b).cumprod(), label=chart_label(b.name or "benchmark"), color="tab:gray")
    ax_eq.set_ylabel("growth of 1")
    ax_eq.legend(loc="upper left")
    per = max(1, ic_window // 5)
    for column, color in (
        ("loss_before", "tab:orange"),
        ("loss_after", "tab:green"),
        ("query_loss", "tab:red"),
    ):
        if column in log and log[column].notna().any():
            series = log[column].rolling(per, min_periods=1).mean()
            ax_loss.plot(series, label=column.replace("_", " "), color=color)
    ax_loss.set_ylabel("MSE (label units)")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(loc="upper left")
    for name, pair in signals.items():
        pair = pair[pair.index >= r.index[0]]
        if len(pair) > ic_window:
            ic = pair["signal"].rolling(ic_window).corr(pair["forward"])
            ax_ic.plot(ic, label=chart_label(f"{name} rolling IC ({ic_window} bars)"))
    ax_ic.axhline(0.0, color="black", linewidth=0.8)
    ax_ic.set_ylabel("IC")
    if ax_ic.get_legend_handles_labels()[0]:  # none when the test period is short
        ax_ic.legend(loc="upper left", fontsize="small")
    fig.suptitle(chart_label(title))
    fig.tight_layout()
    buffer = io.BytesIO()
    with quiet_third_party():
        fig.savefig(buffer, format="png")
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    page = _page(
        title,
        paragraphs=[
            "Support MSE before/after: fit on the bars adapted to (in-sample). Query MSE: "
            "realised error of the predictions each adapted model then made (out-of-sample). "
            "A query MSE far above the support MSE after adaptation means the adaptation fits "
            "noise. Rolling IC: correlation of the signal with the forward return it "
            "predicts."
            + (
                ""
                if pcs is None
                else " Task embedding: the context vector each adaptation found, projected on "
                "its first two principal components; clusters of dates are regimes the model "
                "told apart."
            )
        ],
        image=image,
        image_alt="diagnostics",
        links=links,
    )
    return write_text(Path(path), page)


def context_components(log: pd.DataFrame) -> pd.DataFrame | None:
    """First two principal components of the adapted context vectors (CAVIA), by date.

    Args:
        log: an adaptation log indexed by date, with a ``context`` column of (C,) arrays
            (``MetaStrategy.adaptation_log()``).

    Returns:
        DataFrame indexed by date with columns ``pc1``, ``pc2`` (projections of the
        centred contexts on the top two right singular vectors), or None without contexts
        (or fewer than 3 of them).
    """
    if "context" not in log.columns:
        return None
    rows = log["context"].dropna()
    if len(rows) < 3:
        return None
    matrix = np.vstack([np.asarray(v, dtype=np.float64).ravel() for v in rows])
    centred = matrix - matrix.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T
    if proj.shape[1] < 2:
        proj = np.column_stack([proj, np.zeros(len(proj))])
    return pd.DataFrame(proj, index=rows.index, columns=["pc1", "pc2"])


def _format_value(column: str, value: float) -> str:
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if column in PERCENT_METRICS:
        return f"{value:.2%}"
    if column in COUNT_METRICS:
        return f"{value:.0f}"
    if column in ONE_DECIMAL_METRICS:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(df: pd.DataFrame, *, markdown: bool = False) -> str:
    """Render a metrics table as text: percentages for return-like metrics, 2 decimals else.

    ``cagr``, ``max_drawdown``, ``volatility``, ``total_return``, ``win_rate``,
    ``hit_rate``, ``exposure``, ``contribution``, ``long_share`` and ``alpha`` are shown as
    percentages, ``bars``, ``adaptations`` and ``untrained`` (a flag, or a count of seeds)
    as integers, ``break_even_bps`` and ``holding_bars`` with one decimal, other numbers
    (ratios, t-statistics, beta) with two decimals.

    Names (index labels and names, column names, text cells) pass
    :func:`metabt.evaluate.sanitize.clean` in text and :func:`metabt.evaluate.sanitize.markdown`
    in Markdown, so a name cannot break a line or a table row.

    Args:
        df (pd.DataFrame): a table such as :func:`metrics_table` returns.
        markdown (bool): a Markdown (pipe) table instead of plain text. Default False.

    Returns:
        str: the table, one line per row plus the header (no trailing newline).
    """
    escape = _markdown if markdown else clean

    def name(label: object) -> object:  # numbers and dates in an index stay as they are
        return escape(label) if isinstance(label, str) else label

    shown = pd.DataFrame(
        {
            c: [
                _format_value(str(c), float(v)) if isinstance(v, numbers.Real) else escape(v)
                for v in df[c]
            ]
            for c in df.columns
        },
        index=df.index,
    )
    shown = shown.rename(index=name, columns=name)
    shown.index.names = [name(n) for n in df.index.names]
    if markdown:
        # names (the index) left-aligned, values right-aligned
        align = ["left"] * max(1, shown.index.nlevels) + ["right"] * len(shown.columns)
        return shown.to_markdown(colalign=align)
    return shown.to_string()
