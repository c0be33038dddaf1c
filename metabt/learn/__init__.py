"""The learning core, torch only: no backtrader, no quantstats, no data or feature module.

:class:`MetaLearner` (:mod:`metabt.learn.learner`) meta-trains and adapts a small PyTorch
model; the learner families (:mod:`metabt.learn.algorithms`, one per module), the task
losses (:mod:`metabt.learn.losses`), the adapted model (:mod:`metabt.learn.adapted`), the
adapter protocols (:mod:`metabt.learn.adapter`), the models (:mod:`metabt.learn.models`),
the NumPy fast paths (:mod:`metabt.learn.kernels`), the fit loop
(:mod:`metabt.learn.training`), checkpoints (:mod:`metabt.learn.checkpoint`), the linear
baselines (:mod:`metabt.learn.linear`) and online meta-updates (:mod:`metabt.learn.online`)
live beside it.

The names a user's own learner family needs are importable from here:
:class:`LearnerFamily` (the base to subclass), :class:`GradientFamily` (adaptation by
gradient descent on θ, fast paths included), :class:`PairedFamily` (a family with its own
model), the :class:`Learner` protocol a family reads, :data:`Extra` (a batch's per-row
loss arrays), :class:`TaskLoss` and :class:`PnLLoss` (the query loss, a parameter of every
family), :class:`AdaptedModel` (what ``adapt`` returns) and :func:`support_arrays` (one
support set checked and converted).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AdaptedModel",
    "Extra",
    "GradientFamily",
    "Learner",
    "LearnerFamily",
    "MetaLearner",
    "PairedFamily",
    "PnLLoss",
    "TaskLoss",
    "support_arrays",
]

# public name -> module that defines it; lazy, so that metabt.learn.names (the CLI's
# choices) never pays for torch
_LAZY = {
    "AdaptedModel": "metabt.learn.adapted",
    "Extra": "metabt.learn.algorithms.base",
    "GradientFamily": "metabt.learn.algorithms.gradient",
    "Learner": "metabt.learn.algorithms.base",
    "LearnerFamily": "metabt.learn.algorithms.base",
    "MetaLearner": "metabt.learn.learner",
    "PairedFamily": "metabt.learn.algorithms.base",
    "PnLLoss": "metabt.learn.losses",
    "TaskLoss": "metabt.learn.losses",
    "support_arrays": "metabt.learn.adapted",
}

if TYPE_CHECKING:
    from metabt.learn.adapted import AdaptedModel, support_arrays
    from metabt.learn.algorithms.base import Extra, Learner, LearnerFamily, PairedFamily
    from metabt.learn.algorithms.gradient import GradientFamily
    from metabt.learn.learner import MetaLearner
    from metabt.learn.losses import PnLLoss, TaskLoss


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metabt.learn' has no attribute {name!r}")
