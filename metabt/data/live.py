"""Live backtrader feeds: bars that arrive one at a time (``islive()``, never preloaded).

A live feed has the lines of :func:`metabt.data.feeds.feed` (``datetime``, OHLCV,
``openinterest`` and one line per extra column) and takes each bar from a source callable
instead of a frame. Backtrader's Cerebro switches preloading and ``runonce`` off when a feed
is live and then asks every feed for a bar on each round of its loop
(``Cerebro._runnext``); the feed's ``_load`` answers with what its source returns:

* a bar: ``(time, values)``, ``values`` in the order of :attr:`LiveSource.columns`;
* ``None``: no bar for this feed now (the feed is not done; backtrader asks again);
* ``False``: the feed is done (the run ends once every feed is).

Used by ``metabt.experiments.paper`` (``metabt paper``). Source: backtrader's live data
feeds (``backtrader.feeds.IBData``, ``backtrader.stores``): ``islive``, ``_load`` returning
None for "no data yet".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import pandas as pd

from metabt.data.feeds import _feed_class
from metabt.data.ohlcv import COLUMNS
from metabt.errors import DataError

__all__ = ["LiveBar", "live_feed"]

#: What a live feed's source returns: a bar (time, values), None (not now) or False (done).
LiveBar: TypeAlias = "tuple[pd.Timestamp, Sequence[float]] | bool | None"

_LIVE_CLASSES: dict[tuple[str, ...], Any] = {}


def _live_class(extra: tuple[str, ...]) -> Any:
    """The live subclass of the feed class with lines ``extra`` (cached)."""
    if extra not in _LIVE_CLASSES:
        import backtrader as bt
        from backtrader.utils import date2num

        base = _feed_class(extra)

        class LiveData(base):  # type: ignore[misc, valid-type]
            """A feed whose bars come from ``source`` one at a time (see the module)."""

            params = (("source", None), ("columns", ()))

            def start(self) -> None:
                bt.feed.DataBase.start(self)  # not the frame-backed start: no frame here
                names = set(self.getlinealiases())
                self._puts = [
                    getattr(self.lines, c).__setitem__ if c in names else None
                    for c in self.p.columns
                ]
                self._put_time = self.lines.datetime.__setitem__
                self._date2num = date2num

            def islive(self) -> bool:
                return True

            def _load(self) -> bool | None:
                got = self.p.source()
                if got is None or got is False:
                    return got
                when, values = got
                self._put_time(0, self._date2num(when.to_pydatetime()))
                for put, value in zip(self._puts, values):
                    if put is not None:
                        put(0, value)
                return True

        LiveData.__qualname__ = LiveData.__name__ = "LiveData"
        _LIVE_CLASSES[extra] = LiveData
    return _LIVE_CLASSES[extra]


def live_feed(
    source: Callable[[], Any],
    *,
    name: str,
    columns: Sequence[str],
    timeframe: str = "Days",
    compression: int = 1,
) -> Any:
    """A backtrader live feed (``islive()`` True) whose bars come from ``source``.

    Args:
        source: called each time backtrader asks the feed for a bar; returns
            ``(time, values)`` (a tz-naive ``pd.Timestamp`` and floats in the order of
            ``columns``), None (no bar now) or False (done).
        name: the feed's name (``data._name``).
        columns: the bar's columns: ``open, high, low, close, volume`` then extra numeric
            columns (each a line of the feed, as in :func:`metabt.data.feeds.feed`).
        timeframe: backtrader timeframe name of the bars (``Days``, ``Minutes``, ...).
        compression: bars per timeframe unit (e.g. 5 for 5-minute bars).

    Returns:
        The feed, ready for ``cerebro.adddata``.

    Raises:
        DataError: ``columns`` does not start with the OHLCV columns, or an unknown
            timeframe.
    """
    import backtrader as bt

    cols = tuple(str(c) for c in columns)
    if cols[: len(COLUMNS)] != COLUMNS:
        raise DataError(
            f"live feed {name!r}: columns must start with {', '.join(COLUMNS)}, got "
            f"{', '.join(cols) or 'none'}; pass the columns of metabt.data.load_ohlcv"
        )
    unit = getattr(bt.TimeFrame, str(timeframe), None)
    if not isinstance(unit, int) or isinstance(unit, bool):
        raise DataError(
            f"live feed {name!r}: timeframe {timeframe!r} is not a backtrader timeframe; use "
            "Minutes, Days, Weeks, Months or Years"
        )
    if not (isinstance(compression, int) and compression >= 1 and math.isfinite(compression)):
        raise DataError(f"live feed {name!r}: compression must be an integer >= 1")
    extra = tuple(c for c in cols[len(COLUMNS) :] if c != "openinterest")
    cls = _live_class(extra)
    return cls(source=source, columns=cols, name=name, timeframe=unit, compression=compression)
