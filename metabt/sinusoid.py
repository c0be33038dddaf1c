"""The sinusoid few-shot regression benchmark of Finn et al. 2017 (section 5.1).

A task is y = A·sin(x − φ) with amplitude A ~ U[0.1, 5], phase φ ~ U[0, π] and inputs
x ~ U[−5, 5]; the learner sees K support points and is scored on query points of the same
task. It checks that meta-learning works at all: after a few inner steps, a MAML
initialisation fits a new sinusoid from 10 points, while a jointly trained model (ERM, it
learns the mean function, which is ~0) or a random initialisation cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metabt.errors import ConfigError

__all__ = ["SinusoidTasks", "run_sinusoid"]


@dataclass(frozen=True)
class SinusoidTasks:
    """Sampler of sinusoid regression tasks (a task source for ``MetaLearner.fit``).

    Args:
        support: K, support points per task. Default 10 (the paper's K=10).
        query: query points per task. Default 10.
        amplitude: (low, high) of the uniform amplitude. Default (0.1, 5.0).
        phase: (low, high) of the uniform phase, radians. Default (0, π).
        x_range: (low, high) of the uniform inputs. Default (-5, 5).

    References:
        Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
        Deep Networks", section 5.1.
    """

    support: int = 10
    query: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self) -> None:
        if self.support < 1 or self.query < 1:
            raise ConfigError(f"support and query must be >= 1, got {self.support}, {self.query}")

    def sample(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A batch of tasks.

        Returns:
            xs (B, K, 1), ys (B, K), xq (B, Q, 1), yq (B, Q), float32 tensors.
        """
        amp = rng.uniform(*self.amplitude, size=(batch_size, 1))
        phase = rng.uniform(*self.phase, size=(batch_size, 1))
        x = rng.uniform(*self.x_range, size=(batch_size, self.support + self.query))
        y = amp * np.sin(x - phase)
        k = self.support
        as_t = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
        return as_t(x[:, :k, None]), as_t(y[:, :k]), as_t(x[:, k:, None]), as_t(y[:, k:])

    def fixed(self, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A deterministic batch of ``n`` tasks (for validation and evaluation)."""
        return self.sample(n, np.random.default_rng([seed, 2017]))


def run_sinusoid(
    algorithm: str,
    *,
    steps: int = 2000,
    batch_size: int = 25,
    inner_lr: float = 0.01,
    inner_steps: int = 1,
    eval_steps: int = 10,
    eval_tasks: int = 200,
    meta_lr: float = 1e-3,
    hidden: tuple[int, ...] = (40, 40),
    seed: int = 0,
) -> dict[str, float]:
    """Meta-train ``algorithm`` on sinusoid tasks and score it on new tasks.

    The paper's setting: MLP 1→40→40→1 (ReLU), K=10, inner learning rate 0.01, one inner
    step in meta-training, meta-batch 25, Adam. Evaluation fine-tunes every method the same
    way (``eval_steps`` steps of SGD at ``inner_lr``) on K points of each new task.

    Args:
        algorithm: a MetaLearner algorithm ("maml", "erm", "scratch", ...).
        steps: outer steps (the paper uses 70,000; a few thousand already separate methods).
        batch_size, inner_lr, inner_steps, meta_lr, hidden: as in the paper by default.
        eval_steps: fine-tuning steps at evaluation. Default 10 (the paper's figure 2 range).
        eval_tasks: number of held-out evaluation tasks. Default 200.
        seed: seeds the model initialisation, the training tasks and the evaluation tasks.

    Returns:
        ``{"query_mse": mean query MSE after eval_steps steps, "query_mse_1step": after one
        step, "query_mse_0step": before adaptation}``.
    """
    from metabt.meta import MetaLearner
    from metabt.models import MLP

    tasks = SinusoidTasks()
    learner = MetaLearner(
        MLP(1, hidden, seed=seed),
        algorithm=algorithm,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        meta_lr=meta_lr,
        seed=seed,
    )
    learner.fit(tasks, steps, batch_size=batch_size, progress=False)
    evaluation = tasks.fixed(eval_tasks, seed + 1_000_003)
    return {
        "query_mse": learner.evaluate(*evaluation, steps=eval_steps),
        "query_mse_1step": learner.evaluate(*evaluation, steps=1),
        "query_mse_0step": learner.evaluate(*evaluation, steps=0),
    }
