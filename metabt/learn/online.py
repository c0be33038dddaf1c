"""Online meta-updates of θ inside a backtest, from (support, query) pairs whose labels are known.

:class:`OnlineMeta` holds a private copy of a :class:`~metabt.learn.learner.MetaLearner` (the user's
learner and checkpoint are never modified) and takes one outer-loop step on it each time a
past adaptation's query has been fully realised, so that later adaptations start from the
updated θ. ``MetaStrategy(online_meta_lr=...)`` drives it; the bookkeeping of which bars
are due lives here, the feature rows and labels in the strategy.

Layer: above ``meta`` and ``linear``, below ``sizers`` and ``strategy``; it knows nothing
of backtrader.

References:
    Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
    Networks" (the outer step); Zhao et al. 2023, "DoubleAdapt: A Meta-learning Approach to
    Incremental Learning for Stock Trend Forecasting" (KDD), which keeps meta-updating the
    initialisation online as new tasks' labels arrive.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from metabt.errors import ConfigError
from metabt.learn.learner import MetaLearner

__all__ = ["LOG_COLUMNS", "OnlineMeta", "PendingQuery"]

#: Columns of the online meta-update log (``MetaStrategy.theta_log()``).
LOG_COLUMNS = [
    "date",
    "data",
    "update",
    "adaptation",
    "query",
    "query_loss",
    "theta_drift",
    "theta_sha256",
]


@dataclass
class PendingQuery:
    """One adaptation whose query labels are not all realised yet.

    Attributes:
        data: index of the data (in the strategy's ``datas``).
        adaptation: index of the adaptation (in ``MetaStrategy.adaptations``).
        start: bar k of the adaptation, the first bar it predicts (bar index of the data).
        end: last bar of its query (bars): ``k + adapt_every - 1``, or the bar before the
            data's next adaptation if that comes sooner (a drift trigger).
        xs: (S, F_in) support inputs it was adapted on; ys: (S,) their labels.
    """

    data: int
    adaptation: int
    start: int
    end: int
    xs: np.ndarray
    ys: np.ndarray


class OnlineMeta:
    """A private copy of a MetaLearner whose θ takes outer steps on realised tasks.

    The copy's outer optimizer is a fresh Adam with learning rate ``lr`` (the learner's own
    algorithm decides the meta-gradient: MAML, FOMAML, Reptile, ...). Each step is
    ``learner.meta_step(xs[None], ys[None], xq[None], yq[None])`` on one adaptation's
    support set and its realised query, and is logged with ``||θ - θ₀||₂`` (θ₀: θ at the
    start, the inner rates of metasgd included).

    Args:
        learner: the user's meta-learner (copied, never modified).
        lr: outer-loop learning rate of the online steps (> 0).
        adapt_every: bars between scheduled adaptations (a query's default length, bars).
        horizon: label horizon (bars): the label of bar s is realised at bar s + horizon.

    Attributes:
        learner: the private copy that adapts and meta-steps.
        log: one dict per outer step: date, data, update (0, 1, ...), adaptation (index in
            ``MetaStrategy.adaptations``), query (rows), query_loss (query MSE after the
            inner loop, before the step, as ``meta_step`` returns it), theta_drift
            (``||θ - θ₀||₂`` after the step), theta_sha256 (SHA-256 of θ's float64 bytes
            after the step: equal digests = bit-identical θ, without keeping a copy of θ
            per step).

    Raises:
        ConfigError: ``learner`` is not a MetaLearner (a linear adapter has no outer loop),
            or ``lr`` is not a positive finite number.
    """

    def __init__(self, learner: Any, lr: float, adapt_every: int, horizon: int) -> None:
        if not isinstance(learner, MetaLearner):
            raise ConfigError(
                f"online_meta_lr > 0 needs a MetaLearner (an outer loop to update θ), got "
                f"{type(learner).__name__}; a linear adapter such as RidgeAdapter has no "
                "meta-learned θ: set online_meta_lr=0"
            )
        if isinstance(lr, bool) or not (
            isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0
        ):
            raise ConfigError(f"online_meta_lr must be a finite number > 0, got {lr!r}")
        private = copy.deepcopy(learner)  # θ, inner rates, fold cache: all copies
        params = [*private.model.parameters(), *private.inner_lrs.values()]
        private._optimizer = torch.optim.Adam(params, lr=float(lr))  # fresh moments too
        private.meta_lr = float(lr)
        self.learner: MetaLearner = private
        self.adapt_every = adapt_every
        self.horizon = horizon
        self._params = params
        self._theta0 = self.theta()
        self._pending: dict[int, list[PendingQuery]] = {}  # data -> oldest first
        self.log: list[dict[str, Any]] = []

    def theta(self) -> np.ndarray:
        """θ of the private copy (and metasgd's inner rates), flattened: (P,) float64."""
        return np.concatenate(
            [p.detach().reshape(-1).to(torch.float64).numpy() for p in self._params]
        )

    def opened(self, data: int, adaptation: int, k: int, xs: np.ndarray, ys: np.ndarray) -> None:
        """Record adaptation ``adaptation`` of ``data`` at bar ``k`` on support (xs, ys).

        The data's previous adaptation, if still pending, has its query cut at bar k - 1.
        """
        pending = self._pending.setdefault(data, [])
        for entry in pending:
            entry.end = min(entry.end, k - 1)
        end = k + self.adapt_every - 1
        pending.append(PendingQuery(data, adaptation, k, end, xs.copy(), ys.copy()))

    def due(self, data: int, bar: int) -> list[PendingQuery]:
        """Pop the pending queries of ``data`` whose labels are all realised at ``bar``.

        A query ending at bar e is realised at bar e + horizon (the label of bar e needs
        the close of bar e + horizon). Returned oldest first.
        """
        pending = self._pending.get(data, [])
        ready = [e for e in pending if e.end + self.horizon <= bar]
        if ready:
            self._pending[data] = [e for e in pending if e.end + self.horizon > bar]
        return ready

    def step(
        self, entry: PendingQuery, xq: np.ndarray, yq: np.ndarray, date: Any, name: str
    ) -> None:
        """One outer step of the private θ on (entry's support, realised query xq, yq).

        Args:
            entry: the adaptation whose query is realised (from :meth:`due`).
            xq: (Q, F_in) query inputs; yq: (Q,) their realised labels (finite).
            date: the bar at which the query became realised (logged).
            name: the data's name (logged).
        """
        loss = self.learner.meta_step(entry.xs[None], entry.ys[None], xq[None], yq[None])
        theta = self.theta()
        self.log.append(
            {
                "date": pd.Timestamp(date),
                "data": name,
                "update": len(self.log),
                "adaptation": entry.adaptation,
                "query": len(yq),
                "query_loss": float(loss),
                "theta_drift": float(np.linalg.norm(theta - self._theta0)),
                "theta_sha256": hashlib.sha256(theta.tobytes()).hexdigest(),
            }
        )

    def frame(self) -> pd.DataFrame:
        """The log as a DataFrame, one row per outer step (columns as the ``log`` keys)."""
        return pd.DataFrame(self.log, columns=LOG_COLUMNS)
