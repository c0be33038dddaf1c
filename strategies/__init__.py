"""Ready-made strategies for Cerebro: the demo MetaStrategy configuration and its baselines."""

from __future__ import annotations

from strategies.baselines import BuyAndHold, ErmAdapt, ScratchAdapt, SmaCross, StaticModel
from strategies.meta import DEMO, DemoConfig, DemoTraining, demo_learner

__all__ = [
    "BuyAndHold",
    "DEMO",
    "DemoConfig",
    "DemoTraining",
    "ErmAdapt",
    "ScratchAdapt",
    "SmaCross",
    "StaticModel",
    "demo_learner",
]
