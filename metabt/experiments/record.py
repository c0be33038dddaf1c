"""The record of a run (``run.json``): what made a result, so that it can be made again.

Every ``metabt`` command writes one beside its outputs: the resolved configuration (the
config file merged with the flags), each data file with its SHA-256, the checkpoint's
SHA-256, metabt's version and git commit, the versions of the packages that shape results,
the seed(s), the command line, and the start and end time (UTC). It is written atomically
(``metabt._util.write_text``), like every output.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from metabt._util import write_text
from metabt._version import __version__

__all__ = ["PACKAGES", "RunRecord", "file_sha256", "git_commit", "package_versions", "plain"]

#: Packages whose versions can change a result (recorded in every run.json).
PACKAGES = (
    "torch",
    "numpy",
    "pandas",
    "backtrader",
    "higher",
    "quantstats",
    "arch",
    "statsmodels",
    "scipy",
)

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, hex.

    Args:
        path: the file.

    Returns:
        The hex digest.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(where: str | os.PathLike[str] | None = None) -> str | None:
    """The git commit of metabt's source tree (with ``+dirty`` if it has changes), or None.

    None when metabt is installed from a wheel, git is missing, or the tree is not a
    repository: an installed release is identified by its version instead.

    Args:
        where: a folder inside the repository. Default: the folder of this package.
    """
    folder = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if status else head


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None if it is not installed).

    Args:
        names: the packages. Default :data:`PACKAGES`.

    Returns:
        name -> version or None.
    """
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def plain(value: Any, *, nan_as_null: bool = False) -> Any:
    """JSON primitives of a value (dates, paths, tuples, numpy scalars): what ``json`` writes.

    Mappings become dicts with str keys, lists and tuples lists; None, bools, ints, floats
    and strs stay; a date or time becomes its ISO text, a numpy scalar its Python value,
    anything else its ``str``.

    Args:
        value: the value, nested or not.
        nan_as_null: write NaN and infinities as None (strict JSON has no NaN), as the
            sweep's summary does; False keeps them (``json`` writes ``NaN``), as the run
            record does.

    Returns:
        The value as JSON primitives.
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v, nan_as_null=nan_as_null) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, nan_as_null=nan_as_null) for v in value]
    if nan_as_null and isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)


class RunRecord:
    """The record of one command, started when it is created and written by :meth:`write`.

    Args:
        command: the sub-command ("train", "backtest", "compare", ...).
        config: the resolved configuration (every setting the run used), name -> value.
        argv: the command line. Default ``sys.argv``.

    Example:
        >>> record = RunRecord("backtest", {"seed": 0})
        >>> record.add_data(["sample_data/SPY.csv"])  # doctest: +SKIP
        >>> record.write(Path("reports/run.json"))  # doctest: +SKIP
    """

    def __init__(
        self, command: str, config: Mapping[str, Any], argv: Iterable[str] | None = None
    ) -> None:
        self.command = command
        self.config = dict(config)
        self.argv = list(sys.argv if argv is None else argv)
        self.started = _now()
        self.data: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.outputs: list[str] = []

    def add_data(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Record data files with their SHA-256 and size (bytes)."""
        for path in paths:
            p = Path(path)
            self.data.append(
                {"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": file_sha256(p)}
            )

    def add_checkpoint(self, path: str | os.PathLike[str], role: str = "model") -> None:
        """Record a checkpoint read or written by the run, with its SHA-256."""
        p = Path(path)
        self.checkpoints.append({"role": role, "path": str(p.resolve()), "sha256": file_sha256(p)})

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON primitives (the end time is now)."""
        seeds = self.config.get("seeds") or [self.config.get("seed")]
        return {
            "command": self.command,
            "argv": self.argv,
            "started_utc": self.started,
            "finished_utc": _now(),
            "metabt_version": __version__,
            "git_commit": git_commit(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "seeds": plain(seeds),
            "config": plain(self.config),
            "data": self.data,
            "checkpoints": self.checkpoints,
            "outputs": self.outputs,
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as indented JSON, atomically (parent folders are created)."""
        return write_text(Path(path), json.dumps(self.as_dict(), indent=2) + "\n")
