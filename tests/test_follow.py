"""Tests of metabt.data.follow: growing bar files followed bar by bar, and the bar clock."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metabt.data.clock import BarClock
from metabt.data.follow import FollowedFile, HistoryChangedError
from metabt.data.ohlcv import load_ohlcv, sample_files
from metabt.errors import ConfigError, DataError

HEADER = "date,open,high,low,close,volume,adj_close,ticker"


def _row(day: pd.Timestamp, price: float, fmt: str = "%Y-%m-%d") -> str:
    """One clean bar line (an extra numeric column and a text column dropped by load_ohlcv)."""
    when = str(int(day.timestamp())) if fmt == "unix" else day.strftime(fmt)
    return (
        f"{when},{price},{price + 1.25},{price - 0.5},{price + 0.125},"
        f"{int(price * 100)},{price * 0.5},XYZ"
    )


def _lines(n: int, start: str = "2021-01-04", freq: str = "B") -> list[str]:
    days = pd.date_range(start, periods=n, freq=freq)
    fmt = "%Y-%m-%d" if freq in ("B", "D") else "%Y-%m-%d %H:%M:%S"
    return [_row(day, 10.0 + 0.25 * i, fmt) for i, day in enumerate(days)]


def _text(lines: list[str], header: str = HEADER) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


def _write(tmp_path: Path, lines: list[str], name: str = "ASSET.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(_text(lines))
    return path


def _append(path: Path, data: bytes | str) -> None:
    with open(path, "ab") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def _follow(tmp_path: Path, name: str = "ASSET.csv", **kwargs) -> tuple[FollowedFile, list[str]]:
    path = tmp_path / name
    path.touch()
    said: list[str] = []
    return FollowedFile(path, on_refused=said.append, **kwargs), said


def _check_equal(got: pd.DataFrame, path: Path) -> None:
    want = load_ohlcv(path)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got.attrs == want.attrs


# ------------------------------------------------------------------------- equivalence


def test_chunked_csv_appends_give_exactly_load_ohlcv(tmp_path):
    text = _text(_lines(40))
    follower, said = _follow(tmp_path)
    cuts = [0, 5, 31, 32, 200, 201, 777, 1500, len(text)]  # inside the header, half lines
    polled = []
    for lo, hi in itertools.pairwise(cuts):
        _append(follower.path, text[lo:hi])
        polled.append(follower.poll())
        complete = text[:hi].count(b"\n") - 1  # data lines ended by a line break so far
        assert follower.accepted == max(complete, 0)
    assert said == []
    _check_equal(follower.history, follower.path)
    _check_equal(pd.concat([p for p in polled if len(p)]), follower.path)
    assert list(follower.history.columns)[-1] == "adj_close"  # kept; ticker dropped
    assert follower.history.attrs["metabt.dropped"] == ("ticker",)
    empty = follower.poll()
    assert len(empty) == 0 and list(empty.columns) == list(follower.history.columns)


@pytest.mark.parametrize("form", ["day first", "unix seconds", "crlf"])
def test_later_rows_are_read_as_in_the_whole_file(tmp_path, form):
    """Dates in the file's format (13/01 fixes day-first; 01/02 alone would read as 2 Jan),
    Unix times, Windows line breaks: pieces give load_ohlcv's frame of the whole file."""
    days = pd.bdate_range("2021-01-13", periods=20)
    if form == "day first":
        lines = [_row(d, 10.0 + i, "%d/%m/%Y") for i, d in enumerate(days)]
    elif form == "unix seconds":
        lines = [_row(d, 10.0 + i, "unix") for i, d in enumerate(days + pd.Timedelta("14h"))]
    else:
        lines = _lines(20)
    text = _text(lines)
    if form == "crlf":
        text = text.replace(b"\n", b"\r\n")
    follower, said = _follow(tmp_path)
    cut = text.index(b"01/02/2021") if form == "day first" else len(text) // 2
    for piece in (text[:cut], text[cut:]):
        _append(follower.path, piece)
        follower.poll()
    assert said == []
    _check_equal(follower.history, follower.path)


def test_a_real_sample_file_followed_in_pieces_equals_load_ohlcv(tmp_path):
    text = b"".join(sample_files()[0].read_bytes().splitlines(keepends=True)[:400])
    follower, _ = _follow(tmp_path, "AAPL.csv")
    for lo in range(0, len(text), 3001):
        _append(follower.path, text[lo : lo + 3001])
        follower.poll()
    _check_equal(follower.history, follower.path)


def test_parquet_rewritten_with_more_rows_gives_exactly_load_ohlcv(tmp_path):
    full = pd.read_csv(io.BytesIO(_text(_lines(30))))
    path = tmp_path / "ASSET.parquet"
    full.iloc[:0].to_parquet(path)
    follower = FollowedFile(path)
    polled = []
    for n in (0, 1, 7, 7, 20, 30):
        full.iloc[:n].to_parquet(path)
        polled.append(follower.poll())
        assert follower.accepted == n
    _check_equal(follower.history, path)
    _check_equal(pd.concat([p for p in polled if len(p)]), path)


def test_parquet_unreadable_for_a_while_is_retried_then_refused(tmp_path):
    frame = load_ohlcv(_write(tmp_path, _lines(10)))
    path = tmp_path / "ASSET.parquet"
    frame.iloc[:5].to_parquet(path)
    follower = FollowedFile(path, retries=2)
    assert follower.accepted == 0 and len(follower.poll()) == 5
    frame.to_parquet(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # the downloader is half-way through
    assert len(follower.poll()) == 0
    path.write_bytes(whole)
    assert len(follower.poll()) == 5  # read once it is whole
    for n in range(3):
        path.write_bytes(whole[:100] + bytes(n))
        if n < 2:
            assert len(follower.poll()) == 0
    with pytest.raises(DataError, match=r"ASSET.parquet: could not be read in 3 polls in a row"):
        follower.poll()


# ---------------------------------------------------------------------------- row rules


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("2021-13-45,1,2,0.5,1,10,1,XYZ", "unreadable date '2021-13-45'"),
        ("2021-01-09,1,two,0.5,1,10,1,XYZ", "column 'high' has a non-numeric value 'two'"),
        ("2021-01-09,1,,0.5,1,10,1,XYZ", "column 'high' has a missing (NaN) value"),
        ("2021-01-09,1,2,3,1,10,1,XYZ", "high below low"),
        ("2021-01-09,1,2,0.5,1,10,1,XYZ,extra", "more fields than the header line"),
        ("2021-01-09,1,2,0.5,1,10,text,XYZ", "extra column 'adj_close' holds text 'text'"),
    ],
)
def test_a_malformed_row_is_refused_with_one_line_and_the_next_rows_go_on(tmp_path, bad, problem):
    lines = _lines(8)
    follower, said = _follow(tmp_path)
    _append(follower.path, _text(lines[:4]))
    follower.poll()
    _append(follower.path, "\n".join([bad, *lines[4:]]) + "\n")  # line 6 is the bad one
    new = follower.poll()
    assert len(new) == 4 and follower.accepted == 8
    assert len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith("ASSET.csv: ") and "line 6" in said[0] and problem in said[0]
    assert follower.counts["refused"] == 1
    pd.testing.assert_frame_equal(follower.history, load_ohlcv(_write(tmp_path, lines, "ok.csv")))


def test_bad_rows_in_the_first_read_are_each_refused(tmp_path):
    lines = _lines(12)
    lines[3] = lines[3].replace(",XYZ", ",XYZ,9")
    lines[9] = "not a date,1,2,0.5,1,1,1,XYZ"
    follower, said = _follow(tmp_path)
    _append(follower.path, _text(lines))
    assert len(follower.poll()) == 10
    assert [re.findall(r"line \d+", s) for s in said] == [["line 5"], ["line 11"]]
    assert "more fields than the header" in said[0] and "unreadable date" in said[1]


def test_a_duplicate_of_the_last_bar_is_ignored_silently(tmp_path):
    lines = _lines(5)
    follower, said = _follow(tmp_path)
    _append(follower.path, _text(lines))
    follower.poll()
    _append(follower.path, lines[-1] + "\n" + lines[-1] + "\n")
    assert len(follower.poll()) == 0
    assert said == [] and follower.counts["duplicates"] == 2 and follower.accepted == 5


def test_same_time_other_values_and_out_of_order_bars_are_refused(tmp_path):
    lines = _lines(6)
    follower, said = _follow(tmp_path)
    _append(follower.path, _text(lines[:4]))
    follower.poll()
    changed = lines[3].replace(",XYZ", "").rsplit(",", 1)[0] + ",99,XYZ"  # adj_close differs
    _append(follower.path, "\n".join([changed, lines[1], lines[4], lines[2], lines[5]]) + "\n")
    assert list(follower.poll().index) == list(load_ohlcv(_write(tmp_path, lines)).index[4:])
    assert len(said) == 3
    assert "line 6 (2021-01-07): a second bar at the time of the last accepted bar" in said[0]
    assert "adj_close 99.0 (was 5.375)" in said[0]
    assert "line 7 (2021-01-05): earlier than the last accepted bar (2021-01-07)" in said[1]
    assert "line 9 (2021-01-06): earlier than the last accepted bar (2021-01-08)" in said[2]


def test_gaps_are_reported_but_not_holidays_or_nights(tmp_path):
    days = list(pd.bdate_range("2021-01-04", periods=30))
    days.remove(pd.Timestamp("2021-01-18"))  # a holiday Monday: Friday to Tuesday
    days += [pd.Timestamp("2021-03-01")]  # two weeks and more without a bar
    follower, said = _follow(tmp_path)
    _append(follower.path, _text([_row(d, 10.0) for d in days]))
    follower.poll()
    assert follower.counts["gaps"] == 1 and len(said) == 1
    assert "line 31 (2021-03-01): a gap of 17 days since the bar of 2021-02-12" in said[0]
    assert "usual spacing of 1 day" in said[0] and "accepted" in said[0]

    # hourly bars of a 7-hour session: nights and weekends are no gaps, a lost week is
    hours = [
        t
        for d in pd.bdate_range("2021-01-04", periods=40)
        for t in pd.date_range(d + pd.Timedelta("10h"), periods=7, freq="h")
    ]
    lines = [_row(t, 10.0, "%Y-%m-%d %H:%M:%S") for t in hours]
    intraday, said = _follow(tmp_path, "HOURLY.csv")
    _append(intraday.path, _text(lines))
    intraday.poll()
    assert said == []
    _append(
        intraday.path, _row(hours[-1] + pd.Timedelta(days=10), 10.0, "%Y-%m-%d %H:%M:%S") + "\n"
    )
    intraday.poll()
    assert len(said) == 1 and "a gap of 10 days" in said[0]


def test_a_header_problem_stops_following(tmp_path):
    follower, _ = _follow(tmp_path)
    _append(follower.path, "date,open,high,low,volume\n2021-01-04,1,2,0.5,10\n")
    with pytest.raises(DataError, match=r"ASSET.csv: missing column\(s\) close"):
        follower.poll()
    garbled, _ = _follow(tmp_path, "G.csv")
    _append(garbled.path, b"\xff\xfed\x00a\x00t\x00e\x00\n")  # UTF-16
    with pytest.raises(DataError, match=r"G.csv: the header line is not readable as CSV"):
        garbled.poll()
    with pytest.raises(DataError, match="compressed file cannot be followed"):
        FollowedFile(tmp_path / "x.csv.gz")
    with pytest.raises(DataError, match="file not found"):
        FollowedFile(tmp_path / "none.csv")
    with pytest.raises(ConfigError, match="retries"):
        FollowedFile(follower.path, retries=-1)


def test_rows_refused_one_after_another_stop_following(tmp_path, monkeypatch):
    import metabt.data.follow as follow

    monkeypatch.setattr(follow, "MAX_REFUSED_IN_A_ROW", 3)
    follower, _ = _follow(tmp_path)
    _append(follower.path, _text(_lines(2) + ["2021-01-09,1,2,3,1,1,1,X"] * 3))
    with pytest.raises(DataError, match="3 rows refused in a row"):
        follower.poll()


def test_reports_beyond_the_cap_are_summed_up_in_one_line(tmp_path, monkeypatch):
    import metabt.data.follow as follow

    monkeypatch.setattr(follow, "MAX_NOTICES_PER_POLL", 2)
    lines = _lines(10)
    for i in (2, 4, 6, 8):
        lines[i] = lines[i].replace(",XYZ", ",XYZ,more")
    follower, said = _follow(tmp_path)
    _append(follower.path, _text(lines))
    assert len(follower.poll()) == 6
    assert len(said) == 3 and "line 6" in said[1]
    assert said[2].startswith("ASSET.csv: 2 more refused rows or gaps in this read")
    assert follower.counts["refused"] == 4


def test_size_limits_are_respected(tmp_path, monkeypatch):
    follower, _ = _follow(tmp_path)
    _append(follower.path, _text(_lines(5)))
    monkeypatch.setenv("METABT_MAX_ROWS", "6")
    assert len(follower.poll()) == 5
    _append(follower.path, "\n".join(_lines(9)[5:]) + "\n")
    with pytest.raises(DataError, match=r"more than the limit of 6; .*METABT_MAX_ROWS"):
        follower.poll()
    monkeypatch.setenv("METABT_MAX_CSV_BYTES", "100")
    other, _ = _follow(tmp_path, "B.csv")
    _append(other.path, _text(_lines(5)))
    with pytest.raises(DataError, match=r"B.csv: .* bytes on disk; .*METABT_MAX_CSV_BYTES"):
        other.poll()


# ------------------------------------------------------------------ processed and resume


def _resume_roundtrip(path: Path, follower: FollowedFile, **kwargs) -> FollowedFile:
    state = json.loads(json.dumps(follower.state()))
    return FollowedFile.resume(path, state, **kwargs)


def test_resume_checks_the_processed_bars_and_delivers_the_rest(tmp_path):
    lines = _lines(20)
    lines[2] = "2021-01-06,1,2,3,1,1,1,X"  # refused before the restart: not said again
    follower, said = _follow(tmp_path)
    _append(follower.path, _text(lines[:12]))
    first = follower.poll()
    assert len(said) == 1
    follower.mark_processed(first.index[7])
    state = follower.state()
    assert state["processed"] == 8 and state["last"] == first.index[7].isoformat()
    _append(follower.path, "\n".join(lines[12:]) + "\n")
    again: list[str] = []
    resumed = _resume_roundtrip(follower.path, follower, on_refused=again.append)
    assert again == [] and resumed.processed == 8
    pd.testing.assert_frame_equal(resumed.history, first.iloc[:8])
    rest = resumed.poll()  # the accepted but unprocessed bars, then the new ones
    pd.testing.assert_frame_equal(
        pd.concat([first.iloc[:8], rest]), pd.concat([first, follower.poll()])
    )
    _check_equal_skipping(resumed.history, lines)
    assert resumed.state()["sha256"] == follower.state()["sha256"]
    resumed.mark_processed(rest.index[-1])
    follower.mark_processed(rest.index[-1])
    assert resumed.state()["sha256"] == follower.state()["sha256"]


def _check_equal_skipping(got: pd.DataFrame, lines: list[str]) -> None:
    clean = [line for line in lines if not line.endswith(",X")]
    want = load_ohlcv(pd.read_csv(io.BytesIO(_text(clean))))
    pd.testing.assert_frame_equal(got, want)


def test_a_rewritten_csv_history_is_detected_on_resume_and_while_polling(tmp_path):
    lines = _lines(40)
    follower, _ = _follow(tmp_path)
    _append(follower.path, _text(lines))
    bars = follower.poll()
    follower.mark_processed(bars.index[29])
    state = follower.state()
    adjusted = [*lines[:21], _row(pd.Timestamp(lines[21][:10]), 99.0), *lines[22:]]
    follower.path.write_bytes(_text(adjusted))  # longer: the later lines move
    with pytest.raises(HistoryChangedError) as caught:
        FollowedFile.resume(follower.path, state)
    message = str(caught.value)
    assert message.startswith("ASSET.csv: the bars already read have changed")
    assert "start a new state folder, or restore the file" in message
    assert "the first changed bar is between bar 16 (2021-01-26) and bar 29" in message
    # a rewrite that changes every price from the first bar: named exactly
    halved = [_row(pd.Timestamp(line[:10]), 5.0 + i) for i, line in enumerate(lines)]
    follower.path.write_bytes(_text(halved))
    with pytest.raises(HistoryChangedError, match=r"the first changed bar is bar 0 \(2021-01-04\)"):
        FollowedFile.resume(follower.path, state)
    follower.retries = 1  # a rewrite in progress is waited for, then refused
    assert len(follower.poll()) == 0
    with pytest.raises(
        HistoryChangedError, match=r"ASSET.csv: the bars already read have .*2 polls"
    ):
        follower.poll()
    follower.path.write_bytes(_text(lines[:10]))
    with pytest.raises(HistoryChangedError, match="shorter than the"):
        FollowedFile.resume(follower.path, state)
    # the same bars in other text (the dropped ticker column shorter): lines moved, bars not
    follower.path.write_bytes(_text([line.replace("XYZ", "XY") for line in lines]))
    resumed = FollowedFile.resume(follower.path, state)
    pd.testing.assert_frame_equal(resumed.poll(), bars.iloc[30:])


def test_a_csv_rewritten_whole_with_the_same_history_goes_on(tmp_path):
    lines = _lines(12)
    follower, said = _follow(tmp_path, retries=2)
    _append(follower.path, _text(lines[:8]))
    follower.poll()
    follower.path.write_bytes(b"")  # a downloader rewriting it: truncated first,
    assert len(follower.poll()) == 0
    follower.path.write_bytes(_text(lines)[:300])  # then written part by part
    assert len(follower.poll()) == 0
    follower.path.write_bytes(_text(lines))
    pd.testing.assert_frame_equal(
        follower.poll(), load_ohlcv(_write(tmp_path, lines, "all.csv")).iloc[8:]
    )
    assert said == []


def test_a_rewritten_parquet_history_is_detected(tmp_path):
    frame = load_ohlcv(_write(tmp_path, _lines(20)))
    path = tmp_path / "P.parquet"
    frame.to_parquet(path)
    follower = FollowedFile(path)
    follower.poll()
    follower.mark_processed(frame.index[9])
    state = json.loads(json.dumps(follower.state()))
    resumed = FollowedFile.resume(path, state)
    pd.testing.assert_frame_equal(resumed.poll(), frame.iloc[10:])
    adjusted = frame.copy()
    adjusted.iloc[:5, :4] *= 0.5
    adjusted.to_parquet(path)
    with pytest.raises(HistoryChangedError, match=r"first changed bar is bar 0 \(2021-01-04\)"):
        FollowedFile.resume(path, state)
    follower.retries = 0
    with pytest.raises(HistoryChangedError, match=r"row 0 .read before. is now different"):
        follower.poll()


def test_a_bad_state_is_a_clear_error(tmp_path):
    follower, _ = _follow(tmp_path)
    _append(follower.path, _text(_lines(3)))
    follower.poll()
    state = follower.state()
    for broken in (
        [],
        {**state, "version": 9},
        {**state, "position": "x"},
        {**state, "format": "parquet"},
    ):
        with pytest.raises(DataError, match=r"ASSET.csv: the saved state"):
            FollowedFile.resume(follower.path, broken)


# -------------------------------------------------------------------------------- clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _three(tmp_path: Path) -> tuple[list[FollowedFile], list[list[str]], list[str]]:
    said: list[str] = []
    files, lines = [], []
    for name in ("A", "B", "C"):
        path = tmp_path / f"{name}.csv"
        path.write_text(HEADER + "\n")
        files.append(FollowedFile(path, on_refused=said.append))
        lines.append(_lines(6))
    return files, lines, said


def _released(out) -> list[tuple[str, list[str]]]:
    return [(str(t.date()), sorted(bars)) for t, bars in out]


def test_the_clock_releases_a_time_once_every_file_reached_it(tmp_path):
    files, lines, _ = _three(tmp_path)
    clock = BarClock(files, timeout=None)
    _append(files[0].path, "\n".join(lines[0][:3]) + "\n")
    _append(files[1].path, "\n".join(lines[1][:2]) + "\n")
    assert clock.poll() == []  # C has nothing yet
    _append(files[2].path, lines[2][0] + "\n" + lines[2][2] + "\n")  # C skips the 5th
    out = clock.poll()
    assert _released(out) == [("2021-01-04", ["A", "B", "C"]), ("2021-01-05", ["A", "B"])]
    _, bars = out[0]
    pd.testing.assert_series_equal(bars["A"], files[0].history.iloc[0])
    _append(files[1].path, "\n".join(lines[1][2:4]) + "\n")
    assert _released(clock.poll()) == [("2021-01-06", ["A", "B", "C"])]
    assert clock.poll() == []


def test_the_clock_timeout_releases_without_the_lagging_file(tmp_path):
    files, lines, said = _three(tmp_path)
    fake = FakeClock()
    clock = BarClock(files, timeout=30.0, clock=fake)
    for f, rows in zip(files, lines):
        _append(f.path, "\n".join(rows[:2]) + "\n")
    assert len(clock.poll()) == 2
    _append(files[0].path, lines[0][2] + "\n")
    fake.now = 10.0
    assert clock.poll() == []  # A has the 6th; B and C are given 30 s
    _append(files[1].path, lines[1][2] + "\n")
    fake.now = 39.9
    assert clock.poll() == []
    fake.now = 40.0
    assert _released(clock.poll()) == [("2021-01-06", ["A", "B"])]
    _append(files[2].path, "\n".join(lines[2][2:4]) + "\n")  # C's 6th comes too late
    _append(files[0].path, lines[0][3] + "\n")
    _append(files[1].path, lines[1][3] + "\n")
    assert _released(clock.poll()) == [("2021-01-07", ["A", "B", "C"])]
    assert clock.late == {"A": 0, "B": 0, "C": 1}
    assert len(said) == 1 and said[0].startswith("C.csv: the bar at 2021-01-06 came after")
    clock.mark_processed("2021-01-07")
    assert [f.processed for f in files] == [4, 4, 4]  # C's late bar counts as processed
    with pytest.raises(ValueError, match="last released time"):
        clock.mark_processed("2021-01-08")


def test_the_clock_timeout_reaches_until_past_a_stopped_file(tmp_path):
    files, lines, _ = _three(tmp_path)
    fake = FakeClock()
    clock = BarClock(files, timeout=5.0, clock=fake, until="2021-01-08")
    _append(files[0].path, "\n".join(lines[0]) + "\n")  # to 2021-01-11
    _append(files[1].path, "\n".join(lines[1][:4]) + "\n")  # to 2021-01-07
    _append(files[2].path, lines[2][0] + "\n")  # 2021-01-04, then nothing
    assert [t for t, _ in _released(clock.poll())] == ["2021-01-04"]
    assert not clock.done
    fake.now = 5.0  # A reached 2021-01-11 five seconds ago: up to until is released
    out = _released(clock.poll())
    assert out == [
        ("2021-01-05", ["A", "B"]),
        ("2021-01-06", ["A", "B"]),
        ("2021-01-07", ["A", "B"]),
        ("2021-01-08", ["A"]),
    ]
    assert clock.done and clock.poll() == []


def test_the_clock_stops_at_until_and_resumes_after_a_restart(tmp_path):
    files, lines, _ = _three(tmp_path)
    clock = BarClock(files, timeout=None, until="2021-01-06")
    for f, rows in zip(files, lines):
        _append(f.path, "\n".join(rows) + "\n")
    assert [t for t, _ in _released(clock.poll())] == ["2021-01-04", "2021-01-05", "2021-01-06"]
    assert clock.done and clock.poll() == []
    clock.mark_processed("2021-01-05")
    state = json.loads(json.dumps(clock.state()))
    again = [FollowedFile.resume(f.path, state["files"][f.name]) for f in files]
    later = BarClock(again, timeout=None)
    assert later.released == pd.Timestamp("2021-01-05")
    assert [t for t, _ in _released(later.poll())] == [
        "2021-01-06",
        "2021-01-07",
        "2021-01-08",
        "2021-01-11",
    ]
    with pytest.raises(DataError, match="two followed files are named 'A'"):
        BarClock([files[0], again[0]], timeout=None)


# ------------------------------------------------------------------------------ property


_CLEAN = _lines(25)
# bad rows of each kind, each refused however the bytes are cut (the good ones marked)
_PROPERTY_LINES = [
    *_CLEAN[:7],
    "2021-01-13,1,2,3,1,1,1,X",  # high below low
    *_CLEAN[7:12],
    "2021-01-21,one,2,0.5,1,1,1,X",  # not a number
    *_CLEAN[12:16],
    _CLEAN[15],  # a duplicate of the last bar: ignored
    "",  # a blank line
    *_CLEAN[16:20],
    "2021-02-30,1,2,0.5,1,1,1,X",  # no such date
    *_CLEAN[20:22],
    _CLEAN[3].replace(",XYZ", ",X"),  # out of order
    *_CLEAN[22:],
]
_PROPERTY_TEXT = _text(_PROPERTY_LINES)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(0, len(_PROPERTY_TEXT)), max_size=12))
def test_any_chunking_of_the_bytes_gives_the_same_bars(tmp_path_factory, cuts):
    folder = tmp_path_factory.mktemp("chunks")
    follower, said = _follow(folder)
    bounds = sorted({0, len(_PROPERTY_TEXT), *cuts})
    for lo, hi in itertools.pairwise(bounds):
        _append(follower.path, _PROPERTY_TEXT[lo:hi])
        follower.poll()
    _check_equal_skipping(follower.history, _CLEAN)
    assert [re.search(r"line \d+", s).group() for s in said] == [
        "line 9",
        "line 15",
        "line 26",
        "line 29",
    ]
    assert "high below low" in said[0] and "'one'" in said[1] and "'2021-02-30'" in said[2]
    assert "earlier than the last accepted bar" in said[3]
    assert follower.counts == {"accepted": 25, "refused": 4, "duplicates": 1, "gaps": 0}
