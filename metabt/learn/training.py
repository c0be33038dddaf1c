"""The meta-training loop: task batches, keep-best validation, early stopping and resuming."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from metabt.errors import ConfigError
from metabt.learn.algorithms import LearnerFamily
from metabt.learn.checkpoint import (
    Checkpointable,
    learner_state,
    load_learner_state,
    restore_fit_state,
    save_learner,
)

__all__ = [
    "Batch",
    "FitResult",
    "TaskBatch",
    "TaskSource",
    "Trainable",
    "as_batch",
    "batch_extra",
    "fit",
]

#: A task batch: xs (B, S, F_in), ys (B, S), xq (B, Q, F_in), yq (B, Q).
Batch = tuple[Tensor, Tensor, Tensor, Tensor]


class TaskBatch(tuple[Tensor, Tensor, Tensor, Tensor]):
    """A task batch (xs, ys, xq, yq) that also carries per-query-row arrays for the loss.

    It unpacks as the 4-tuple :data:`Batch`; ``extra`` maps a name to a (B, Q) tensor
    (e.g. ``"returns"`` and ``"vol"`` of :class:`metabt.learn.losses.PnLLoss`).
    """

    extra: dict[str, Tensor]

    def __new__(
        cls, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, extra: Mapping[str, Tensor]
    ) -> TaskBatch:
        self = super().__new__(cls, (xs, ys, xq, yq))
        self.extra = dict(extra)
        return self


def batch_extra(batch: Batch) -> dict[str, Tensor] | None:
    """The per-row arrays of a :class:`TaskBatch`, None for a plain 4-tuple."""
    return batch.extra if isinstance(batch, TaskBatch) else None


def as_batch(
    xs: Tensor | np.ndarray,
    ys: Tensor | np.ndarray,
    xq: Tensor | np.ndarray,
    yq: Tensor | np.ndarray,
    dtype: torch.dtype,
) -> Batch:
    """Check a task batch's shapes and convert it to θ's dtype.

    Args:
        xs: (B, S, F_in) support inputs; ys: (B, S) support labels; xq: (B, Q, F_in) query
            inputs; yq: (B, Q) query labels (tensors or array-likes).
        dtype: θ's dtype (torch.float32 or torch.float64).

    Returns:
        (xs, ys, xq, yq) as tensors of ``dtype`` (the same tensors when already so).

    Raises:
        ConfigError: a wrong number of dimensions or shapes that do not fit together.
    """
    out = []
    for label, t, ndim in (("xs", xs, 3), ("ys", ys, 2), ("xq", xq, 3), ("yq", yq, 2)):
        t = torch.as_tensor(t)
        if t.ndim != ndim:
            raise ConfigError(f"{label} must have {ndim} dimensions, got shape {tuple(t.shape)}")
        out.append(t.to(dtype))
    xs, ys, xq, yq = out
    if xs.shape[:2] != ys.shape or xq.shape[:2] != yq.shape or xs.shape[0] != xq.shape[0]:
        raise ConfigError(
            f"task shapes do not fit: xs {tuple(xs.shape)}, ys {tuple(ys.shape)}, "
            f"xq {tuple(xq.shape)}, yq {tuple(yq.shape)}; "
            "expected (B,S,F), (B,S), (B,Q,F), (B,Q)"
        )
    return xs, ys, xq, yq


class TaskSource(Protocol):
    """Anything that samples task batches: ``metabt.features.tasks.TaskSampler`` is one."""

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """``batch_size`` tasks drawn with ``rng``: xs (B, S, F_in), ys (B, S), xq, yq."""
        ...


class Trainable(Checkpointable, Protocol):
    """What :func:`fit` drives (``metabt.learn.learner.MetaLearner`` is one)."""

    @property
    def family(self) -> LearnerFamily:
        """The learner family (its ``updates_theta`` says whether ``fit`` runs any step)."""
        ...

    def meta_step(
        self,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Mapping[str, Tensor] | None = None,
    ) -> float:
        """One outer step; returns the mean query loss after adaptation."""
        ...

    def evaluate(
        self,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        steps: int | None = None,
        extra: Mapping[str, Tensor] | None = None,
    ) -> float:
        """Mean query loss after adaptation; θ is not changed."""
        ...


@dataclass
class FitResult:
    """What :meth:`metabt.learn.learner.MetaLearner.fit` did.

    Attributes:
        steps: outer steps run in total (including any before a resume).
        best_step: the step whose θ was kept (the best validation loss), or the last step.
        best_val_loss: mean query loss after adaptation on the validation tasks at best_step
            (NaN without validation tasks).
        train_losses: mean query loss after adaptation of every outer step.
        val_losses: (step, validation loss) pairs.
        stopped_early: True if validation stopped improving for ``patience`` evaluations.
        resumed_from: the step training resumed from (0 for a fresh start).
    """

    steps: int = 0
    best_step: int = 0
    best_val_loss: float = math.nan
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from: int = 0


@dataclass
class _Run:
    """The mutable state of one :func:`fit` call (what a checkpoint's ``fit_state`` holds)."""

    result: FitResult
    best_state: dict[str, Tensor]
    bad_evals: int = 0
    step: int = 0

    def fit_state(self, learner: Trainable) -> dict[str, Any]:
        """The ``fit_state`` entry of a checkpoint: enough to resume exactly."""
        result = self.result
        return {
            "step": self.step,
            "optimizer": learner.optimizer.state_dict(),
            "best_state": dict(self.best_state),
            "best_step": result.best_step,
            "best_val_loss": result.best_val_loss,
            "bad_evals": self.bad_evals,
            "train_losses": list(result.train_losses),
            "val_losses": [[s, v] for s, v in result.val_losses],
            "stopped_early": result.stopped_early,
        }

    @classmethod
    def resume(cls, learner: Trainable, path: Path) -> _Run:
        """Load θ, optimizer and progress from a checkpoint written during ``fit``."""
        state = restore_fit_state(learner, path)
        result = FitResult(
            steps=int(state["step"]),
            best_step=int(state["best_step"]),
            best_val_loss=float(state["best_val_loss"]),
            train_losses=[float(v) for v in state["train_losses"]],
            val_losses=[(int(s), float(v)) for s, v in state["val_losses"]],
            stopped_early=bool(state["stopped_early"]),
            resumed_from=int(state["step"]),
        )
        learner.step_count = result.steps
        return cls(result, dict(state["best_state"]), int(state["bad_evals"]), result.steps)


def _snapshot(learner: Trainable) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in learner_state(learner).items()}


def _validate(
    learner: Trainable,
    run: _Run,
    val_batch: Batch | None,
    patience: int | None,
    val_steps: int | None = None,
) -> bool:
    """Evaluate on the validation tasks, keep θ if best; True when patience ran out."""
    if val_batch is None:
        return False
    result = run.result
    loss = learner.evaluate(*val_batch, steps=val_steps, extra=batch_extra(val_batch))
    # never a "best": NaN compares false with everything, so it would be kept; +inf after a
    # finite best is merely worse (it counts towards patience), with no best it is an error
    if math.isnan(loss) or (math.isinf(loss) and not math.isfinite(result.best_val_loss)):
        raise ConfigError(
            f"the validation loss is {loss} at step {run.step}: the learner diverged or the "
            "validation labels hold NaN/inf; lower meta_lr or inner_lr, or check the data"
        )
    result.val_losses.append((run.step, loss))
    if not (loss >= result.best_val_loss):  # the first evaluation: best is still NaN
        result.best_val_loss, result.best_step, run.bad_evals = loss, run.step, 0
        run.best_state = _snapshot(learner)
    else:
        run.bad_evals += 1
    return patience is not None and run.bad_evals >= patience


def _check_args(
    steps: int, batch_size: int, val_every: int, val_size: int, patience: int | None
) -> None:
    for label, value, low in (
        ("steps", steps, 0),
        ("batch_size", batch_size, 1),
        ("val_every", val_every, 1),
        ("val_size", val_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"patience must be a positive integer or None, got {patience!r}")


def fit(
    learner: Trainable,
    tasks: TaskSource,
    steps: int,
    *,
    batch_size: int = 16,
    val_tasks: TaskSource | Batch | None = None,
    val_size: int = 64,
    val_every: int = 50,
    patience: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    val_steps: int | None = None,
) -> FitResult:
    """Meta-train: ``steps`` outer steps, each on ``batch_size`` tasks from ``tasks``.

    Task batches come from ``np.random.default_rng([learner.seed, step])``, so a resumed
    run draws exactly the tasks an uninterrupted run would have drawn. With validation
    tasks, θ is evaluated every ``val_every`` steps and the best θ is kept (restored at
    the end); ``patience`` stops training after that many evaluations without improvement.

    Args:
        learner: the learner to train (a ``MetaLearner``); θ is updated in place.
        tasks: task sampler with ``sample(batch_size, rng)`` (a ``TaskSampler``); its
            ``date_range``, if any, becomes ``learner.train_range``.
        steps: total number of outer steps (a resumed run continues up to it).
        batch_size: tasks per outer step. Default 16.
        val_tasks: validation tasks: a sampler with ``fixed(n, seed)`` or a fixed batch
            xs (B, S, F_in), ys (B, S), xq (B, Q, F_in), yq (B, Q). Default None (keep the
            last θ).
        val_size: validation tasks drawn from a sampler. Default 64.
        val_every: outer steps between validations (and checkpoint writes). Default 50.
        patience: stop after this many validations without improvement. Default None.
        checkpoint: path written atomically every ``val_every`` steps and at the end.
        resume: continue from ``checkpoint`` if it holds an unfinished run. Default True.
        progress: show a tqdm progress bar. Default True.
        val_steps: inner steps before a validation task's query is scored: None for the
            learner's own (a learner that adapts in the backtest), 0 to score θ unadapted
            (a learner traded as it is, e.g. ErmStatic). Default None. Every learner of a
            comparison is selected by this one rule: keep the θ with the lowest
            validation loss, scored as it will be traded.

    Returns:
        A :class:`FitResult`.

    Raises:
        ConfigError: bad arguments, or training diverged (a non-finite loss).
        CheckpointError: a checkpoint to resume from is corrupt or was written for another
            configuration.
    """
    from tqdm.auto import tqdm

    _check_args(steps, batch_size, val_every, val_size, patience)
    if val_steps is not None and (
        isinstance(val_steps, bool) or not isinstance(val_steps, int) or val_steps < 0
    ):
        raise ConfigError(f"val_steps must be an integer >= 0 or None, got {val_steps!r}")
    val_batch: Batch | None = None
    if val_tasks is not None:
        fixed = getattr(val_tasks, "fixed", None)
        val_batch = fixed(val_size, learner.seed) if callable(fixed) else val_tasks  # type: ignore[assignment]
    date_range = getattr(tasks, "date_range", None)
    if date_range is not None:
        learner.train_range = (str(date_range[0])[:10], str(date_range[1])[:10])

    run = _Run(FitResult(), _snapshot(learner))
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and resume and path.exists():
        run = _Run.resume(learner, path)
    start = run.step
    if not learner.family.updates_theta:
        steps = start  # nothing to train: θ stays the random initialisation

    if start == 0 and val_batch is not None and not run.result.val_losses:
        _validate(learner, run, val_batch, patience, val_steps)
    bar = tqdm(
        total=steps,
        initial=start,
        disable=None if progress else True,  # None: off when not a terminal
        desc=f"meta-train {learner.algorithm}",
        unit="step",
        leave=False,
    )
    try:
        while run.step < steps:
            batch = tasks.sample(batch_size, np.random.default_rng([learner.seed, run.step]))
            loss = learner.meta_step(*batch, extra=batch_extra(batch))
            if not math.isfinite(loss):
                raise ConfigError(
                    f"meta-training diverged at step {run.step} (query loss {loss}); lower "
                    f"meta_lr ({learner.meta_lr}) or inner_lr ({learner.inner_lr})"
                )
            run.result.train_losses.append(loss)
            run.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if run.step % val_every == 0 or run.step == steps:
                stop = _validate(learner, run, val_batch, patience, val_steps)
                run.result.steps = run.step
                if path is not None:
                    save_learner(learner, path, fit_state=run.fit_state(learner))
                if stop:
                    run.result.stopped_early = True
                    break
    finally:
        bar.close()
    run.result.steps = run.step
    if val_batch is not None:
        load_learner_state(learner, run.best_state)
    else:
        run.result.best_step = run.step
    if path is not None:
        save_learner(learner, path, fit_state=run.fit_state(learner))
    return run.result
