"""metabt: meta-learned (MAML) adaptive trading strategies inside Backtrader.

The public names are importable from here::

    from metabt import MetaStrategy, MetaLearner, SignalSizer, QuantStatsAnalyzer

A user's own meta-learning algorithm subclasses :class:`LearnerFamily` (or
:class:`GradientFamily`), reading the learner through the :class:`Learner` protocol, with the
query loss a :class:`TaskLoss` parameter; ``MetaLearner(algorithm="pkg.mod:MyFamily")`` runs
it (``examples/imaml.py`` is one).

They are imported on first use, so ``import metabt.data.ohlcv`` does not pay for torch and
``import metabt.learn.learner`` does not pay for backtrader.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metabt._version import __version__

# public name -> module that defines it
_LAZY = {
    "AdaptationAnalyzer": "metabt.analyzers",
    "BarFrequency": "metabt.data.bars",
    "CheckpointError": "metabt.errors",
    "ConfigError": "metabt.errors",
    "CrossSectionalStrategy": "metabt.strategies.portfolio",
    "DataError": "metabt.errors",
    "GradientFamily": "metabt.learn.algorithms.gradient",
    "Learner": "metabt.learn.algorithms.base",
    "LearnerFamily": "metabt.learn.algorithms.base",
    "MetaLearner": "metabt.learn.learner",
    "MetaStrategy": "metabt.strategies.meta",
    "MetabtError": "metabt.errors",
    "PooledTaskSampler": "metabt.features.tasks",
    "PortfolioAnalyzer": "metabt.analyzers",
    "QuantStatsAnalyzer": "metabt.analyzers",
    "SignalSizer": "metabt.sizers",
    "TaskLoss": "metabt.learn.losses",
    "check_causal": "metabt.features.spec",
    "plot": "metabt.evaluate.plotting",
    "register_feature": "metabt.features.spec",
    "trust": "metabt._trust",
}

__all__ = [
    "AdaptationAnalyzer",
    "BarFrequency",
    "CheckpointError",
    "ConfigError",
    "CrossSectionalStrategy",
    "DataError",
    "GradientFamily",
    "Learner",
    "LearnerFamily",
    "MetaLearner",
    "MetaStrategy",
    "MetabtError",
    "PooledTaskSampler",
    "PortfolioAnalyzer",
    "QuantStatsAnalyzer",
    "SignalSizer",
    "TaskLoss",
    "__version__",
    "check_causal",
    "plot",
    "register_feature",
    "trust",
]

if TYPE_CHECKING:
    from metabt._trust import trust
    from metabt.analyzers import AdaptationAnalyzer, PortfolioAnalyzer, QuantStatsAnalyzer
    from metabt.data.bars import BarFrequency
    from metabt.errors import CheckpointError, ConfigError, DataError, MetabtError
    from metabt.evaluate.plotting import plot
    from metabt.features.spec import check_causal, register_feature
    from metabt.features.tasks import PooledTaskSampler
    from metabt.learn.algorithms.base import Learner, LearnerFamily
    from metabt.learn.algorithms.gradient import GradientFamily
    from metabt.learn.learner import MetaLearner
    from metabt.learn.losses import TaskLoss
    from metabt.sizers import SignalSizer
    from metabt.strategies.meta import MetaStrategy
    from metabt.strategies.portfolio import CrossSectionalStrategy


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metabt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
