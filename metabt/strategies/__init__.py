"""Backtrader strategies: the shared signal trader, MetaStrategy, the cross-sectional
portfolio and the baseline strategies."""

__all__: list[str] = []
