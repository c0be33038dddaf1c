"""Private helpers shared across metabt: atomic file writes and silencing third-party noise."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "quiet_third_party", "write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
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
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically (see :func:`atomic_path`).

    Args:
        path: destination (parent folders are created).
        text: the content.

    Returns:
        ``path`` as a Path; it is either the old file or the complete new one.
    """
    target = Path(path)
    with atomic_path(target) as tmp:
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
