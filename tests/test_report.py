"""report: atomic quiet tearsheets and text tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from synthetic import daily_returns as _returns

from metabt.errors import ConfigError, DataError
from metabt.evaluate.metrics import compute_metrics, metrics_table
from metabt.evaluate.report import format_table
from metabt.evaluate.tearsheet import write_tearsheet


def test_metrics_table_and_format_table():
    rows = {
        "MetaStrategy": compute_metrics(_returns(seed=1), turnover=2.0),
        "BuyAndHold": compute_metrics(_returns(seed=2)),
    }
    table = metrics_table(rows)
    assert table.index.name == "strategy"
    assert list(table.index) == ["MetaStrategy", "BuyAndHold"]
    assert list(table.columns) == [*rows["MetaStrategy"]]
    assert table.loc["MetaStrategy", "sharpe"] == rows["MetaStrategy"]["sharpe"]
    assert math.isnan(table.loc["BuyAndHold", "turnover"])  # missing metric -> NaN
    assert (table.dtypes == np.float64).all()

    text = format_table(table)
    lines = text.splitlines()
    assert len(lines) == 2 + 2  # columns header, index name header, one line per row
    assert "MetaStrategy" in text and "strategy" in text
    cagr = rows["MetaStrategy"]["cagr"]
    assert f"{cagr:.2%}" in lines[2]  # percentages for return-like metrics
    assert f"{rows['BuyAndHold']['sharpe']:.2f}" in lines[3]
    assert "nan" in lines[3]

    md = format_table(table, markdown=True)
    assert md.splitlines()[0].startswith("|") and "MetaStrategy" in md
    assert md.splitlines()[1].replace("|", "").replace(":", "").replace("-", "").strip() == ""


def test_write_tearsheet_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "sheet.html"
    target.write_text("old report", encoding="utf-8")

    def broken_html(returns, benchmark, *, output, **kwargs):
        with open(output, "w", encoding="utf-8") as f:
            f.write("<html>half")
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(qs.reports, "html", broken_html)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_tearsheet(_returns(60), _returns(60, seed=5, name="SPY"), target)
    assert target.read_text(encoding="utf-8") == "old report"  # untouched
    assert list(tmp_path.iterdir()) == [target]  # the temp file is removed


def test_write_tearsheet_replaces_and_creates_dirs(tmp_path):
    target = tmp_path / "a" / "b" / "sheet.html"
    target.parent.mkdir(parents=True)
    target.write_text("old report", encoding="utf-8")
    out = write_tearsheet(
        _returns(60), _returns(60, seed=5, name="SPY"), target, title="Replace test"
    )
    assert out == target
    html = target.read_text(encoding="utf-8")
    assert "Replace test" in html and "Benchmark: SPY" in html
    assert list(target.parent.iterdir()) == [target]


def test_write_tearsheet_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="benchmark"):
        write_tearsheet(_returns(10), _returns(10) * np.nan, tmp_path / "x.html")
    with pytest.raises(ConfigError, match="periods_per_year"):
        write_tearsheet(_returns(10), None, tmp_path / "x.html", periods_per_year=-1)
    assert not list(tmp_path.iterdir())


HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>|"


def _assert_escaped(text: str) -> None:
    """No hostile tag survives as markup (escaped text such as &lt;img is harmless)."""
    assert "<script>alert" not in text
    assert "<img src=x" not in text


def test_every_report_escapes_a_hostile_name(tmp_path):
    from metabt.evaluate.report import write_comparison, write_diagnostics

    returns = _returns(120, name=HOSTILE)
    sheet = write_tearsheet(
        returns, _returns(120, seed=4, name=HOSTILE), tmp_path / "t.html", title=HOSTILE
    )
    _assert_escaped(sheet.read_text(encoding="utf-8"))
    table = metrics_table({HOSTILE: compute_metrics(returns), "B": compute_metrics(returns)})
    assets = pd.DataFrame(
        {"bars": [1.0, 2.0]},
        index=pd.MultiIndex.from_tuples(
            [(HOSTILE, HOSTILE), ("B", "x")], names=["strategy", "asset"]
        ),
    )
    paths = write_comparison(
        table, {HOSTILE: sheet}, tmp_path / "cmp", title=HOSTILE, notes=[HOSTILE], assets=assets
    )
    for key in ("html", "markdown", "assets_markdown"):
        _assert_escaped(paths[key].read_text(encoding="utf-8"))
    curve = pd.Series([1.0, 0.5], index=pd.Index([0.0, 10.0], name="cost_bps"))
    paths = write_comparison(
        table, {HOSTILE: sheet}, tmp_path / "cmp2", title=HOSTILE, cost_curves={HOSTILE: curve}
    )
    _assert_escaped(paths["html"].read_text(encoding="utf-8").replace("<img alt='net", ""))
    log = pd.DataFrame(
        {"date": returns.index[:3], "data": [HOSTILE] * 3, "loss_before": 1.0, "loss_after": 0.5}
    )
    pair = pd.DataFrame({"signal": returns, "forward": returns}, index=returns.index)
    page = write_diagnostics(
        returns, None, log, {HOSTILE: pair}, tmp_path / "d.html", title=HOSTILE
    )
    text = page.read_text(encoding="utf-8")
    _assert_escaped(text.replace("<img alt='diagnostics'", ""))


def test_a_run_without_trades_gets_a_report_that_says_so(tmp_path):
    flat = pd.Series(0.0, index=pd.bdate_range("2020-01-01", periods=50), name="returns")
    page = write_tearsheet(flat, _returns(50, seed=2, name="SPY"), tmp_path / "flat.html")
    text = page.read_text(encoding="utf-8")
    assert "no trades" in text and "50 bars" in text


def test_context_trajectory_is_the_pca_of_the_contexts_and_is_drawn(tmp_path):
    """CAVIA's contexts: the first two PCs by date, and a fourth panel on the page."""
    import numpy as np
    import pandas as pd

    from metabt.evaluate.report import context_components, write_diagnostics

    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2020-01-01", periods=40)
    # two regimes: the contexts sit around two points along one direction
    regime = np.where(np.arange(40) < 20, -1.0, 1.0)
    contexts = [np.array([3.0 * g, 0.5 * g, 0.0, 0.0]) + 0.1 * rng.normal(size=4) for g in regime]
    log = pd.DataFrame(
        {
            "date": dates,
            "data": "A",
            "trigger": "schedule",
            "support": 60,
            "loss_before": 1.0,
            "loss_after": 0.9,
            "steps": 5,
            "query_loss": 1.0,
            "query_count": 5,
            "context": contexts,
        }
    )
    pcs = context_components(log.set_index("date"))
    assert list(pcs.columns) == ["pc1", "pc2"] and len(pcs) == 40
    # the first component separates the regimes (its sign is arbitrary)
    assert abs(pcs["pc1"][:20].mean() - pcs["pc1"][20:].mean()) > 5.0
    assert np.allclose(pcs.mean(), 0.0, atol=1e-12)
    assert context_components(log.drop(columns="context").set_index("date")) is None
    returns = pd.Series(rng.normal(0, 0.01, 40), index=dates)
    signals = {
        "A": pd.DataFrame(
            {"signal": rng.normal(size=40), "forward": rng.normal(size=40)}, index=dates
        )
    }
    with_ctx = write_diagnostics(returns, None, log, signals, tmp_path / "a.html", title="t")
    without = write_diagnostics(
        returns, None, log.drop(columns="context"), signals, tmp_path / "b.html", title="t"
    )
    assert "Task embedding" in with_ctx.read_text() and "Task embedding" not in without.read_text()


def test_cost_columns_are_formatted_for_a_desk():
    row = {
        "sharpe": 1.234,
        "gross_sharpe": 1.3456,
        "cost_drag": 0.1116,
        "break_even_bps": 12.345,
        "holding_bars": 40.04,
        "long_share": 0.75,
        "alpha": 0.0312,
        "alpha_t": 2.345,
        "beta": 0.876,
        "beta_t": 10.5,
    }
    table = metrics_table({"S": row})
    text = format_table(table)
    for shown in ("1.35", "0.11", "12.3", "40.0", "75.00%", "3.12%", "2.35", "0.88", "10.50"):
        assert shown in text, shown
    assert "12.35" not in text and "40.04" not in text  # one decimal for bps and bars


def test_cost_curve_is_drawn_and_embedded(tmp_path):
    from metabt.evaluate.costs import COST_GRID_BPS
    from metabt.evaluate.report import write_comparison, write_cost_curve

    grid = pd.Index(COST_GRID_BPS, name="cost_bps")
    curves = {
        "MetaStrategy": pd.Series(1.0 - 0.05 * grid.to_numpy(), index=grid),
        "$BuyAndHold_": pd.Series(0.8 - 0.001 * grid.to_numpy(), index=grid),
        "_flat": pd.Series(np.nan, index=grid),
    }
    png = write_cost_curve(curves, tmp_path / "sub" / "curve.png", 7.0)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5_000
    assert list(png.parent.iterdir()) == [png]  # no temporary file left

    class Result:  # what a BacktestResult offers
        name = "MetaStrategy"
        cost_sensitivity = curves["MetaStrategy"]

    assert write_cost_curve([Result()], tmp_path / "r.png", None).stat().st_size > 5_000
    with pytest.raises(DataError, match="no strategy"):
        write_cost_curve({}, tmp_path / "none.png", 7.0)

    table = metrics_table({"MetaStrategy": {"sharpe": 1.0}, "$BuyAndHold_": {"sharpe": 0.8}})
    paths = write_comparison(
        table, {}, tmp_path / "cmp", title="t", cost_curves=curves, run_cost_bps=7.0
    )
    assert paths["cost_curve"] == tmp_path / "cmp" / "cost_sensitivity.png"
    assert paths["cost_curve"].stat().st_size > 5_000
    page = paths["html"].read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "Cost sensitivity" in page
    plain = write_comparison(table, {}, tmp_path / "plain", title="t")
    assert "cost_curve" not in plain and "<img" not in plain["html"].read_text(encoding="utf-8")
