"""Private helpers shared across metabt: atomic file writes and silencing third-party noise."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metabt.errors import ConfigError

__all__ = [
    "RUN_MARKER",
    "atomic_dir",
    "atomic_path",
    "check_output_path",
    "check_replaceable_dir",
    "quiet_third_party",
    "staged_files",
    "write_text",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, sync: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary file beside ``target``; move it onto ``target`` on success.

    The temporary file is created by :func:`tempfile.mkstemp` in the target's folder (an
    unpredictable name, opened with ``O_EXCL``, so a symlink planted in a shared folder is
    never followed) and given the permissions a plain ``open()`` would (``0o666`` less the
    umask). The caller writes to it (by path: a library may open it itself); on success
    ``os.replace`` moves it onto ``target`` atomically, so ``target`` is either the old file
    or the complete new one. On any failure, including ``KeyboardInterrupt``, the temporary
    file is removed and ``target`` is left as it was. Missing parent folders are created.

    Args:
        target: the file to write.
        sync: flush the written file to disk (``fsync``) before the rename, so that the new
            content survives a power loss, not only a killed process. Default False.

    Yields:
        pathlib.Path: the temporary file to write to.

    Raises:
        OSError: the folder cannot be created or written.
    """
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        if sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str, *, sync: bool = False) -> Path:
    """Write ``text`` (UTF-8) atomically (see :func:`atomic_path`).

    Args:
        path: destination (parent folders are created).
        text: the content.
        sync: fsync it before the rename (see :func:`atomic_path`). Default False.

    Returns:
        ``path`` as a Path; it is either the old file or the complete new one.
    """
    target = Path(path)
    with atomic_path(target, sync=sync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


class _DropFindfont(logging.Filter):
    """Drops matplotlib's "findfont: ..." records (quantstats asks for Arial)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("findfont")


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Silence font lookups and third-party deprecation noise; restore the state on exit.

    Inside the block: matplotlib's "findfont" log records are dropped, third-party
    Deprecation/PendingDeprecation/FutureWarnings, quantstats' cosmetic tick-label
    UserWarning and its "No non-zero returns" warning are ignored, and NumPy's divide and
    invalid floating-point warnings are off.
    """
    font_logger = logging.getLogger("matplotlib.font_manager")
    drop = _DropFindfont()
    font_logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category)
            # cosmetic: quantstats sets tick labels without a FixedLocator
            warnings.filterwarnings("ignore", category=UserWarning, module=r"quantstats\._plotting")
            warnings.filterwarnings("ignore", message="No non-zero returns", category=UserWarning)
            with np.errstate(divide="ignore", invalid="ignore"):
                yield
    finally:
        font_logger.removeFilter(drop)


def check_output_path(path: str | os.PathLike[str], flag: str, *, kind: str) -> Path:
    """Check, before any work, that ``path`` can be written as a file or a folder.

    Args:
        path: the output path.
        flag: its name in messages (e.g. ``--out``).
        kind: "file" or "dir".

    Returns:
        ``path`` as a Path.

    Raises:
        ConfigError: a folder where a file is wanted (or the reverse), a file standing
            where a parent folder would have to be created, or a folder without write
            permission; the message names the flag, the path and the fix.
    """
    target = Path(path)
    if target.exists():
        if kind == "file" and target.is_dir():
            raise ConfigError(
                f"{flag} {target} is a folder; give a file name inside it, e.g. "
                f"{target / 'report.html'}"
            )
        if kind == "dir" and not target.is_dir():
            raise ConfigError(f"{flag} {target} is a file; give a folder (it is created)")
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(
            f"{flag} {target}: {ancestor} is a file, so no folder can be made under it; "
            "choose another path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{flag} {target}: cannot write in {ancestor} (permission denied); choose a "
            "writable folder"
        )
    return target


def _mkdtemp_beside(target: Path, suffix: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


#: The file metabt writes into every folder it creates whole (compare, walkforward): only a
#: folder holding it is ever replaced.
RUN_MARKER = ".metabt-run"


def _mark(folder: Path) -> None:
    (folder / RUN_MARKER).write_text(
        "written by metabt: metabt may replace this folder when the same run is written again\n",
        encoding="utf-8",
    )


def check_replaceable_dir(target: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Check, before any work, that metabt may write the folder ``target`` whole.

    A folder is replaced only when metabt wrote it (it holds :data:`RUN_MARKER`), when it is
    empty, or with ``force``. The working directory and its ancestors are never replaced,
    whatever ``force`` says.

    Args:
        target: the output folder.
        force: replace a non-empty folder that metabt did not write.

    Returns:
        ``target`` as a Path.

    Raises:
        ConfigError: ``target`` is the working directory or one of its ancestors, is a file,
            or is a non-empty folder without the marker (and ``force`` is off).
    """
    path = Path(target)
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ConfigError(
            f"output folder {str(path)!r} is the working directory or contains it, and metabt "
            "writes its output folder whole; give a new sub-folder, e.g. 'results/run1'"
        )
    if not path.exists():
        return path
    if not path.is_dir():
        raise ConfigError(f"output folder {str(path)!r} is a file; give a folder (it is created)")
    if (path / RUN_MARKER).is_file() or not any(path.iterdir()):
        return path
    if not force:
        raise ConfigError(
            f"output folder {str(path)!r} holds files that metabt did not write (it has no "
            f"{RUN_MARKER} marker), and writing the run would replace them; choose a new "
            "folder, or set force to replace it"
        )
    return path


def _remove_stale(target: Path) -> None:
    """Remove the staging folders (``.<name>.*.tmp``/``.old``) a killed run left beside
    ``target``: only those holding metabt's marker."""
    if not target.parent.is_dir():
        return
    for pattern in (f".{target.name}.*.tmp", f".{target.name}.*.old"):
        for stale in target.parent.glob(pattern):
            if stale.is_dir() and not stale.is_symlink() and (stale / RUN_MARKER).is_file():
                shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh folder beside ``target``; on success it replaces ``target`` whole.

    For a report set (tables, tearsheets, index): everything is written into the
    temporary folder, which is renamed onto ``target`` at the end (an existing ``target``
    is moved aside first and removed after), so ``target`` never holds half a set. On any
    failure, including ``KeyboardInterrupt``, the temporary folder is removed and
    ``target`` is left as it was. The folder gets :data:`RUN_MARKER`, and only a folder
    that holds it (or an empty one, or any with ``force``) is replaced
    (:func:`check_replaceable_dir`). Staging folders a killed run left are removed first.

    Args:
        target: the folder to write.
        force: replace a non-empty folder that metabt did not write.

    Yields:
        pathlib.Path: the temporary folder to write into.

    Raises:
        ConfigError: ``target`` may not be replaced (see :func:`check_replaceable_dir`).
    """
    path = check_replaceable_dir(target, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = _mkdtemp_beside(path, ".tmp")
    try:
        _mark(tmp)
        yield tmp
        check_replaceable_dir(path, force=force)  # nothing put there meanwhile
        old = None
        if path.exists():
            old = _mkdtemp_beside(path, ".old")
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success move every file in it into ``folder``.

    For a set of files that share a folder with others (a tearsheet, its diagnostics page
    and its CSV in ``reports/``): nothing reaches ``folder`` until every file is written,
    then each is moved in with ``os.replace``. On failure the staging folder is removed.

    Args:
        folder: the destination folder (created if missing).

    Yields:
        pathlib.Path: the staging folder (beside ``folder``'s files, same file system).
    """
    dest = Path(folder)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = _mkdtemp_beside(dest / "metabt", ".stage")
    try:
        yield tmp
        for item in sorted(tmp.iterdir()):
            os.replace(item, dest / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
