"""Experiments built from the pieces: a backtest, the roster of learners and strategies,
compare, walk-forward, sweep, their executors, the run record, and the pricing and sinusoid
studies.

Modules by concept: ``settings`` (what every strategy shares), ``roster`` (the roster,
declared once, and its training), ``scheduler`` (units run as soon as what they need is
done), ``executors`` (where units run), ``log`` (how experiments report), ``compare``,
``walkforward``, ``sweep`` with its search ``space``, ``pricing``, ``sinusoid``, ``record``.
"""

__all__: list[str] = []
