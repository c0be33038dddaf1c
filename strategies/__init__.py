"""Ready-made strategies for Cerebro: MetaStrategy and the baselines it is judged against.

Re-exported from the package (:mod:`metabt.strategy`, :mod:`metabt.baselines`), where
they live; the training recipe of the demo is ``metabt.experiments.DEMO``.
"""

from __future__ import annotations

from metabt.baselines import BuyAndHold, ErmAdapt, ScratchAdapt, SmaCross, StaticModel
from metabt.strategy import MetaStrategy

__all__ = ["BuyAndHold", "ErmAdapt", "MetaStrategy", "ScratchAdapt", "SmaCross", "StaticModel"]
