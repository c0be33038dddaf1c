"""Shared argument checks: unknown backtrader params with a hint, and date params."""

from __future__ import annotations

import datetime as dt
import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from metabt.errors import ConfigError

__all__ = [
    "TEXT_LIMIT",
    "as_date",
    "as_timestamp",
    "check_int",
    "check_support",
    "did_you_mean",
    "read_small_text",
    "reject_unknown_params",
]


#: The largest settings file (config, search space) metabt reads, bytes.
TEXT_LIMIT = 1_000_000


def read_small_text(path: Any, what: str, limit: int = TEXT_LIMIT) -> str:
    """The UTF-8 text of a small regular file, read with a cap: never a FIFO or a device.

    Args:
        path: the file.
        what: how to name it in an error (e.g. "config file run.toml").
        limit: the most bytes read. Default :data:`TEXT_LIMIT` (1 MB).

    Returns:
        The text.

    Raises:
        ConfigError: missing, not a regular file (a FIFO, a device, a folder), larger
            than ``limit``, unreadable or not UTF-8; the message names it and the fix.
    """
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise ConfigError(f"{what}: no such file; check the path") from exc
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read it ({exc.strerror})") from exc
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{what}: not a regular file (a pipe, device or folder); give a file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read it ({exc.strerror})") from exc
    if len(data) > limit:
        raise ConfigError(f"{what}: larger than {limit:,} bytes; a settings file is small")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: not UTF-8 text ({exc.reason}); give a text file") from exc


def check_int(name: str, value: Any, low: int, unit: str = "bars") -> int:
    """``value`` as an int, if it is an integer (not a bool) of at least ``low``.

    Raises:
        ConfigError: naming ``name``, the bound and the unit.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low} ({unit}), got {value!r}")
    return int(value)


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest option, or ``""``."""
    close = difflib.get_close_matches(str(value), list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown_params(owner: str, unknown: Mapping[str, Any], params: Any) -> None:
    """Raise for keyword arguments that are not backtrader ``params`` of ``owner``.

    Backtrader passes unknown keywords on to ``__init__``, where they would fail with an
    unhelpful "takes no arguments"; this names the parameter and the closest valid one.

    Raises:
        ConfigError: if ``unknown`` is not empty.
    """
    if not unknown:
        return
    names = [name for name, _ in params._getitems()]
    bad = next(iter(unknown))
    raise ConfigError(
        f"{owner}: unknown parameter {bad!r}{did_you_mean(bad, names)}; valid: {', '.join(names)}"
    )


def as_timestamp(value: Any, what: str) -> pd.Timestamp | None:
    """A date param (date, datetime, Timestamp or ISO string) as a tz-naive Timestamp.

    None stays None; a tz-aware value keeps its wall-clock time and drops the zone.

    Raises:
        ConfigError: the value is not a date; the message names ``what``.
    """
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what} must be a date such as '2010-01-04', got {value!r}") from exc
    if pd.isna(stamp):
        raise ConfigError(f"{what} must be a date such as '2010-01-04', got {value!r}")
    return stamp.tz_localize(None) if stamp.tz is not None else stamp


def through_day(end: pd.Timestamp | None) -> pd.Timestamp | None:
    """An inclusive end of a period: a date (a time of midnight) means the whole of that day.

    ``--end 2022-03-31`` on hourly bars keeps the bars of March 31 up to 23:59:59.999..., as
    backtrader's ``todate`` does; an end with a time of day is kept as it is. None stays None.
    """
    if end is not None and end == end.normalize():
        return end + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    return end


def as_date(value: Any, what: str) -> dt.date | None:
    """A date param as a date (see :func:`as_timestamp`); None stays None.

    Raises:
        ConfigError: the value is not a date; the message names ``what``.
    """
    stamp = as_timestamp(value, what)
    return None if stamp is None else stamp.date()


def check_support(x: np.ndarray, y: np.ndarray) -> None:
    """Refuse a support set that adaptation cannot use.

    Args:
        x: (S, F) inputs; y: (S,) labels (NumPy arrays of any float dtype).

    Raises:
        ConfigError: not 2-D / 1-D of equal length S >= 1, or a NaN or infinite value.
    """
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(
            f"support set must be x (S, F) and y (S,) with S >= 1, got x {x.shape} and y {y.shape}"
        )
    # a sum is finite only if every term is (NaN and inf propagate), so one reduction
    # clears the usual case; a non-finite sum (or an overflow) takes the exact check
    finite = math.isfinite(float(x.sum()) + float(y.sum()))
    if not finite and not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError(
            "support set has NaN or infinite values; drop rows whose label "
            "or features are not yet known"
        )
