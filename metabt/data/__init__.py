"""Market data: loading and validating OHLCV bars, following growing bar files, backtrader
feeds, bar frequency, synthetic markets.

The public entry points are :func:`load_ohlcv` (a file or DataFrame to a validated frame),
:class:`FollowedFile` and :class:`BarClock` (the new bars of files a downloader extends, for
paper trading) and :func:`feed` (a validated frame to a backtrader data feed); they live in
:mod:`metabt.data.ohlcv`, :mod:`metabt.data.follow`, :mod:`metabt.data.clock` and
:mod:`metabt.data.feeds` and are
re-exported here.
"""

from __future__ import annotations

from metabt.data.clock import BarClock
from metabt.data.feeds import feed
from metabt.data.follow import FollowedFile, HistoryChangedError
from metabt.data.ohlcv import (
    COLUMNS,
    is_validated,
    load_many,
    load_ohlcv,
    ohlcv_arrays,
    sample_data_dir,
    sample_files,
)

__all__ = [
    "BarClock",
    "COLUMNS",
    "FollowedFile",
    "HistoryChangedError",
    "feed",
    "is_validated",
    "load_many",
    "load_ohlcv",
    "ohlcv_arrays",
    "sample_data_dir",
    "sample_files",
]
