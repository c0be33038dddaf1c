"""Performance metrics (quantstats), tearsheets and comparison tables for metabt runs."""

from __future__ import annotations

import contextlib
import html
import logging
import math
import numbers
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from metabt.errors import ConfigError, DataError

__all__ = [
    "compute_metrics",
    "format_table",
    "metrics_table",
    "probabilistic_sharpe",
    "sharpe_difference_ci",
    "write_comparison",
    "write_diagnostics",
    "write_tearsheet",
    "write_text",
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
    }
)
COUNT_METRICS = frozenset({"bars", "adaptations"})


def _check_returns(returns: object, name: str) -> pd.Series:
    """``returns`` as a float64 Series, or DataError naming the problem and the fix."""
    if not isinstance(returns, pd.Series):
        raise DataError(
            f"{name} must be a pandas Series of simple per-bar returns, got "
            f"{type(returns).__name__}; pass e.g. analysis['returns']"
        )
    try:
        values = returns.astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must hold numbers (simple per-bar returns): {exc}") from exc
    if not isinstance(values.index, pd.DatetimeIndex):
        raise DataError(
            f"{name} must have a DatetimeIndex (the dates of the bars), got "
            f"{type(values.index).__name__}; set one, e.g. series.index = pd.to_datetime(dates)"
        )
    if values.index.tz is not None:  # quantstats wants tz-naive dates: keep the wall time
        values = values.tz_localize(None)
    if not np.isfinite(values.to_numpy()).any():
        raise DataError(
            f"{name} has no finite value ({len(values)} bars); the backtest recorded no "
            "returns: check the start/end dates"
        )
    return values


def _check_periods(periods_per_year: object) -> int:
    if (
        isinstance(periods_per_year, bool)
        or not isinstance(periods_per_year, numbers.Integral)
        or periods_per_year < 1
    ):
        raise ConfigError(
            f"periods_per_year must be a positive integer (bars per year, e.g. 252 for "
            f"daily bars), got {periods_per_year!r}"
        )
    return int(periods_per_year)


def compute_metrics(
    returns: pd.Series, *, periods_per_year: int = 252, turnover: float | None = None
) -> dict[str, float]:
    """Performance metrics of a return series, every one computed by ``quantstats.stats``.

    ``periods`` is passed explicitly to every annualised metric (quantstats defaults to
    252 otherwise). In quantstats 0.0.86 ``cagr`` counts years as
    ``returns.count() / periods_per_year`` (bars, not calendar days), and ``calmar`` is
    that CAGR over |max drawdown|. Degenerate series give quantstats' own values without
    warnings: e.g. all-zero returns give sharpe NaN and win_rate 0.0, a constant positive
    series gives sharpe inf.

    Args:
        returns (pd.Series): simple, non-cumulative, per-bar returns (fraction, 0.01 = 1%),
            float, DatetimeIndex of the bar dates (a tz-aware index is made tz-naive,
            keeping wall times). NaN bars are skipped by quantstats.
        periods_per_year (int): bars per year used to annualise. Default 252.
        turnover (float | None): the strategy's turnover, computed by the caller (e.g.
            traded value / mean equity per year, fraction); copied into the result as
            ``turnover`` when given. Default None.

    Returns:
        dict[str, float]: ``sharpe``, ``sortino`` (annualised ratios, rf = 0), ``cagr``
        (annual fraction), ``max_drawdown`` (fraction, <= 0), ``volatility`` (annualised
        fraction), ``calmar`` (ratio), ``total_return`` (compounded fraction),
        ``win_rate`` (fraction of non-zero bars that are positive), and ``turnover`` if
        given.

    Raises:
        DataError: ``returns`` is not a Series of numbers with a DatetimeIndex, or has no
            finite value.
        ConfigError: ``periods_per_year`` is not a positive integer; ``turnover`` is not a
            finite number.

    References:
        quantstats.stats (https://github.com/ranaroussi/quantstats).
    """
    from quantstats import stats as qs_stats  # heavy: imported only where used

    r = _check_returns(returns, "returns")
    periods = _check_periods(periods_per_year)
    if turnover is not None and (
        isinstance(turnover, bool)
        or not (isinstance(turnover, numbers.Real) and math.isfinite(turnover))
    ):
        raise ConfigError(f"turnover must be a finite number (fraction), got {turnover!r}")
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # all-zero returns: quantstats warns, then returns win_rate 0.0
        warnings.filterwarnings("ignore", message="No non-zero returns", category=UserWarning)
        metrics = {
            "sharpe": qs_stats.sharpe(r, periods=periods),
            "sortino": qs_stats.sortino(r, periods=periods),
            "cagr": qs_stats.cagr(r, periods=periods),
            "max_drawdown": qs_stats.max_drawdown(r),
            "volatility": qs_stats.volatility(r, periods=periods),
            "calmar": qs_stats.calmar(r, periods=periods),
            "total_return": qs_stats.comp(r),
            "win_rate": qs_stats.win_rate(r),
        }
    out = {key: float(value) for key, value in metrics.items()}
    if turnover is not None:
        out["turnover"] = float(turnover)
    return out


class _DropFindfont(logging.Filter):
    """Drops matplotlib's "findfont: ..." records (quantstats asks for Arial)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("findfont")


@contextlib.contextmanager
def _quiet_third_party() -> Iterator[None]:
    """Silences font lookups and third-party deprecation noise; restores state on exit."""
    font_logger = logging.getLogger("matplotlib.font_manager")
    drop = _DropFindfont()
    font_logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category)
            # cosmetic: quantstats sets tick labels without a FixedLocator
            warnings.filterwarnings("ignore", category=UserWarning, module=r"quantstats\._plotting")
            warnings.filterwarnings("ignore", message="No non-zero returns", category=UserWarning)
            with np.errstate(divide="ignore", invalid="ignore"):
                yield
    finally:
        font_logger.removeFilter(drop)


def write_tearsheet(
    returns: pd.Series,
    benchmark: pd.Series | None,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    periods_per_year: int = 252,
) -> Path:
    """Write a quantstats HTML tearsheet of ``returns`` against ``benchmark``, atomically.

    The report is written to a temporary file in the target directory, then moved into
    place with ``os.replace``, so ``path`` is either the old file or the complete new one.
    Missing parent directories are created. Around the quantstats call only, matplotlib's
    "findfont" log records (quantstats asks for Arial, often not installed) and
    third-party Deprecation/PendingDeprecation/FutureWarnings are silenced; the logging
    and warning state is restored afterwards.

    Args:
        returns (pd.Series): simple per-bar strategy returns (fraction), tz-naive
            DatetimeIndex.
        benchmark (pd.Series | None): simple per-bar benchmark returns on the same dates;
            its ``name`` is the benchmark's label in the report. None for no benchmark.
        path (str | os.PathLike): the HTML file to write.
        title (str | None): report title. Default None ("metabt tearsheet").
        periods_per_year (int): bars per year used to annualise. Default 252.

    Returns:
        pathlib.Path: ``path``.

    Raises:
        DataError: ``returns`` or ``benchmark`` is not a Series of numbers with a
            DatetimeIndex and a finite value.
        ConfigError: bad ``periods_per_year``.

    References:
        quantstats.reports.html (https://github.com/ranaroussi/quantstats).
    """
    r = _check_returns(returns, "returns")
    periods = _check_periods(periods_per_year)
    kwargs: dict[str, object] = {}
    b = None
    if benchmark is not None:
        b = _check_returns(benchmark, "benchmark")
        kwargs["benchmark_title"] = str(benchmark.name) if benchmark.name else "Benchmark"
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # quantstats opens the file itself, so it writes to the temporary name
    with _atomic(target) as tmp_name, _quiet_third_party():
        from quantstats import reports as qs_reports  # heavy: imported only where used

        qs_reports.html(
            r,
            b,
            title=title or "metabt tearsheet",
            output=tmp_name,
            periods_per_year=periods,
            **kwargs,
        )
    return target


def probabilistic_sharpe(returns: pd.Series, *, periods_per_year: int = 252) -> float:
    """Probability that the true Sharpe ratio is above 0, given skew, kurtosis and length.

    Computed by ``quantstats.stats.probabilistic_sharpe_ratio``.

    Args:
        returns: simple per-bar returns (tz-naive DatetimeIndex).
        periods_per_year: bars per year. Default 252.

    Returns:
        A probability in [0, 1]; NaN for a constant series.

    References:
        Bailey and López de Prado 2012, "The Sharpe Ratio Efficient Frontier".
    """
    r = _check_returns(returns, "returns")
    periods = _check_periods(periods_per_year)
    with _quiet_third_party():
        from quantstats import stats as qs_stats

        return float(qs_stats.probabilistic_sharpe_ratio(r, periods=periods))


def sharpe_difference_ci(
    returns: pd.Series,
    baseline: pd.Series,
    *,
    periods_per_year: int = 252,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Annualised Sharpe ratio of ``returns`` minus that of ``baseline``, with a bootstrap CI.

    The two series are resampled together (paired bar by bar, ``scipy.stats.bootstrap``,
    percentile method), so a CI that contains 0 says the gain could be noise. Sharpe
    ratios are mean / std (ddof=1) * sqrt(periods_per_year), as ``quantstats.stats.sharpe``
    with rf=0. The iid bootstrap ignores autocorrelation of returns.

    Args:
        returns: simple per-bar returns of the strategy.
        baseline: simple per-bar returns of the baseline, on overlapping dates.
        periods_per_year: bars per year. Default 252.
        confidence: confidence level of the interval. Default 0.95.
        n_resamples: bootstrap resamples. Default 2000.
        seed: seed of the resampling generator. Default 0.

    Returns:
        (difference, low, high); all NaN-safe: NaN where a series is constant.

    Raises:
        DataError: fewer than 10 common dates.
    """
    from scipy.stats import bootstrap

    a = _check_returns(returns, "returns")
    b = _check_returns(baseline, "baseline")
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(both) < 10:
        raise DataError(
            f"sharpe_difference_ci needs >= 10 common dates, got {len(both)}; align the series"
        )
    root = math.sqrt(_check_periods(periods_per_year))
    x, y = both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()

    def sharpe(v: np.ndarray, axis: int) -> np.ndarray:
        sd = v.std(axis=axis, ddof=1)
        mean = v.mean(axis=axis)
        safe = np.where(sd > 0, sd, 1.0)
        return np.where(sd > 0, mean / safe, np.nan) * root

    def diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return sharpe(u, axis) - sharpe(v, axis)

    point = float(diff(x, y, axis=0))
    if not math.isfinite(point):
        return point, math.nan, math.nan
    res = bootstrap(
        (x, y),
        diff,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


@contextlib.contextmanager
def _atomic(target: Path) -> Iterator[str]:
    """Yield a fresh temporary name beside ``target``; rename it onto ``target`` on success.

    A unique name created by the writer itself (so it gets the umask's permissions,
    unlike mkstemp's 0600) in the same directory keeps ``os.replace`` atomic; on any
    failure the temporary file is removed and ``target`` is left as it was.
    """
    tmp_name = str(target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp_name
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: a temporary file in the same folder, then rename.

    Args:
        path: destination (parent folders are created).
        text: the content.

    Returns:
        ``path``; it is either the old file or the complete new one, never half-written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic(path) as tmp_name:
        Path(tmp_name).write_text(text, encoding="utf-8")
    return path


def write_comparison(
    table: pd.DataFrame,
    tearsheets: Mapping[str, Path],
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    notes: Sequence[str] = (),
    assets: pd.DataFrame | None = None,
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
            ``metabt.backtest.asset_results``; written to ``assets.csv`` and
            ``assets.md`` and shown on the index page.

    Returns:
        ``{"csv": ..., "markdown": ..., "html": ...}`` paths (plus ``assets_csv`` and
        ``assets_markdown`` with ``assets``), each written atomically.
    """
    out = Path(out_dir)
    csv = write_text(out / "compare.csv", table.reset_index().to_csv(index=False))
    lines = [f"# {title}", "", *(f"- {n}" for n in notes), "", format_table(table, markdown=True)]
    markdown = write_text(out / "compare.md", "\n".join(lines) + "\n")
    rows = []
    for name in table.index:
        link = tearsheets.get(str(name))
        cell = (
            f'<a href="{html.escape(os.path.relpath(link, out))}">{html.escape(str(name))}</a>'
            if link is not None
            else html.escape(str(name))
        )
        values = "".join(
            f"<td>{html.escape(_format_value(str(col), float(table.loc[name, col])))}</td>"
            for col in table.columns
        )
        rows.append(f"<tr><td>{cell}</td>{values}</tr>")
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    paths: dict[str, Path] = {"csv": csv, "markdown": markdown}
    asset_html = ""
    if assets is not None:
        paths["assets_csv"] = write_text(
            out / "assets.csv", assets.reset_index().to_csv(index=False)
        )
        flat = assets.reset_index(level=list(range(1, assets.index.nlevels)))
        asset_lines = [f"# {title}: per asset", "", format_table(flat, markdown=True)]
        paths["assets_markdown"] = write_text(out / "assets.md", "\n".join(asset_lines) + "\n")
        asset_html = "<h2>Per asset</h2>" + _html_table(assets)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
        "tr:nth-child(even){background:#f3f3f3}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><ul>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        + f"</ul><table><tr><th>strategy</th>{header}</tr>{''.join(rows)}</table>"
        "<p>Each strategy name links to its quantstats tearsheet.</p>"
        f"{asset_html}</body></html>"
    )
    paths["html"] = write_text(out / "index.html", page)
    return paths


def _html_table(df: pd.DataFrame) -> str:
    """A metrics-like table as HTML, index levels first, values formatted as in the text."""
    names = [str(n) for n in df.index.names]
    header = "".join(f"<th>{html.escape(c)}</th>" for c in [*names, *map(str, df.columns)])
    rows = []
    for key, row in df.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        cells = [f"<td>{html.escape(str(k))}</td>" for k in keys]
        cells += [
            f"<td>{html.escape(_format_value(str(c), float(row[c])))}</td>" for c in df.columns
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def write_diagnostics(
    returns: pd.Series,
    benchmark: pd.Series | None,
    adaptations: pd.DataFrame,
    signals: Mapping[str, pd.DataFrame],
    path: str | os.PathLike[str],
    *,
    title: str,
    ic_window: int = 63,
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
            (``metabt.backtest.signal_frames``).
        path: the HTML file to write (atomically; the figure is embedded as a PNG).
        title: page title.
        ic_window: bars in the rolling means and rolling IC. Default 63 (a quarter).

    Returns:
        The path written.
    """
    import base64
    import io

    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    r = _check_returns(returns, "returns")
    fig = Figure(figsize=(11, 9), dpi=100)
    ax_eq, ax_loss, ax_ic = fig.subplots(3, 1, sharex=True)
    ax_eq.plot((1 + r).cumprod(), label="strategy", color="tab:blue")
    if benchmark is not None:
        b = _check_returns(benchmark, "benchmark")
        ax_eq.plot((1 + b).cumprod(), label=str(b.name or "benchmark"), color="tab:gray")
    ax_eq.set_ylabel("growth of 1")
    ax_eq.legend(loc="upper left")
    log = adaptations[adaptations["date"] >= r.index[0]].set_index("date").sort_index()
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
    ax_loss.legend(loc="upper left")
    for name, pair in signals.items():
        pair = pair[pair.index >= r.index[0]]
        if len(pair) > ic_window:
            ic = pair["signal"].rolling(ic_window).corr(pair["forward"])
            ax_ic.plot(ic, label=f"{name} rolling IC ({ic_window} bars)")
    ax_ic.axhline(0.0, color="black", linewidth=0.8)
    ax_ic.set_ylabel("IC")
    ax_ic.legend(loc="upper left", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    with _quiet_third_party():
        fig.savefig(buffer, format="png")
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body style='font-family:sans-serif'>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Support MSE before/after: fit on the bars adapted to (in-sample). Query MSE: "
        "realised error of the predictions each adapted model then made (out-of-sample). "
        "A query MSE far above the support MSE after adaptation means the adaptation fits "
        "noise. Rolling IC: correlation of the signal with the forward return it "
        "predicts.</p>"
        f"<img alt='diagnostics' src='data:image/png;base64,{image}'></body></html>"
    )
    return write_text(Path(path), page)


def metrics_table(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per strategy, one column per metric.

    Args:
        rows (Mapping[str, Mapping[str, float]]): strategy name -> metrics (e.g. from
            :func:`compute_metrics`). Columns follow the first row's key order; a metric
            a strategy lacks is NaN.

    Returns:
        pd.DataFrame: (n_strategies, n_metrics) float64, index named ``strategy`` in the
        order of ``rows``.
    """
    columns: list[str] = []
    for metrics in rows.values():
        columns.extend(k for k in metrics if k not in columns)
    table = pd.DataFrame(
        [[float(m.get(c, math.nan)) for c in columns] for m in rows.values()],
        index=pd.Index(list(rows), name="strategy", dtype=object),
        columns=columns,
        dtype="float64",
    )
    return table


def _format_value(column: str, value: float) -> str:
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if column in PERCENT_METRICS:
        return f"{value:.2%}"
    if column in COUNT_METRICS:
        return f"{value:.0f}"
    return f"{value:.2f}"


def format_table(df: pd.DataFrame, *, markdown: bool = False) -> str:
    """Render a metrics table as text: percentages for return-like metrics, 2 decimals else.

    ``cagr``, ``max_drawdown``, ``volatility``, ``total_return``, ``win_rate``,
    ``hit_rate``, ``exposure`` and ``contribution`` are shown as percentages, ``bars`` and
    ``adaptations`` as integers, other numbers with two decimals.

    Args:
        df (pd.DataFrame): a table such as :func:`metrics_table` returns.
        markdown (bool): a Markdown (pipe) table instead of plain text. Default False.

    Returns:
        str: the table, one line per row plus the header (no trailing newline).
    """
    shown = pd.DataFrame(
        {
            c: [
                _format_value(str(c), float(v)) if isinstance(v, numbers.Real) else str(v)
                for v in df[c]
            ]
            for c in df.columns
        },
        index=df.index,
    )
    if markdown:
        return shown.to_markdown(stralign="right")
    return shown.to_string()
