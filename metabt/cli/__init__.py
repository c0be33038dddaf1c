"""The ``metabt`` command: argparse parsers (:mod:`metabt.cli.parser`), the entry point
(:mod:`metabt.cli.main`) and the command bodies
(:mod:`metabt.cli.commands`). Only this package names command-line flags."""

from __future__ import annotations

from metabt.cli.main import main

__all__ = ["main"]
