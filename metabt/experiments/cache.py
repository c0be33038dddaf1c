"""A cache of trained models for the main job, so ``make demo`` meta-trains once, not on every run.

``metabt backtest`` without ``--model`` trains a learner strictly before the test period,
then trades it. :class:`TrainingCache` keeps that learner, with the lines its training
logged, under a key that digests everything the training depends on: the run's
configuration (``RunConfig.describe``), the cut-off, the content of the training frames,
and the versions of metabt and torch and the thread count. A later run with the same key
reads it back instead of training, says so, and repeats the training's own summary lines;
any change to the data, the settings or the versions misses and trains afresh.

The entries are kept by :class:`metabt.experiments.resume.UnitStore` (pickled, each under an
HMAC of this account's key, so an entry someone else wrote is refused, never loaded). The
folder is ``$METABT_CACHE`` (``off`` disables the cache), else ``~/.cache/metabt/trained``;
at most :data:`MAX_ENTRIES` entries are kept, the oldest removed first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from metabt.data.ohlcv import frames_sha256
from metabt.experiments.log import Log
from metabt.experiments.resume import UnitStore
from metabt.experiments.settings import RunSettings
from metabt.learn.learner import MetaLearner

__all__ = ["CACHE_ENV", "MAX_ENTRIES", "TrainingCache", "cache_folder"]

#: Environment variable naming the cache folder (``off``: no cache).
CACHE_ENV = "METABT_CACHE"
#: Most trained models kept; the oldest entries beyond it are removed after a write.
MAX_ENTRIES = 8


def cache_folder() -> Path | None:
    """The training cache's folder: ``$METABT_CACHE``, else ``~/.cache/metabt/trained``;
    None when ``$METABT_CACHE`` is ``off``."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() == "off":
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "metabt" / "trained"


class TrainingCache:
    """Trained learners of the main job, read back when nothing they depend on changed.

    Args:
        folder: where the entries are kept (created on the first write, with metabt's run
            marker; a folder metabt did not write is refused).
        context: what a training depends on beyond its settings and data (metabt's and
            torch's versions, the thread count), mixed into every key.

    Raises:
        ConfigError: ``folder`` exists and metabt did not write it.
    """

    def __init__(self, folder: str | os.PathLike[str], *, context: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self._store = UnitStore(self.folder, resume=True, context=context)

    def key(self, settings: RunSettings, end: pd.Timestamp) -> str:
        """The entry's key: a digest of the configuration, the cut-off and the data."""
        return self._store.key(
            what="main training",
            cfg=settings.cfg.describe(),
            end=str(pd.Timestamp(end)),
            train_frames=frames_sha256(settings.train_frames),
        )

    def train(
        self, settings: RunSettings, end: pd.Timestamp, *, progress: bool, log: Log
    ) -> MetaLearner:
        """``settings.train(end)``, or the learner a run with the same key trained.

        Args:
            settings: the run's data and configuration (``train_frames`` are trained on).
            end: the cut-off: no price on or after it is used.
            progress: show the training progress bar (a fresh training only).
            log: receives the training summary lines (read back from the entry on a hit,
                after a line that says the model was reused).

        Returns:
            The trained learner.

        Raises:
            ConfigError: an entry under this key that this account's key did not sign;
                too little data before ``end``.
        """
        key = self.key(settings, end)
        hit, value = self._store.get(key)
        if hit:
            learner, said = value
            log(
                f"reused the model cached in {self.folder} (trained on the same data and "
                f"settings by the same versions; key {key[:12]}): its training said"
            )
            for line in said:
                log(line)
            return learner
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            log(line)

        learner = settings.train(end, progress=progress, log=keep)
        self._store.put(key, (learner, lines))
        self._prune(keep=key)
        return learner

    def _prune(self, *, keep: str) -> None:
        """Remove the oldest entries beyond :data:`MAX_ENTRIES` (never ``keep``)."""
        entries = sorted(self.folder.glob("*.unit"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in entries[MAX_ENTRIES:]:
            if path.stem != keep:
                path.unlink(missing_ok=True)
