"""chart: the interactive Bokeh chart of a run (metabt.plot(strategy, "chart.html"))."""

from __future__ import annotations

import html
import json
import pickle
import re
import shutil
import subprocess

import backtrader as bt
import pandas as pd
import pytest

import metabt
from metabt.evaluate.chart import chart, fills, write_chart
from metabt.experiments.backtest import run_backtest
from metabt.strategies.baselines import SmaCross
from metabt.strategies.meta import MetaStrategy

START = "2011-06-01"


class _OrderLog:
    """Records every fill from backtrader's own notify_order: the oracle for the markers."""

    def notify_order(self, order: bt.Order) -> None:
        super().notify_order(order)  # type: ignore[misc]
        if order.status == order.Completed:
            if not hasattr(self, "order_log"):
                self.order_log = []
            when = bt.num2date(order.executed.dt)
            self.order_log.append((pd.Timestamp(when), order.data._name, order.executed.size))


class LoggedMeta(_OrderLog, MetaStrategy):
    pass


class LoggedSma(_OrderLog, SmaCross):
    pass


@pytest.fixture(scope="module")
def meta_run(sample_frames, small_learner):
    frames = {name: frame.loc["2010-09-01":"2011-12-31"] for name, frame in sample_frames.items()}
    return run_backtest(
        LoggedMeta,
        frames,
        start=START,
        warmup_bars=150,
        strategy_kwargs={"learner": small_learner, "adapt_every": 10, "support": 40},
    )


@pytest.fixture(scope="module")
def layout(meta_run):
    return chart(meta_run.strategy)


def _renderers(layout, prefix):
    return [r for fig in layout.children[1:] for r in fig.renderers if (r.name or "") == prefix]


def _marks(layout):
    """(date, data) of every fill marker drawn, from the glyphs' data sources."""
    out = []
    for fig in layout.children[1:]:
        for r in fig.renderers:
            if (r.name or "").startswith("fills:"):
                data = r.data_source.data
                out += [(pd.Timestamp(d), n) for d, n in zip(data["date"], data["data"])]
    return sorted(out)


def test_the_chart_has_every_panel(layout, meta_run):
    names = {r.name for fig in layout.children[1:] for r in fig.renderers}
    for name in ("AAPL", "IBM"):
        assert {f"price:{name}", f"signal:{name}", f"position:{name}"} <= names
        assert {f"fills:{name}:entry", f"fills:{name}:exit"} <= names
    assert {"equity", "basket", "drawdown", "adaptations:schedule"} <= names
    (schedule,) = _renderers(layout, "adaptations:schedule")
    assert len(schedule.data_source.data["date"]) == len(meta_run.strategy.adaptations) > 0


def test_fill_markers_equal_the_order_log(layout, meta_run):
    log = meta_run.strategy.order_log
    assert len(log) > 5
    assert _marks(layout) == sorted((date, name) for date, name, _ in log)
    table = fills(meta_run.strategy)
    assert list(table["size"]) == [size for _, _, size in log]
    # positions after each fill add up the fills; an exit only reduces one
    for _, part in table.groupby("data"):
        assert part["position"].tolist() == part["size"].cumsum().tolist()


def test_every_figure_shares_one_date_range(layout):
    figures = layout.children[1:]
    assert len(figures) >= 6
    assert len({id(fig.x_range) for fig in figures}) == 1
    assert all(type(fig.xaxis[0]).__name__ == "DatetimeAxis" for fig in figures)
    # no legend is drawn over the data: each sits above its figure, and a click hides a line
    for fig in figures:
        for legend in fig.legend:
            assert legend in fig.above and legend.click_policy == "hide"


def test_the_html_is_standalone_and_names_are_cleaned(tmp_path, sample_frames):
    ibm = sample_frames["IBM"].loc["2011-01-01":]
    hostile = "<img src=x onerror=alert(1)>\u202eIBM\n"
    run = run_backtest(LoggedSma, {hostile: ibm}, start="2011-06-01", warmup_bars=60)
    path = metabt.plot(run.strategy, tmp_path / "chart.html", style="line")
    page = path.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["chart.html"]
    assert not re.search(r"<script[^>]*\bsrc=", page)  # Bokeh's JavaScript is inline
    assert not re.search(r"<link[^>]*\bhref=", page)
    # the document's JSON is HTML-escaped in its script tag; the name lost its controls
    assert "<img src=x" not in page and "\u202e" not in page
    docs = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)
    assert docs is not None
    document = next(iter(json.loads(html.unescape(docs.group(1))).values()))
    assert document["roots"]  # Bokeh's own serialised document: the layout
    assert json.dumps(metabt.evaluate.sanitize.clean(hostile))[1:-1] in json.dumps(document)
    marks = sorted((d, n) for d, n, _ in run.strategy.order_log)
    assert [(d, metabt.evaluate.sanitize.clean(n)) for d, n in marks] == _marks(
        chart(run.strategy, style="line")
    )


def test_a_detached_run_keeps_the_chart_and_it_pickles(tmp_path, layout, meta_run):
    """compare's results cross processes without the backtrader run: the chart's data does."""
    from metabt.experiments.scheduler import _detach

    detached = pickle.loads(pickle.dumps(_detach(meta_run, keep_chart=True)))
    snapshot = detached.strategy.chart
    assert _marks(chart(snapshot)) == _marks(layout)
    assert _detach(meta_run).strategy.chart is None  # only when asked (the roster's first)
    page = write_chart(snapshot, tmp_path / "c.html").read_text(encoding="utf-8")
    assert "<title>LoggedMeta: backtest</title>" in page


def test_png_is_still_the_default_and_bad_input_is_refused(tmp_path):
    from metabt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"after cerebro\.run"):
        write_chart(bt.Strategy, tmp_path / "x.html")
    with pytest.raises(ConfigError, match="style"):
        chart(object(), style="3d")


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    BROWSER is None, reason="no chromium on this machine (apt-get install chromium)"
)
def test_the_chart_loads_in_a_headless_browser_without_errors(tmp_path, meta_run):
    path = write_chart(meta_run.strategy, tmp_path / "chart.html")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ]
    done = subprocess.run(
        [BROWSER, *flags, path.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # chromium logs every console message (log, warning, error, uncaught exception) as a
    # CONSOLE line, without its level: only BokehJS's own info lines may be there
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert [line for line in console if '"[bokeh ' not in line] == [], console
    assert any("document idle" in line for line in console), console  # rendered, all of it
    assert "bk-Column" in done.stdout


def test_report_pages_link_the_chart_escaped():
    from metabt.evaluate.report import _page

    page = _page("t", links=[("chart <b>", "Meta Strategy_chart.html")])
    assert '<a href="Meta%20Strategy_chart.html">chart &lt;b&gt;</a>' in page
