"""The baselines, re-exported from :mod:`metabt.strategies.baselines` (their home)."""

from __future__ import annotations

from metabt.strategies.baselines import BuyAndHold, ErmAdapt, ScratchAdapt, SmaCross, StaticModel

__all__ = ["BuyAndHold", "ErmAdapt", "ScratchAdapt", "SmaCross", "StaticModel"]
