"""Load and validate OHLCV bars (CSV, Parquet or DataFrames, any bar frequency).

Feeds of validated bars for backtrader are built by :mod:`metabt.data.feeds`.
"""

from __future__ import annotations

import keyword
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd

from metabt.errors import DataError

if TYPE_CHECKING:
    pass

__all__ = [
    "COLUMNS",
    "MAX_CSV_BYTES",
    "MAX_ROWS",
    "MAX_VOLUME",
    "PRICE_RANGE",
    "frames_sha256",
    "is_validated",
    "load_many",
    "load_ohlcv",
    "ohlcv_arrays",
    "sample_data_dir",
    "sample_files",
]

COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
"""The columns of a validated OHLCV frame, in order."""

_DATE_NAMES = ("date", "datetime", "time", "timestamp")
_ENV_SAMPLE_DATA = "METABT_SAMPLE_DATA"
_VALIDATED = "metabt.validated"  # frame.attrs key set by load_ohlcv
_DROPPED = "metabt.dropped"  # frame.attrs key: the non-numeric extra columns load_ohlcv dropped
_PARQUET = (".parquet", ".pq")
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".tar")

_Source: TypeAlias = str | os.PathLike[str] | pd.DataFrame


def frames_sha256(frames: Mapping[str, pd.DataFrame]) -> str:
    """A SHA-256 of named frames' content: names, values and index, in name order.

    The one data digest of a run (a sweep's folder, a resumable unit's key, a trial
    ledger's test window): equal frames give equal digests, any changed value, date or
    name another.

    Args:
        frames: name -> DataFrame.

    Returns:
        The hex digest (64 characters).
    """
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(frames):
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(frames[name], index=True).to_numpy().tobytes())
    return digest.hexdigest()


def _label(source: _Source, name: str | None) -> str:
    """The name of ``source`` used in error messages."""
    if name:
        return name
    if isinstance(source, pd.DataFrame):
        return "DataFrame"
    return Path(source).name


def _where(index: pd.Index, pos: int, line_offset: int | None) -> str:
    """Describe row ``pos``: its CSV line number (for files) or row number, and its date."""
    date = index[pos] if isinstance(index, pd.DatetimeIndex) else None
    when = (
        "no date"
        if date is None or pd.isna(date)
        else str(date.date() if _midnight(date) else date)
    )
    if line_offset is None:
        return f"row {pos} ({when})"
    return f"line {pos + line_offset} ({when})"


def _show(value: Any) -> str:
    """A cell value for a message: strings quoted, numbers plain."""
    return repr(value) if isinstance(value, str) else str(value)


def _num(value: float) -> str:
    """A number in full precision (``repr``), so two values that differ never look equal."""
    return repr(float(value))


def _midnight(ts: pd.Timestamp) -> bool:
    return ts == ts.normalize()


#: The largest CSV metabt parses, in bytes after decompression (512 MB: about 8 million
#: one-minute bars); the environment variable ``METABT_MAX_CSV_BYTES`` overrides it.
MAX_CSV_BYTES = 512 * 1024 * 1024
_CODECS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma", ".zip": "zip"}


#: The most bars (data rows) metabt reads from one CSV or Parquet file: 5 million, about
#: ten years of one-minute bars of a market open 24/5 (a validated frame of that length
#: takes about 240 MB); the environment variable ``METABT_MAX_ROWS`` overrides it.
MAX_ROWS = 5_000_000


#: The prices metabt accepts, in the data's currency: from 1e-30 to 1e30, so that sums,
#: squares and products of prices, volumes, cash and position sizes over millions of bars
#: stay finite in float64 (and a price fits a float32 feature); prices of 1e306 made a
#: backtest's sums overflow.
PRICE_RANGE = (1e-30, 1e30)
#: The largest volume (units per bar) metabt accepts, for the same reason.
MAX_VOLUME = 1e30


def _env_limit(name: str, default: int, unit: str) -> int:
    """The positive integer in environment variable ``name``, or ``default`` if unset."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(
            f"{name}={raw!r} must be a positive integer ({unit}); unset it for "
            f"the default {default:,}"
        )
    return value


def _csv_limit() -> int:
    return _env_limit("METABT_MAX_CSV_BYTES", MAX_CSV_BYTES, "bytes")


def _row_limit() -> int:
    return _env_limit("METABT_MAX_ROWS", MAX_ROWS, "rows")


def _too_many_rows(label: str, rows: int | str, limit: int) -> DataError:
    return DataError(
        f"{label}: {rows} rows (bars), more than the limit of {limit:,}; split the file or "
        "trim its history, or raise the limit with METABT_MAX_ROWS"
    )


def _open_text(path: Path) -> Any:
    """A binary stream of a CSV file's decompressed bytes (gzip, bz2, xz, zip, or plain)."""
    import bz2
    import gzip
    import lzma
    import zipfile

    kind = _CODECS.get(path.suffix.lower())
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "lzma":
        return lzma.open(path, "rb")
    if kind == "zip":
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
        if len(names) != 1:
            archive.close()
            raise OSError(f"a zip file must hold exactly one CSV file, it holds {len(names)}")
        return archive.open(names[0])
    return open(path, "rb")


def _count_lines(path: Path) -> int:
    """Line breaks in a (possibly compressed) text file, read in chunks."""
    count = 0
    last = b"\n"
    with _open_text(path) as stream:
        while chunk := stream.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")  # a last line without a line break


def _check_csv_size(path: Path, label: str) -> None:
    """Refuse a CSV larger than the limit, counting a compressed file's bytes as they
    decompress (a few megabytes of gzip can hold gigabytes), without keeping them."""
    limit = _csv_limit()
    fix = (
        f"metabt reads at most {limit:,} bytes of CSV; split the file, or raise the limit "
        "with METABT_MAX_CSV_BYTES"
    )
    if path.stat().st_size > limit:
        raise DataError(f"{label}: {path.stat().st_size:,} bytes on disk; {fix}")
    kind = _CODECS.get(path.suffix.lower())
    if kind is None:
        return  # plain text (its size is its size), or a format pandas opens itself
    import lzma
    import zipfile

    total = 0
    try:
        with _open_text(path) as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise DataError(f"{label}: it decompresses to more than {limit:,} bytes; {fix}")
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise DataError(f"{label}: not a readable {kind} file ({exc}); re-create it") from exc


def _read(source: _Source, label: str) -> tuple[pd.DataFrame, int | None]:
    """Read ``source`` into a fresh DataFrame; also return the CSV line of data row 0 (or None)."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), None
    path = Path(source)
    if not path.exists():
        raise DataError(f"{label}: file not found ({path}); check the path")
    if not path.is_file():
        raise DataError(f"{label}: {path} is not a file; pass a CSV or Parquet file")
    if path.suffix.lower() in _PARQUET:
        return _read_parquet(path, label), None
    _check_csv_size(path, label)
    rows = _row_limit()
    try:
        with warnings.catch_warnings():
            # index_col=False: a row with more fields than the header must not silently
            # become the index; pandas warns (ParserWarning) or raises (ParserError) instead.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # at most one row past the limit is parsed: a longer file is refused
            # without holding its rows
            frame = pd.read_csv(path, index_col=False, nrows=rows + 1)
    except pd.errors.ParserWarning as exc:
        raise DataError(
            f"{label}: some rows have more fields than the header line; check the delimiter "
            "(comma) and that every row has one value per column"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"{label}: the file is empty; it needs a header line (date, open, high, low, close, "
            "volume) and one line per bar"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{label}: not a readable CSV file ({str(exc).strip()}); export it as a "
            "comma-separated file with a header line"
        ) from exc
    if len(frame) > rows:
        del frame
        raise _too_many_rows(label, f"{max(_count_lines(path) - 1, rows + 1):,}", rows)
    return frame, 2  # line 1 is the header, so data row 0 is on line 2


def _read_parquet(path: Path, label: str) -> pd.DataFrame:
    """Read a Parquet file with pyarrow; DataError if pyarrow is missing or the file is bad."""
    try:
        import pyarrow
    except ImportError as exc:
        raise DataError(
            f"{label}: reading Parquet files needs pyarrow, which is not installed; "
            "run `pip install pyarrow` (or save the bars as CSV)"
        ) from exc
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as file:  # the footer only: no row is read yet
            rows = file.metadata.num_rows
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise _bad_parquet(label, exc) from exc
    limit = _row_limit()
    if rows > limit:
        raise _too_many_rows(label, f"{rows:,}", limit)
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise _bad_parquet(label, exc) from exc


def _bad_parquet(label: str, exc: Exception) -> DataError:
    return DataError(
        f"{label}: not a readable Parquet file ({str(exc).strip()}); write it with "
        "DataFrame.to_parquet(path)"
    )


def _stem(path: Path) -> str:
    """A file's asset name: ``AAPL`` for AAPL.csv, AAPL.csv.gz and AAPL.parquet."""
    name = path.name
    for suffix in _COMPRESSED:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(name).stem


def _parse_dates(raw: pd.Series, label: str, line_offset: int | None) -> pd.DatetimeIndex:
    """Parse a date column; DataError naming the first unreadable value and its row.

    Values with different UTC offsets (e.g. exported across a daylight-saving change) are
    accepted when every value is ISO 8601; each keeps its local wall-clock time.
    """
    values: pd.Series = raw
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        epoch = _epoch_unit(raw)
        if epoch is not None:  # Unix time, e.g. 1577923200 (s) or 1577923200000 (ms)
            return pd.DatetimeIndex(pd.to_datetime(raw, unit=epoch))
        # Integers such as 20100104 would otherwise be read as nanoseconds since 1970.
        try:
            values = raw.astype("Int64").astype("string")
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{label}: column '{raw.name}' holds numbers that are not dates; use ISO dates "
                "such as 2010-01-04 (or 20100104)"
            ) from exc
    try:
        with warnings.catch_warnings():  # pandas warns while it guesses a format
            warnings.simplefilter("ignore", UserWarning)
            return pd.DatetimeIndex(pd.to_datetime(values, errors="raise"))
    except (ValueError, TypeError, OverflowError) as exc:
        error: Exception = exc
    try:  # mixed UTC offsets: keep each value's wall-clock time
        pd.to_datetime(values, format="ISO8601", utc=True)
        return pd.DatetimeIndex(
            [pd.NaT if pd.isna(x) else pd.Timestamp(x).tz_localize(None) for x in values]
        )
    except (ValueError, TypeError, OverflowError):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        coerced = pd.to_datetime(values, errors="coerce")
    unreadable = (coerced.isna() & values.notna()).to_numpy()
    if unreadable.any():
        pos = int(np.flatnonzero(unreadable)[0])
        where = f"line {pos + line_offset}" if line_offset is not None else f"row {pos}"
        problem = (
            f"an unreadable date {_show(raw.iloc[pos])} at {where} (all dates are read in "
            f"the format of the first one, {_show(raw.iloc[0])})"
        )
    else:
        problem = f"dates that cannot be read together ({error})"
    raise DataError(
        f"{label}: column '{raw.name}' has {problem}; use one ISO format such as 2010-01-04 "
        "for every row"
    ) from error


def _epoch_unit(raw: pd.Series) -> str | None:
    """ "s" or "ms" when a numeric date column holds Unix times (2001-09-09 on), else None.

    Integers such as 20100104 (YYYYMMDD, 8 digits) stay dates: Unix seconds since
    2001-09-09 have 10 digits, milliseconds 13.
    """
    values = raw.dropna()
    if values.empty or not (values % 1 == 0).all():
        return None
    low, high = float(values.min()), float(values.max())
    if 1e9 <= low and high < 1e11:
        return "s"
    if 1e12 <= low and high < 1e14:
        return "ms"
    return None


def _check_columns(frame: pd.DataFrame, label: str) -> None:
    """DataError if two columns have the same normalised name."""
    seen = pd.Index(frame.columns)
    dup = sorted(set(seen[seen.duplicated()]))
    if dup:
        raise DataError(
            f"{label}: column name(s) {', '.join(map(repr, dup))} appear more than once "
            "(headers are case-insensitive); rename or drop the extra column"
        )


def load_ohlcv(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    min_bars: int = 1,
    name: str | None = None,
) -> pd.DataFrame:
    """Read and validate OHLCV bars of any frequency (daily, hourly, minute, ...).

    Column names are case-insensitive and stripped of surrounding whitespace. The dates
    come from a column named ``date``, ``datetime``, ``time`` or ``timestamp`` (the first
    found, any case), else from an unnamed first column (what ``DataFrame.to_csv()`` writes
    for a date index) or from the frame's (or Parquet file's) DatetimeIndex. Times of day
    are kept, so intraday bars load as they are. Compressed CSV files (``.csv.gz``,
    ``.csv.bz2``, ...) are read as they are; ``.parquet`` / ``.pq`` files need pyarrow.

    Extra columns (beyond the date and open, high, low, close, volume) are for user
    features and become extra lines of :func:`feed`:

    - numeric ones are kept after the OHLCV columns, as float64; NaN is allowed in them
      (features must handle it), an infinite value is a DataError;
    - their names are lower-cased, with runs of spaces, dots, hyphens and slashes turned
      into ``_`` (``Adj Close`` -> ``adj_close``), and must then be Python identifiers
      that do not start with ``_`` and are not keywords (they become backtrader line
      names); otherwise DataError asking to rename the column;
    - text columns (no value is a number, e.g. a ticker) are dropped, and their names
      recorded in ``frame.attrs["metabt.dropped"]`` (a tuple of str, empty if none); a
      column mixing numbers and text is a DataError naming the first text value.

    Args:
        source (str | os.PathLike | pd.DataFrame): a CSV file with a header line, a Parquet
            file, or a DataFrame. The input DataFrame is not modified.
        min_bars (int, default 1): the minimum number of bars (e.g. a strategy's warm-up);
            fewer raise DataError.
        name (str | None, default None): label used in error messages (default: the file
            name, or ``"DataFrame"``).

    Returns:
        pd.DataFrame: columns ``open, high, low, close, volume`` (float64; prices in the
        data's currency per share, volume in shares per bar), then the kept extra numeric
        columns in input order (float64), indexed by a tz-naive, ascending, unique
        ``DatetimeIndex`` named ``date`` (unit ns; bar times, e.g. the close of the bar). A
        tz-aware input keeps its local wall-clock time and drops the zone
        (``tz_localize(None)``).

    Raises:
        DataError: missing or empty file; pyarrow missing for a Parquet file; missing
            columns (which, and the columns found); non-numeric, NaN or infinite OHLCV
            values (column and first bad row); an infinite value, or text among numbers, in
            an extra column; an extra column name that cannot be a line name; unreadable,
            missing, duplicate or unsorted dates (which row); non-positive prices, or prices
            outside :data:`PRICE_RANGE` (1e-30 to 1e30); negative volume, or volume above
            :data:`MAX_VOLUME`; high below low; high below open/close or low above
            open/close (which row); fewer than ``min_bars`` bars; a CSV file larger than
            :data:`MAX_CSV_BYTES` (decompressed) or a file of more than :data:`MAX_ROWS`
            rows (5 million; ``METABT_MAX_ROWS`` overrides it). Every message names the
            file (or ``name`` / ``"DataFrame"``), the column or row (CSV line number and
            date), and the fix.

    Example:
        >>> frame = load_ohlcv(sample_data_dir() / "AAPL.csv", min_bars=252)
        >>> list(frame.columns)
        ['open', 'high', 'low', 'close', 'volume']
    """
    if not isinstance(source, (str, os.PathLike, pd.DataFrame)):
        raise DataError(
            f"cannot load data from a {type(source).__name__}; pass a CSV or Parquet path, or a "
            "DataFrame"
        )
    label = _label(source, name)
    frame, line_offset = _read(source, label)
    if len(frame.columns) == 0:
        raise DataError(f"{label}: no columns; it needs a date and columns {', '.join(COLUMNS)}")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    _check_columns(frame, label)

    if len(frame.columns) == 1:
        header = str(frame.columns[0])
        other = next((d for d in (";", "\t", "|") if d in header), None)
        if other is not None:
            shown = {"\t": "tab", ";": "semicolon", "|": "pipe"}[other]
            raise DataError(
                f"{label}: the header {header!r} looks {shown}-separated; metabt reads "
                "comma-separated files: check the delimiter, e.g. re-save it with "
                f"pandas.read_csv(path, sep={other!r}).to_csv(path, index=False)"
            )
    date_col = next((c for c in _DATE_NAMES if c in frame.columns), None)
    if date_col is None and str(frame.columns[0]) in ("", "unnamed: 0"):
        date_col = str(frame.columns[0])  # an unnamed first column: DataFrame.to_csv()'s index
    if date_col is not None:
        index = _parse_dates(frame[date_col], label, line_offset)
    elif isinstance(frame.index, pd.DatetimeIndex):
        index = frame.index
    elif str(frame.index.name).strip().lower() in _DATE_NAMES:  # e.g. an index of date strings
        index = _parse_dates(frame.index.to_series(), label, line_offset)
    else:
        raise DataError(
            f"{label}: no date column (looked for {', '.join(_DATE_NAMES)}, any case; found: "
            f"{', '.join(map(str, frame.columns)) or 'none'}) and no DatetimeIndex; add a 'date' "
            "column with ISO dates such as 2010-01-04"
        )
    if index.tz is not None:
        index = index.tz_localize(None)
    index = index.as_unit("ns").rename("date")

    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(
            f"{label}: missing column(s) {', '.join(missing)} (found: {found}); name the "
            f"columns {', '.join(COLUMNS)} (any case)"
        )
    if len(frame) == 0:
        raise DataError(f"{label}: no bars; add one row per bar")

    columns: dict[str, np.ndarray] = {}
    for col in COLUMNS:
        raw = frame[col]
        numbers = pd.to_numeric(raw, errors="coerce")
        bad = (numbers.isna() & raw.notna()).to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{label}: column '{col}' has a non-numeric value {_show(raw.iloc[pos])} at "
                f"{_where(index, pos, line_offset)}; fix the value or drop the row"
            )
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(values)
        if not finite.all():
            pos = int(np.flatnonzero(~finite)[0])
            what = "a missing (NaN)" if np.isnan(values[pos]) else "an infinite"
            raise DataError(
                f"{label}: column '{col}' has {what} value at "
                f"{_where(index, pos, line_offset)}; fill in the value or drop the row"
            )
        columns[col] = values

    if index.hasnans:
        pos = int(np.flatnonzero(index.isna())[0])
        raise DataError(
            f"{label}: missing date at {_where(index, pos, line_offset)}; fill in the date or "
            "drop the row"
        )
    duplicated = index.duplicated()
    if duplicated.any():
        pos = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero(index == index[pos])[0])
        raise DataError(
            f"{label}: duplicate date at {_where(index, pos, line_offset)}, same as "
            f"{_where(index, first, line_offset)}; keep one bar per date"
        )
    if not index.is_monotonic_increasing:
        pos = int(np.flatnonzero(np.diff(index.asi8) < 0)[0]) + 1
        raise DataError(
            f"{label}: dates are not in ascending order: {_where(index, pos, line_offset)} comes "
            f"after {_where(index, pos - 1, line_offset)}; sort the rows by date (oldest first)"
        )

    o, h, lo, c, v = (columns[col] for col in COLUMNS)
    checks = (
        (np.minimum.reduce([o, h, lo, c]) <= 0, "a non-positive price", "prices must be > 0"),
        (
            (np.minimum.reduce([o, h, lo, c]) < PRICE_RANGE[0])
            | (np.maximum.reduce([o, h, lo, c]) > PRICE_RANGE[1]),
            "a price outside 1e-30 to 1e30 (PRICE_RANGE)",
            "sums and products of such prices overflow; rescale the prices (e.g. quote "
            "them in thousands, or in a smaller unit)",
        ),
        (v < 0, "a negative volume", "volume must be >= 0"),
        (
            v > MAX_VOLUME,
            "a volume above 1e30 (MAX_VOLUME)",
            "sums and products of such volumes overflow; rescale the volume",
        ),
        (h < lo, "high below low", "high and low look swapped"),
        ((h < o) | (h < c), "high below open or close", "high must be the bar's maximum"),
        ((lo > o) | (lo > c), "low above open or close", "low must be the bar's minimum"),
    )
    for mask, problem, fix in checks:
        if mask.any():
            pos = int(np.flatnonzero(mask)[0])
            raise DataError(
                f"{label}: {problem} at {_where(index, pos, line_offset)} (open "
                f"{_num(o[pos])}, high {_num(h[pos])}, low {_num(lo[pos])}, close "
                f"{_num(c[pos])}, volume {_num(v[pos])}); "
                f"{fix}; fix or drop the row"
            )
    if len(index) < min_bars:
        raise DataError(
            f"{label}: {len(index)} bars, but at least {min_bars} are needed; give a longer "
            "history (or an earlier start date)"
        )
    extras, dropped = _extras(frame, {date_col, *COLUMNS}, index, label, line_offset)
    out = pd.DataFrame({**columns, **extras}, index=index)
    out.attrs[_VALIDATED] = True
    out.attrs[_DROPPED] = dropped
    return out


def _extras(
    frame: pd.DataFrame,
    skip: set[str | None],
    index: pd.DatetimeIndex,
    label: str,
    line_offset: int | None,
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The numeric extra columns as float64 arrays by line name, and the dropped text ones."""
    kept: dict[str, np.ndarray] = {}
    dropped: list[str] = []
    for col in (str(c) for c in frame.columns if c not in skip):
        raw = frame[col]
        if raw.dtype.kind in "biuf":
            numbers = raw
        elif raw.dtype.kind in "mMc":  # times, durations, complex numbers: not features
            dropped.append(col)
            continue
        else:
            try:
                numbers = pd.to_numeric(raw, errors="coerce")
            except (TypeError, ValueError):
                numbers = pd.Series(np.nan, index=raw.index)
            text = (numbers.isna() & raw.notna()).to_numpy()
            if text.all() or not numbers.notna().any():
                dropped.append(col)
                continue
            if text.any():
                pos = int(np.flatnonzero(text)[0])
                raise DataError(
                    f"{label}: extra column '{col}' mixes numbers and text: "
                    f"{_show(raw.iloc[pos])} at {_where(index, pos, line_offset)}; fix the "
                    "value (or drop the column)"
                )
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(values).any():
            pos = int(np.flatnonzero(np.isinf(values))[0])
            raise DataError(
                f"{label}: extra column '{col}' has an infinite value at "
                f"{_where(index, pos, line_offset)}; replace it (NaN is allowed in extra "
                "columns) or drop the row"
            )
        line = re.sub(r"[\s.\-/]+", "_", col)
        if not line.isidentifier() or keyword.iskeyword(line) or line.startswith("_"):
            raise DataError(
                f"{label}: extra column {col!r} cannot be a line name (it must be a Python "
                "identifier not starting with '_', e.g. 'adj_close'); rename the column"
            )
        if line in kept or line in COLUMNS:
            raise DataError(
                f"{label}: extra column {col!r} becomes line {line!r}, which another column "
                "already has; rename or drop one of them"
            )
        kept[line] = values
    return kept, tuple(dropped)


def is_validated(frame: object) -> bool:
    """True for a frame returned by :func:`load_ohlcv` (or a slice or copy of one).

    Its columns must still start with open, high, low, close, volume, all float64 (extra
    columns are allowed). Such frames are not validated again by :func:`feed` or
    ``FeatureSpec``; pandas carries
    the mark (``frame.attrs``) through slicing and copying. After changing the values of a
    loaded frame, pass it through :func:`load_ohlcv` again.
    """
    return (
        isinstance(frame, pd.DataFrame)
        and frame.attrs.get(_VALIDATED) is True
        and tuple(frame.columns[: len(COLUMNS)]) == COLUMNS
        and all(dtype == np.float64 for dtype in frame.dtypes)
    )


def ohlcv_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """open, high, low, close, volume of an OHLCV frame as float64 arrays, checked once.

    Nothing is parsed here (that is :func:`load_ohlcv`'s job, done once); every frame's
    values are checked for what the features need (numeric, finite, prices > 0,
    volume >= 0): a few vectorised comparisons, so a loaded frame changed in place
    afterwards is still caught.

    Args:
        frame: a DataFrame with columns open, high, low, close, volume (any order, extra
            columns ignored), one row per bar.

    Returns:
        (open, high, low, close, volume), each (T,) float64.

    Raises:
        DataError: not a DataFrame, a missing column, a non-numeric value, a non-positive
            or non-finite price, a negative or non-finite volume (column and row named).
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"expected an OHLCV DataFrame, got {type(frame).__name__}; "
            "load it with metabt.data.load_ohlcv"
        )
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"DataFrame is missing column(s) {missing} (found {list(frame.columns)}); "
            "load it with metabt.data.load_ohlcv"
        )
    try:
        arrays = tuple(frame[c].to_numpy(dtype=np.float64) for c in COLUMNS)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"DataFrame has non-numeric OHLCV values ({exc}); load it with metabt.data.load_ohlcv"
        ) from exc
    for name, x in zip(COLUMNS, arrays):
        bad = ~np.isfinite(x) | ((x < 0) if name == "volume" else (x <= 0))
        if bad.any():
            i = int(np.argmax(bad))
            what = "negative or non-finite" if name == "volume" else "non-positive or non-finite"
            raise DataError(
                f"DataFrame column {name!r} has a {what} value {x[i]!r} at row {i} "
                f"({frame.index[i]}); fix the data or load it with metabt.data.load_ohlcv"
            )
    return arrays


def load_many(
    sources: Iterable[str | os.PathLike[str] | pd.DataFrame] | str | os.PathLike[str],
    *,
    min_bars: int = 1,
) -> dict[str, pd.DataFrame]:
    """Load and validate several assets, keyed by file stem (the asset's name).

    The stem drops compression suffixes too: ``AAPL.csv.gz`` is ``AAPL``.

    Args:
        sources (iterable of str | os.PathLike | pd.DataFrame): CSV or Parquet files (or
            DataFrames, keyed ``data0``, ``data1``, ... by position). A single path is
            accepted too.
        min_bars (int, default 1): passed to :func:`load_ohlcv` for every source.

    Returns:
        dict[str, pd.DataFrame]: name -> frame as returned by :func:`load_ohlcv`, in the
        order given.

    Raises:
        DataError: as :func:`load_ohlcv`; no sources; two files with the same stem.
    """
    if isinstance(sources, (str, os.PathLike, pd.DataFrame)):
        sources = [sources]
    frames: dict[str, pd.DataFrame] = {}
    origin: dict[str, str] = {}
    for i, source in enumerate(sources):
        frame = load_ohlcv(source, min_bars=min_bars)
        if isinstance(source, pd.DataFrame):
            key, where = f"data{i}", f"DataFrame #{i}"
        else:
            key, where = _stem(Path(source)), str(source)
        if key in frames:
            raise DataError(
                f"two data sources are named {key!r} ({origin[key]} and {where}); names identify "
                "assets, so rename one file"
            )
        frames[key] = frame
        origin[key] = where
    if not frames:
        raise DataError("no data files given; pass at least one CSV file")
    return frames


def sample_data_dir() -> Path:
    """The folder of the shipped sample data (the repository's ``sample_data/``).

    The environment variable ``METABT_SAMPLE_DATA``, if set, overrides the location.

    Returns:
        pathlib.Path: the folder.

    Raises:
        DataError: the folder does not exist (e.g. metabt was installed without the
            repository), with how to fix it.
    """
    env = os.environ.get(_ENV_SAMPLE_DATA)
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "sample_data"
    if not path.is_dir():
        source = f"{_ENV_SAMPLE_DATA}={env}" if env else "the repository"
        raise DataError(
            f"sample data folder not found: {path} (from {source}); pass your own CSV files, "
            f"or set {_ENV_SAMPLE_DATA} to a clone's sample_data folder"
        )
    return path


def sample_files() -> list[Path]:
    """The sample CSV files, sorted by name (AAPL, GOOG, IBM, MSFT).

    Returns:
        list[pathlib.Path]: paths of ``*.csv`` files in :func:`sample_data_dir`.

    Raises:
        DataError: the folder is missing or holds no CSV file.
    """
    folder = sample_data_dir()
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise DataError(
            f"no CSV files in {folder}; rebuild them with `python scripts/make_sample_data.py`"
        )
    return files
