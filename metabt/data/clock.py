"""Aligning followed bar files whose downloaders append at different moments (staggered
appends): :class:`BarClock` releases a bar time once every file has reached it, or after a
timeout without the lagging files, as a backtest aligns its feeds by time.

The files are :class:`metabt.data.follow.FollowedFile` objects; ``metabt paper``
(:mod:`metabt.experiments.paper`) processes the released times in order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from metabt.data.follow import MAX_NOTICES_PER_POLL, FollowedFile, _naive, _when
from metabt.errors import ConfigError, DataError

__all__ = ["BarClock"]


class BarClock:
    """Release bar times across several followed files whose downloaders append at
    different moments (staggered appends), as a backtest aligns its feeds by time.

    Rule: a time t is released when every file has accepted a bar at t or later; or, with
    ``timeout`` set, once ``timeout`` seconds (of ``clock``, as seen at the polls) have
    passed since the first file reached t (accepted a bar at t or later), without the
    lagging files. Releasing t releases every
    earlier pending time too, in order. A file without a bar at a released t has no bar at
    t (as in a backtest); a bar that a file delivers at or before the last released time
    (it came too late) is refused with one line to that file's ``on_refused`` and counted
    in :attr:`late`. Nothing after ``until`` is released. Without a timeout, a file that
    stops growing holds every later time back.

    Args:
        files (Iterable[FollowedFile]): the followed files; their ``name`` must differ.
        timeout (float | None): seconds to wait for lagging files; None waits forever.
        clock (Callable[[], float], default time.monotonic): the time in seconds (a fake
            clock in tests).
        until (pd.Timestamp | str | None, default None): the last time released.
        after (pd.Timestamp | str | None, default None): the last time released before
            (after a restart); default: the latest last processed bar of the files.

    Raises:
        DataError: no files, or two files with one name.
        ConfigError: a negative timeout.
    """

    def __init__(
        self,
        files: Iterable[FollowedFile],
        *,
        timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
        until: pd.Timestamp | str | None = None,
        after: pd.Timestamp | str | None = None,
    ):
        self.files: dict[str, FollowedFile] = {}
        for file in files:
            if file.name in self.files:
                raise DataError(
                    f"two followed files are named {file.name!r} ({self.files[file.name].path} "
                    f"and {file.path}); names identify assets, so rename one"
                )
            self.files[file.name] = file
        if not self.files:
            raise DataError("no files to follow; give at least one bar file")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ConfigError(f"timeout={timeout!r} must be a number of seconds >= 0, or None")
        self.timeout = timeout
        self.clock = clock
        self.until = None if until is None else _naive(until)
        if after is None:
            done = [f.last_processed for f in self.files.values() if f.last_processed is not None]
            self.released: pd.Timestamp | None = max(done) if done else None
        else:
            self.released = _naive(after)
        #: bars refused for coming after their time was released, per file
        self.late = dict.fromkeys(self.files, 0)
        self._pending = {name: f._slice(0, 0) for name, f in self.files.items()}
        # (clock, time): when some file first reached each new latest time (for the timeout)
        self._reach: deque[tuple[float, int]] = deque()
        self._expired: int | None = None  # the latest time reached timeout seconds ago
        self._frontier: pd.Timestamp | None = None  # all times up to it are released

    @property
    def done(self) -> bool:
        """True once every time up to ``until`` is released (never without ``until``)."""
        return (
            self.until is not None and self._frontier is not None and self._frontier >= self.until
        )

    def poll_frames(self) -> tuple[pd.DatetimeIndex, dict[str, pd.DataFrame]]:
        """Poll every file and release what the rule allows, as frames.

        Returns:
            (times, bars): the released times (ascending DatetimeIndex) and, per file
            name, its released bars (a frame as :meth:`FollowedFile.poll` returns; its
            times are a subset of ``times``).

        Raises:
            DataError, HistoryChangedError: as :meth:`FollowedFile.poll`.
        """
        now = self.clock()
        floor = None if self.released is None else self.released.value
        for name, file in self.files.items():
            new = file.poll()
            if not len(new):
                continue
            if floor is not None:
                late = new.index.asi8 <= floor
                self._refuse_late(name, new.index[late])
                new = new[~late]
            if len(new):
                pending = self._pending[name]
                self._pending[name] = pd.concat([pending, new]) if len(pending) else new
        lasts = [f.last.value for f in self.files.values() if f.last is not None]
        frontier = min(lasts) if len(lasts) == len(self.files) else None
        if self.timeout is not None:
            if lasts and (not self._reach or max(lasts) > self._reach[-1][1]):
                self._reach.append((now, max(lasts)))  # when some file first reached it
            while self._reach and now - self._reach[0][0] >= self.timeout:
                reached = self._reach.popleft()[1]
                self._expired = reached if self._expired is None else max(self._expired, reached)
            if self._expired is not None:
                frontier = self._expired if frontier is None else max(frontier, self._expired)
        if frontier is None:
            return self._released([], {})
        if self.until is not None:
            frontier = min(frontier, self.until.value)
        if self._frontier is None or frontier > self._frontier.value:
            self._frontier = pd.Timestamp(frontier)
        out: dict[str, pd.DataFrame] = {}
        times: set[int] = set()
        for name, frame in self._pending.items():
            cut = int(np.searchsorted(frame.index.asi8, frontier, side="right"))
            if cut:
                out[name] = frame.iloc[:cut]
                self._pending[name] = frame.iloc[cut:]
                times.update(frame.index.asi8[:cut].tolist())
        return self._released(sorted(times), out)

    def _refuse_late(self, name: str, times: pd.DatetimeIndex) -> None:
        """One line to the file's ``on_refused`` per bar that came after its time was
        released (at most :data:`MAX_NOTICES_PER_POLL`, then one line for the rest)."""
        file = self.files[name]
        self.late[name] += len(times)
        lines = [
            f"{file.label}: the bar at {_when(ts)} came after that time was released (the "
            "other files' bars were processed without it); late bar refused"
            for ts in times[:MAX_NOTICES_PER_POLL]
        ]
        if len(times) > MAX_NOTICES_PER_POLL:
            lines.append(
                f"{file.label}: {len(times) - MAX_NOTICES_PER_POLL:,} more late bars refused "
                f"(up to {_when(times[-1])})"
            )
        for text in lines:
            file.notices.append(text)
            if file.on_refused is not None:
                file.on_refused(text)

    def _released(
        self, times: list[int], out: dict[str, pd.DataFrame]
    ) -> tuple[pd.DatetimeIndex, dict[str, pd.DataFrame]]:
        index = pd.DatetimeIndex(np.array(times, dtype="datetime64[ns]"), name="date")
        if len(index):
            self.released = pd.Timestamp(index[-1])
        return index, out

    def poll(self) -> list[tuple[pd.Timestamp, dict[str, pd.Series]]]:
        """Poll every file and release what the rule allows, bar by bar.

        Returns:
            list of (time, bars): the released times in order, each with, per file name
            that has a bar at that time, the bar (a float64 Series named by the time,
            indexed by the file's columns).

        Raises:
            DataError, HistoryChangedError: as :meth:`FollowedFile.poll`.
        """
        times, frames = self.poll_frames()
        out: dict[pd.Timestamp, dict[str, pd.Series]] = {pd.Timestamp(t): {} for t in times}
        for name, frame in frames.items():
            for i, ts in enumerate(frame.index):
                out[pd.Timestamp(ts)][name] = frame.iloc[i]
        return list(out.items())

    def mark_processed(self, until: pd.Timestamp | str) -> None:
        """Mark every file's bars at or before ``until`` processed (see
        :meth:`FollowedFile.mark_processed`).

        Raises:
            ValueError: ``until`` is after the last released time.
        """
        when = _naive(until)
        if self.released is None or when > self.released:
            raise ValueError(
                f"cannot mark bars up to {when} processed: the last released time is "
                f"{self.released}"
            )
        for file in self.files.values():
            file.mark_processed(when)

    def state(self) -> dict[str, Any]:
        """Each file's :meth:`FollowedFile.state`, and the last released time (JSON-ready).

        After a restart, re-open each file with ``FollowedFile.resume(path,
        state["files"][name])`` and give them to a new BarClock: it goes on after the
        latest processed bar (its ``after`` default), releasing the bars accepted but not
        processed before the restart again.
        """
        return {
            "released": None if self.released is None else self.released.isoformat(),
            "files": {name: f.state() for name, f in self.files.items()},
        }
