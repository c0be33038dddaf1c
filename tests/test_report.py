"""report: metrics equal quantstats.stats, atomic quiet tearsheets, tables."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from oracles import quantstats_metrics

from metabt import report
from metabt.errors import ConfigError, DataError
from metabt.report import compute_metrics, format_table, metrics_table, write_tearsheet

KEYS = {
    "sharpe",
    "sortino",
    "cagr",
    "max_drawdown",
    "volatility",
    "calmar",
    "total_return",
    "win_rate",
}


def _returns(n: int = 300, seed: int = 0, name: str = "returns") -> pd.Series:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2020-01-01", periods=n)
    return pd.Series(rng.normal(0.0004, 0.01, n), index=index, name=name)


@pytest.mark.parametrize("periods", [252, 52, 12])
def test_compute_metrics_equals_quantstats(periods):
    r = _returns()
    m = compute_metrics(r, periods_per_year=periods)
    assert set(m) == KEYS
    assert all(type(v) is float for v in m.values())
    expected = quantstats_metrics(r, periods)
    for key, value in expected.items():
        assert m[key] == pytest.approx(float(value), rel=1e-12), key


def test_compute_metrics_hand_checks():
    """Independent formulas, so a wrong quantstats call (or default periods) is caught."""
    r = _returns()
    x = r.to_numpy()
    m = compute_metrics(r, periods_per_year=52)
    assert m["sharpe"] == pytest.approx(x.mean() / x.std(ddof=1) * math.sqrt(52), rel=1e-10)
    assert m["volatility"] == pytest.approx(x.std(ddof=1) * math.sqrt(52), rel=1e-10)
    total = np.prod(1 + x) - 1
    assert m["total_return"] == pytest.approx(total, rel=1e-10)
    assert m["cagr"] == pytest.approx((1 + total) ** (52 / len(x)) - 1, rel=1e-9)
    wealth = np.concatenate([[1.0], np.cumprod(1 + x)])
    max_dd = (wealth / np.maximum.accumulate(wealth)).min() - 1
    assert m["max_drawdown"] == pytest.approx(max_dd, rel=1e-10)
    assert m["calmar"] == pytest.approx(m["cagr"] / abs(max_dd), rel=1e-9)
    assert m["win_rate"] == pytest.approx((x > 0).sum() / (x != 0).sum(), rel=1e-12)


def test_compute_metrics_turnover_and_degenerate_series(recwarn):
    m = compute_metrics(_returns(), turnover=3.5)
    assert m["turnover"] == 3.5
    aware = _returns().tz_localize("America/New_York")
    assert compute_metrics(aware) == {k: v for k, v in m.items() if k != "turnover"}
    flat = compute_metrics(pd.Series(0.0, index=pd.bdate_range("2020-01-01", periods=20)))
    assert math.isnan(flat["sharpe"]) and flat["win_rate"] == 0.0 and flat["total_return"] == 0.0
    assert not [str(w.message) for w in recwarn]  # no divide-by-zero or win-rate warnings


DATES = pd.bdate_range("2020-01-01", periods=2)


@pytest.mark.parametrize(
    ("returns", "kwargs", "error", "match"),
    [
        ([0.01, 0.02], {}, DataError, "pandas Series"),
        (pd.Series([0.01, 0.02]), {}, DataError, "DatetimeIndex"),
        (pd.Series([], index=DATES[:0], dtype=float), {}, DataError, "no finite value"),
        (pd.Series([np.nan, np.nan], index=DATES), {}, DataError, "no finite value"),
        (pd.Series(["a", "b"], index=DATES), {}, DataError, "numbers"),
        (pd.Series([0.01, 0.02], index=DATES), {"periods_per_year": 0}, ConfigError, "periods"),
        (pd.Series([0.01, 0.02], index=DATES), {"periods_per_year": True}, ConfigError, "periods"),
        (pd.Series([0.01, 0.02], index=DATES), {"turnover": math.nan}, ConfigError, "turnover"),
    ],
)
def test_compute_metrics_rejects_bad_input(returns, kwargs, error, match):
    with pytest.raises(error, match=match):
        compute_metrics(returns, **kwargs)


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


def test_quiet_context_drops_findfont_only_inside_and_restores_state(caplog):
    logger = logging.getLogger("matplotlib.font_manager")
    filters_before = list(logger.filters)
    warning_filters_before = list(warnings.filters)
    caplog.set_level(logging.DEBUG, logger="matplotlib.font_manager")
    with report._quiet_third_party():
        logger.warning("findfont: Font family 'Arial' not found.")
        logger.warning("another message")  # only findfont records are dropped
        warnings.warn("old API", DeprecationWarning, stacklevel=1)  # silenced
    assert [r.getMessage() for r in caplog.records] == ["another message"]
    assert logger.filters == filters_before
    assert warnings.filters == warning_filters_before
    caplog.clear()
    logger.warning("findfont: Font family 'Arial' not found.")  # outside: not touched
    assert len(caplog.records) == 1


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


def test_sharpe_difference_ci_and_psr_match_quantstats():
    from metabt.report import probabilistic_sharpe, sharpe_difference_ci

    idx = pd.bdate_range("2010-01-01", periods=400)
    rng = np.random.default_rng(3)
    a = pd.Series(rng.normal(0.001, 0.01, 400), idx)
    b = pd.Series(rng.normal(0.0, 0.012, 400), idx)
    diff, low, high = sharpe_difference_ci(a, b, seed=1)
    assert diff == pytest.approx(
        qs.stats.sharpe(a, periods=252) - qs.stats.sharpe(b, periods=252), rel=1e-12
    )
    assert low < diff < high
    assert sharpe_difference_ci(a, b, seed=1) == (diff, low, high)  # seeded
    narrow = sharpe_difference_ci(a, b, seed=1, confidence=0.5)
    assert low < narrow[1] < narrow[2] < high
    assert probabilistic_sharpe(a) == pytest.approx(
        qs.stats.probabilistic_sharpe_ratio(a, periods=252), rel=1e-12
    )
    with pytest.raises(DataError, match="10 common dates"):
        sharpe_difference_ci(a.iloc[:5], b.iloc[:5])
