"""Market data: loading and validating OHLCV bars, backtrader feeds, bar frequency, synthetic
markets.

The public entry points are :func:`load_ohlcv` (a file or DataFrame to a validated frame) and
:func:`feed` (a validated frame to a backtrader data feed); they live in
:mod:`metabt.data.ohlcv` and :mod:`metabt.data.feeds` and are re-exported here.
"""

from __future__ import annotations

from metabt.data.feeds import feed
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
    "COLUMNS",
    "feed",
    "is_validated",
    "load_many",
    "load_ohlcv",
    "ohlcv_arrays",
    "sample_data_dir",
    "sample_files",
]
