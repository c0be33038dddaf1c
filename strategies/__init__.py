"""Ready-made strategies for Cerebro: MetaStrategy and the baselines it is judged against.

Re-exported from the package (:mod:`metabt.strategies.meta`, :mod:`metabt.strategies.baselines`), where
they live; the training recipe of the demo is ``metabt.experiments.compare.DEMO``.
"""

from __future__ import annotations

from metabt.strategies.baselines import BuyAndHold, ErmAdapt, ScratchAdapt, SmaCross, StaticModel
from metabt.strategies.meta import MetaStrategy

__all__ = ["BuyAndHold", "ErmAdapt", "MetaStrategy", "ScratchAdapt", "SmaCross", "StaticModel"]
