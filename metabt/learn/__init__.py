"""The learning core, torch only: no backtrader, no quantstats, no data or feature module.

:class:`MetaLearner` (:mod:`metabt.learn.learner`) meta-trains and adapts a small PyTorch
model; the learner families (:mod:`metabt.learn.algorithms`, one per module), the task
losses (:mod:`metabt.learn.losses`), the adapted model (:mod:`metabt.learn.adapted`), the
adapter protocols (:mod:`metabt.learn.adapter`), the models (:mod:`metabt.learn.models`),
the NumPy fast paths (:mod:`metabt.learn.kernels`), the fit loop
(:mod:`metabt.learn.training`), checkpoints (:mod:`metabt.learn.checkpoint`), the linear
baselines (:mod:`metabt.learn.linear`) and online meta-updates (:mod:`metabt.learn.online`)
live beside it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["MetaLearner"]

if TYPE_CHECKING:
    from metabt.learn.learner import MetaLearner


def __getattr__(name: str) -> Any:
    # lazy, so that metabt.learn.names (the CLI's choices) never pays for torch
    if name == "MetaLearner":
        return importlib.import_module("metabt.learn.learner").MetaLearner
    raise AttributeError(f"module 'metabt.learn' has no attribute {name!r}")
