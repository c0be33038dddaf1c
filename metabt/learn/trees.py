"""A gradient-boosted tree forecaster (LightGBM) with the adapter interface of the linear ones.

:class:`GbmAdapter` is a *static* model: it is trained once, on the pooled rows of the
training tasks (like ERM), with its number of boosting rounds chosen by keep-best on the
validation tasks' query MSE (LightGBM's early stopping on the validation rows, the
``best_iteration`` kept). Inside :class:`metabt.strategies.meta.MetaStrategy` its
:meth:`GbmAdapter.adapt` returns the same fitted booster on every support window (scored on
that window for the adaptation log), so it trades on exactly the features, labels, schedule,
sizer and costs of the other learners. Training is single-threaded with a fixed seed and
``deterministic=True``: equal inputs give equal trees.

``lightgbm`` is imported inside the functions that need it, never at module import.

References:
    Ke et al. 2017, "LightGBM: A Highly Efficient Gradient Boosting Decision Tree", NeurIPS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from metabt.errors import ConfigError

if TYPE_CHECKING:
    from metabt.learn.spec import FeatureSpecLike

__all__ = ["GBM_PARAMS", "GBM_ROUNDS", "GBM_STOPPING", "GbmAdapter", "GbmFit", "gbm_params"]

#: LightGBM parameters of the baseline (fixed before any run): shallow trees, a slow rate,
#: large leaves (daily returns are noisy), one thread and a fixed seed (reproducible).
GBM_PARAMS: Mapping[str, Any] = {
    "objective": "regression",
    "metric": "l2",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "lambda_l2": 1.0,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "num_threads": 1,
    "deterministic": True,
    "force_col_wise": True,
    "verbosity": -1,
}
#: Most boosting rounds tried.
GBM_ROUNDS = 1000
#: Rounds without a better validation MSE before training stops (the best one is kept).
GBM_STOPPING = 50


def gbm_params(seed: int = 0, **changes: Any) -> dict[str, Any]:
    """The LightGBM parameters :class:`GbmAdapter` trains with: :data:`GBM_PARAMS` and ``seed``.

    Args:
        seed: LightGBM's ``seed`` (it seeds every random choice). Default 0.
        changes: parameters that replace the defaults.

    Returns:
        The parameter dict passed to ``lightgbm.train``.
    """
    return {**GBM_PARAMS, "seed": int(seed), **changes}


def _rows(x: Any, y: Any, label: str) -> tuple[np.ndarray, np.ndarray]:
    xn = np.asarray(x, dtype=np.float32)
    yn = np.asarray(y, dtype=np.float32)
    if xn.ndim != 2 or yn.shape != (len(xn),) or len(xn) == 0:
        raise ConfigError(
            f"{label}: x must be (N, F) and y (N,) with N >= 1, got x {xn.shape}, y {yn.shape}"
        )
    if not (np.isfinite(xn).all() and np.isfinite(yn).all()):
        raise ConfigError(f"{label}: x and y must be finite (drop the warm-up rows)")
    return xn, yn


@dataclass(frozen=True)
class GbmFit:
    """The fitted booster, as the adapted model of one support window.

    Attributes:
        booster: the ``lightgbm.Booster`` (its kept rounds: ``rounds``).
        rounds: boosting rounds used in predictions (the validation-selected ones).
        loss_before: support MSE of predicting 0.
        loss_after: support MSE of the booster (it was not fitted on this window).
        steps: 0 (nothing is fitted at adaptation).
    """

    booster: Any
    rounds: int
    loss_before: float = float("nan")
    loss_after: float = float("nan")
    steps: int = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions. x: (N, F) or (F,) -> (N,) float64 (inputs cast to float32 as trained)."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        out = self.booster.predict(arr, num_iteration=self.rounds, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def predict_row(self, x: np.ndarray) -> float:
        """One prediction: x (F,) -> float."""
        return float(self.predict(x)[0])


@dataclass
class GbmAdapter:
    """A LightGBM regressor trained once, with the adapter interface (``adapt``).

    Build it with :meth:`train`. ``adapt`` never refits: the model is static (the tree
    counterpart of ErmStatic), so its forecast at bar t uses only what it was trained on,
    strictly before the training end.

    Attributes:
        feature_spec: the features and label (shared with the learners it is compared with).
        booster: the trained ``lightgbm.Booster``.
        rounds: the kept number of boosting rounds (``best_iteration``).
        val_curve: validation query MSE after each round, as LightGBM logged it.
        params: the parameters it was trained with.
        train_rows: rows it was trained on.
    """

    feature_spec: FeatureSpecLike | None
    booster: Any
    rounds: int
    val_curve: list[float] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    train_rows: int = 0

    algorithm = "lightgbm"
    window = 1

    @classmethod
    def train(
        cls,
        feature_spec: FeatureSpecLike | None,
        x: Any,
        y: Any,
        x_val: Any,
        y_val: Any,
        *,
        seed: int = 0,
        rounds: int = GBM_ROUNDS,
        stopping: int = GBM_STOPPING,
        score: Callable[[np.ndarray], float] | None = None,
        **changes: Any,
    ) -> GbmAdapter:
        """Train on (x, y), keeping the round count with the lowest validation loss.

        ``lightgbm.train(gbm_params(seed, **changes), Dataset(x, y), rounds,
        valid_sets=[Dataset(x_val, y_val)], callbacks=[early_stopping(stopping)])``:
        the kept round count is ``best_iteration``, the argmin of the logged validation
        loss: the MSE, or ``score`` of the validation predictions as LightGBM's ``feval``
        (its built-in metric turned off), e.g. the after-cost P&L objective the neural
        learners are kept by (LightGBM docs, ``lightgbm.train``: ``feval``).

        Args:
            feature_spec: the features and label.
            x, y: (N, F) training rows and (N,) labels (every row's label realised before
                the validation period).
            x_val, y_val: the validation rows (the validation tasks' query rows).
            seed: LightGBM's seed. Default 0.
            rounds: most boosting rounds. Default :data:`GBM_ROUNDS`.
            stopping: rounds without improvement before stopping. Default
                :data:`GBM_STOPPING`.
            score: (N_val,) float64 validation predictions -> loss (lower is better);
                None for the MSE. Default None.
            changes: LightGBM parameters replacing :data:`GBM_PARAMS`.

        Returns:
            The trained adapter.

        Raises:
            ConfigError: shapes that do not fit, empty or non-finite rows, bad round counts.
        """
        import lightgbm

        for label, value in (("rounds", rounds), ("stopping", stopping)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")
        xn, yn = _rows(x, y, "training rows")
        xv, yv = _rows(x_val, y_val, "validation rows")
        if xv.shape[1] != xn.shape[1]:
            raise ConfigError(
                f"validation rows have {xv.shape[1]} features, training rows {xn.shape[1]}"
            )
        params = gbm_params(seed, **changes)
        feval = None
        if score is not None:
            params = {**params, "metric": "None"}

            def feval(pred: np.ndarray, _: Any) -> tuple[str, float, bool]:
                return "objective", float(score(np.asarray(pred, dtype=np.float64))), False

        data = lightgbm.Dataset(xn, yn, params=params, free_raw_data=False)
        val = lightgbm.Dataset(xv, yv, reference=data, free_raw_data=False)
        log: dict[str, Any] = {}
        booster = lightgbm.train(
            params,
            data,
            num_boost_round=rounds,
            valid_sets=[val],
            valid_names=["val"],
            feval=feval,
            callbacks=[
                lightgbm.early_stopping(stopping, verbose=False),
                lightgbm.record_evaluation(log),
            ],
        )
        curve = [float(v) for v in log["val"]["l2" if score is None else "objective"]]
        kept = int(booster.best_iteration) or int(np.argmin(curve)) + 1
        return cls(feature_spec, booster, kept, curve, params, len(yn))

    @property
    def horizon(self) -> int | None:
        """Label horizon in bars, from the feature spec (None without one)."""
        return None if self.feature_spec is None else self.feature_spec.horizon

    @property
    def val_loss(self) -> float:
        """Validation loss (query MSE, or the ``score`` trained with) at the kept round count."""
        return self.val_curve[self.rounds - 1] if self.val_curve else float("nan")

    def model(self) -> GbmFit:
        """The fitted booster at its kept round count (no support window)."""
        return GbmFit(self.booster, self.rounds)

    def adapt(
        self, x_support: np.ndarray, y_support: np.ndarray, steps: int | None = None
    ) -> GbmFit:
        """The same trained booster, scored on the support window (nothing is refitted).

        ``steps`` is ignored; it is accepted for MetaStrategy's interface.

        Raises:
            ConfigError: mismatched shapes, an empty window or non-finite values.
        """
        x, y = _rows(x_support, y_support, "support window")
        fitted = self.model()
        y64 = y.astype(np.float64)
        residual = fitted.predict(x) - y64
        return GbmFit(
            self.booster,
            self.rounds,
            float(y64 @ y64) / len(y64),
            float(residual @ residual) / len(y64),
        )

    def __repr__(self) -> str:
        return f"GbmAdapter(rounds={self.rounds}, rows={self.train_rows})"
