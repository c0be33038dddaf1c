"""The ``log`` callback every experiment reports through: the library never prints.

Each experiment (:func:`metabt.experiments.compare.compare`,
:func:`metabt.experiments.walkforward.walkforward`,
:func:`metabt.experiments.pricing.pricing_study`, ...) takes ``log``, a callable that receives
each line it has to say (training summaries, fold labels, progress); the default,
:func:`silent`, drops them. The command line (:mod:`metabt.cli`) passes ``print``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Log", "silent"]


class Log(Protocol):
    """A callable receiving one line of text an experiment reports (``print``, a list's
    ``append``, :func:`silent`)."""

    def __call__(self, line: str, /) -> None:
        """Report ``line``.

        Args:
            line: one line of text, without its end of line.
        """


def silent(line: str) -> None:
    """The default ``log``: say nothing.

    Args:
        line: the line, dropped.
    """
