"""The trial ledger: every evaluation of a test window, kept across runs, for the test DSR.

A deflated Sharpe ratio deflates for the strategies tried, but a user who runs ``compare``
five times on the same test window with different settings has tried five times as many,
and no single run knows it. The ledger is a small SQLite file beside the user's runs
(``--ledger PATH``, else ``$METABT_LEDGER``, else ``~/.metabt/ledger.sqlite``) holding one
row per strategy evaluated on a window: the window's key (a digest of the data's content
and the test period's first and last bar), the command, the strategy's name, its
configuration and its per-bar return series. ``compare``, ``walkforward`` and
``backtest`` add their strategies to it; the verdict then says how many evaluations the
window has had and deflates over its *effective* number of trials.

Correlated trials (one learner with two seeds, a strategy and its smoothed copy) are not
independent tries. The effective number of trials is that of Nyholt (2004) on the
eigenvalues λ of the trials' return correlation matrix (M trials, returns on their common
bars): ``M_eff = 1 + (M − 1)(1 − Var(λ) / M)``, which is M for uncorrelated trials and 1
for identical ones. It is a stated alternative to the clustering of López de Prado (2018,
ch. 8): parameter-free, no cluster count to choose. The DSR of
:func:`metabt.evaluate.significance.deflated_sharpe_ratio` then uses N = ``M_eff`` and the
variance of all the window's trial Sharpe ratios.

The ledger only grows: rows are added, never changed; :meth:`Ledger.reset` (the
``metabt ledger --reset`` command) is the only way to empty it. Its size is bounded: a
return series longer than :data:`MAX_BARS` is counted but not stored, and a window keeps
at most :data:`MAX_ROWS_PER_WINDOW` stored series (older ones keep their count).

Sources: Bailey and López de Prado (2014), "The Deflated Sharpe Ratio", J. Portfolio
Management 40(5); Nyholt (2004), "A Simple Correction for Multiple Testing for Single-
Nucleotide Polymorphisms in Linkage Disequilibrium with Each Other", Am. J. Human Genetics
74(4); López de Prado (2018), *Advances in Financial Machine Learning*, ch. 8 and 11.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metabt.data.ohlcv import frames_sha256
from metabt.errors import ConfigError
from metabt.evaluate.significance import deflated_sharpe_ratio

__all__ = [
    "ENV_VAR",
    "Ledger",
    "MAX_BARS",
    "MAX_ROWS_PER_WINDOW",
    "WindowCount",
    "default_path",
    "effective_trials",
    "window_key",
]

#: Environment variable naming the ledger file ("off" turns the ledger off).
ENV_VAR = "METABT_LEDGER"
#: Longest return series stored (bars); a longer one is counted, not stored.
MAX_BARS = 100_000
#: Stored return series per window at most (the newest are kept; every row is counted).
MAX_ROWS_PER_WINDOW = 2_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    run TEXT NOT NULL,
    window TEXT NOT NULL,
    first_bar TEXT NOT NULL,
    last_bar TEXT NOT NULL,
    command TEXT NOT NULL,
    strategy TEXT NOT NULL,
    config TEXT NOT NULL,
    bars INTEGER NOT NULL,
    returns BLOB
);
CREATE INDEX IF NOT EXISTS evaluations_window ON evaluations (window);
"""


def default_path() -> Path | None:
    """The ledger file: ``$METABT_LEDGER`` (None when it is "off"), else
    ``~/.metabt/ledger.sqlite``."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() == "off":
        return None
    return Path(value).expanduser() if value else Path.home() / ".metabt" / "ledger.sqlite"


def window_key(frames: Mapping[str, pd.DataFrame], first: Any, last: Any) -> str:
    """The key of a test window: a SHA-256 of the data's content and the first/last bar.

    Args:
        frames: name -> OHLCV frame of every asset the run reads (its full content, with
            the names, is hashed: the same window of other data is another window).
        first, last: the test period's first and last bar (dates or timestamps).

    Returns:
        A hex digest.
    """
    period = f"{pd.Timestamp(first).isoformat()}|{pd.Timestamp(last).isoformat()}"
    return hashlib.sha256(f"{frames_sha256(frames)}|{period}".encode()).hexdigest()


def effective_trials(returns: pd.DataFrame) -> float:
    """Nyholt's (2004) effective number of trials of the columns of ``returns``.

    ``M_eff = 1 + (M − 1)(1 − Var(λ) / M)`` with λ the eigenvalues of the columns'
    correlation matrix on the rows every column has (Var with ddof 1, as Nyholt). A
    constant column is uncorrelated with the others (its correlations count as 0).

    Args:
        returns: (T, M) per-bar returns, one column per trial.

    Returns:
        M_eff in [1, M]; M when fewer than 3 common rows; 0 for no column.
    """
    m = returns.shape[1]
    if m <= 1:
        return float(m)
    common = returns.dropna()
    if len(common) < 3:
        return float(m)
    corr = np.nan_to_num(np.corrcoef(common.to_numpy(dtype=np.float64), rowvar=False))
    np.fill_diagonal(corr, 1.0)
    eigenvalues = np.linalg.eigvalsh(corr)
    m_eff = 1.0 + (m - 1) * (1.0 - float(np.var(eigenvalues, ddof=1)) / m)
    return float(min(max(m_eff, 1.0), m))


@dataclass(frozen=True)
class WindowCount:
    """How often a test window has been evaluated.

    Attributes:
        evaluations: strategies evaluated on the window, over every run (this one included).
        runs: distinct runs that evaluated it (one ``record`` call each: a command's seed).
        effective: Nyholt's effective number of trials of the stored return series.
        sharpe_variance: variance of the stored trials' per-bar Sharpe ratios.
    """

    evaluations: int
    runs: int
    effective: float
    sharpe_variance: float

    def describe(self) -> str:
        """E.g. ``this test window has been evaluated 14 times in 3 runs (effective N 6.2)``."""
        return (
            f"this test window has been evaluated {self.evaluations} times in {self.runs} "
            f"run(s) (effective N {self.effective:.1f})"
        )

    def dsr(self, returns: pd.Series) -> float:
        """The deflated Sharpe ratio of ``returns`` over the window's effective trials.

        Args:
            returns: simple per-bar returns of the strategy judged.

        Returns:
            :func:`~metabt.evaluate.significance.deflated_sharpe_ratio` with N =
            :attr:`effective` and V = :attr:`sharpe_variance`; NaN for a constant series.
        """
        r = pd.Series(returns, dtype=float).dropna()
        sd = float(r.std(ddof=1)) if len(r) > 1 else math.nan
        if not sd > 0:
            return math.nan
        variance = self.sharpe_variance if math.isfinite(self.sharpe_variance) else 0.0
        return deflated_sharpe_ratio(
            float(r.mean()) / sd,
            len(r),
            float(r.skew()),
            float(r.kurt()) + 3.0,
            max(self.effective, 1.0),
            variance,
        )


class Ledger:
    """The persistent record of every strategy evaluated on every test window.

    Args:
        path: the SQLite file (created with its folder on first use).

    Raises:
        ConfigError: a path that is not a usable SQLite file (named, with the fix).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"ledger {self.path} is not a regular file; give the path of a file")

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=30.0)
            con.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"ledger {self.path} cannot be opened ({exc}); give another ledger path, "
                f"or set {ENV_VAR}=off to keep no ledger"
            ) from exc
        return con

    def record(
        self,
        window: str,
        first: Any,
        last: Any,
        command: str,
        trials: Mapping[str, tuple[Mapping[str, Any], pd.Series]],
    ) -> None:
        """Add one run's strategies on a window (one transaction: all or none).

        Args:
            window: :func:`window_key` of the run's data and test period.
            first, last: the test period's first and last bar.
            command: what evaluated them (e.g. ``"compare"``).
            trials: strategy name -> (its configuration as JSON primitives, its per-bar
                simple returns).
        """
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        run = uuid.uuid4().hex
        rows = []
        for name, (config, returns) in trials.items():
            values = np.asarray(pd.Series(returns, dtype=float).dropna(), dtype="<f8")
            blob = values.tobytes() if len(values) <= MAX_BARS else None
            text = json.dumps(config, sort_keys=True, default=str)
            span = (str(pd.Timestamp(first).date()), str(pd.Timestamp(last).date()))
            rows.append((created, run, window, *span, command, name, text, len(values), blob))
        con = self._connect()
        try:
            with con:
                con.executemany(
                    "INSERT INTO evaluations (created, run, window, first_bar, last_bar, "
                    "command, strategy, config, bars, returns) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # bound the file: keep the newest MAX_ROWS_PER_WINDOW series of the window
                con.execute(
                    "UPDATE evaluations SET returns = NULL WHERE window = ? AND id NOT IN "
                    "(SELECT id FROM evaluations WHERE window = ? AND returns IS NOT NULL "
                    "ORDER BY id DESC LIMIT ?)",
                    (window, window, MAX_ROWS_PER_WINDOW),
                )
        finally:
            con.close()

    def count(self, window: str) -> WindowCount:
        """How often ``window`` has been evaluated, and its effective number of trials."""
        con = self._connect()
        try:
            n, runs = con.execute(
                "SELECT COUNT(*), COUNT(DISTINCT run) FROM evaluations WHERE window = ?",
                (window,),
            ).fetchone()
            stored = con.execute(
                "SELECT id, returns FROM evaluations WHERE window = ? AND returns IS NOT NULL",
                (window,),
            ).fetchall()
        finally:
            con.close()
        series = {i: np.frombuffer(blob, dtype="<f8") for i, blob in stored}
        sharpes = [float(v.mean() / v.std(ddof=1)) for v in series.values() if _varies(v)]
        variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else math.nan
        # the window's series share its bars; a shorter one (a late starter) is aligned
        # on its last bars
        length = max((len(v) for v in series.values()), default=0)
        frame = pd.DataFrame(
            {i: np.concatenate([np.full(length - len(v), np.nan), v]) for i, v in series.items()}
        )
        effective = effective_trials(frame) if len(series) else float(n)
        return WindowCount(int(n), int(runs), effective, variance)

    def windows(self) -> pd.DataFrame:
        """One row per window: first and last bar, evaluations, runs, last evaluated."""
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT window, first_bar, last_bar, COUNT(*), COUNT(DISTINCT run), "
                "MAX(created) FROM evaluations GROUP BY window ORDER BY MAX(id)"
            ).fetchall()
        finally:
            con.close()
        columns = ["window", "first_bar", "last_bar", "evaluations", "runs", "last"]
        return pd.DataFrame(rows, columns=columns)

    def reset(self) -> int:
        """Delete every row (the only way the ledger shrinks). Returns the rows deleted."""
        con = self._connect()
        try:
            with con:
                deleted = con.execute("DELETE FROM evaluations").rowcount
        finally:
            con.close()
        return int(deleted)


def _varies(values: np.ndarray) -> bool:
    return len(values) > 1 and bool(np.std(values, ddof=1) > 0)
