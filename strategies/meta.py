"""The ready MetaStrategy configuration of the demo: features, model, meta-training, schedule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from metabt.errors import ConfigError
from metabt.features import FeatureSpec
from metabt.meta import FitResult, MetaLearner
from metabt.models import GRU, MLP, MetaModel
from metabt.tasks import TaskSampler

__all__ = ["DEMO", "DemoConfig", "DemoTraining", "demo_learner"]


@dataclass(frozen=True)
class DemoConfig:
    """Everything the main job (``metabt backtest`` with no arguments) uses.

    Attributes:
        start: first date of the backtest; meta-training uses only data strictly before it.
        spec: the causal features and the label horizon (bars).
        model_type: "mlp" or "gru"; hidden: MLP widths; gru_hidden, gru_window: GRU size.
        algorithm: MetaLearner algorithm; inner_lr, inner_steps, meta_lr: its rates/steps.
        meta_steps: outer steps; batch_size: tasks per step.
        support, query: bars per support / query window (tasks and the strategy's support).
        adapt_every: bars between adaptations in the backtest.
        val_years: the last years before ``start`` held out as validation tasks.
        warmup_bars: bars fed before ``start`` so features and the first support are ready.
        sizer: SignalSizer params.
        seed: seeds model initialisation and task sampling.
    """

    start: str = "2008-01-01"
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    model_type: str = "mlp"
    hidden: tuple[int, ...] = (32, 32)
    gru_hidden: int = 32
    gru_window: int = 10
    algorithm: str = "maml"
    inner_lr: float = 0.02
    inner_steps: int = 5
    meta_lr: float = 1e-3
    meta_steps: int = 600
    batch_size: int = 16
    support: int = 60
    query: int = 20
    adapt_every: int = 5
    val_years: float = 2.0
    warmup_bars: int = 300
    sizer: Mapping[str, Any] = field(
        default_factory=lambda: {"target_vol": 0.10, "max_leverage": 1.0, "deadband": 0.05}
    )
    seed: int = 0

    def with_(self, **changes: Any) -> DemoConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def strategy_kwargs(self) -> dict[str, Any]:
        """MetaStrategy params of this configuration (without the learner)."""
        return {"adapt_every": self.adapt_every, "support": self.support, "seed": self.seed}

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["spec"] = self.spec.to_dict()
        return out


DEMO = DemoConfig()


@dataclass
class DemoTraining:
    """The outcome of :func:`demo_learner`.

    Attributes:
        learner: the meta-trained learner (θ with the best validation loss).
        fit: what ``MetaLearner.fit`` did.
        val_zero_mse: validation query MSE of always predicting 0 (no view), the
            baseline a useful model must beat.
    """

    learner: MetaLearner
    fit: FitResult
    val_zero_mse: float


def _model(cfg: DemoConfig) -> MetaModel:
    if cfg.model_type == "mlp":
        return MLP(cfg.spec.n_features, cfg.hidden, seed=cfg.seed)
    if cfg.model_type == "gru":
        return GRU(cfg.spec.n_features, cfg.gru_hidden, cfg.gru_window, seed=cfg.seed)
    raise ConfigError(f"model type {cfg.model_type!r} is unknown; use 'mlp' or 'gru'")


def demo_learner(
    frames: Mapping[str, pd.DataFrame],
    cfg: DemoConfig = DEMO,
    *,
    end: str | pd.Timestamp | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
) -> DemoTraining:
    """Meta-train the demo learner on ``frames`` strictly before ``end`` (default ``cfg.start``).

    The last ``cfg.val_years`` years before ``end`` give the validation tasks (θ with the
    best validation query loss is kept); the rest give the training tasks. Every task's
    labels are realised before the split or before ``end`` respectively.

    Args:
        frames: name -> validated OHLCV frame.
        cfg: the configuration. Default :data:`DEMO`.
        end: cut-off date; no price on or after it is used. Default ``cfg.start``.
        checkpoint: optional path for the checkpoint (written atomically; resumes).
        progress: show a progress bar.

    Returns:
        A :class:`DemoTraining` (learner, fit result, zero-prediction baseline).

    Raises:
        ConfigError: too little data before ``end`` for one task.
    """
    end_ts = pd.Timestamp(end if end is not None else cfg.start)
    split = end_ts - pd.DateOffset(days=round(365.25 * cfg.val_years))
    window = cfg.gru_window if cfg.model_type == "gru" else 1
    tasks = TaskSampler.from_frames(
        frames, cfg.spec, support=cfg.support, query=cfg.query, end=end_ts, window=window
    )
    train, val = tasks.split(split)
    learner = MetaLearner(
        _model(cfg),
        algorithm=cfg.algorithm,
        inner_lr=cfg.inner_lr,
        inner_steps=cfg.inner_steps,
        meta_lr=cfg.meta_lr,
        seed=cfg.seed,
        feature_spec=cfg.spec,
    )
    result = learner.fit(
        train,
        cfg.meta_steps,
        batch_size=cfg.batch_size,
        val_tasks=val,
        checkpoint=checkpoint,
        progress=progress,
    )
    learner.train_range = (str(tasks.date_range[0])[:10], str(tasks.date_range[1])[:10])
    yq = val.fixed(64, cfg.seed)[3]
    return DemoTraining(learner, result, float((yq.double() ** 2).mean()))
