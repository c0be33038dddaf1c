"""The exception hierarchy of metabt: every error a user can cause is a ``MetabtError``."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "MetabtError"]


class MetabtError(Exception):
    """Base class of every error metabt raises on bad input.

    The message names the input, the problem and the fix. The command line turns a
    ``MetabtError`` into one line on stderr and exit code 2.
    """


class DataError(MetabtError, ValueError):
    """Market data that cannot be used: missing columns, bad values, wrong order, too short."""


class CheckpointError(MetabtError, ValueError):
    """A checkpoint that is corrupt, truncated, from an unknown version, or does not match."""


class ConfigError(MetabtError, ValueError):
    """A parameter with an invalid value (a negative window, an unknown algorithm, ...)."""
