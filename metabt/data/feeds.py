"""Backtrader data feeds of validated bars: list-backed, any bar frequency, and importable by
name, so they pickle (backtrader's ``optstrategy`` sends them to worker processes).
"""

from __future__ import annotations

import keyword
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from metabt._checks import as_timestamp, reject_unknown_params, through_day
from metabt.data.bars import infer_frequency
from metabt.data.ohlcv import COLUMNS, _label, _stem, is_validated, load_ohlcv
from metabt.errors import ConfigError, DataError

if TYPE_CHECKING:
    import backtrader as bt

__all__ = ["feed"]


def _timestamp(value: Any, what: str, label: str) -> pd.Timestamp | None:
    """``value`` as a tz-naive Timestamp (None stays None); DataError naming the file."""
    try:
        return as_timestamp(value, what)
    except ConfigError as exc:
        raise DataError(
            f"{label}: {what}={value!r} is not a date; use an ISO date such as 2010-01-04"
        ) from exc


_FEED_CLASSES: dict[tuple[str, ...], Any] = {}  # extra line names -> feed class


_RESERVED: set[str] = set()  # attribute names of a backtrader feed and its lines


def _feed_class(extra: tuple[str, ...]) -> Any:
    """The list-backed feed class with one more line per name in ``extra`` (cached)."""
    import backtrader as bt
    from backtrader.utils import date2num

    if () not in _FEED_CLASSES:

        class ArrayData(bt.feed.DataBase):
            """The bars of a validated frame (``dataname``), fed from Python lists.

            ``datetime`` is ``date2num`` of each index time, as in ``PandasData``; every
            other line takes the frame column of its name; without an ``openinterest``
            column that line stays NaN, as with ``PandasData(openinterest=None)``.
            """

            def start(self) -> None:
                super().start()
                frame = self.p.dataname
                self._row, self._rows = -1, len(frame)
                dates = [date2num(t) for t in frame.index.to_pydatetime()]
                self._fill = [(self.lines.datetime.__setitem__, dates)] + [
                    (getattr(self.lines, col).__setitem__, frame[col].tolist())
                    for col in self.getlinealiases()
                    if col != "datetime" and col in frame.columns
                ]

            def _load(self) -> bool:
                row = self._row + 1
                if row >= self._rows:
                    return False
                self._row = row
                for put, values in self._fill:
                    put(0, values[row])
                return True

        # importable by name (pickle, so backtrader's optstrategy can send feeds to its
        # worker processes): metabt.data.feeds.ArrayData, via the module's __getattr__
        ArrayData.__qualname__ = ArrayData.__name__ = _FEED_PREFIX
        ArrayData.__module__ = __name__
        probe = ArrayData(dataname=None)
        _RESERVED.update(dir(probe), dir(probe.lines), ("fromdate", "todate", "sessionend"))
        _RESERVED.discard("openinterest")
        _FEED_CLASSES[()] = ArrayData
    if extra not in _FEED_CLASSES:
        base = _FEED_CLASSES[()]
        name = _feed_class_name(extra)
        cls = type(base)(name, (base,), {"lines": extra, "__module__": __name__})
        cls.__qualname__ = name
        _FEED_CLASSES[extra] = cls
    return _FEED_CLASSES[extra]


_FEED_PREFIX = "ArrayData"


def _feed_class_name(extra: tuple[str, ...]) -> str:
    """The module-level name of the feed class with lines ``extra`` (hex of the names, so
    any column name makes a valid identifier and the name gives the lines back)."""
    return f"{_FEED_PREFIX}_{chr(31).join(extra).encode().hex()}" if extra else _FEED_PREFIX


def __getattr__(name: str) -> Any:
    """The feed classes by name (``ArrayData``, ``ArrayData_<hex>``), made on first use: how
    pickle finds them in another process (e.g. backtrader's ``optstrategy`` workers)."""
    if name == _FEED_PREFIX:
        return _feed_class(())
    if name.startswith(_FEED_PREFIX + "_"):
        try:
            extra = tuple(bytes.fromhex(name[len(_FEED_PREFIX) + 1 :]).decode().split(chr(31)))
        except ValueError:
            pass
        else:
            return _feed_class(extra)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def feed(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    name: str | None = None,
    fromdate: Any = None,
    todate: Any = None,
    **bt_kwargs: Any,
) -> bt.feed.DataBase:
    """A backtrader data feed of validated bars, any frequency.

    The bars are loaded with :func:`load_ohlcv` (a frame it already returned is not
    validated again) and fed from Python lists, about twice as fast as
    ``bt.feeds.PandasData`` and bar for bar the same (``datetime`` is ``date2num`` of each
    bar time, as there). Lines: ``datetime, open, high, low, close, volume, openinterest``
    (NaN unless the frame has an ``openinterest`` column), then one line per extra column
    of the frame, named as the column (e.g. ``data.adj_close[0]``). ``timeframe`` and
    ``compression`` follow the bar spacing (:func:`metabt.data.bars.infer_frequency`):
    ``Minutes`` with compression 1, 5, 60, 240, ... for intraday bars, else ``Days``,
    ``Weeks``, ``Months`` or ``Years``; a single bar is taken as daily.

    Args:
        source (str | os.PathLike | pd.DataFrame): CSV or Parquet path or DataFrame, as for
            :func:`load_ohlcv`.
        name (str | None, default None): the feed's name (``data._name``); default: the file
            stem, or ``"data"`` for a DataFrame.
        fromdate (date-like | None, default None): first bar time fed (inclusive).
        todate (date-like | None, default None): last bar time fed (inclusive); a date (a
            time of midnight) includes that whole day's bars, as in backtrader.
        **bt_kwargs: other backtrader feed params or plot options, e.g. ``timeframe`` and
            ``compression`` (overriding the inferred ones) or ``plot=False``.

    Returns:
        bt.feed.DataBase: the feed, ready for ``cerebro.adddata``.

    Raises:
        DataError: as :func:`load_ohlcv`; an unreadable ``fromdate``/``todate``; no bar
            between them; an extra column whose name is a backtrader feed attribute (e.g.
            ``size``) or not a line name.
        ConfigError: an unknown keyword in ``bt_kwargs``.
    """
    import backtrader as bt

    is_frame = isinstance(source, pd.DataFrame)
    frame = (
        source
        if isinstance(source, pd.DataFrame) and is_validated(source)
        else load_ohlcv(source, name=name if is_frame else None)
    )
    label = _label(source, name)
    extra = tuple(str(c) for c in frame.columns[len(COLUMNS) :] if c != "openinterest")
    _feed_class(())  # fills _RESERVED
    for col in extra:
        if not col.isidentifier() or keyword.iskeyword(col) or col.startswith("_"):
            raise DataError(f"{label}: column {col!r} cannot be a line name; rename it")
        if col in _RESERVED:
            raise DataError(
                f"{label}: column {col!r} is also the name of a backtrader feed attribute, so "
                f"it cannot be a line; rename the column (e.g. to '{col}_')"
            )
    cls = _feed_class(extra)
    known = {key for key, _ in cls.params._getitems()} | set(cls.plotinfo._getkeys())
    unknown = {key: value for key, value in bt_kwargs.items() if key not in known}
    reject_unknown_params("metabt.data.feed", unknown, cls.params)
    try:
        unit, compression = infer_frequency(frame.index).timeframe or ("Days", 1)
    except DataError:  # a single bar: no spacing to read
        unit, compression = "Days", 1
    start = _timestamp(fromdate, "fromdate", label)
    end = through_day(_timestamp(todate, "todate", label))
    if start is not None or end is not None:
        frame = frame.loc[start:end]
        if frame.empty:
            raise DataError(
                f"{label}: no bars between fromdate={fromdate} and todate={todate}; the data "
                "cover a different period, check the dates"
            )
    if name is None:
        name = "data" if is_frame else _stem(Path(source))
    params = {"timeframe": getattr(bt.TimeFrame, unit), "compression": compression}
    return cls(dataname=frame, name=name, **{**params, **bt_kwargs})
