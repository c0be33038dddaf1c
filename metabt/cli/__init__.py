"""The ``metabt`` command: argparse parsers (:mod:`metabt.cli.parser`) and the command bodies
(:mod:`metabt.cli.commands`). Only this package names command-line flags."""

from __future__ import annotations

from metabt.cli.parser import main

__all__ = ["main"]
