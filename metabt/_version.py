"""metabt's version: one home, read by the package, checkpoints and the CLI.

The version number changes with releases; :func:`source_digest` changes with every edit of
metabt's code, so caches of trained learners and resumable runs (which hold pickled
objects of metabt's classes) key on it too, never reading back what older code wrote.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__all__ = ["__version__", "source_digest"]

__version__ = "0.1.0"


@functools.lru_cache(maxsize=4)
def source_digest(root: Path | None = None) -> str:
    """SHA-256 of metabt's Python sources: every ``*.py`` file under the package, by path
    relative to it and content, in sorted order.

    Args:
        root: the package folder; None: this installed ``metabt`` package.

    Returns:
        64 hex digits; equal for equal sources, different after any edit of a source file.
    """
    folder = Path(__file__).resolve().parent if root is None else Path(root)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
