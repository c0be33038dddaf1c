"""Tests of metabt.data: validation messages, accepted input forms, sample data, the feed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from metabt.data.feeds import feed
from metabt.data.ohlcv import (
    COLUMNS,
    is_validated,
    load_many,
    load_ohlcv,
    sample_data_dir,
    sample_files,
)
from metabt.errors import ConfigError, DataError, MetabtError

HEADER = "date,open,high,low,close,volume"
# Data rows; the header is line 1, so ROWS[i] is on CSV line i + 2.
ROWS = (
    "2020-01-02,10,11,9,10.5,1000",
    "2020-01-03,10.5,11.5,10,11,1200",
    "2020-01-06,11,12,10.5,11.5,900",
    "2020-01-07,11.5,12,11,11.2,1100",
    "2020-01-08,11.2,11.8,10.9,11.6,1000",
)


def _write(tmp_path: Path, lines: list[str] | tuple[str, ...], name: str = "BAD.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _replace(row: int, line: str) -> Callable[[list[str]], list[str]]:
    """Edit that replaces data row ``row`` (CSV line row + 2)."""

    def edit(rows: list[str]) -> list[str]:
        rows[row] = line
        return rows

    return edit


def _swap_dates(rows: list[str]) -> list[str]:
    first, second = rows[1].split(",", 1), rows[2].split(",", 1)
    rows[1], rows[2] = f"{second[0]},{first[1]}", f"{first[0]},{second[1]}"
    return rows


AT = "line 4 (2020-01-06)"  # where the edited row is, as the messages say it

# (id, edit of the data rows, substrings the message must contain besides the file name)
BAD_ROWS = [
    ("non-numeric", _replace(2, "2020-01-06,11,12,10.5,abc,900"), ["'close'", "'abc'", AT]),
    ("nan", _replace(2, "2020-01-06,11,12,10.5,11.5,"), ["'volume'", "NaN", AT]),
    ("inf", _replace(2, "2020-01-06,11,inf,10.5,11.5,900"), ["'high'", "infinite", AT]),
    ("bad-date", _replace(2, "2020-13-45,11,12,10.5,11.5,900"), ["'date'", "2020-13-45", "line 4"]),
    ("missing-date", _replace(2, ",11,12,10.5,11.5,900"), ["missing date", "line 4"]),
    ("duplicate", _replace(2, "2020-01-03,11,12,10.5,11.5,900"), ["duplicate", "line 4", "line 3"]),
    ("unsorted", _swap_dates, ["ascending", "line 4 (2020-01-03)", "line 3 (2020-01-06)", "sort"]),
    ("zero-price", _replace(2, "2020-01-06,0,12,10.5,11.5,900"), ["non-positive", "open 0", AT]),
    ("negative-price", _replace(2, "2020-01-06,11,12,-1,11.5,900"), ["non-positive", AT]),
    ("negative-volume", _replace(2, "2020-01-06,11,12,10.5,11.5,-5"), ["negative volume", AT]),
    ("high-below-low", _replace(2, "2020-01-06,11,10,10.5,10.2,900"), ["high below low", AT]),
    ("high-below-close", _replace(2, "2020-01-06,11,11.2,10.5,11.5,900"), ["high below", AT]),
    ("high-below-open", _replace(2, "2020-01-06,11.3,11.2,10.5,11,900"), ["high below", AT]),
    ("low-above-open", _replace(2, "2020-01-06,11,12,11.2,11.5,900"), ["low above", AT]),
    ("low-above-close", _replace(2, "2020-01-06,11.3,12,11.2,11.1,900"), ["low above", AT]),
]


@pytest.mark.parametrize(
    ("edit", "expected"), [case[1:] for case in BAD_ROWS], ids=[case[0] for case in BAD_ROWS]
)
def test_bad_rows_raise_data_error_naming_file_and_row(tmp_path, edit, expected):
    path = _write(tmp_path, [HEADER, *edit(list(ROWS))])
    with pytest.raises(DataError) as info:
        load_ohlcv(path)
    message = str(info.value)
    assert "BAD.csv" in message
    for part in expected:
        assert part in message, (part, message)


def test_good_rows_load(tmp_path):
    frame = load_ohlcv(_write(tmp_path, [HEADER, *ROWS], name="GOOD.csv"))
    assert list(frame.columns) == list(COLUMNS)
    assert (frame.dtypes == np.float64).all()
    assert frame.index.name == "date"
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.tz is None
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert len(frame) == len(ROWS)
    assert frame.loc["2020-01-06", "close"] == 11.5
    assert frame["volume"].iloc[1] == 1200.0


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], ["empty"]),
        ([HEADER], ["no bars"]),
        (["date,open,high,low,close", *(r.rsplit(",", 1)[0] for r in ROWS)], ["volume", "found"]),
        (["day,open,high,low,close,volume", *ROWS], ["date", "column"]),
        (["date,open,high,low,close,volume,Close", *(r + ",1" for r in ROWS)], ["'close'", "once"]),
        ([HEADER, ROWS[0] + ",7", *ROWS[1:]], ["more fields than the header"]),
        ([HEADER, *ROWS[:3], ROWS[3] + ",7"], ["line 5"]),
        (
            [HEADER.replace(",", ";"), *(r.replace(",", ";") for r in ROWS)],
            ["semicolon-separated", "check the delimiter"],
        ),
        (
            [HEADER.replace(",", "\t"), *(r.replace(",", "\t") for r in ROWS)],
            ["tab-separated", "check the delimiter"],
        ),
        ([HEADER, *ROWS[:2], "01/06/2020,11,12,10.5,11.5,900"], ["'01/06/2020'", "line 4"]),
    ],
    ids=[
        "empty",
        "header-only",
        "missing-volume",
        "no-date-column",
        "duplicate-header",
        "extra-field",
        "ragged",
        "semicolons",
        "tabs",
        "other-date-format",
    ],
)
def test_bad_files_raise_data_error(tmp_path, lines, expected):
    path = tmp_path / "BAD.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_ohlcv(path)
    message = str(info.value)
    assert "BAD.csv" in message
    for part in expected:
        assert part in message, (part, message)


def test_missing_columns_lists_missing_and_found(tmp_path):
    path = _write(tmp_path, ["Date,Open,Close", "2020-01-02,1,2"])
    with pytest.raises(DataError, match=r"high, low, volume.*found: date, open, close"):
        load_ohlcv(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"NOPE\.csv: file not found"):
        load_ohlcv(tmp_path / "NOPE.csv")


def test_too_few_bars(tmp_path):
    path = _write(tmp_path, [HEADER, *ROWS])
    assert len(load_ohlcv(path, min_bars=len(ROWS))) == len(ROWS)
    with pytest.raises(DataError, match=r"BAD\.csv: 5 bars, but at least 6"):
        load_ohlcv(path, min_bars=6)


def test_unreadable_file_and_wrong_source_type(tmp_path):
    path = tmp_path / "BIN.csv"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(DataError, match=r"BIN\.csv: not a readable CSV file"):
        load_ohlcv(path)
    with pytest.raises(DataError, match="is not a file"):
        load_ohlcv(tmp_path)
    with pytest.raises(DataError, match="pass a CSV or Parquet path, or a DataFrame"):
        load_ohlcv(123)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="pass a CSV or Parquet path, or a DataFrame"):
        load_many([None])  # type: ignore[list-item]


def test_data_error_is_a_metabt_error_and_value_error(tmp_path):
    with pytest.raises(MetabtError):
        load_ohlcv(tmp_path / "missing.csv")
    with pytest.raises(ValueError):
        load_ohlcv(tmp_path / "missing.csv")


def test_headers_are_case_insensitive_and_numeric_extras_kept_as_lines(tmp_path):
    reference = load_ohlcv(_write(tmp_path, [HEADER, *ROWS], name="A.csv"))
    header = " Date ,OPEN, High,low ,Close,VoLuMe,Adj Close,Ticker"
    lines = [header, *(f"{r},{i},XYZ" for i, r in enumerate(ROWS))]
    frame = load_ohlcv(_write(tmp_path, lines, name="B.csv"))
    assert list(frame.columns) == [*COLUMNS, "adj_close"]
    assert frame.attrs["metabt.dropped"] == ("ticker",)
    assert reference.attrs["metabt.dropped"] == ()
    pd.testing.assert_frame_equal(frame[list(COLUMNS)], reference)
    assert frame["adj_close"].dtype == np.float64
    assert frame["adj_close"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("date_name", ["DateTime", "time", "TIMESTAMP"])
def test_other_date_column_names(tmp_path, date_name):
    lines = [HEADER.replace("date", date_name), *ROWS]
    frame = load_ohlcv(_write(tmp_path, lines))
    assert frame.index[0] == pd.Timestamp("2020-01-02")


def test_integer_dates_are_calendar_dates(tmp_path):
    lines = [HEADER, *(r.replace("-", "", 2) for r in ROWS)]
    frame = load_ohlcv(_write(tmp_path, lines))
    assert frame.index[0] == pd.Timestamp("2020-01-02")
    assert frame.index[-1] == pd.Timestamp("2020-01-08")


def _frame() -> pd.DataFrame:
    rows = [r.split(",") for r in ROWS]
    index = pd.DatetimeIndex([r[0] for r in rows], name="Date")
    data = np.array([[float(x) for x in r[1:]] for r in rows])
    return pd.DataFrame(data, index=index, columns=["Open", "High", "Low", "Close", "Volume"])


def test_dataframe_input_with_datetime_index():
    source = _frame()
    before = source.copy()
    frame = load_ohlcv(source)
    assert list(frame.columns) == list(COLUMNS)
    np.testing.assert_array_equal(frame.to_numpy(), source.to_numpy())
    assert frame.index.equals(pd.DatetimeIndex(source.index))
    pd.testing.assert_frame_equal(source, before)  # the input is not modified


def test_dataframe_input_with_date_column_and_int_volume():
    source = _frame().reset_index()
    source["Volume"] = source["Volume"].astype(np.int64)
    frame = load_ohlcv(source)
    assert frame.index[2] == pd.Timestamp("2020-01-06")
    assert frame["volume"].dtype == np.float64


def test_dataframe_errors_name_the_frame_and_row():
    source = _frame()
    source.iloc[3, 3] = np.nan  # Close of 2020-01-07
    with pytest.raises(DataError) as info:
        load_ohlcv(source)
    assert str(info.value).startswith("DataFrame:")
    assert "'close'" in str(info.value) and "row 3 (2020-01-07)" in str(info.value)
    with pytest.raises(DataError, match=r"^XYZ: column 'close'"):
        load_ohlcv(source, name="XYZ")


def test_dataframe_without_dates():
    with pytest.raises(DataError, match="DataFrame: no date column"):
        load_ohlcv(_frame().reset_index(drop=True))


def test_tz_aware_index_keeps_wall_clock_and_drops_zone():
    source = _frame()
    source.index = (source.index + pd.Timedelta(hours=16)).tz_localize("America/New_York")
    frame = load_ohlcv(source)
    assert frame.index.tz is None
    assert (frame.index.hour == 16).all()
    assert frame.index[0] == pd.Timestamp("2020-01-02 16:00")


def test_mixed_utc_offsets_in_csv_keep_wall_clock(tmp_path):
    # A daylight-saving change inside the file: -05:00 in winter, -04:00 in summer.
    lines = [
        HEADER,
        "2020-03-06 16:00:00-05:00,10,11,9,10.5,1000",
        "2020-03-09 16:00:00-04:00,10.5,11.5,10,11,1200",
    ]
    frame = load_ohlcv(_write(tmp_path, lines))
    assert frame.index.tz is None
    assert list(frame.index) == [pd.Timestamp("2020-03-06 16:00"), pd.Timestamp("2020-03-09 16:00")]


def test_mixed_iso_precision_in_csv(tmp_path):
    lines = [HEADER, ROWS[0], "2020-01-03T16:00,10.5,11.5,10,11,1200"]
    frame = load_ohlcv(_write(tmp_path, lines))
    assert list(frame.index) == [pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03 16:00")]


def test_round_trip_through_csv_is_exact(tmp_path):
    frame = load_ohlcv(sample_data_dir() / "IBM.csv").iloc[-300:]
    path = tmp_path / "IBM.csv"
    frame.to_csv(path)
    pd.testing.assert_frame_equal(load_ohlcv(path), frame)


def test_sample_files_load_with_long_history():
    files = sample_files()
    assert [p.stem for p in files] == sorted(p.stem for p in files)
    assert {"AAPL", "GOOG", "IBM", "MSFT"} <= {p.stem for p in files}
    years = {}
    for path in files:
        frame = load_ohlcv(path, min_bars=2000)
        years[path.stem] = (frame.index[-1] - frame.index[0]).days / 365.25
        # Daily bars: no two bars on the same day, no gap longer than a week or so.
        gaps = np.diff(frame.index.asi8) / 86_400e9
        assert gaps.min() >= 1 and gaps.max() <= 7
        assert len(frame) / years[path.stem] > 240  # about 252 trading days a year
    # GOOG starts at its IPO (2004-08-19); the others cover more than ten years.
    assert all(years[t] >= 10 for t in ("AAPL", "IBM", "MSFT")), years
    assert years["GOOG"] >= 8, years


def test_load_many_keys_by_stem_and_rejects_duplicate_names(tmp_path):
    files = sample_files()
    frames = load_many(files)
    assert list(frames) == [p.stem for p in files]
    assert list(load_many(str(files[0]))) == [files[0].stem]  # one path is not iterated
    other = tmp_path / files[0].name
    other.write_bytes(files[0].read_bytes())
    with pytest.raises(DataError, match=f"two data sources are named '{files[0].stem}'"):
        load_many([files[0], other])
    with pytest.raises(DataError, match="no data files"):
        load_many([])


def test_sample_data_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("METABT_SAMPLE_DATA", str(tmp_path))
    assert sample_data_dir() == tmp_path
    with pytest.raises(DataError, match="no CSV files"):
        sample_files()
    monkeypatch.setenv("METABT_SAMPLE_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="METABT_SAMPLE_DATA"):
        sample_data_dir()


class _Recorder(bt.Strategy):
    """Records every bar the strategy sees."""

    def __init__(self) -> None:
        self.bars: list[tuple] = []

    def next(self) -> None:
        d = self.data
        self.bars.append(
            (d.datetime.datetime(0), d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0])
        )


def _run(data: bt.feeds.PandasData) -> _Recorder:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(_Recorder)
    return cerebro.run()[0]


def test_feed_bars_equal_the_frame():
    path = sample_data_dir() / "MSFT.csv"
    data = feed(path, fromdate="2012-06-01", todate="2012-08-31")
    assert data._name == "MSFT"
    assert not isinstance(data, bt.feeds.PandasData)
    assert (data.p.timeframe, data.p.compression) == (bt.TimeFrame.Days, 1)
    strategy = _run(data)
    assert np.isnan(strategy.data.openinterest[0])  # as PandasData(openinterest=None)
    frame = load_ohlcv(path).loc["2012-06-01":"2012-08-31"]
    assert len(strategy.bars) == len(frame) > 50
    seen = pd.DataFrame(strategy.bars, columns=["date", *COLUMNS]).set_index("date")
    np.testing.assert_array_equal(seen.index.to_numpy(), frame.index.to_numpy())
    np.testing.assert_allclose(seen.to_numpy(), frame.to_numpy(), rtol=1e-12)


def test_feed_from_dataframe_and_names():
    frame = load_ohlcv(sample_data_dir() / "AAPL.csv").iloc[:40]
    assert feed(frame)._name == "data"
    strategy = _run(feed(frame, name="X"))
    assert strategy.data._name == "X"
    assert [bar[4] for bar in strategy.bars] == frame["close"].tolist()


def test_feed_errors():
    frame = _frame()
    with pytest.raises(DataError, match="no bars between"):
        feed(frame, fromdate="2021-01-01")
    with pytest.raises(DataError, match="fromdate='soon' is not a date"):
        feed(frame, fromdate="soon")
    bad = frame.copy()
    bad.iloc[0, 0] = -1.0
    with pytest.raises(DataError, match=r"^ABC: a non-positive price at row 0 \(2020-01-02\)"):
        feed(bad, name="ABC")


# ---------------------------------------------------------------- property-based
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def ohlcv_frames(draw: st.DrawFn) -> pd.DataFrame:
    """Random valid bars: positive prices, high/low bracketing open/close, ascending dates."""
    n = draw(st.integers(1, 40))
    price = st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False)
    opens = np.array(draw(st.lists(price, min_size=n, max_size=n)))
    closes = np.array(draw(st.lists(price, min_size=n, max_size=n)))
    up = np.array(draw(st.lists(st.floats(1.0, 1.5), min_size=n, max_size=n)))
    down = np.array(draw(st.lists(st.floats(0.5, 1.0), min_size=n, max_size=n)))
    volume = np.array(draw(st.lists(st.floats(0, 1e9), min_size=n, max_size=n)))
    gaps = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    dates = pd.Timestamp("2001-01-02") + pd.to_timedelta(np.cumsum(gaps), unit="D")
    return pd.DataFrame(
        {
            "open": opens,
            "high": np.maximum(opens, closes) * up,
            "low": np.minimum(opens, closes) * down,
            "close": closes,
            "volume": volume,
        },
        index=pd.DatetimeIndex(dates, name="date").as_unit("ns"),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=ohlcv_frames())
def test_random_valid_frames_round_trip(tmp_path, frame):
    loaded = load_ohlcv(frame)
    pd.testing.assert_frame_equal(loaded, frame, check_freq=False)
    path = tmp_path / "X.csv"
    frame.to_csv(path)  # the date as a named first column
    pd.testing.assert_frame_equal(load_ohlcv(path), frame, check_freq=False)


_CORRUPTIONS = [
    ("nan", lambda f, i: f.iloc.__setitem__((i, 3), np.nan)),
    ("inf", lambda f, i: f.iloc.__setitem__((i, 1), np.inf)),
    ("zero-price", lambda f, i: f.iloc.__setitem__((i, 0), 0.0)),
    ("negative-volume", lambda f, i: f.iloc.__setitem__((i, 4), -1.0)),
    ("high-below-low", lambda f, i: f.iloc.__setitem__((i, 1), f.iloc[i, 2] * 0.5)),
    (
        "text",
        lambda f, i: (
            f.__setitem__("close", f["close"].astype(object)) or f.iloc.__setitem__((i, 3), "n/a")
        ),
    ),
]


@settings(max_examples=80, deadline=None)
@given(
    frame=ohlcv_frames(),
    which=st.sampled_from(
        [c[0] for c in _CORRUPTIONS] + ["duplicate-date", "unsorted", "drop-column"]
    ),
    data=st.data(),
)
def test_random_corruptions_raise_data_error_and_nothing_else(frame, which, data):
    bad = frame.copy()
    i = data.draw(st.integers(0, len(bad) - 1))
    if which == "duplicate-date":
        if len(bad) < 2:
            return
        bad.index = bad.index[[0, 0, *range(2, len(bad))]]
    elif which == "unsorted":
        if len(bad) < 2:
            return
        bad = bad.iloc[::-1]
    elif which == "drop-column":
        bad = bad.drop(columns=data.draw(st.sampled_from(list(bad.columns))))
    else:
        dict(_CORRUPTIONS)[which](bad, i)
    with pytest.raises(DataError):
        load_ohlcv(bad)


def test_to_csv_files_with_an_unnamed_date_index_and_gzip_files_load(tmp_path):
    """What DataFrame.to_csv() writes (the date as an unnamed first column), compressed too."""
    frame = load_ohlcv(sample_files()[0]).iloc[:50]
    plain = frame.rename_axis(None)  # no index name: the CSV's first header cell is empty
    path = tmp_path / "X.csv"
    plain.to_csv(path)
    assert path.read_text(encoding="utf-8").startswith(",open,high,low,close,volume")
    pd.testing.assert_frame_equal(load_ohlcv(path), frame)
    gz = tmp_path / "X.csv.gz"
    frame.to_csv(gz)
    pd.testing.assert_frame_equal(load_ohlcv(gz), frame)


# ---------------------------------------------------------------- Parquet, extra columns
def test_parquet_files_load_with_index_or_date_column(tmp_path):
    frame = load_ohlcv(sample_files()[0]).iloc[:60]
    frame.to_parquet(tmp_path / "X.parquet")  # the dates as the Parquet index
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "X.parquet"), frame)
    column = frame.reset_index().rename(columns={"date": "Timestamp", "close": "CLOSE"})
    column.to_parquet(tmp_path / "Y.pq", index=False)
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "Y.pq"), frame)
    assert list(load_many([tmp_path / "X.parquet", tmp_path / "Y.pq"])) == ["X", "Y"]
    strings = frame.copy()
    strings.index = strings.index.strftime("%Y-%m-%d").rename("Date")  # an index of text
    strings.to_parquet(tmp_path / "Z.parquet")
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "Z.parquet"), frame)


def test_parquet_errors_name_the_file_and_fix(tmp_path, monkeypatch):
    bad = tmp_path / "BAD.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"^BAD\.parquet: not a readable Parquet file"):
        load_ohlcv(bad)
    load_ohlcv(sample_files()[0]).iloc[:5].to_parquet(tmp_path / "OK.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    with pytest.raises(DataError, match=r"^OK\.parquet: .*needs pyarrow.*pip install pyarrow"):
        load_ohlcv(tmp_path / "OK.parquet")


def test_compressed_csv_is_named_by_its_stem(tmp_path):
    load_ohlcv(sample_files()[0]).iloc[:5].to_csv(tmp_path / "ABC.csv.gz")
    assert list(load_many([tmp_path / "ABC.csv.gz"])) == ["ABC"]
    assert feed(tmp_path / "ABC.csv.gz")._name == "ABC"


def _with_extras() -> pd.DataFrame:
    source = _frame()
    source["Adj Close"] = source["Close"] * 0.5
    source["sentiment"] = [0.1, np.nan, -0.3, 0.2, 0.0]  # NaN is allowed in extras
    source["Flag"] = np.array([1, 0, 1, 1, 0], dtype=np.int8)
    source["ticker"] = "XYZ"  # text: dropped
    source["listed"] = pd.Timestamp("1990-01-01")  # a time, not a feature: dropped
    source["as_text"] = ["1.5", "2", None, "3", "4e2"]  # numbers stored as text: kept
    return source


def test_numeric_extra_columns_are_kept_as_float64_and_text_dropped():
    source = _with_extras()
    frame = load_ohlcv(source)
    assert list(frame.columns) == [*COLUMNS, "adj_close", "sentiment", "flag", "as_text"]
    assert (frame.dtypes == np.float64).all()
    assert frame.attrs["metabt.dropped"] == ("ticker", "listed")
    np.testing.assert_array_equal(frame["adj_close"], source["Adj Close"])
    np.testing.assert_array_equal(frame["sentiment"], source["sentiment"])
    np.testing.assert_array_equal(frame["as_text"], [1.5, 2.0, np.nan, 3.0, 400.0])
    assert is_validated(frame) and is_validated(frame.iloc[1:])
    text = frame.copy()
    text["note"] = "x"  # a non-float column added later: validate again
    assert not is_validated(text)


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("signal", [1.0, 2.0, np.inf, 0.0, 1.0], ["'signal'", "infinite", "row 2 (2020-01-06)"]),
        ("signal", ["1", "2", "oops", "0", "1"], ["'signal'", "'oops'", "row 2 (2020-01-06)"]),
        ("1st", [1.0] * 5, ["'1st'", "rename"]),
        ("class", [1.0] * 5, ["'class'", "rename"]),
        ("_hidden", [1.0] * 5, ["'_hidden'", "rename"]),
        ("adj_close", [1.0] * 5, ["'adj_close'", "rename or drop"]),
    ],
    ids=["inf", "mixed-text", "digit", "keyword", "underscore", "collision"],
)
def test_bad_extra_columns_raise_naming_column(column, values, expected):
    source = _with_extras()
    source[column] = values
    with pytest.raises(DataError) as info:
        load_ohlcv(source, name="EXTRA")
    message = str(info.value)
    assert message.startswith("EXTRA: ")
    for part in expected:
        assert part in message, (part, message)


def test_extra_column_errors_in_csv_name_the_line(tmp_path):
    lines = [HEADER + ",signal", *(f"{r},1" for r in ROWS)]
    lines[3] = lines[3][:-1] + "inf"
    with pytest.raises(DataError, match=r"'signal' has an infinite value at line 4 \(2020-01-06\)"):
        load_ohlcv(_write(tmp_path, lines))


# ---------------------------------------------------------------- intraday bars
def _hourly(days: int = 30, per_day: int = 7) -> pd.DataFrame:
    """NYSE-hours hourly bars (09:30 ... 15:30) with a random walk and an extra column."""
    sessions = pd.bdate_range("2021-03-01", periods=days)
    hours = pd.timedelta_range("09:30:00", periods=per_day, freq="1h").to_numpy()
    index = pd.DatetimeIndex((sessions.to_numpy()[:, None] + hours[None, :]).ravel(), name="date")
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, len(index))))
    return pd.DataFrame(
        {
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": rng.integers(1, 1000, len(index)).astype(float),
            "spread": rng.random(len(index)),
        },
        index=index,
    )


def test_intraday_csv_keeps_times_ascending_and_unique(tmp_path):
    source = _hourly(days=3)
    path = tmp_path / "H.csv"
    source.to_csv(path)
    frame = load_ohlcv(path)
    assert frame.index.equals(source.index) and frame.index.is_unique
    assert frame.index[1] == pd.Timestamp("2021-03-01 10:30")
    rows = [f"2021-03-01 {h:02d}:30,10,11,9,10.5,100" for h in (9, 11, 10)]
    with pytest.raises(DataError, match=r"line 4 \(2021-03-01 10:30:00\) comes after line 3"):
        load_ohlcv(_write(tmp_path, [HEADER, *rows]))


def test_intraday_feed_delivers_every_bar_with_minute_timeframe():
    frame = load_ohlcv(_hourly())
    data = feed(frame, name="H")
    assert (data.p.timeframe, data.p.compression) == (bt.TimeFrame.Minutes, 60)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(_Recorder)
    cerebro.addanalyzer(bt.analyzers.TimeReturn, _name="returns")  # at the data's timeframe
    strategy = cerebro.run()[0]
    assert len(strategy.bars) == len(frame) == 30 * 7
    assert [bar[0] for bar in strategy.bars] == list(frame.index.to_pydatetime())
    assert len(strategy.analyzers.returns.get_analysis()) == len(frame)  # not one per day
    minutes = _hourly(days=1, per_day=390)
    minutes.index = minutes.index[0] + pd.to_timedelta(np.arange(len(minutes)), unit="min")
    assert (feed(minutes).p.timeframe, feed(minutes).p.compression) == (bt.TimeFrame.Minutes, 1)
    single = feed(frame.iloc[:1])  # one bar: no spacing, taken as daily
    assert (single.p.timeframe, single.p.compression) == (bt.TimeFrame.Days, 1)


def test_todate_includes_the_whole_day_of_intraday_bars():
    frame = load_ohlcv(_hourly(days=5))
    strategy = _run(feed(frame, fromdate="2021-03-02", todate="2021-03-03"))
    assert len(strategy.bars) == 14  # both days, 7 bars each
    assert strategy.bars[-1][0] == pd.Timestamp("2021-03-03 15:30")
    strategy = _run(feed(frame, fromdate="2021-03-02 10:00", todate="2021-03-02 12:30"))
    assert [bar[0].hour for bar in strategy.bars] == [10, 11, 12]


def test_feed_extra_columns_are_lines_and_openinterest_is_filled():
    source = _hourly(days=3)
    source["openinterest"] = np.arange(len(source), dtype=float)
    source["spread"] = source["spread"].where(source.index.hour != 11)  # some NaN
    frame = load_ohlcv(source)

    class Extras(bt.Strategy):
        def __init__(self) -> None:
            self.seen: list[tuple[float, float]] = []

        def next(self) -> None:
            self.seen.append((self.data.spread[0], self.data.openinterest[0]))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame))
    cerebro.addstrategy(Extras)
    strategy = cerebro.run()[0]
    assert strategy.data.lines.getlinealiases()[-1] == "spread"
    seen = np.array(strategy.seen)
    np.testing.assert_array_equal(seen[:, 0], frame["spread"].to_numpy())  # NaN where NaN
    np.testing.assert_array_equal(seen[:, 1], frame["openinterest"].to_numpy())


def test_feed_refuses_backtrader_attribute_names_and_unknown_params():
    frame = load_ohlcv(_frame())
    clash = frame.assign(size=1.0)
    with pytest.raises(DataError, match=r"^data: column 'size' is also the name of a backtrader"):
        feed(clash, name="data")
    with pytest.raises(DataError, match="'fromdate' is also"):
        feed(frame.assign(fromdate=1.0))
    with pytest.raises(ConfigError, match=r"unknown parameter 'timefrmae' \(did you mean"):
        feed(frame, timefrmae=bt.TimeFrame.Days)
    weekly = feed(frame, timeframe=bt.TimeFrame.Weeks, plot=False)
    assert weekly.p.timeframe == bt.TimeFrame.Weeks and weekly.plotinfo.plot is False


# ---------------------------------------------------------------- same backtest as PandasData
class _SmaCross(bt.Strategy):
    """An SMA crossover that records every order and the portfolio value per bar."""

    def __init__(self) -> None:
        cross = bt.ind.CrossOver(bt.ind.SMA(period=10), bt.ind.SMA(period=30))
        self.cross = cross
        self.orders: list[tuple] = []
        self.values: list[float] = []

    def notify_order(self, order: bt.Order) -> None:
        if order.status == order.Completed:
            ex = order.executed
            self.orders.append((bt.num2date(ex.dt), ex.size, ex.price, ex.comm))

    def next(self) -> None:
        self.values.append(self.broker.getvalue())
        if self.cross[0] > 0:
            self.order_target_percent(target=0.9)
        elif self.cross[0] < 0:
            self.order_target_percent(target=-0.5)


def _backtest(data: bt.feed.DataBase) -> _SmaCross:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.broker.setcommission(commission=0.0005)
    cerebro.addstrategy(_SmaCross)
    return cerebro.run()[0]


def test_feed_backtest_equals_pandasdata_backtest():
    frame = load_ohlcv(sample_data_dir() / "IBM.csv").loc["2006":"2009"]
    ours = _backtest(feed(frame, fromdate="2007-01-01", todate="2008-12-31"))
    window = frame.loc["2007-01-01":"2008-12-31"]
    theirs = _backtest(bt.feeds.PandasData(dataname=window, openinterest=None))
    assert len(ours.orders) > 10
    assert ours.orders == theirs.orders  # same dates, sizes, prices, commissions
    assert ours.values == theirs.values
    assert len(ours.values) == len(window) - 30  # next() runs once the crossover is ready
    dates = [ours.data.datetime[-i] for i in range(len(window) - 1, -1, -1)]
    assert dates == [bt.date2num(t) for t in window.index.to_pydatetime()]


def test_a_csv_past_the_size_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    """A gzip bomb (3 MB of zeros compress to a few KB) is counted as it decompresses and
    refused before pandas sees it; a plain file by its size on disk; the limit is
    overridable."""
    import gzip

    from metabt.data.ohlcv import load_ohlcv, sample_files
    from metabt.errors import DataError

    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb") as out:
        out.write(b"date,open,high,low,close,volume\\n" + bytes(3 << 20))
    monkeypatch.setenv("METABT_MAX_CSV_BYTES", str(1 << 20))
    with pytest.raises(DataError, match=r"decompresses to more than 1,048,576 bytes"):
        load_ohlcv(bomb)
    big = tmp_path / "big.csv"
    big.write_bytes(bytes(2 << 20))
    with pytest.raises(DataError, match=r"2,097,152 bytes on disk"):
        load_ohlcv(big)
    assert len(load_ohlcv(sample_files()[0])) > 1000  # a real file is under the limit
    monkeypatch.setenv("METABT_MAX_CSV_BYTES", "lots")
    with pytest.raises(DataError, match="METABT_MAX_CSV_BYTES='lots' must be a positive"):
        load_ohlcv(sample_files()[0])


def test_a_file_past_the_row_limit_is_refused_with_its_count_and_the_override(
    tmp_path, monkeypatch
):
    """CSV (plain or compressed) and Parquet files with more rows than METABT_MAX_ROWS are
    refused naming the file, the count and the limit; pandas parses at most one row past it;
    at the limit the file loads."""
    from metabt.data.ohlcv import MAX_ROWS, load_ohlcv, sample_files
    from metabt.errors import DataError

    assert MAX_ROWS == 5_000_000
    frame = load_ohlcv(sample_files()[0]).iloc[:300]
    frame.to_csv(tmp_path / "a.csv")
    frame.to_csv(tmp_path / "a.csv.gz")
    frame.to_csv(tmp_path / "a.csv.zip")
    files = [tmp_path / "a.csv", tmp_path / "a.csv.gz", tmp_path / "a.csv.zip"]
    try:
        frame.to_parquet(tmp_path / "a.parquet")
        files.append(tmp_path / "a.parquet")
    except ImportError:  # pragma: no cover - pyarrow is a dependency here
        pass
    monkeypatch.setenv("METABT_MAX_ROWS", "299")
    for path in files:
        with pytest.raises(DataError) as info:
            load_ohlcv(path)
        message = str(info.value)
        assert message.startswith(f"{path.name}: 300 rows (bars), more than the limit of 299")
        assert "METABT_MAX_ROWS" in message and "\n" not in message
    monkeypatch.setenv("METABT_MAX_ROWS", "300")
    for path in files:
        assert len(load_ohlcv(path)) == 300
    monkeypatch.setenv("METABT_MAX_ROWS", "-3")
    with pytest.raises(DataError, match=r"METABT_MAX_ROWS='-3' must be a positive integer"):
        load_ohlcv(files[0])


def test_a_zip_bomb_csv_is_counted_as_it_decompresses(tmp_path, monkeypatch):
    import zipfile

    from metabt.data.ohlcv import load_ohlcv
    from metabt.errors import DataError

    bomb = tmp_path / "bomb.csv.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.csv", b"date,open,high,low,close,volume\n" + bytes(3 << 20))
    assert bomb.stat().st_size < 100_000
    monkeypatch.setenv("METABT_MAX_CSV_BYTES", str(1 << 20))
    with pytest.raises(DataError, match=r"bomb.csv.zip: it decompresses to more than 1,048,576"):
        load_ohlcv(bomb)
    two = tmp_path / "two.csv.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", "x")
        archive.writestr("b.csv", "y")
    with pytest.raises(DataError, match=r"two.csv.zip: not a readable zip file .*exactly one"):
        load_ohlcv(two)


@pytest.mark.parametrize(
    ("column", "factor", "needle"),
    [
        ("close", 1e306, r"a price outside 1e-30 to 1e30 \(PRICE_RANGE\) at line 2 \(2000-"),
        ("low", 1e-320, r"a price outside 1e-30 to 1e30"),
        ("volume", 1e290, r"a volume above 1e30 \(MAX_VOLUME\) at line 2"),
    ],
)
def test_prices_whose_sums_and_products_overflow_are_refused_naming_the_file(
    tmp_path, column, factor, needle
):
    """Prices x 1e306 made a backtest's fsum overflow after training; now the file is
    refused when it is read, with its name, the row and the fix."""
    from metabt.data.ohlcv import MAX_VOLUME, PRICE_RANGE, load_ohlcv, sample_files

    frame = pd.read_csv(sample_files()[0]).iloc[:50]
    scaled = frame.copy()
    if column == "close":
        for col in ("open", "high", "low", "close"):
            scaled[col] = scaled[col] * factor
    else:
        scaled[column] = scaled[column] * factor
    path = tmp_path / "scaled.csv"
    scaled.to_csv(path, index=False)
    with pytest.raises(DataError, match=needle) as info:
        load_ohlcv(path)
    assert str(info.value).startswith("scaled.csv: ") and "rescale" in str(info.value)
    assert PRICE_RANGE == (1e-30, 1e30) and MAX_VOLUME == 1e30
    # at the top of the range the bars load, and their sums and squares stay finite
    edge = frame.copy()
    for col in ("open", "high", "low", "close"):
        edge[col] = edge[col] / frame["high"].max() * PRICE_RANGE[1]
    loaded = load_ohlcv(edge)
    assert np.isfinite(loaded["close"].sum()) and np.isfinite((loaded["close"] ** 2).sum())
