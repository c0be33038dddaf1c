"""Classical adaptive linear forecasters: rolling ridge and recursive least squares.

The baselines a quant would otherwise use. Each is an *adapter* with the same interface as
:class:`metabt.learn.learner.MetaLearner` inside :class:`metabt.strategies.meta.MetaStrategy`:
``adapt(x_support, y_support)`` fits on the realised support window and returns a model
with ``predict_row``, so it runs on exactly the features, labels, support windows and
schedule MetaStrategy uses. Pure NumPy (float64); no backtrader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from metabt._checks import check_support
from metabt.errors import ConfigError

if TYPE_CHECKING:
    from metabt.learn.spec import FeatureSpecLike

__all__ = ["LinearFit", "RLSAdapter", "RidgeAdapter", "select_by_validation"]


@dataclass(frozen=True)
class LinearFit:
    """A linear forecaster fitted to one support window: ŷ = x·coef + intercept.

    Attributes:
        coef: (F,) float64 coefficients.
        intercept: float64 intercept.
        loss_before: support MSE of predicting 0 (the forecaster before fitting).
        loss_after: support MSE of the fit (in-sample).
        steps: 0 (closed form; kept for the adaptation log).
    """

    coef: np.ndarray
    intercept: float
    loss_before: float
    loss_after: float
    steps: int = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions. x: (N, F) or (F,) -> (N,) float64."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None, :]
        return arr @ self.coef + self.intercept

    def predict_row(self, x: np.ndarray) -> float:
        """One prediction: x (F,) -> float."""
        return float(np.dot(np.asarray(x, dtype=np.float64), self.coef) + self.intercept)


def _check_support(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xn = np.asarray(x, dtype=np.float64)
    yn = np.asarray(y, dtype=np.float64)
    check_support(xn, yn)
    return xn, yn


def _fit(beta: np.ndarray, x: np.ndarray, y: np.ndarray) -> LinearFit:
    """A :class:`LinearFit` from coefficients with the intercept last, scored on (x, y)."""
    coef, intercept = beta[:-1], float(beta[-1])
    residual = x @ coef + intercept - y
    return LinearFit(coef, intercept, float(y @ y) / len(y), float(residual @ residual) / len(y))


def _weighted_ridge(x: np.ndarray, y: np.ndarray, weights: np.ndarray, penalty: float) -> LinearFit:
    """argmin Σ w_s (y_s − x_s·β − b)² + penalty·|β|², intercept b not penalised."""
    total = weights.sum()
    x_mean = weights @ x / total
    y_mean = float(weights @ y / total)
    xc, yc = x - x_mean, y - y_mean
    gram = (xc * weights[:, None]).T @ xc
    gram[np.diag_indices_from(gram)] += penalty
    coef = np.linalg.solve(gram, (xc * weights[:, None]).T @ yc)
    return _fit(np.append(coef, y_mean - float(x_mean @ coef)), x, y)


class _LinearAdapter:
    """What both linear adapters share: their feature spec, one input row, the horizon."""

    algorithm = "linear"
    window = 1

    def __init__(self, feature_spec: FeatureSpecLike | None) -> None:
        self.feature_spec = feature_spec

    @property
    def horizon(self) -> int | None:
        """Label horizon in bars, from the feature spec (None without one)."""
        return None if self.feature_spec is None else self.feature_spec.horizon


class RidgeAdapter(_LinearAdapter):
    """Ridge regression refitted on each support window (closed form).

    ``β = (X̃ᵀX̃ + αI)⁻¹ X̃ᵀỹ`` on the centred support window, with an unpenalised
    intercept (Hoerl and Kennard 1970). In a backtest: refitted every ``adapt_every``
    bars on the last ``support`` realised (x, y) pairs, like MetaStrategy's inner loop.

    Args:
        feature_spec: the features and label (shared with the meta-learner it is compared
            with).
        alpha: ridge penalty (> 0), in units of summed squared features; choose it on
            validation tasks (:func:`select_by_validation`). Default 10.

    Raises:
        ConfigError: a non-positive or non-finite ``alpha``.

    References:
        Hoerl and Kennard 1970, "Ridge Regression: Biased Estimation for Nonorthogonal
        Problems", Technometrics 12(1).
    """

    algorithm = "ridge"

    def __init__(self, feature_spec: FeatureSpecLike | None, alpha: float = 10.0) -> None:
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ConfigError(f"ridge alpha must be a finite number > 0, got {alpha!r}")
        super().__init__(feature_spec)
        self.alpha = float(alpha)

    def adapt(
        self, x_support: np.ndarray, y_support: np.ndarray, steps: int | None = None
    ) -> LinearFit:
        """Fit on one support window. x: (S, F), y: (S,) -> :class:`LinearFit`.

        ``steps`` is ignored (closed form); it is accepted for MetaStrategy's interface.

        Raises:
            ConfigError: mismatched shapes, an empty window or non-finite values.
        """
        x, y = _check_support(x_support, y_support)
        return _weighted_ridge(x, y, np.ones(len(y)), self.alpha)

    def __repr__(self) -> str:
        return f"RidgeAdapter(alpha={self.alpha:g})"


class RLSAdapter(_LinearAdapter):
    """Recursive least squares with exponential forgetting, over the realised support window.

    The classical online-adaptive linear model: each realised pair updates
    ``k = P x / (λ + xᵀP x)``, ``β ← β + k (y − xᵀβ)``, ``P ← (P − k xᵀP) / λ``, from
    ``β = 0`` and ``P = I/δ`` (x with a trailing 1 for the intercept). After the pairs
    s = 1..n the recursion's β is the weighted ridge solution
    ``argmin Σ λ^{n−s} (y_s − x_sᵀβ)² + λ^n δ |β|²``, which is what :meth:`adapt` computes
    in closed form (equal to the recursion to float precision; tested). In a backtest it is
    re-run every bar (``adapt_every=1``) over the last ``support`` realised pairs, i.e.
    the recursion started ``support`` bars back.

    Args:
        feature_spec: the features and label.
        forgetting: λ in (0, 1]: weight of a pair one bar older. Default 0.99 (a memory of
            about 100 bars); choose it on validation tasks.
        delta: prior precision δ > 0 of β (ridge on the oldest state). Default 1.0.

    Raises:
        ConfigError: λ outside (0, 1] or a non-positive δ.

    References:
        Haykin 2002, "Adaptive Filter Theory", ch. 9 (exponentially weighted RLS);
        Ljung and Söderström 1983, "Theory and Practice of Recursive Identification".
    """

    algorithm = "rls"

    def __init__(
        self, feature_spec: FeatureSpecLike | None, forgetting: float = 0.99, delta: float = 1.0
    ) -> None:
        if not (isinstance(forgetting, (int, float)) and 0 < forgetting <= 1):
            raise ConfigError(f"RLS forgetting must be in (0, 1], got {forgetting!r}")
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
            raise ConfigError(f"RLS delta must be a finite number > 0, got {delta!r}")
        super().__init__(feature_spec)
        self.forgetting = float(forgetting)
        self.delta = float(delta)

    def adapt(
        self, x_support: np.ndarray, y_support: np.ndarray, steps: int | None = None
    ) -> LinearFit:
        """Run the recursion over one support window (closed form). x: (S, F), y: (S,).

        Raises:
            ConfigError: mismatched shapes, an empty window or non-finite values.
        """
        x, y = _check_support(x_support, y_support)
        n = len(y)
        weights = self.forgetting ** np.arange(n - 1, -1, -1, dtype=np.float64)
        xa = np.hstack([x, np.ones((n, 1))])
        gram = (xa * weights[:, None]).T @ xa
        gram[np.diag_indices_from(gram)] += self.delta * self.forgetting**n
        return _fit(np.linalg.solve(gram, (xa * weights[:, None]).T @ y), x, y)

    def recursion(self, x_support: np.ndarray, y_support: np.ndarray) -> LinearFit:
        """The same fit by the RLS recursion, pair by pair (the reference for tests)."""
        x, y = _check_support(x_support, y_support)
        n, f = x.shape
        beta = np.zeros(f + 1)
        p = np.eye(f + 1) / self.delta
        lam = self.forgetting
        for row, target in zip(np.hstack([x, np.ones((n, 1))]), y):
            px = p @ row
            gain = px / (lam + row @ px)
            beta = beta + gain * (target - row @ beta)
            p = (p - np.outer(gain, px)) / lam
        return _fit(beta, x, y)

    def __repr__(self) -> str:
        return f"RLSAdapter(forgetting={self.forgetting:g}, delta={self.delta:g})"


def select_by_validation(
    make: Callable[[float], RidgeAdapter | RLSAdapter],
    grid: Sequence[float],
    batch: Sequence[Any],
    score: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> tuple[float, dict[float, float]]:
    """Pick a hyper-parameter by a validation loss on validation tasks (lower is better).

    For each value v in ``grid``, ``make(v)`` is fitted on every task's support window and
    predicts its query window (which starts ``horizon`` bars after the support ends, as in
    deployment); the loss is the mean query MSE, or ``score`` of the whole batch's
    predictions (e.g. the after-cost P&L objective of the neural learners, so that every
    learner is selected by the same rule). Use tasks strictly before the test period only.

    Args:
        make: a callable value -> adapter (e.g. ``lambda a: RidgeAdapter(spec, a)``).
        grid: candidate values.
        batch: validation tasks xs (B, S, F), ys (B, S), xq (B, Q, F), yq (B, Q), arrays
            or tensors.
        score: (pred (B, Q), yq (B, Q)) float64 -> loss; None for the mean query MSE.

    Returns:
        (best value, {value: validation loss}); ties go to the smaller value.

    Raises:
        ConfigError: an empty grid or batch.
    """
    xs, ys, xq, yq = (np.asarray(t, dtype=np.float64) for t in tuple(batch)[:4])
    if not len(grid) or not len(xs):
        raise ConfigError("select_by_validation needs a non-empty grid and validation batch")
    scores: dict[float, float] = {}
    for value in grid:
        adapter = make(value)
        pred = np.stack([adapter.adapt(xs[b], ys[b]).predict(xq[b]) for b in range(len(xs))])
        if score is None:
            scores[float(value)] = float(np.mean(np.mean((pred - yq) ** 2, axis=1)))
        else:
            scores[float(value)] = float(score(pred, yq))
    best = min(scores, key=lambda v: (scores[v], v))
    return best, scores
