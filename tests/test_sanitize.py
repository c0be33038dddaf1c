"""Names are made safe where they enter an output: the sanitiser's properties, and one hostile
name through every writer (printed lines, Markdown, CSV, HTML pages, charts)."""

from __future__ import annotations

import contextlib
import csv
import doctest
import html as std_html
import io
import re
import shutil
import unicodedata

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from synthetic import daily_returns as _returns

from metabt.data.ohlcv import sample_files
from metabt.evaluate import sanitize
from metabt.evaluate.metrics import compute_metrics, metrics_table
from metabt.evaluate.report import (
    format_table,
    write_comparison,
    write_cost_curve,
    write_diagnostics,
)
from metabt.evaluate.sanitize import (
    CSV_FORMULA_START,
    chart_label,
    clean,
    csv_cell,
    csv_frame,
    csv_text,
    html,
    markdown,
    markdown_frame,
    terminal,
)

#: A formula, a pipe, a link, a right-to-left override, a script and a newline.
HOSTILE = '=HYPERLINK("x")|[a](b)\u202e<script>alert(1)</script>\n'
#: The same kinds of attack in a name a file can have (no "/"), with a terminal escape.
HOSTILE_FILE = '=HYPERLINK("x")|[a](b)\u202e<img src=x onerror=alert(1)>\x1b[2J\n'
PLAIN = ["MetaStrategy", "AAPL", "ErmStatic", "BuyAndHold", "max_drawdown", "BRK.B", "EUR-USD"]

#: any text, lone surrogates (undecodable file names) included
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
#: words joined by single separators: tickers, class names, snake_case metrics, file stems
PLAIN_NAMES = st.from_regex(r"[A-Za-z0-9]+([ ._-][A-Za-z0-9]+){0,4}", fullmatch=True)
_UNSAFE = {"Cc", "Cf", "Cs"}
_BREAKS = "\n\r\t\v\f\x85\u2028\u2029"


def _unsafe(text: str, allow: str = "") -> list[str]:
    """Control, format and surrogate characters, and line breaks, in ``text``."""
    return [
        c for c in text if c not in allow and (unicodedata.category(c) in _UNSAFE or c in _BREAKS)
    ]


def _unescape_markdown(text: str) -> str:
    """What a CommonMark renderer shows for :func:`markdown`'s output (its escapes only)."""
    entities = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&#124;": "|"}
    return re.sub(
        r"\\(.)|&(?:lt|gt|amp|#124);",
        lambda m: m.group(1) if m.group(1) is not None else entities[m.group()],
        text,
    )


def test_the_docstring_examples_hold():
    assert doctest.testmod(sanitize).failed == 0


# ---------------------------------------------------------------- the sanitiser's properties


@given(ANY_TEXT)
def test_clean_leaves_no_control_or_format_character_and_is_idempotent(text):
    out = clean(text)
    assert _unsafe(out) == []
    assert clean(out) == out
    if text.isprintable():  # nothing to remove: the name is kept exactly
        assert out == text


@given(PLAIN_NAMES)
def test_plain_names_pass_every_helper_unchanged(name):
    assert clean(name) == name
    assert terminal(name) == name
    assert markdown(name) == name
    assert html(name) == name
    assert csv_cell(name) == name
    assert chart_label(name) == name


def test_the_names_metabt_prints_pass_unchanged():
    for name in PLAIN:
        assert {clean(name), markdown(name), html(name), csv_cell(name), chart_label(name)} == {
            name
        }


@given(st.lists(ANY_TEXT, max_size=5))
def test_terminal_keeps_the_lines_and_cleans_each(lines):
    text = "\n".join(lines)
    out = terminal(text)
    assert out.split("\n") == [clean(line) for line in text.split("\n")]
    assert _unsafe(out, allow="\n") == []


@given(ANY_TEXT)
def test_markdown_never_breaks_a_row_and_renders_as_the_cleaned_name(text):
    out = markdown(text)
    assert _unsafe(out) == [] and "\n" not in out
    assert "|" not in out  # no cell can end early: the row keeps its columns
    assert "<" not in out and ">" not in out  # no raw HTML, no autolink
    tokens = re.findall(r"\\.|&(?:lt|gt|amp|#124);|_+|.", out, flags=re.S)
    bare = "".join(t for t in tokens if not t.startswith("\\"))  # the escapes taken out
    assert not set(bare) & set("\\`*[]~"), out  # no code span, emphasis, link, strikeout
    for k, token in enumerate(tokens):
        if token.startswith("_"):  # an unescaped "_" only inside a word (no emphasis)
            before, after = tokens[k - 1 : k], tokens[k + 1 : k + 2]
            assert before and after and before[0].isalnum() and after[0].isalnum(), out
    assert _unescape_markdown(out) == clean(text)


def test_markdown_row_of_the_hostile_name_keeps_its_two_cells():
    row = f"| {markdown(HOSTILE)} | 1.00 |"
    assert row.count("|") == 3
    assert "\\[a\\](b)" in row and "&lt;script&gt;" in row and "\u202e" not in row


@given(ANY_TEXT)
def test_csv_cell_never_starts_a_formula_and_is_idempotent(text):
    out = csv_cell(text)
    assert not out.lstrip(" ").startswith(CSV_FORMULA_START)
    assert out in (clean(text), "'" + clean(text))
    assert csv_cell(out) == out
    assert _unsafe(out) == []


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.none(), st.booleans()))
def test_csv_cell_returns_every_non_text_value_itself(value):
    assert csv_cell(value) is value


@given(ANY_TEXT)
def test_html_escapes_markup_and_shows_the_cleaned_name(text):
    out = html(text)
    assert not set(out) & set("<>\"'")
    assert std_html.unescape(out) == clean(text)
    assert _unsafe(out) == []


@given(ANY_TEXT)
def test_chart_labels_have_no_unescaped_dollar_nor_a_hidden_underscore(text):
    out = chart_label(text)
    assert re.search(r"(?<!\\)\$", out) is None
    assert not out.startswith("_")
    assert _unsafe(out) == []


def test_a_chart_label_draws_where_the_raw_name_fails(tmp_path):
    from matplotlib.figure import Figure

    def draw(label: str) -> None:
        fig = Figure()
        ax = fig.subplots()
        ax.plot([0.0, 1.0], label=label)
        ax.legend()
        fig.savefig(io.BytesIO(), format="png")

    bad = r"$\frac{$"
    with pytest.raises(ValueError):
        draw(bad)  # mathtext: the raw name fails the whole figure
    draw(chart_label(bad))
    write_cost_curve({bad: pd.Series([1.0, 0.5], index=[0.0, 10.0])}, tmp_path / "c.png")


def test_csv_frame_touches_text_only_and_read_back_dtypes_are_kept():
    def frame(name: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "strategy": [name, "B", "C"],
                "sharpe": [-1.5, 0.25, np.nan],
                "bars": [10, 20, 30],
                "fragile": [True, False, True],
                "test_start": pd.to_datetime(["2011-01-03", "2012-01-02", "2013-01-02"]),
                "kind": pd.Categorical(["-x", "y", "y"]),
            },
            index=pd.Index([name, "j", "k"], name="=label"),
        )

    plain, hostile = frame("A"), frame(HOSTILE)
    out = csv_frame(hostile)
    assert out["strategy"].tolist() == [csv_cell(HOSTILE), "B", "C"]
    assert out["kind"].tolist() == ["'-x", "y", "y"]
    assert out.index.name == "'=label" and out.index[0] == csv_cell(HOSTILE)
    for column in ("sharpe", "bars", "fragile", "test_start"):
        pd.testing.assert_series_equal(out[column], hostile[column], check_index=False)
    back = {
        which: pd.read_csv(io.StringIO(csv_text(f, index=True)))
        for which, f in (("plain", plain), ("hostile", hostile))
    }
    pd.testing.assert_series_equal(back["plain"].dtypes, back["hostile"].dtypes)
    assert back["hostile"]["strategy"][0] == csv_cell(HOSTILE)
    assert "\u202e" not in csv_text(hostile)


def test_markdown_frame_escapes_text_and_keeps_the_number_format():
    def trials(name: str) -> pd.DataFrame:
        return pd.DataFrame(
            {"number": [0, 1], "model_type": [name, "gru"], "score": [0.123456, -1.5e-3]}
        )

    plain = markdown_frame(trials("mlp")).to_markdown(index=False, floatfmt=".4g")
    hostile = markdown_frame(trials(HOSTILE)).to_markdown(index=False, floatfmt=".4g")
    assert plain == trials("mlp").to_markdown(index=False, floatfmt=".4g")  # plain: unchanged
    assert [line.count("|") for line in hostile.splitlines()] == [4] * 4  # 3 cells a row
    assert "0.1235" in hostile and "-0.0015" in hostile and "\\[a\\](b)" in hostile


# ------------------------------------------------------------- the writers, one hostile name


def _assert_no_formula(path) -> None:
    """Every CSV cell is a number or a text that a spreadsheet reads as text."""
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            for cell in row:
                try:
                    float(cell)
                except ValueError:
                    assert not cell.lstrip(" ").startswith(CSV_FORMULA_START), (path, cell)


def _assert_safe_html(text: str) -> None:
    assert "<script>alert" not in text and "<img src=x" not in text
    assert _unsafe(text, allow="\n\r\t") == []


def _comparison(tmp_path, name: str) -> dict:
    returns = _returns(120, seed=3)
    table = metrics_table(
        {name: compute_metrics(returns), "BuyAndHold": compute_metrics(_returns(120, seed=4))}
    )
    assets = pd.DataFrame(
        {"bars": [120.0, 120.0], "contribution": [0.01, -0.02]},
        index=pd.MultiIndex.from_tuples(
            [(name, name), ("BuyAndHold", "IBM")], names=["strategy", "asset"]
        ),
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    sheet = tmp_path / "sheet.html"
    sheet.write_text("tearsheet", encoding="utf-8")
    curve = pd.Series([1.0, 0.5], index=pd.Index([0.0, 10.0], name="cost_bps"))
    return write_comparison(
        table,
        {name: sheet},
        tmp_path / "cmp",
        title=f"compare {name}",
        notes=[f"on {name}", "turnover_two_way: buys plus sells"],
        assets=assets,
        cost_curves={name: curve},
    )


def test_compare_csv_reads_back_the_same_dtypes_with_a_hostile_name(tmp_path):
    plain = _comparison(tmp_path / "plain", "MetaStrategy")
    hostile = _comparison(tmp_path / "hostile", HOSTILE)
    for key in ("csv", "assets_csv"):
        a, b = pd.read_csv(plain[key]), pd.read_csv(hostile[key])
        pd.testing.assert_series_equal(a.dtypes, b.dtypes)
        numbers = a.select_dtypes("number").columns
        assert len(numbers) >= 2
        pd.testing.assert_frame_equal(a[numbers], b[numbers])  # numbers stay numbers
        assert b["strategy"][0] == csv_cell(HOSTILE)
        _assert_no_formula(hostile[key])


def test_every_comparison_writer_escapes_the_hostile_name(tmp_path):
    paths = _comparison(tmp_path, HOSTILE)
    for key in ("markdown", "assets_markdown"):
        text = paths[key].read_text(encoding="utf-8")
        assert _unsafe(text, allow="\n") == [] and "<script>" not in text
        rows = [line for line in text.splitlines() if line.startswith("|")]
        widths = {line.count("|") for line in rows}
        assert len(rows) >= 4 and len(widths) == 1, rows  # no row broken or widened
        assert sum("\\[a\\](b)" in line for line in rows) >= 1
        assert "HYPERLINK" in text.splitlines()[0]  # the title, escaped, on its line
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "- turnover_two_way: buys plus sells" in md  # prose keeps its snake_case
    page = paths["html"].read_text(encoding="utf-8")
    _assert_safe_html(page.replace("<img alt='net", ""))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="../sheet.html"' in page  # the hostile row still links its tearsheet
    text = format_table(metrics_table({HOSTILE: compute_metrics(_returns(60))}))
    assert len(text.splitlines()) == 3 and _unsafe(text, allow="\n") == []


def test_the_diagnostics_page_and_charts_escape_the_hostile_name(tmp_path):
    returns = _returns(120, name=HOSTILE + "$\\frac{$")
    log = pd.DataFrame(
        {"date": returns.index[:3], "data": [HOSTILE] * 3, "loss_before": 1.0, "loss_after": 0.5}
    )
    pair = pd.DataFrame({"signal": returns, "forward": returns.shift(-1)}, index=returns.index)
    page = write_diagnostics(
        returns, returns, log, {HOSTILE + "$\\frac{$": pair}, tmp_path / "d.html", title=HOSTILE
    )
    text = page.read_text(encoding="utf-8")
    _assert_safe_html(text.replace("<img alt='diagnostics'", ""))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_a_tearsheet_escapes_a_hostile_benchmark_name_and_title(tmp_path):
    from metabt.evaluate.tearsheet import write_tearsheet

    returns = _returns(120)
    path = write_tearsheet(
        returns, _returns(120, name=f"BuyAndHold ({HOSTILE})"), tmp_path / "t.html", title=HOSTILE
    )
    text = path.read_text(encoding="utf-8")
    _assert_safe_html(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the name is there, as text


@pytest.fixture(scope="module")
def hostile_backtest(tmp_path_factory):
    """``metabt backtest`` on a data file named HOSTILE_FILE (and IBM), a short period."""
    from metabt.cli.main import main

    folder = tmp_path_factory.mktemp("hostile")
    files = {p.stem: p for p in sample_files()}
    data = folder / f"{HOSTILE_FILE}.csv"
    shutil.copy(files["AAPL"], data)
    report = folder / "out" / "run.html"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            [
                "backtest",
                "--data",
                str(data),
                str(files["IBM"]),
                "--start",
                "2011-01-01",
                "--end",
                "2011-03-31",
                "--steps",
                "3",
                "--quiet",
                "--report",
                str(report),
            ]
        )
    assert code == 0, stderr.getvalue()
    return report, stdout.getvalue()


@pytest.mark.slow
def test_a_hostile_data_file_name_comes_out_escaped_in_every_output(hostile_backtest):
    report, out = hostile_backtest
    shown = clean(HOSTILE_FILE)  # what a terminal line may show of the name
    assert _unsafe(out, allow="\n") == []  # no ESC, no bidi override printed
    rows = [line for line in out.splitlines() if line.startswith(shown.rstrip())]
    assert len(rows) == 1 and len(rows[0].split()) > 10, rows  # its per-asset row, whole
    tearsheet = report.read_text(encoding="utf-8")  # quantstats, its titles escaped by us
    _assert_safe_html(tearsheet)
    # benchmarked against the basket (the BuyAndHold row), so no asset name is in it; a
    # name that reaches a tearsheet is escaped (the next test)
    assert "BuyAndHold (equal-weight basket of 2 assets)" in tearsheet
    _assert_safe_html((report.parent / "run_diagnostics.html").read_text(encoding="utf-8"))
    assets = report.parent / "run_assets.csv"
    _assert_no_formula(assets)
    back = pd.read_csv(assets)
    assert back["asset"].tolist() == [csv_cell(HOSTILE_FILE), "IBM", "portfolio"]
    assert all(pd.api.types.is_numeric_dtype(t) for t in back.drop(columns="asset").dtypes)


@pytest.mark.slow
def test_a_newline_in_a_data_file_name_cannot_forge_a_printed_line(hostile_backtest):
    _, out = hostile_backtest
    assert not [line for line in out.splitlines() if line.startswith(", IBM")]
