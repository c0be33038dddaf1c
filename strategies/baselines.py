"""The baselines, re-exported from :mod:`metabt.baselines` (their home)."""

from __future__ import annotations

from metabt.baselines import BuyAndHold, ErmAdapt, ScratchAdapt, SmaCross, StaticModel

__all__ = ["BuyAndHold", "ErmAdapt", "ScratchAdapt", "SmaCross", "StaticModel"]
