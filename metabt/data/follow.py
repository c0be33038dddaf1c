"""Following bar files that grow while they are read (paper and live trading): each new complete,
valid bar once, bad rows refused with one line, the processed history checked after a restart.

A downloader appends rows to a CSV file (or rewrites a Parquet file); :class:`FollowedFile`
turns each poll of it into the new bars, validated by the same rules as
:func:`metabt.data.ohlcv.load_ohlcv` (so once a clean file is complete, the bars delivered
equal what ``load_ohlcv`` returns for it, values, times, dtypes and extra columns). Its
:meth:`~FollowedFile.state` is a small JSON-serialisable dict; :meth:`FollowedFile.resume`
re-opens the file after a restart and refuses to go on if the bars already processed have
changed (:class:`HistoryChangedError`). :class:`metabt.data.clock.BarClock` aligns
several followed files: it releases a bar time once every file has reached it, or after a
timeout without the lagging files.

A paper-trading loop on top of them (the state saved after each processed bar)::

    files = [FollowedFile(path, on_refused=print) for path in paths]  # or .resume(...)
    clock = BarClock(files, timeout=60.0, until=end)
    while not clock.done:
        for when, bars in clock.poll():  # bars: {name: the bar (a Series)}
            ...  # hand the bars to the strategy
            clock.mark_processed(when)
            save(clock.state())  # JSON
        time.sleep(5)
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import warnings
from array import array
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metabt.data.ohlcv import (
    _COMPRESSED,
    _PARQUET,
    _csv_limit,
    _midnight,
    _read_parquet,
    _row_limit,
    _stem,
    _too_many_rows,
    load_ohlcv,
)
from metabt.errors import ConfigError, DataError

__all__ = [
    "FollowedFile",
    "GAP_FACTOR",
    "HistoryChangedError",
    "MAX_NOTICES_PER_POLL",
    "MAX_REFUSED_IN_A_ROW",
]

Report = Callable[[str], None]

#: bytes of CSV read and validated at a time (a longer line is not a bar)
_BLOCK = 8 * 1024 * 1024
#: rows of a Parquet file validated at a time
_PARQUET_BLOCK = 200_000
#: rows refused one after another, with no bar accepted between, before following stops
MAX_REFUSED_IN_A_ROW = 1_000
#: one-line reports (refused rows, gaps) made one by one in a poll; the rest are counted and
#: summed up in one more line
MAX_NOTICES_PER_POLL = 100
#: a spacing longer than this many times the usual one is reported as a gap
GAP_FACTOR = 5.0
#: spacings (the most recent) from which the usual spacing is estimated
_GAP_WINDOW = 10_000
#: spacings needed before gaps are reported
_GAP_MIN = 10
#: the message load_ohlcv gives a frame with good columns and no row (the header check)
_NO_BARS = ": no bars; add one row per bar"
_ROW = re.compile(r"\brow (\d+)\b")
_LINE = re.compile(r"[\s.\-/]+")  # load_ohlcv's rule from a column name to a line name
_BLANK = np.frombuffer(b" \t\r\n\x0b\x0c", dtype=np.uint8)
_STATE_VERSION = 1
_DAY_NS = 86_400 * 10**9


class HistoryChangedError(DataError):
    """The bars already read or processed from a followed file are no longer in it.

    Raised when a file was rewritten under a follower (e.g. an adjusted-price file after a
    split or dividend): continuing would mix two histories. The message names the file,
    the first differing bar when it is known, and the fix (a new state folder, or the file
    restored as it was).
    """


def _when(ts: pd.Timestamp) -> str:
    """A bar time for a message: the date alone at midnight."""
    return str(ts.date() if _midnight(ts) else ts)


def _duration(ns: float) -> str:
    """A spacing for a message: ``7 days``, ``02:30:00``, ``1 day 01:00:00``."""
    delta = pd.Timedelta(int(ns))
    days, rest = delta.days, delta - pd.Timedelta(days=delta.days)
    head = f"{days} day{'s' if days != 1 else ''}" if days else ""
    tail = str(rest).removeprefix("0 days ") if rest else ""
    return " ".join(x for x in (head, tail) if x) or "0:00:00"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _rows_bytes(frame: pd.DataFrame) -> bytes:
    """The canonical bytes of bars: per row, the time (int64 ns) then each value (float64,
    one NaN), little-endian, row after row (so hashing in pieces equals hashing at once)."""
    values = frame.to_numpy(dtype=np.float64)
    values = np.where(np.isnan(values), np.nan, values)
    out = np.empty((len(frame), values.shape[1] + 1), dtype="<i8")
    out[:, 0] = frame.index.asi8
    out[:, 1:] = values.astype("<f8").view("<i8")
    return out.tobytes()


def _raw_hashes(raw: pd.DataFrame) -> bytes:
    """Per-row 8-byte hashes of a raw (unvalidated) frame, its index included (compared
    within one process only: pandas' hash may change between versions)."""
    try:
        hashes = pd.util.hash_pandas_object(raw, index=True).to_numpy()
    except (TypeError, ValueError):  # a column of unhashable objects: hash its text
        hashes = pd.util.hash_pandas_object(raw.astype(str), index=True).to_numpy()
    return hashes.astype("<u8").tobytes()


class _Csv:
    """The complete lines of one block of a CSV file, as units for validation."""

    def __init__(self, header: bytes, data: bytes, base: int, first_line: int, label: str):
        self.header, self.data, self.label, self.base = header, data, label, base
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10) + 1  # data ends with a line break
        starts = np.concatenate([[0], ends])[:-1].astype(np.int64)
        # pandas skips blank (and blank-looking) lines; so do we (only a line that starts
        # with white space can be blank)
        keep = np.ones(len(ends), dtype=bool)
        for i in np.flatnonzero(np.isin(buf[starts], _BLANK)):
            keep[i] = bool(data[starts[i] : ends[i]].strip())
        self.starts, self.ends = starts[keep], ends[keep]
        self.lines = (first_line + np.arange(len(ends)))[keep]

    def __len__(self) -> int:
        return len(self.starts)

    def where(self, i: int) -> str:
        return f"line {self.lines[i]}"

    def ends_of(self, lo: int, hi: int) -> np.ndarray:
        """The file offsets just after units ``lo:hi`` (after their line breaks)."""
        return self.base + self.ends[lo:hi]

    def anchor(self, i: int) -> bytes:
        """Unit ``i``'s line."""
        return self.data[self.starts[i] : self.ends[i]]

    def raw(self, lo: int, hi: int, anchor: bytes | None) -> pd.DataFrame:
        """Units ``lo:hi`` read by pandas as load_ohlcv reads a file: the header, then the
        ``anchor`` line if given, then the units' lines."""
        text = self.header + (anchor or b"") + self.data[self.starts[lo] : self.ends[hi - 1]]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(io.BytesIO(text), index_col=False)
        except pd.errors.ParserWarning as exc:
            raise DataError(
                f"{self.label}: more fields than the header line at row 0; check the "
                "delimiter (comma) and that every row has one value per column"
            ) from exc
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(
                f"{self.label}: not readable as CSV at row 0 ({_one_line(str(exc))}); "
                "write one comma-separated bar per line"
            ) from exc


class _Rows:
    """Rows ``first:first + n`` of a raw Parquet frame, as units for validation."""

    def __init__(self, raw: pd.DataFrame, first: int, n: int):
        self.frame, self.first, self.n = raw, first, n

    def __len__(self) -> int:
        return self.n

    def where(self, i: int) -> str:
        return f"row {self.first + i}"

    def ends_of(self, lo: int, hi: int) -> np.ndarray:
        """The rows of the file read up to and including each of units ``lo:hi``."""
        return self.first + np.arange(lo, hi, dtype=np.int64) + 1

    def anchor(self, i: int) -> pd.DataFrame:
        """Unit ``i``'s row (a frame of one row)."""
        return self.frame.iloc[self.first + i : self.first + i + 1]

    def raw(self, lo: int, hi: int, anchor: pd.DataFrame | None) -> pd.DataFrame:
        """Units ``lo:hi``, after the ``anchor`` row if given."""
        rows = self.frame.iloc[self.first + lo : self.first + hi]
        return rows if anchor is None else pd.concat([anchor, rows])


_Units = _Csv | _Rows


class FollowedFile:
    """One bar file that a downloader extends: the new complete, valid bars at each poll.

    Formats: a plain CSV file (``.csv``, any name not ending in a Parquet or compressed
    suffix) that grows by appended lines, or a Parquet file (``.parquet``, ``.pq``) that is
    rewritten whole. A compressed CSV cannot be followed.

    Reading. CSV: only lines ended by a line break are complete; a half-written last line
    waits for a later poll. Each poll reads from the byte offset where the previous one
    stopped, and checks first that the file is not shorter and that the last line read is
    unchanged; one bar per line (no quoted line breaks); blank lines are skipped, as pandas
    does. Parquet: the file is read whole at each poll in which its size or modification
    time changed; the rows read before must be unchanged, the rows after them are new. A
    file that cannot be read right now (missing, or partly written) is retried at the next
    poll, and so is one whose part already read differs (a downloader may be rewriting
    it); after ``retries`` such polls in a row, DataError (unreadable) or
    :class:`HistoryChangedError` (rewritten).

    Row rules (one line to ``on_refused`` for each refused row, naming the file, the CSV
    line number or the Parquet row, and the problem; the following rows go on):

    - validation: new rows are validated by :func:`~metabt.data.ohlcv.load_ohlcv` itself,
      as a small frame of the header, the file's first accepted row (so that dates are read
      in the format of the file's first date, and Unix times and text columns are judged
      as for the whole file; dropped again) and the new rows; when that raises, the rows
      are split at the row load_ohlcv names and halved until each bad row is alone, and
      refused with load_ohlcv's message (a bad date, a non-numeric or missing value, high
      below low, a non-positive price, more fields than the header, ...). A problem of the
      header (missing columns, no date column, another delimiter, an extra column whose
      name cannot be a line name) is a DataError: it concerns every row;
    - columns: the first accepted rows fix the columns (OHLCV, then the numeric extra
      columns; text extra columns are dropped, as load_ohlcv does); a later row whose extra
      column holds text where numbers were (or a number where text was) is refused (so a
      text column must not be empty in the first rows read: empty, it reads as numbers);
    - an exact duplicate of the last accepted bar (same time, same values, NaN equal to
      NaN) is ignored without a message and counted (``counts["duplicates"]``);
    - a bar at the time of the last accepted bar with other values, or at an earlier time
      (late, out of order), is refused;
    - a gap is accepted and reported with one line (to ``on_gap``, else ``on_refused``): a
      spacing longer than 5 (:data:`GAP_FACTOR`) times the usual spacing, the median of
      the last 10,000 spacings. When those spacings hold recurring session breaks (more
      than 5 times the median, at least one per 10 days of data: intraday bars with
      nights and weekends), a gap must also be longer than twice the 90th percentile of
      the breaks (a weekend or a long holiday weekend is then no gap; a missing day inside
      the week is not reported either). Daily bars have no recurring breaks, and a
      holiday (4 days, against a usual day) is no gap either. Gaps are judged once 10
      spacings are known, with the spacings known when the bar is read (so, unlike the
      bars, the gap reports can differ with how the file was cut into reads);
    - :data:`MAX_REFUSED_IN_A_ROW` rows refused in a row raise DataError (the file is not
      what it should be); beyond :data:`MAX_NOTICES_PER_POLL` reports in one poll, the rest
      are counted and summed up in one more line.

    Sizes: a CSV file of more than ``MAX_CSV_BYTES`` bytes (``METABT_MAX_CSV_BYTES``), or
    a file of more than ``MAX_ROWS`` data rows (``METABT_MAX_ROWS``), raises DataError, as
    in load_ohlcv; a CSV line longer than 8 MB raises DataError.

    Processed bars. Every accepted bar is delivered once by :meth:`poll`; the caller says
    which of them it has processed with :meth:`mark_processed` (all accepted bars up to a
    time). :meth:`state` describes the processed ones only: their count, the last time, a
    SHA-256 of their canonical content (the column names, then per bar the time as int64
    nanoseconds and the values as float64, little-endian) and, for a CSV file, the offset
    just after the line of the last processed bar. :meth:`resume` re-reads the file up to
    there, checks those bars against the hash, and delivers the bars after them (accepted
    before the restart but not processed, or new) at its next poll. A refused row or gap
    after the last processed bar is reported again after a restart. A CSV file rewritten
    with the same bars in other text (e.g. another number format) resumes if the lines up to
    the saved offset still give exactly the processed bars; any other change raises.

    Args:
        path (str | os.PathLike): the CSV or Parquet file; it must exist (it may be empty,
            or hold only part of the header line).
        name (str | None, default None): the asset's name (default: the file stem, e.g.
            ``AAPL`` for AAPL.csv).
        on_refused (Callable[[str], None] | None, default None): called with one line
            (no line break) for each refused row; None: only counted, and kept in
            :attr:`notices`.
        on_gap (Callable[[str], None] | None, default None): called with one line for each
            gap; None: ``on_refused``.
        retries (int, default 5): polls in a row in which the file may be unreadable
            (missing, partly written) or differ from what was read (being rewritten)
            before an error.

    Raises:
        DataError: the file is missing, a compressed CSV, or a FIFO or folder.
        ConfigError: ``retries`` is not an integer >= 0.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        on_refused: Report | None = None,
        on_gap: Report | None = None,
        retries: int = 5,
    ):
        self.path = Path(path)
        self.label = self.path.name
        self.name = name or _stem(self.path)
        lower = self.label.lower()
        if lower.endswith(_COMPRESSED):
            raise DataError(
                f"{self.label}: a compressed file cannot be followed while it grows; have the "
                "downloader append to a plain .csv file (or write .parquet)"
            )
        self.format = "parquet" if lower.endswith(_PARQUET) else "csv"
        if not self.path.exists():
            raise DataError(
                f"{self.label}: file not found ({self.path}); check the path, or start the "
                "downloader first"
            )
        if not self.path.is_file():
            raise DataError(f"{self.label}: {self.path} is not a regular file; give a bar file")
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries={retries!r} must be an integer >= 0, e.g. 5")
        self.on_refused = on_refused
        self.on_gap = on_gap
        self.retries = retries
        #: the most recent one-line reports (refused rows, gaps), oldest first
        self.notices: deque[str] = deque(maxlen=100)
        self._counts = {"refused": 0, "duplicates": 0, "gaps": 0}
        self._quiet = False  # while resume re-reads the processed part
        self._noticed = 0  # reports in this poll
        self._failures = 0
        self._seen: tuple[int, int] | None = None  # (size, mtime_ns) at the last read
        # the accepted bars, in parts (merged like a binary counter: O(log n) parts)
        self._parts: list[pd.DataFrame] = []
        self._ends = array("q")  # per accepted bar: CSV offset after its line / Parquet rows
        self._accepted = 0
        self._columns: list[str] | None = None
        self._anchor: bytes | pd.DataFrame | None = None  # the first accepted row, raw
        self._dropped: tuple[str, ...] = ()
        self._last: pd.Timestamp | None = None
        self._last_values: np.ndarray | None = None
        self._spacings = np.empty(0, dtype=np.int64)
        self._refused_run = 0
        self._units_read = 0  # data rows consumed (accepted, duplicate or refused)
        # CSV reading position
        self._header: bytes | None = None
        self._offset = 0  # bytes consumed: complete lines only
        self._lines = 0  # lines consumed
        self._last_line: tuple[int, bytes] | None = None  # (start, bytes) of the last line
        # Parquet reading position
        self._rows = 0  # raw rows consumed
        self._raw_hashes = b""  # per-row hashes of the consumed raw rows
        self._raw_columns: list[str] | None = None
        # processed prefix and its hash
        self._processed = 0
        self._hasher: Any = None
        self._checkpoints: dict[int, str] = {}

    def __repr__(self) -> str:
        return (
            f"FollowedFile({str(self.path)!r}, name={self.name!r}, accepted={self._accepted}, "
            f"processed={self._processed})"
        )

    # ----------------------------------------------------------------- public reading API

    def poll(self) -> pd.DataFrame:
        """The bars accepted since the previous poll (possibly none).

        Returns:
            pd.DataFrame: as :func:`~metabt.data.ohlcv.load_ohlcv` returns (columns open,
            high, low, close, volume, then the numeric extra columns, all float64; a
            tz-naive DatetimeIndex named ``date``, ascending, each time after every bar
            delivered before), with no row when nothing new is complete and valid.

        Raises:
            DataError: the header is unusable, the file grew past a size limit, it stayed
                unreadable for more than ``retries`` polls, or
                :data:`MAX_REFUSED_IN_A_ROW` rows were refused in a row.
            HistoryChangedError: the part already read changed (the file was rewritten or
                truncated) and stayed so for more than ``retries`` polls.
        """
        before = self._accepted
        try:
            if self.format == "csv":
                self._read_csv(None)
            else:
                self._read_parquet(None)
        finally:
            self._sum_up()
        return self._slice(before, self._accepted)

    @property
    def history(self) -> pd.DataFrame:
        """All bars accepted so far (a copy), as :meth:`poll` returns them."""
        return self._slice(0, self._accepted).copy()

    @property
    def accepted(self) -> int:
        """Bars accepted so far."""
        return self._accepted

    @property
    def processed(self) -> int:
        """Bars marked processed (the first ``processed`` accepted bars)."""
        return self._processed

    @property
    def last(self) -> pd.Timestamp | None:
        """The time of the last accepted bar (None before the first)."""
        return self._last

    @property
    def last_processed(self) -> pd.Timestamp | None:
        """The time of the last processed bar (None before the first)."""
        if self._processed == 0:
            return None
        part, row = self._locate(self._processed - 1)
        return pd.Timestamp(self._parts[part].index[row])

    @property
    def counts(self) -> dict[str, int]:
        """Rows read so far: ``accepted``, ``refused``, ``duplicates`` (ignored) and ``gaps``."""
        return {"accepted": self._accepted, **self._counts}

    def mark_processed(self, until: pd.Timestamp | str) -> int:
        """Mark every accepted bar at or before ``until`` processed.

        The processed bars are the ones :meth:`state` describes and :meth:`resume` checks;
        bars accepted later than ``until`` stay unprocessed (after a restart they are
        delivered again). Marking never goes back: an earlier ``until`` than the last one
        changes nothing.

        Args:
            until (pd.Timestamp | str): a bar time (e.g. the last bar the strategy handled
                and whose state was saved).

        Returns:
            int: the number of processed bars.
        """
        count = self._count_until(_naive(until))
        if count > self._processed:
            self._hash(self._processed, count)
            self._processed = count
        return self._processed

    def state(self) -> dict[str, Any]:
        """What :meth:`resume` needs after a restart, as a JSON-serialisable dict.

        Returns:
            dict: ``version`` (1), ``path`` (str), ``name``, ``format`` ("csv" or
            "parquet"), ``position`` (CSV: the byte offset after the last processed bar's
            line; Parquet: the rows of the file read up to that bar), ``processed`` (bars),
            ``last`` (ISO time of the last processed bar, or None), ``columns``,
            ``sha256`` (hex digest of the processed bars, see the class docstring, or None
            before the first), ``checkpoints`` (``[count, 16 hex digits]`` of the digest
            after the first 1, 2, 4, 8, ... bars: they locate the first changed bar), and
            ``counts`` (accepted, refused, duplicates, gaps so far; for information).
        """
        position = int(self._ends[self._processed - 1]) if self._processed else 0
        last = self.last_processed
        return {
            "version": _STATE_VERSION,
            "path": str(self.path),
            "name": self.name,
            "format": self.format,
            "position": position,
            "processed": self._processed,
            "last": None if last is None else last.isoformat(),
            "columns": list(self._columns) if self._columns is not None else None,
            "sha256": self._hasher.hexdigest() if self._processed else None,
            "checkpoints": [[n, d] for n, d in sorted(self._checkpoints.items())],
            "counts": self.counts,
        }

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike[str],
        state: Mapping[str, Any],
        name: str | None = None,
        *,
        on_refused: Report | None = None,
        on_gap: Report | None = None,
        retries: int = 5,
    ) -> FollowedFile:
        """Re-open a followed file after a restart, checking the bars already processed.

        The file is read up to the saved position (without reports: they were made before
        the restart); the bars accepted there must be the saved count, with the saved
        columns and SHA-256. Those bars are the processed :attr:`history`; the next
        :meth:`poll` delivers the bars after them.

        Args:
            path (str | os.PathLike): the file (it may have moved since the state was saved).
            state (Mapping): a dict from :meth:`state` (e.g. read back from JSON).
            name, on_refused, on_gap, retries: as for the constructor.

        Returns:
            FollowedFile: positioned after the last processed bar.

        Raises:
            DataError: ``state`` is not such a dict, or is for another format; the file
                cannot be read.
            HistoryChangedError: the processed bars changed (the file was rewritten, e.g.
                adjusted prices after a split or dividend, or truncated); the message
                names the first changed bar when the checkpoints locate it, and the fix.
        """
        follower = cls(path, name, on_refused=on_refused, on_gap=on_gap, retries=retries)
        saved = _check_state(state, follower)
        follower._quiet = True
        try:
            if follower.format == "csv":
                follower._read_csv(saved["position"])
            else:
                follower._read_parquet(saved["position"])
        finally:
            follower._quiet = False
        follower._verify(saved)
        return follower

    # ------------------------------------------------------------------------ CSV reading

    def _read_csv(self, limit: int | None) -> None:
        """Consume the complete lines after the offset (up to byte ``limit`` if given)."""
        try:
            stat = self.path.stat()
        except OSError as exc:
            self._failed(exc, fatal=limit is not None)
            return
        size = stat.st_size
        if size < self._offset:
            self._differs(f"it is now {size:,} bytes, shorter than the {self._offset:,} read")
            return
        if limit is not None and size < limit:
            raise self._changed(
                f"it is {size:,} bytes, shorter than the {limit:,} processed before the restart"
            )
        if limit is None and self._seen == (size, stat.st_mtime_ns):
            return
        cap = _csv_limit()
        if size > cap:
            raise DataError(
                f"{self.label}: {size:,} bytes on disk; metabt reads at most {cap:,} bytes of "
                "CSV; start a new file (e.g. one per year), or raise the limit with "
                "METABT_MAX_CSV_BYTES"
            )
        end = size if limit is None else limit
        try:
            with open(self.path, "rb") as handle:
                if not self._same_last_line(handle):
                    self._differs(f"line {self._lines} (read before) is now different")
                    return
                while self._offset < end:
                    handle.seek(self._offset)
                    want = min(_BLOCK, end - self._offset)
                    data = handle.read(want)
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        if len(data) >= _BLOCK:
                            raise DataError(
                                f"{self.label}: line {self._lines + 1} is longer than "
                                f"{_BLOCK:,} bytes; not a bar file"
                            )
                        break  # a half-written line: wait for its line break
                    self._consume(data[: cut + 1])
        except OSError as exc:
            self._failed(exc, fatal=limit is not None)
            return
        self._failures = 0
        if limit is None:
            self._seen = (size, stat.st_mtime_ns)

    def _same_last_line(self, handle: Any) -> bool:
        """Whether the last line read is still in the file, unchanged."""
        if self._last_line is None:
            return True
        start, line = self._last_line
        handle.seek(start)
        return bool(handle.read(len(line)) == line)

    def _consume(self, data: bytes) -> None:
        """Validate the complete lines ``data`` that start at the offset."""
        base, first = self._offset, self._lines + 1
        if self._header is None:
            start = 0  # the header is the first line that is not blank
            while start < len(data):
                end = data.find(b"\n", start) + 1
                if data[start:end].strip():
                    break
                start, first = end, first + 1
            if start == len(data):
                self._advance(data)
                return
            header = data[start : data.find(b"\n", start) + 1]
            try:
                empty = pd.read_csv(io.BytesIO(header), index_col=False, nrows=0)
            except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise DataError(
                    f"{self.label}: the header line is not readable as CSV "
                    f"({_one_line(str(exc))}); write a comma-separated header line (date, "
                    "open, high, low, close, volume) first"
                ) from exc
            self._check_header(empty)
            self._header = header
            cut = start + len(header)
            base, first = base + cut, first + 1
            self._advance(data[:cut])
            data = data[cut:]
        units = _Csv(self._header, data, base, first, self.label)
        self._check_rows(len(units))
        if len(units):
            self._take(units, 0, len(units))
        self._advance(data)

    def _advance(self, data: bytes) -> None:
        if not data:
            return
        count = data.count(b"\n")
        start = data.rfind(b"\n", 0, len(data) - 1) + 1
        self._last_line = (self._offset + start, data[start:])
        self._offset += len(data)
        self._lines += count

    # -------------------------------------------------------------------- Parquet reading

    def _read_parquet(self, limit: int | None) -> None:
        """Read the whole file; consume its rows after those read (up to ``limit`` rows)."""
        try:
            stat = self.path.stat()
        except OSError as exc:
            self._failed(exc, fatal=limit is not None)
            return
        if limit is None and self._seen == (stat.st_size, stat.st_mtime_ns):
            return
        try:
            raw = _read_parquet(self.path, self.label)
        except DataError as exc:
            cause = exc.__cause__
            if cause is None or isinstance(cause, ImportError) or limit is not None:
                raise  # too many rows, no pyarrow, or unreadable at resume: not transient
            self._failed(exc)
            return
        if limit is None:
            self._seen = (stat.st_size, stat.st_mtime_ns)
        columns = [str(c) for c in raw.columns]
        hashes = _raw_hashes(raw)
        if len(raw) < self._rows:
            self._differs(f"it now holds {len(raw):,} rows, fewer than the {self._rows:,} read")
            return
        if self._raw_columns is not None and columns != self._raw_columns:
            self._differs(f"its columns changed from {self._raw_columns} to {columns}")
            return
        if hashes[: 8 * self._rows] != self._raw_hashes:
            now = np.frombuffer(hashes[: 8 * self._rows], dtype="<u8")
            before = np.frombuffer(self._raw_hashes, dtype="<u8")
            first = int(np.flatnonzero(now != before)[0])
            self._differs(f"row {first} (read before) is now different")
            return
        if self._raw_columns is None:
            self._check_header(raw.iloc[:0])
            self._raw_columns = columns
        self._failures = 0
        end = len(raw) if limit is None else limit
        if end > len(raw):
            raise self._changed(
                f"it holds {len(raw):,} rows, fewer than the {end:,} processed before the restart"
            )
        while self._rows < end:
            n = min(_PARQUET_BLOCK, end - self._rows)
            units = _Rows(raw, self._rows, n)
            self._check_rows(n)
            self._take(units, 0, n)
            self._rows += n
        self._raw_hashes = hashes[: 8 * self._rows]

    # ------------------------------------------------------------------------- validation

    def _check_header(self, empty: pd.DataFrame) -> None:
        """DataError unless load_ohlcv finds every needed column in a frame with no row."""
        try:
            load_ohlcv(empty, name=self.label)
        except DataError as exc:
            if str(exc) != self.label + _NO_BARS:
                raise
            return
        raise AssertionError("load_ohlcv accepted a frame without bars")  # pragma: no cover

    def _check_rows(self, new: int) -> None:
        limit = _row_limit()
        if self._units_read + new > limit:
            raise _too_many_rows(self.label, f"{self._units_read + new:,}", limit)
        self._units_read += new

    def _take(self, units: _Units, lo: int, hi: int) -> None:
        """Accept units ``lo:hi`` if they validate together; else halve, down to single
        rows, each refused with load_ohlcv's message (so each bad row is found in
        O(log n) validations, and a clean block costs one).

        Rows are validated after the file's first accepted row (the anchor, dropped
        afterwards), so that load_ohlcv reads them as it reads the whole file: dates in the
        format of the file's first date, Unix times by the range of all of them, an extra
        column kept or dropped as for the whole file.
        """
        try:
            bars = self._validate(units, lo, hi, anchored=True)
        except DataError as exc:
            if hi - lo > 1:
                # split at the row load_ohlcv named (the rows before it are likely clean:
                # one validation), then halve the rest: O(n log n) at worst
                bad = self._hint(exc, hi - lo)
                if bad is None:
                    mid = (lo + hi) // 2
                    self._take(units, lo, mid)
                    self._take(units, mid, hi)
                    return
                rest = lo + bad + 1
                mid = (rest + hi) // 2
                for a, b in ((lo, lo + bad), (lo + bad, rest), (rest, mid), (mid, hi)):
                    if a < b:
                        self._take(units, a, b)
                return
            if self._anchor is None:
                self._refuse_invalid(units, lo, exc, 0)
                return
            try:  # alone: a row at or before the anchor's time is refused as late
                bars = self._validate(units, lo, hi, anchored=False)
            except DataError as alone:
                self._refuse_invalid(units, lo, alone, 0)
                return
            if self._last is None or bars.index[0] > self._last:
                self._refuse_invalid(units, lo, exc, 1)
                return
        self._accept(units, lo, bars)

    def _hint(self, exc: DataError, n: int) -> int | None:
        """The unit (0 to n - 1) of the row a load_ohlcv message names first, if any."""
        if not getattr(exc, "hint", False):
            return None
        found = _ROW.search(str(exc))
        if found is None:
            return None
        bad = int(found.group(1)) - (self._anchor is not None)
        return bad if 0 <= bad < n else None

    def _validate(self, units: _Units, lo: int, hi: int, *, anchored: bool) -> pd.DataFrame:
        anchor = self._anchor if anchored else None
        first = 0 if anchor is None else 1  # the row of unit lo in load_ohlcv's messages
        raw = units.raw(lo, hi, anchor)
        try:
            bars = load_ohlcv(raw, name=self.label).iloc[first:]
        except DataError as exc:
            exc.hint = True  # type: ignore[attr-defined]  # its row numbers are the frame's
            raise
        if len(bars) != hi - lo:  # pragma: no cover - pandas read a line as two, or none
            raise DataError(f"{self.label}: {hi - lo} lines gave {len(bars)} rows at row {first}")
        if self._columns is None:
            return bars
        dropped = bars.attrs.get("metabt.dropped", ())
        # a text column of the file with no value in these rows reads as numbers (NaN)
        empty = [c for c in self._dropped if c in bars.columns and bars[c].isna().all()]
        if empty:
            bars = bars.drop(columns=empty)
            dropped = tuple(c for c in self._dropped if c in dropped or c in empty)
        if list(bars.columns) != self._columns or tuple(dropped) != self._dropped:
            text = [c for c in self._columns if c not in bars.columns]
            numbers = [c for c in bars.columns if c not in self._columns]
            at = f"row {first} ({_when(bars.index[0])})"
            if text:
                names = {_LINE.sub("_", str(c).strip().lower()): c for c in raw.columns}
                shown = f" {str(raw[names[text[0]]].iloc[first])!r}" if text[0] in names else ""
                problem = f"extra column {text[0]!r} holds text{shown} at {at}"
                fix = "a number (or nothing, for NaN), as in the rows before"
            else:
                problem = f"extra column {(numbers or ['?'])[0]!r} holds a number at {at}"
                fix = "text, as in the rows before (the column is dropped)"
            raise DataError(f"{self.label}: {problem}; it must hold {fix}; fix or drop the row")
        return bars

    def _accept(self, units: _Units, lo: int, bars: pd.DataFrame) -> None:
        """Append validated bars after the checks against the last accepted bar."""
        if self._columns is None:
            self._columns = list(bars.columns)
            self._dropped = tuple(bars.attrs.get("metabt.dropped", ()))
            self._anchor = units.anchor(lo)
        stale = 0
        if self._last is not None:
            stale = int(np.searchsorted(bars.index.asi8, self._last.value, side="right"))
        for j in range(stale):
            ts = bars.index[j]
            values = bars.iloc[j].to_numpy(dtype=np.float64)
            at = f"{units.where(lo + j)} ({_when(ts)})"
            assert self._last_values is not None
            if ts == self._last and np.array_equal(values, self._last_values, equal_nan=True):
                self._counts["duplicates"] += 1
                continue
            if ts == self._last:
                differ = [
                    f"{c} {_num(a)} (was {_num(b)})"
                    for c, a, b in zip(self._columns or [], values, self._last_values)
                    if not (a == b or (math.isnan(a) and math.isnan(b)))
                ]
                problem = (
                    f"a second bar at the time of the last accepted bar, with other values: "
                    f"{', '.join(differ[:3])}; the first one is kept (a correction of a bar "
                    "already read is not applied)"
                )
            else:
                problem = (
                    f"earlier than the last accepted bar ({_when(self._last)}); a late or "
                    "out-of-order bar is refused (append bars in time order)"
                )
            self._refuse(f"{self.label}: {at}: {problem}")
        if stale == len(bars):
            return
        if stale:
            bars = bars.iloc[stale:]
        self._gaps(units, lo + stale, bars)
        self._append(bars, units.ends_of(lo + stale, lo + stale + len(bars)))

    def _append(self, bars: pd.DataFrame, ends: np.ndarray) -> None:
        bars.attrs = {"metabt.validated": True, "metabt.dropped": self._dropped}
        self._parts.append(bars)
        while len(self._parts) > 1 and len(self._parts[-2]) <= len(self._parts[-1]):
            tail = pd.concat(self._parts[-2:])
            tail.attrs = bars.attrs
            self._parts[-2:] = [tail]
        self._ends.frombytes(ends.astype(np.int64).tobytes())
        self._accepted += len(bars)
        self._last = pd.Timestamp(bars.index[-1])
        self._last_values = bars.iloc[-1].to_numpy(dtype=np.float64)
        self._refused_run = 0

    def _gaps(self, units: _Units, lo: int, bars: pd.DataFrame) -> None:
        """Report spacings much longer than the usual one (see the class docstring)."""
        times = bars.index.asi8
        if self._last is not None:
            times = np.concatenate([[self._last.value], times])
        new = np.diff(times)
        if not len(new):
            return
        ref = np.concatenate([self._spacings, new])[-_GAP_WINDOW:]
        self._spacings = ref
        if len(ref) < _GAP_MIN:
            return
        usual = float(np.median(ref))
        threshold = GAP_FACTOR * usual
        breaks = ref[ref > threshold]
        if len(breaks) >= 2 and len(breaks) * 10 * _DAY_NS >= float(ref.sum()):
            threshold = max(threshold, 2.0 * float(np.quantile(breaks, 0.9)))
        shift = 0 if self._last is not None else 1  # spacing k ends at bar k (+1 if no bar before)
        for k in np.flatnonzero(new > threshold):
            j = int(k) + shift
            ts = bars.index[j]
            prev = pd.Timestamp(times[k])
            self._counts["gaps"] += 1
            self._notice(
                f"{self.label}: {units.where(lo + j)} ({_when(ts)}): a gap of "
                f"{_duration(new[k])} since the bar of {_when(prev)}, more than "
                f"{GAP_FACTOR:g} times the usual spacing of {_duration(usual)}; "
                "accepted (check that the downloader missed no bars)",
                self.on_gap or self.on_refused,
            )

    def _refuse_invalid(self, units: _Units, i: int, exc: DataError, row: int) -> None:
        """Refuse unit ``i`` with load_ohlcv's message, its ``row`` named by the file's line
        (or row); a message naming no row is about a column: DataError before any bar."""
        text = _one_line(str(exc))
        where = units.where(i)
        pattern = re.compile(rf"\brow {row}\b")
        if pattern.search(text) is None:
            if self._accepted == 0:
                raise DataError(text) from exc
            text = text.replace(f"{self.label}: ", f"{self.label}: {where}: ", 1)
        else:
            text = pattern.sub(where, text)
        self._refuse(text)

    def _refuse(self, text: str) -> None:
        self._counts["refused"] += 1
        self._refused_run += 1
        self._notice(text, self.on_refused)
        if self._refused_run >= MAX_REFUSED_IN_A_ROW:
            raise DataError(
                f"{self.label}: {self._refused_run:,} rows refused in a row (the last: "
                f"{text}); the file is not bars metabt can follow: fix the downloader's output"
            )

    def _notice(self, text: str, report: Report | None) -> None:
        if self._quiet:
            return
        self._noticed += 1
        if self._noticed > MAX_NOTICES_PER_POLL:
            return
        self.notices.append(text)
        if report is not None:
            report(text)

    def _sum_up(self) -> None:
        """After a poll: one line for the reports beyond :data:`MAX_NOTICES_PER_POLL`."""
        more, self._noticed = self._noticed - MAX_NOTICES_PER_POLL, 0
        if more > 0:
            text = (
                f"{self.label}: {more:,} more refused rows or gaps in this read, not shown one "
                f"by one (counts so far: {self.counts})"
            )
            self.notices.append(text)
            if self.on_refused is not None:
                self.on_refused(text)

    def _failed(self, exc: Exception, *, fatal: bool = False) -> None:
        """Count a poll that could not read the file; DataError after ``retries`` in a row
        (or at once when ``fatal``: at resume)."""
        self._failures += 1
        if fatal or self._failures > self.retries:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DataError(
                f"{self.label}: could not be read in {self._failures} polls in a row "
                f"({_one_line(str(reason))}); check that the file exists and that the "
                "downloader writes it completely (write to a temporary file, then rename it)"
            ) from exc

    def _differs(self, detail: str) -> None:
        """The part already read differs: maybe a downloader rewriting the file right now,
        so retried like an unreadable file; HistoryChangedError after ``retries`` polls."""
        self._failures += 1
        self._seen = None
        if self._failures > self.retries:
            raise self._changed(f"{detail} (in {self._failures} polls in a row)")

    def _changed(self, detail: str) -> HistoryChangedError:
        return HistoryChangedError(
            f"{self.label}: the bars already read have changed: {detail}; a rewritten file "
            "(e.g. prices adjusted after a split or dividend) cannot continue this run; "
            "start a new state folder, or restore the file as it was"
        )

    # ------------------------------------------------------------- accepted bars, hashing

    def _locate(self, k: int) -> tuple[int, int]:
        """(part, row in part) of accepted bar ``k``."""
        start = 0
        for i, part in enumerate(self._parts):
            if k < start + len(part):
                return i, k - start
            start += len(part)
        raise IndexError(k)

    def _slice(self, lo: int, hi: int) -> pd.DataFrame:
        """Accepted bars ``lo:hi`` as one frame (an empty one with the columns if none)."""
        pieces = []
        start = 0
        for part in self._parts:
            stop = start + len(part)
            if stop > lo and start < hi:
                pieces.append(part.iloc[max(lo - start, 0) : min(hi, stop) - start])
            start = stop
        if not pieces:
            columns = self._columns or list(("open", "high", "low", "close", "volume"))
            out = pd.DataFrame(
                {c: np.empty(0, dtype=np.float64) for c in columns},
                index=pd.DatetimeIndex([], dtype="datetime64[ns]", name="date"),
            )
        else:
            out = pieces[0] if len(pieces) == 1 else pd.concat(pieces)
        out.attrs = {"metabt.validated": True, "metabt.dropped": self._dropped}
        return out

    def _count_until(self, when: pd.Timestamp) -> int:
        count = 0
        for part in self._parts:
            n = int(np.searchsorted(part.index.asi8, when.value, side="right"))
            count += n
            if n < len(part):
                break
        return count

    def _hash(self, lo: int, hi: int) -> None:
        """Feed accepted bars ``lo:hi`` to the processed digest, noting checkpoints."""
        if self._hasher is None:
            self._hasher = hashlib.sha256(
                b"metabt.follow v1\n" + ",".join(self._columns or []).encode() + b"\n"
            )
        cur = lo
        while cur < hi:
            nxt = min(hi, 1 << cur.bit_length())  # the next power of two above cur
            self._hasher.update(_rows_bytes(self._slice(cur, nxt)))
            if nxt & (nxt - 1) == 0:
                self._checkpoints[nxt] = self._hasher.hexdigest()[:16]
            cur = nxt

    def _verify(self, saved: Mapping[str, Any]) -> None:
        """HistoryChangedError unless the bars re-read up to the saved position are the
        processed bars saved; the checkpoints locate the first changed bar."""
        count = saved["processed"]
        if count and saved["columns"] != self._columns:
            raise self._changed(f"its columns are now {self._columns}, not {saved['columns']}")
        common = min(count, self._accepted)
        self._hash(0, common)
        self._processed = common
        same = count == 0 or self._hasher.hexdigest() == saved["sha256"]
        if self._accepted == count and same:
            return  # (a CSV file whose lines moved but whose bars did not goes on)
        low, high, found = 0, count - 1, False  # the first changed bar is in low..high
        for n, digest in saved["checkpoints"]:
            if n > common:
                break
            if self._checkpoints.get(n) != digest:
                high, found = n - 1, True
                break
            low = n
        details = []
        if found or (common == count and not same):
            where = (
                self._bar(low) if low == high else f"between {self._bar(low)} and {self._bar(high)}"
            )
            details.append(f"the first changed bar is {where}")
        if self._accepted != count:
            unit = "byte" if self.format == "csv" else "row"
            details.append(
                f"up to {unit} {saved['position']:,}, where the last processed bar ended, it "
                f"now gives {self._accepted:,} bars, not the {count:,} processed"
            )
        raise self._changed("; ".join(details))

    def _bar(self, i: int) -> str:
        """``bar i (date)``, the date as the file gives it now (if it has that bar)."""
        if i >= self._accepted:
            return f"bar {i}"
        return f"bar {i} ({_when(self._slice(i, i + 1).index[0])})"


def _num(value: float) -> str:
    return repr(float(value))


def _check_state(state: Any, follower: FollowedFile) -> dict[str, Any]:
    """The fields of a saved state, checked; DataError naming what is wrong."""
    label = follower.label
    fix = "give the state saved by FollowedFile.state() for this file, or start a new state folder"
    if not isinstance(state, Mapping):
        raise DataError(f"{label}: the saved state is a {type(state).__name__}, not a dict; {fix}")
    if state.get("version") != _STATE_VERSION:
        raise DataError(
            f"{label}: the saved state has version {state.get('version')!r}, not "
            f"{_STATE_VERSION}; {fix}"
        )
    kinds = {
        "format": str,
        "position": int,
        "processed": int,
        "checkpoints": list,
    }
    for key, kind in kinds.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{label}: the saved state's {key!r} is {value!r}; {fix}")
    if state["position"] < 0 or state["processed"] < 0:
        raise DataError(f"{label}: the saved state has a negative position or count; {fix}")
    if state["format"] != follower.format:
        raise DataError(
            f"{label}: the saved state is of a {state['format']} file, this is a "
            f"{follower.format} file; {fix}"
        )
    if state["processed"] and not (
        isinstance(state.get("sha256"), str) and isinstance(state.get("columns"), list)
    ):
        raise DataError(f"{label}: the saved state has no sha256 or columns; {fix}")
    checkpoints = state["checkpoints"]
    if len(checkpoints) > 64 or not all(
        isinstance(c, (list, tuple))
        and len(c) == 2
        and isinstance(c[0], int)
        and isinstance(c[1], str)
        for c in checkpoints
    ):
        raise DataError(
            f"{label}: the saved state's checkpoints are not [count, digest] pairs; {fix}"
        )
    return dict(state)


def _naive(value: pd.Timestamp | str) -> pd.Timestamp:
    when = pd.Timestamp(value)
    return when.tz_localize(None) if when.tz is not None else when
