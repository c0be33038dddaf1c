"""Paper trading on live bars: ``metabt paper``.

The same strategy as ``metabt backtest`` (:func:`metabt.experiments.backtest.build_cerebro`:
same sizer, costs, analyzers and strategy settings), fed bar by bar from files that a
downloader appends to, on backtrader's simulated broker, surviving restarts.

**Bars.** Each ``--data`` file is followed (:class:`metabt.data.follow.FollowedFile`): new
complete rows are validated as ``metabt.data.load_ohlcv`` validates a file, and a bad row
is refused with one line while the following rows go on. Across files, a bar time is
*released* (processed) when every file has reached it, or, with a stagger timeout, once that
many seconds have passed since the first file reached it (:class:`metabt.data.follow.
BarClock`). Released bars go to backtrader live feeds (:func:`metabt.data.live.live_feed`,
``islive()``: no preloading, ``runonce`` off), one bar time per round of backtrader's loop.

**Warm-up.** As in a backtest, the strategy is fed from ``warmup_bars`` bars before
``start`` (:func:`metabt.experiments.backtest.warmup_start`), computed once every file has
reached ``start``; nothing trades before ``start``.

**State folder** (``--state DIR``), written only by metabt:

* ``paper.json``: the run's settings, written once; a restart with other settings is
  refused (``--poll``, ``--until``, ``--stagger-timeout`` and the report schedule may change);
* ``state.npz``: after every bar, the strategy's state
  (:mod:`metabt.strategies.state`) with the run's progress (the released bar times, each
  file's followed position and the SHA-256 of its processed bars), written atomically;
* ``orders.jsonl``: the append-only log of order events (submitted, accepted, filled,
  cancelled, rejected), one JSON object per line, written before the state of its bar;
* ``tearsheet.html``, ``chart.html``: refreshed every ``report_every`` bars and at the end.

**Restarts.** A restart re-reads the files (refusing one whose processed history changed,
by its hash), *replays* the processed bars silently through a new strategy and broker, checks
that every order event equals the log's and that the rebuilt state equals ``state.npz``
(:func:`metabt.strategies.state.differences`), then goes on with new bars. The log's
lines of a bar whose state was never written (the bar in flight when the process was
killed) are dropped and that bar is processed again: on the simulated broker nothing was
sent, so no order is sent twice.

**No hindsight.** A backtest closes a feed that ends before the others at its last bar (it
knows the feed's length). A live feed's end is unknown: paper trading never closes a
position because a file stopped growing; a file that falls behind is reported, and its
position is held until it has bars again or the user acts. So a paper run equals the backtest
of the same bars exactly when the files end together (tested), and differs where the
backtest's early close would have acted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd

from metabt._checks import read_small_text, through_day
from metabt._util import write_text
from metabt.costs import Costs
from metabt.data.bars import infer_frequency
from metabt.data.clock import BarClock
from metabt.data.follow import FollowedFile
from metabt.data.live import live_feed
from metabt.errors import ConfigError, DataError, MetabtError
from metabt.experiments.backtest import (
    BacktestResult,
    build_cerebro,
    collect_result,
    warmup_start,
)
from metabt.experiments.log import Log, silent
from metabt.experiments.record import plain
from metabt.experiments.settings import RunSettings
from metabt.learn.learner import MetaLearner
from metabt.strategies.state import (
    StrategyState,
    capture,
    differences,
    load_state,
    save_state,
)

__all__ = [
    "MAX_ORDER_LOG_BYTES",
    "PAPER_FORMAT",
    "PaperError",
    "PaperRun",
    "PaperSettings",
    "order_event",
    "paper_settings",
    "run_paper",
]

#: Version of the state folder's layout (``paper.json``).
PAPER_FORMAT = 1

#: The largest order log a restart reads back, bytes.
MAX_ORDER_LOG_BYTES = 256 * 2**20

_SETTINGS = "paper.json"
_STATE = "state.npz"
_ORDERS = "orders.jsonl"


class PaperError(MetabtError):
    """A paper run that cannot go on safely: a state folder metabt did not write, other
    settings than the folder's, or a replay that does not rebuild the saved state."""


@dataclass(frozen=True)
class PaperSettings:
    """What a paper run needs: the files, the strategy and its settings, the state folder.

    Attributes:
        data: the followed bar files (CSV or Parquet), one per asset.
        strategy: the strategy class (``MetaStrategy`` or ``CrossSectionalStrategy``).
        strategy_kwargs: its parameters (the learner included) as ``metabt backtest``
            passes them; ``record`` holds the JSON-ready ones compared on restart.
        state: the state folder.
        start: first trading date; warm-up bars before it are fed, as in a backtest.
        until: the run ends once the last bar on or before this date is processed (a
            date includes that day's bars); None runs until stopped.
        cash: starting cash, currency units.
        costs: the cost model.
        sizer_kwargs: SignalSizer parameters.
        warmup_bars: bars fed before ``start``.
        poll: seconds between looks at the files when no bar is waiting.
        stagger_timeout: seconds after the first file reaches a bar time before it is
            released without the files that lag (None: wait for every file).
        report_every: bars between tearsheet and chart refreshes (0: only at the end).
        accept_broker: on restart, take the broker's cash and positions when they differ
            from the saved ones, instead of stopping.
        reports: write the tearsheet and chart (every ``report_every`` bars and at the
            end); False writes neither (tests, or a caller that reports itself).
        record: JSON-ready settings written to ``paper.json`` and compared on restart
            (the model's SHA-256, the cost and strategy settings).
        name: the strategy's label in the summary.
    """

    data: tuple[Path, ...]
    strategy: type[bt.Strategy]
    strategy_kwargs: Mapping[str, Any]
    state: Path
    start: pd.Timestamp
    until: pd.Timestamp | None = None
    cash: float = 100_000.0
    costs: Costs = field(default_factory=Costs)
    sizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    warmup_bars: int = 300
    poll: float = 5.0
    stagger_timeout: float | None = None
    report_every: int = 0
    accept_broker: bool = False
    record: Mapping[str, Any] = field(default_factory=dict)
    name: str = "MetaStrategy"
    reports: bool = True

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("paper trading needs at least one data file to follow")
        if not (math.isfinite(self.poll) and 0 < self.poll <= 3600):
            raise ConfigError(f"poll must be in (0, 3600] seconds, got {self.poll!r}")
        timeout = self.stagger_timeout
        if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= 86_400 * 7):
            raise ConfigError(
                f"stagger_timeout must be in (0, 604800] seconds or None, got {timeout!r}"
            )
        if self.until is not None and self.until < self.start:
            raise ConfigError(
                f"until {self.until.date()} is before start {self.start.date()}; swap them"
            )
        if isinstance(self.report_every, bool) or not 0 <= int(self.report_every) <= 10**7:
            raise ConfigError(f"report_every must be 0..10,000,000 bars, got {self.report_every!r}")

    def settings_record(self) -> dict[str, Any]:
        """What ``paper.json`` stores: the settings that must not change across restarts
        (``poll``, ``until``, ``stagger_timeout``, the report schedule and
        ``accept_broker`` may change, so they are not stored), as JSON primitives."""
        return plain(
            {
                "format": PAPER_FORMAT,
                "data": [str(p.resolve()) for p in self.data],
                "strategy": self.strategy.__name__,
                "start": self.start,
                "cash": float(self.cash),
                "costs": dataclasses.asdict(self.costs),
                "sizer": dict(sorted(self.sizer_kwargs.items())),
                "warmup_bars": int(self.warmup_bars),
                **dict(sorted(self.record.items())),
            }
        )


def order_event(order: bt.Order, seq: int, bar: str) -> dict[str, Any]:
    """One line of ``orders.jsonl``: an order's status change, JSON-ready.

    Args:
        order: the backtrader order notified.
        seq: the order's number in this run (1 for the first order created): backtrader's
            own ``ref`` counts orders across every run of the process, so it is not logged.
        bar: ISO time of the bar at whose end the event was recorded.

    Returns:
        ``bar, order, data, side, status, size`` (units ordered) and, once (partly)
        filled, ``filled`` (units), ``price`` (average fill price), ``value`` and
        ``commission`` (currency).
    """
    event: dict[str, Any] = {
        "bar": bar,
        "order": seq,
        "data": order.data._name,
        "side": "buy" if order.isbuy() else "sell",
        "status": order.getstatusname(),
        "size": float(order.created.size),
    }
    if order.executed.size:
        event.update(
            filled=float(order.executed.size),
            price=float(order.executed.price),
            value=float(order.executed.value),
            commission=float(order.executed.comm),
        )
    return event


class _Release:
    """One released bar time and the bars of the files that have one there."""

    __slots__ = ("bars", "taken", "time")

    def __init__(self, time: pd.Timestamp, bars: dict[str, tuple[float, ...]]) -> None:
        self.time = time
        self.bars = bars
        self.taken: set[str] = set()

    @classmethod
    def of(cls, when: Any, bars: Mapping[str, pd.Series]) -> _Release:
        """The release of ``when`` from each file's bar (a Series over the file's columns,
        as ``BarClock.poll`` and ``FollowedFile.history`` give it), values in column order."""
        rows = {name: tuple(map(float, bar.to_numpy())) for name, bar in bars.items()}
        return cls(pd.Timestamp(when), rows)


class _Hub:
    """Hands released bars to the live feeds, one bar time per round of backtrader's loop.

    A round ends when the keeper analyzer has run after the strategy (:meth:`processed`):
    only then is the next bar time released, so a feed asked twice in one round (backtrader
    retries a feed that returned nothing) never gets the next bar early.
    """

    def __init__(
        self,
        replayed: list[_Release],
        released: list[_Release],
        clock: BarClock,
        *,
        poll: float,
        until: pd.Timestamp | None,
        spacing: pd.Timedelta,
        stopped: Callable[[], bool],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # the replayed releases of a restart first, then those the clock already released
        self._replay = [*replayed, *released]
        self.replay_count = len(replayed)
        self._clock = clock
        self._queue: list[_Release] = []
        self._current: _Release | None = None
        self._done_round = True
        self._poll = poll
        self._until = until
        self._spacing = spacing
        self._stopped = stopped
        self._sleep = sleep
        self.released = 0  # releases handed out in this run (replayed ones included)
        self.last_time: pd.Timestamp | None = None
        self.finished = False

    @property
    def catching_up(self) -> bool:
        """True while bars already released wait in the queue (a first run over a long
        history, or bars that arrived together): reports wait for the queue's end."""
        return bool(self._replay or self._queue)

    @property
    def replaying(self) -> bool:
        """True while the bars handed out are replayed ones (restart)."""
        return self.released <= self.replay_count and self.replay_count > 0

    def source(self, name: str) -> Callable[[], Any]:
        """The live feed ``name``'s source (see :func:`metabt.data.live.live_feed`)."""

        def next_bar() -> Any:
            return self._next_for(name)

        return next_bar

    def processed(self) -> None:
        """The strategy and the keeper have run on the current bar time."""
        self._done_round = True

    def _next_for(self, name: str) -> Any:
        if self._done_round:
            got = self._advance()
            if got is not True:
                return got
        current = self._current
        assert current is not None
        if name in current.bars and name not in current.taken:
            current.taken.add(name)
            return current.time, current.bars[name]
        return None

    def _advance(self) -> bool | None:
        """Release the next bar time: True; None: nothing yet (after a wait); False: done."""
        if self.finished:
            return False
        if self._replay:
            self._start(self._replay.pop(0))
            return True
        if self._stopped() or self._reached_until():
            self.finished = True
            return False
        if not self._queue:
            self._queue.extend(self._clock_releases())
        if self._queue:
            self._start(self._queue.pop(0))
            return True
        if self._clock_done():
            self.finished = True
            return False
        self._sleep(self._poll)
        return None

    def _start(self, release: _Release) -> None:
        self._current = release
        self._done_round = False
        self.released += 1
        self.last_time = release.time

    def _reached_until(self) -> bool:
        """The last bar on or before ``until`` is processed: the next bar, at least one bar
        spacing later, would be after it."""
        return (
            self._until is not None
            and self.last_time is not None
            and self.last_time + self._spacing > self._until
        )

    def _clock_releases(self) -> list[_Release]:
        return [_Release.of(when, bars) for when, bars in self._clock.poll()]

    def _clock_done(self) -> bool:
        """With ``until``: every file has a bar past it, so nothing more will be released."""
        return self._until is not None and bool(self._clock.done)


class _Keeper(bt.Analyzer):
    """After each bar: the order events to the log and the state to the folder (or, while
    replaying, both checked against what was saved)."""

    params = (("run", None),)

    def start(self) -> None:
        self._run: _PaperRunner = self.p.run
        self._run.keeper = self
        self._seq: dict[int, int] = {}  # backtrader's order ref -> this run's order number
        self._pending_events: list[dict[str, Any]] = []

    def notify_order(self, order: bt.Order) -> None:
        key = int(order.ref)
        if key not in self._seq:
            self._seq[key] = len(self._seq) + 1
        # read now: the order object moves on (accepted, filled) before the bar ends
        self._pending_events.append(order_event(order, self._seq[key], ""))

    def next(self) -> None:
        strategy = self.strategy
        bar = strategy.datetime.datetime(0).isoformat()
        events = self._pending_events
        for event in events:
            event["bar"] = bar
        self._pending_events = []
        self._run.after_bar(strategy, bar, events)


class _PaperRunner:
    """One process's paper run: followers, clock, hub, Cerebro and the state folder."""

    def __init__(self, settings: PaperSettings, log: Log) -> None:
        self.s = settings
        self.log = log
        self.folder = settings.state
        self.orders_path = self.folder / _ORDERS
        self.state_path = self.folder / _STATE
        self.refused: list[str] = []
        self.saved: StrategyState | None = None
        self.logged: dict[str, list[dict[str, Any]]] = {}
        self.releases: list[list[Any]] = []  # [iso time, [names]] of every processed release
        self.first: pd.Timestamp | None = None
        self.bars_done = 0
        self.keeper: bt.Analyzer | None = None
        self.stop_requested = False

    # ---- the folder
    def open_folder(self) -> bool:
        """Create the folder or check it for a restart. Returns True on a restart."""
        folder, record = self.folder, self.s.settings_record()
        marker = folder / _SETTINGS
        if folder.exists() and not folder.is_dir():
            raise PaperError(f"state folder {folder} is a file; pass a folder path")
        if folder.is_dir() and any(folder.iterdir()) and not marker.is_file():
            raise PaperError(
                f"state folder {folder} is not empty and has no {_SETTINGS}: metabt did not "
                "write it, so it will not write into it; pass a new or empty folder"
            )
        if not marker.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_text(marker, json.dumps(record, indent=2, sort_keys=True) + "\n", sync=True)
            return False
        try:
            saved = json.loads(read_small_text(marker, f"settings file {marker}"))
        except json.JSONDecodeError as exc:
            raise PaperError(
                f"{marker} cannot be read ({exc}); it is not a metabt state folder"
            ) from exc
        if not isinstance(saved, dict) or saved.get("format") != PAPER_FORMAT:
            raise PaperError(
                f"{marker} is not a metabt paper-trading folder of format {PAPER_FORMAT}"
            )
        changed = sorted(k for k in set(saved) | set(record) if saved.get(k) != record.get(k))
        if changed:
            shown = "; ".join(
                f"{k}: {json.dumps(saved.get(k))[:80]} -> {json.dumps(record.get(k))[:80]}"
                for k in changed[:5]
            )
            raise PaperError(
                f"state folder {folder} was started with other settings ({shown}); resume "
                "with the same settings, or start a new state folder"
            )
        if not self.state_path.is_file() and self.orders_path.is_file():
            # killed before the first bar's state was saved: its events are in flight
            self.orders_path.unlink()
            self.log("dropped the order events of a first bar whose state was never saved")
        return self.state_path.is_file()

    def load_saved(self) -> None:
        """Read the saved state and the order log of a restart."""
        self.saved = load_state(self.state_path)
        paper = self.saved.meta.get("paper")
        if not isinstance(paper, dict):
            raise PaperError(f"{self.state_path} has no paper-trading progress; start anew")
        self.first = pd.Timestamp(paper["first"]) if paper.get("first") else None
        self.releases = [list(r) for r in paper["releases"]]
        last = self.saved.meta.get("bar")
        kept, dropped = [], 0
        if self.orders_path.is_file():
            size = self.orders_path.stat().st_size
            if size > MAX_ORDER_LOG_BYTES:
                raise PaperError(
                    f"order log {self.orders_path}: {size:,} bytes, over the "
                    f"{MAX_ORDER_LOG_BYTES:,}-byte limit; start a new state folder"
                )
            for line in self.orders_path.read_text().splitlines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if last is not None and event["bar"] > last:
                    dropped += 1
                    continue
                kept.append(event)
                self.logged.setdefault(event["bar"], []).append(event)
        if dropped:  # the bar in flight when the process ended: its state was never saved
            write_text(
                self.orders_path,
                "".join(json.dumps(e, sort_keys=True) + "\n" for e in kept),
                sync=True,
            )
            self.log(
                f"dropped {dropped} order event(s) logged after the last saved bar {last} "
                "(the bar in flight when the run ended); that bar is processed again"
            )

    # ---- per bar
    def after_bar(self, strategy: bt.Strategy, bar: str, events: list[dict[str, Any]]) -> None:
        hub = self.hub
        if hub.replaying:
            expected = self.logged.get(bar, [])
            if events != expected:
                raise PaperError(
                    f"replaying bar {bar} gave other order events than {self.orders_path} "
                    f"logged ({len(events)} vs {len(expected)}; first: "
                    f"{events[:1]} vs {expected[:1]}): the data, the model or metabt changed "
                    "since they were logged; start a new state folder"
                )
            if hub.released == hub.replay_count:
                self._check_rebuilt(strategy)
        else:
            current = hub._current
            assert current is not None
            self.releases.append([current.time.isoformat(), sorted(current.bars)])
            self.clock.mark_processed(current.time)
            # while catching up on bars already queued, the files are written but not
            # fsynced: a killed process loses nothing either way (the page cache outlives
            # it), and a lost machine replays those bars from the followed files
            sync = not hub.catching_up
            if events:
                _append_lines(
                    self.orders_path, [json.dumps(e, sort_keys=True) for e in events], sync=sync
                )
            self._save(strategy, sync=sync)
            self.bars_done += 1
            every = self.s.report_every
            if (
                self.s.reports
                and every
                and self.bars_done % every == 0
                and current.time >= self.s.start
                and not hub.catching_up
            ):
                self.refresh_reports(strategy)
        hub.processed()

    def _save(self, strategy: bt.Strategy, *, sync: bool = True) -> None:
        state = capture(strategy)
        state.meta["paper"] = {
            "first": None if self.first is None else self.first.isoformat(),
            "releases": self.releases,
            "files": {f.name: f.state() for f in self.files},
        }
        save_state(state, self.state_path, sync=sync)

    def _check_rebuilt(self, strategy: bt.Strategy) -> None:
        assert self.saved is not None
        rebuilt = capture(strategy)
        saved = StrategyState(
            {k: v for k, v in self.saved.meta.items() if k != "paper"}, self.saved.arrays
        )
        diff = differences(saved, rebuilt)
        if diff:
            raise PaperError(
                f"replaying the {self.hub.replay_count} processed bars did not rebuild the "
                f"saved state ({'; '.join(diff[:3])}): the data, the model or metabt "
                "changed; start a new state folder"
            )
        self.reconcile(strategy, saved)
        self.log(
            f"resumed after {self.hub.replay_count} bars (last {saved.meta.get('bar')}): the "
            f"replay rebuilt the saved state and {sum(map(len, self.logged.values()))} "
            "logged order events exactly"
        )

    def reconcile(self, strategy: bt.Strategy, saved: StrategyState) -> None:
        """Compare the saved cash and positions with the broker's; stop on a mismatch
        unless ``accept_broker`` (the broker's view is then taken and said)."""
        broker = strategy.broker
        problems = []
        cash = float(broker.getcash())
        if cash != saved.meta["cash"]:
            problems.append(f"cash {saved.meta['cash']:,.2f} saved, {cash:,.2f} at the broker")
        for d in strategy.datas:
            size = float(strategy.getposition(d).size)
            want = saved.meta["positions"].get(d._name, {}).get("size", 0.0)
            if size != want:
                problems.append(f"{d._name}: {want:g} saved, {size:g} at the broker")
        if not problems:
            return
        text = "; ".join(problems[:5])
        if self.s.accept_broker:
            self.log(
                f"the broker's view differs from the saved state ({text}); taking the broker's"
            )
            return
        raise PaperError(
            f"the broker's cash and positions differ from the saved state ({text}); check the "
            "account, then restart accepting the broker's view if it is right"
        )

    def refresh_reports(self, strategy: bt.Strategy) -> None:
        """The tearsheet and the chart of the bars so far, in the state folder."""
        from metabt.evaluate.chart import write_chart

        for analyzer in strategy.analyzers:
            if analyzer is not self.keeper:
                analyzer.stop()
        try:
            result = self.result(strategy)
        except DataError:  # nothing recorded from start yet
            return
        result.tearsheet(self.folder / "tearsheet.html", title=f"{self.s.name} (paper)")
        write_chart(strategy, self.folder / "chart.html", title=f"{self.s.name} (paper)")

    def result(self, strategy: bt.Strategy) -> BacktestResult:
        frames = self.frames()
        return collect_result(
            strategy,
            frames,
            start=self.s.start,
            end=None,
            cash=self.s.cash,
            costs=self.s.costs,
            name=self.s.name,
        )

    def frames(self) -> dict[str, pd.DataFrame]:
        """Each file's processed bars (from the warm-up's first bar)."""
        out = {}
        last = self.hub.last_time
        for f in self.files:
            frame = f.history
            if self.first is not None:
                frame = frame.loc[self.first :]
            if last is not None:
                frame = frame.loc[:last]
            out[f.name] = frame
        return out

    # ---- the run
    def run(self) -> tuple[bt.Strategy | None, bool]:
        """Open the folder and the files, replay, then process new bars until done.

        Returns:
            (the strategy after the run, or None when stopped before ``start`` was
            reached; whether the run resumed a state folder).
        """
        previous = signal.getsignal(signal.SIGINT)

        def stop(signum: int, frame: Any) -> None:
            self.stop_requested = True
            self.log("stopping after the bar in progress (Ctrl-C again to abort at once)")
            signal.signal(signal.SIGINT, previous)

        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGINT, stop)
        try:
            return self._run()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)

    def _run(self) -> tuple[bt.Strategy | None, bool]:
        restart = self.open_folder()
        if restart:
            self.load_saved()
        self.files = self._open_files(restart)
        clock = self.clock = BarClock(
            self.files,
            timeout=self.s.stagger_timeout,
            until=None if self.s.until is None else through_day(self.s.until),
        )
        replay = self._replay_releases() if restart else []
        first_live = self._warm_up(clock) if self.first is None else []
        if self.first is None:  # stopped while waiting for `start`
            return None, restart
        self.hub = _Hub(
            replay,
            first_live,
            clock,
            poll=self.s.poll,
            until=None if self.s.until is None else through_day(self.s.until),
            spacing=self._spacing(),
            stopped=lambda: self.stop_requested,
        )
        feeds = []
        unit, compression = self._timeframe()
        for f in self.files:
            feeds.append(
                live_feed(
                    self.hub.source(f.name),
                    name=f.name,
                    columns=list(f.history.columns),
                    timeframe=unit,
                    compression=compression,
                )
            )
        cerebro = build_cerebro(
            self.s.strategy,
            feeds,
            start=self.s.start,
            cash=self.s.cash,
            costs=self.s.costs,
            strategy_kwargs=self.s.strategy_kwargs,
            sizer_kwargs=self.s.sizer_kwargs,
        )
        cerebro.addanalyzer(_Keeper, _name="paper_keeper", run=self)
        return cerebro.run()[0], restart

    def _open_files(self, restart: bool) -> list[FollowedFile]:
        names = [Path(p).stem for p in self.s.data]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                f"two data files have the same name ({', '.join(dupes)}); rename one (an "
                "asset is named by its file's stem)"
            )

        def refused(line: str) -> None:
            self.refused.append(line)
            self.log(line)

        if not restart:
            return [FollowedFile(p, on_refused=refused) for p in self.s.data]
        assert self.saved is not None
        saved = self.saved.meta["paper"]["files"]
        out = []
        for p in self.s.data:
            name = Path(p).stem
            if name not in saved:
                raise PaperError(f"{p}: no saved position for {name} in {self.state_path}")
            out.append(FollowedFile.resume(p, saved[name], on_refused=refused))
        return out

    def _replay_releases(self) -> list[_Release]:
        """The processed releases, rebuilt from the files' verified histories."""
        histories = {f.name: f.history for f in self.files}
        return [
            _Release.of(iso, {name: histories[name].loc[pd.Timestamp(iso)] for name in names})
            for iso, names in self.releases
        ]

    def _warm_up(self, clock: BarClock) -> list[_Release]:
        """Wait until every file reaches ``start``, then fix the warm-up's first bar.

        Returns:
            The releases from the first warm-up bar on that the clock has released so far.
        """
        held: list[tuple[pd.Timestamp, dict[str, Any]]] = []
        while not self.stop_requested:
            held.extend(clock.poll())
            if held and held[-1][0] >= self.s.start:
                break
            if clock.done:
                raise PaperError(
                    f"the files end before start {self.s.start.date()}; nothing to trade"
                )
            time.sleep(self.s.poll)
        else:
            return []
        frames = {f.name: f.history.loc[: held[-1][0]] for f in self.files}
        self.first = warmup_start(frames, self.s.start, self.s.warmup_bars)
        return [_Release.of(when, bars) for when, bars in held if when >= self.first]

    def _spacing(self) -> pd.Timedelta:
        """The smallest spacing of the first file's bars (a day without two bars)."""
        index = self.files[0].history.index
        gaps = index[1:] - index[:-1]
        return gaps.min() if len(gaps) else pd.Timedelta(days=1)

    def _timeframe(self) -> tuple[str, int]:
        index = self.files[0].history.index
        if self.first is not None:
            index = index[index >= self.first]
        try:
            found = infer_frequency(index).timeframe
        except DataError:
            found = None
        return found or ("Days", 1)


@dataclass
class PaperRun:
    """The outcome of :func:`run_paper`.

    Attributes:
        result: the run's :class:`~metabt.experiments.backtest.BacktestResult` over the
            bars processed from ``start`` (None when no bar on or after ``start`` was).
        bars: bars processed by this process (replayed ones not counted).
        replayed: bars replayed on restart.
        restart: whether the run resumed a state folder.
        refused: the lines of the rows refused.
        last_bar: the last bar time processed.
        stopped: ended by a stop request (Ctrl-C) rather than ``until`` or the files' end.
        frames: each file's processed bars, from its first row to ``last_bar`` (what a
            backtest of the same bars reads).
    """

    result: BacktestResult | None
    frames: dict[str, pd.DataFrame]
    bars: int
    replayed: int
    restart: bool
    refused: list[str]
    last_bar: pd.Timestamp | None
    stopped: bool


def paper_settings(
    run: RunSettings,
    learner: MetaLearner,
    *,
    data: Sequence[str | os.PathLike[str]],
    state: str | os.PathLike[str],
    model_sha256: str | None = None,
    until: pd.Timestamp | None = None,
    poll: float = 5.0,
    stagger_timeout: float | None = None,
    report_every: int = 0,
    accept_broker: bool = False,
    log: Log = silent,
) -> PaperSettings:
    """The paper run of ``learner`` with the settings ``metabt backtest`` would use.

    The strategy (``MetaStrategy``, or ``CrossSectionalStrategy`` with
    ``run.cfg.portfolio``), its parameters and the no-trade region's calibration on the
    validation years before ``run.start`` are those ``metabt backtest`` trades
    (:func:`metabt.experiments.compare.traded_strategy`).

    Args:
        run: the run's settings; ``run.frames`` are the files' bars known now (only those
            before ``run.start`` are read, for the checks and the calibration).
        learner: the trained meta-learner to trade.
        data: the followed files, in the order of ``run.frames``.
        state: the state folder.
        model_sha256: the checkpoint's SHA-256, recorded so that a restart with another
            model is refused.
        until, poll, stagger_timeout, report_every, accept_broker: see
            :class:`PaperSettings`.
        log: receives the calibration's line.

    Returns:
        The :class:`PaperSettings`.

    Raises:
        ConfigError: the learner's training range reaches ``run.start``, or its training
            settings do not fit this run.
    """
    from metabt.experiments.compare import traded_strategy

    cls, name, kwargs = traded_strategy(run, learner, log=log)
    record = {
        "model_sha256": model_sha256,
        "strategy_kwargs": {k: v for k, v in kwargs.items() if k != "learner"},
    }
    return PaperSettings(
        data=tuple(Path(p) for p in data),
        strategy=cls,
        strategy_kwargs=kwargs,
        state=Path(state),
        start=run.start,
        until=until,
        cash=run.cash,
        costs=run.costs,
        sizer_kwargs=dict(run.cfg.sizer),
        warmup_bars=run.cfg.warmup_bars,
        poll=poll,
        stagger_timeout=stagger_timeout,
        report_every=report_every,
        accept_broker=accept_broker,
        record=record,
        name=name,
    )


def run_paper(settings: PaperSettings, *, log: Log = silent) -> PaperRun:
    """Paper-trade ``settings.strategy`` on the followed files (see the module docstring).

    Args:
        settings: the files, strategy, costs, state folder and schedule.
        log: receives progress lines (refused rows, restarts, reports).

    Returns:
        A :class:`PaperRun`.

    Raises:
        PaperError: a state folder metabt did not write, other settings than the folder's,
            a replay that does not rebuild the saved state, or a broker mismatch.
        DataError: a followed file whose processed history changed, or that cannot be read.
    """
    runner = _PaperRunner(settings, log)
    strategy, restart = runner.run()
    hub = getattr(runner, "hub", None)
    result = None
    last = None if hub is None else hub.last_time
    if strategy is not None and last is not None and last >= settings.start:
        if settings.reports:
            runner.refresh_reports(strategy)
        result = runner.result(strategy)
    frames = {f.name: f.history if last is None else f.history.loc[:last] for f in runner.files}
    return PaperRun(
        result=result,
        frames=frames,
        bars=runner.bars_done,
        replayed=0 if hub is None else hub.replay_count,
        restart=restart,
        refused=runner.refused,
        last_bar=last,
        stopped=runner.stop_requested,
    )


def _append_lines(path: Path, lines: list[str], *, sync: bool = True) -> None:
    """Append whole lines in one write, flushed to disk when ``sync``."""
    with open(path, "a") as fh:
        fh.write("".join(line + "\n" for line in lines))
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
