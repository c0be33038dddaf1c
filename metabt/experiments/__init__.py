"""Experiments built from the pieces: a backtest, the roster of learners and strategies,
compare, walk-forward, sweep, their executors, the run record, and the pricing and sinusoid
studies."""

__all__: list[str] = []
