"""Ready-made strategies for Cerebro: the demo MetaStrategy configuration and its baselines."""

from __future__ import annotations

from strategies.baselines import BuyAndHold, SmaCross
from strategies.meta import DEMO, DemoConfig, DemoTraining, demo_learner

__all__ = ["BuyAndHold", "DEMO", "DemoConfig", "DemoTraining", "SmaCross", "demo_learner"]
