"""Finished units of an experiment, kept on disk so that a killed ``compare`` or
``walkforward`` resumes where it stopped.

Every unit a run finishes (a training part of one fold and seed, or one strategy's
backtest) is written at once to a folder beside the run's output (``.<out>.units``), under
a key that digests everything its result depends on: the unit's configuration, period,
seed, costs and cash, the content of its data (trading and training frames), and the
versions of metabt and torch and the thread count. ``--resume`` reads the units whose key
is there instead of running them again; a unit whose settings, data or versions changed
has another key and runs. The folder is removed once the run's outputs are written.

The results are pickled (they are the objects the executors already pass between
processes), so a unit file could run code when read. Each file therefore carries an HMAC
(SHA-256) under a key only this account can read (``~/.metabt/resume.key``, mode 0600,
created on first use; ``$METABT_RESUME_KEY`` names another file): a unit is unpickled only
when its tag verifies, so a folder someone else wrote is refused, never loaded.

Sources: RFC 2104 (HMAC); Python docs, ``pickle`` ("never unpickle data received from an
untrusted or unauthenticated source") and ``hmac.compare_digest``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import pickle
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from metabt._util import RUN_MARKER, atomic_path
from metabt.errors import ConfigError

__all__ = ["KEY_ENV", "MAX_UNIT_BYTES", "UnitStore", "key_path"]

#: Environment variable naming the HMAC key file (default ``~/.metabt/resume.key``).
KEY_ENV = "METABT_RESUME_KEY"
#: Largest unit file read back (bytes); a larger one is refused before it is read.
MAX_UNIT_BYTES = 2 << 30
_TAG = 32  # bytes of an HMAC-SHA256 tag
_MAX_KEY_BYTES = 1024  # a key file is read up to this many bytes


def key_path() -> Path:
    """The HMAC key file: ``$METABT_RESUME_KEY``, else ``~/.metabt/resume.key``."""
    value = os.environ.get(KEY_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".metabt" / "resume.key"


def _secret(path: Path) -> bytes:
    """The account's HMAC key, created (32 random bytes, mode 0600) on first use."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
        if not path.is_file():  # a FIFO or a device would hang or never end
            raise OSError("not a regular file")
        with path.open("rb") as handle:
            key = handle.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"resume key {path} cannot be read or created ({exc}); set {KEY_ENV} to a file "
            "this account can write"
        ) from exc
    if not 16 <= len(key) <= _MAX_KEY_BYTES:
        raise ConfigError(
            f"resume key {path} has {len(key)} bytes, not 16 to {_MAX_KEY_BYTES}; remove it "
            "(a new one is made)"
        )
    return key


class UnitStore:
    """The finished units of one experiment's run, in ``folder``.

    Args:
        folder: where the units are kept (created, with metabt's run marker, when the first
            unit finishes).
        resume: read the units already there (``--resume``); False starts afresh (the
            folder's old units are removed first).
        context: what every unit's result depends on beyond its own settings (e.g.
            metabt's and torch's versions and the thread count), mixed into every key.

    Raises:
        ConfigError: ``folder`` exists but metabt did not write it (no marker), or the key
            file cannot be made.
    """

    def __init__(
        self, folder: str | os.PathLike[str], *, resume: bool, context: Mapping[str, Any]
    ) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not (self.folder / RUN_MARKER).is_file():
            raise ConfigError(
                f"{self.folder} exists and metabt did not write it (no {RUN_MARKER}); move it "
                "away: metabt keeps a run's finished units there"
            )
        if self.folder.exists() and not resume:
            shutil.rmtree(self.folder)
        # nothing is written before the first unit finishes (a run refused at its start
        # leaves no folder and no key file behind)
        self._secret: bytes | None = None
        self._context = json.dumps(dict(context), sort_keys=True, default=str)
        self.loaded = 0

    @property
    def _key(self) -> bytes:
        if self._secret is None:
            self._secret = _secret(key_path())
        return self._secret

    def key(self, **parts: Any) -> str:
        """The key of a unit: a digest of ``parts`` (JSON, with ``str`` for the rest) and the
        store's context."""
        text = json.dumps(parts, sort_keys=True, default=_plain)
        return hashlib.sha256(f"{self._context}|{text}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.unit"

    def get(self, key: str) -> tuple[bool, Any]:
        """``(True, result)`` of a finished unit, ``(False, None)`` when it is not there.

        Raises:
            ConfigError: the file's tag does not verify (not written by metabt under this
                account's key), or it is too large.
        """
        path = self._path(key)
        if not path.is_file():
            return False, None
        if path.stat().st_size > MAX_UNIT_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_UNIT_BYTES:,} bytes; remove it")
        blob = path.read_bytes()
        tag, body = blob[:_TAG], blob[_TAG:]
        if not hmac.compare_digest(tag, hmac.new(self._key, body, hashlib.sha256).digest()):
            raise ConfigError(
                f"{path} was not written by metabt under this account's key ({key_path()}); "
                f"it is not loaded: remove {self.folder} or run without resume"
            )
        self.loaded += 1
        return True, pickle.loads(body)

    def put(self, key: str, value: Any) -> None:
        """Keep a finished unit (written atomically: a kill leaves it whole or absent)."""
        body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        tag = hmac.new(self._key, body, hashlib.sha256).digest()
        if not (self.folder / RUN_MARKER).is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / RUN_MARKER).write_text("finished units of a metabt run\n")
        with atomic_path(self._path(key)) as tmp:
            Path(tmp).write_bytes(tag + body)

    def remove(self) -> None:
        """Delete the folder (the run's outputs are written: nothing to resume)."""
        if (self.folder / RUN_MARKER).is_file():
            shutil.rmtree(self.folder, ignore_errors=True)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)
