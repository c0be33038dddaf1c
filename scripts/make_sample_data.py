"""Rebuild sample_data/{AAPL,GOOG,IBM,MSFT}.csv from bokeh-sampledata's Quandl WIKI prices.

Source: the ``bokeh_sampledata.stocks`` module (Quandl WIKI Prices, public domain), daily
bars from 2000-03-01 (GOOG: 2004-08-19) to 2013-03-01. FB is skipped (under a year of bars).

Adjustment: the source's open/high/low/close/volume are NOT split-adjusted; its
``adj_close`` is split- and dividend-adjusted. Each bar's open, high, low and close are
multiplied by ``factor = adj_close / close`` of that day, and its volume is divided by the
same factor (rounded to whole shares), so that dollar volume (price x volume) is preserved.
Prices are rounded to 6 decimal places.

Repairs: a bar whose adjusted high is below its low has high and low swapped; a bar whose
open or close lies outside [low, high] has high/low widened to contain them. Every repair is
counted and printed (none were needed for bokeh-sampledata 2026.1). Each output file is then
validated with ``metabt.data.load_ohlcv`` before it replaces the old one (atomic write).

Usage::

    python scripts/make_sample_data.py [--out DIR]

Needs metabt's ``dev`` extra (``pip install -e .[dev]``), which has ``bokeh-sampledata``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

TICKERS = ("AAPL", "GOOG", "IBM", "MSFT")  # FB is skipped: 196 bars (2012-05-18 .. 2013-03-01)
PRICES = ("open", "high", "low", "close")
DECIMALS = 6  # decimal places kept for prices
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "sample_data"


@dataclass(frozen=True)
class Summary:
    """What was written for one ticker."""

    ticker: str
    first: str  # ISO date of the first bar
    last: str  # ISO date of the last bar
    bars: int
    swapped: int  # bars whose high < low were swapped
    widened: int  # bars whose high/low were widened to contain open/close


def read_raw() -> pd.DataFrame:
    """The bokeh-sampledata stocks table: ticker, date, open, high, low, close, volume, adj_close.

    Raises:
        SystemExit: bokeh-sampledata is not installed (with the install command).
    """
    try:
        from bokeh_sampledata import stocks
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "bokeh-sampledata is not installed; install the dev extra: pip install -e .[dev]"
        ) from exc
    return stocks.data


def adjust(rows: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Split/dividend-adjust one ticker's raw bars.

    Args:
        rows: raw bars of one ticker (columns date, open, high, low, close, volume, adj_close).

    Returns:
        (frame, swapped, widened): frame has columns date (ISO string), open, high, low, close
        (float64, adjusted, rounded to ``DECIMALS``) and volume (int64, shares / factor);
        ``swapped`` and ``widened`` count the repaired bars (see the module docstring).
    """
    rows = rows.sort_values("date")
    factor = (rows["adj_close"] / rows["close"]).to_numpy(dtype=np.float64)
    prices = {col: rows[col].to_numpy(dtype=np.float64) * factor for col in PRICES}
    prices = {col: np.round(values, DECIMALS) for col, values in prices.items()}
    o, h, lo, c = (prices[col] for col in PRICES)

    swap = h < lo
    h, lo = np.where(swap, lo, h), np.where(swap, h, lo)
    high = np.maximum.reduce([h, o, c])
    low = np.minimum.reduce([lo, o, c])
    widened = (high != h) | (low != lo)

    frame = pd.DataFrame(
        {
            "date": rows["date"].dt.strftime("%Y-%m-%d").to_numpy(),
            "open": o,
            "high": high,
            "low": low,
            "close": c,
            "volume": np.round(rows["volume"].to_numpy(dtype=np.float64) / factor).astype(np.int64),
        }
    )
    return frame, int(swap.sum()), int(widened.sum())


def write_validated(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` atomically, after ``metabt.data.load_ohlcv`` accepts it.

    Raises:
        metabt.errors.DataError: the adjusted data fails validation (the old file is kept).
    """
    from metabt.data.ohlcv import load_ohlcv

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".csv.tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            frame.to_csv(fh, index=False, lineterminator="\n")
        load_ohlcv(tmp, name=path.name)
        tmp.chmod(0o644)  # mkstemp creates 0600; the files are shipped data
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def build(out: Path) -> list[Summary]:
    """Write ``out/<TICKER>.csv`` for every ticker in ``TICKERS``.

    Args:
        out: output folder (created if missing).

    Returns:
        One :class:`Summary` per ticker, in ``TICKERS`` order.
    """
    raw = read_raw()
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for ticker in TICKERS:
        rows = raw[raw["ticker"] == ticker]
        if rows.empty:
            raise SystemExit(f"{ticker}: not in bokeh_sampledata.stocks; update bokeh-sampledata")
        frame, swapped, widened = adjust(rows)
        write_validated(frame, out / f"{ticker}.csv")
        summaries.append(
            Summary(
                ticker, frame["date"].iloc[0], frame["date"].iloc[-1], len(frame), swapped, widened
            )
        )
    return summaries


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints one line per ticker with its range and repairs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    version = metadata.version("bokeh_sampledata")
    print(f"source: bokeh-sampledata {version} (Quandl WIKI prices), output: {args.out}")
    for s in build(args.out):
        print(
            f"{s.ticker}: {s.first} .. {s.last}, {s.bars} daily bars; repaired: {s.swapped} "
            f"bars with high < low (swapped), {s.widened} bars with open/close outside "
            "[low, high] (high/low widened)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
