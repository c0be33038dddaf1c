"""The sinusoid few-shot regression benchmark of Finn et al. 2017 (section 5.1), and a
synthetic market-regime classification benchmark for ProtoNet (:class:`RegimeTasks`).

A task is y = A·sin(x − φ) with amplitude A ~ U[0.1, 5], phase φ ~ U[0, π] and inputs
x ~ U[−5, 5]; the learner sees K support points and is scored on query points of the same
task. It checks that meta-learning works at all: after a few inner steps, a MAML
initialisation fits a new sinusoid from 10 points, while a jointly trained model (ERM, it
learns the mean function, which is ~0) or a random initialisation cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metabt.errors import ConfigError

__all__ = [
    "RegimeTasks",
    "SinusoidTasks",
    "nearest_mean_accuracy",
    "run_sinusoid",
    "sinusoid_model",
]


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

    The other families run on their own models (:func:`sinusoid_model`); CNP and ProtoNet
    take no gradient step, so their three numbers are equal; CAVIA adapts its context
    (use a large ``inner_lr``, ~1, as in Zintgraf et al. 2019).

    Args:
        algorithm: a MetaLearner algorithm ("maml", "erm", "scratch", "cnp", ...).
        steps: outer steps (the paper uses 70,000; a few thousand already separate methods).
        batch_size, inner_lr, inner_steps, meta_lr, hidden: as in the paper by default.
        eval_steps: fine-tuning steps at evaluation. Default 10 (the paper's figure 2 range).
        eval_tasks: number of held-out evaluation tasks. Default 200.
        seed: seeds the model initialisation, the training tasks and the evaluation tasks.

    Returns:
        ``{"query_mse": mean query MSE after eval_steps steps, "query_mse_1step": after one
        step, "query_mse_0step": before adaptation}``.
    """
    from metabt.learn.learner import MetaLearner

    tasks = SinusoidTasks()
    learner = MetaLearner(
        sinusoid_model(algorithm, hidden, seed=seed),
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


def sinusoid_model(algorithm: str, hidden: tuple[int, ...] = (40, 40), *, seed: int = 0) -> Any:
    """The model ``algorithm`` runs on for a 1-input benchmark (``metabt.learn.models``).

    Args:
        algorithm: "cnp", "protonet" and "cavia" get their own model (the CNP with width
            ``max(hidden)``); every other algorithm the MLP.
        hidden: hidden widths. seed: initialisation seed.

    Returns:
        A freshly initialised ``metabt.learn.models.MetaModel`` with one input.
    """
    from metabt.learn.models import build_model

    if algorithm == "cnp":
        return build_model({"type": "cnp", "n_features": 1, "hidden": max(hidden), "seed": seed})
    kind = algorithm if algorithm in ("protonet", "cavia") else "mlp"
    return build_model({"type": kind, "n_features": 1, "hidden": list(hidden), "seed": seed})


@dataclass(frozen=True)
class RegimeTasks:
    """Synthetic market-regime tasks, the classification benchmark of ProtoNet.

    Each task draws a direction w (a unit vector in the span of the first ``signal``
    features, uniform angle); inputs are x ~ N(0, I) in the first ``signal`` dims and
    N(0, ``nuisance_scale``²) in the other ``features − signal`` dims (common to all
    tasks, irrelevant); the label (a forward return) is y = w·x + ``noise``·ε. Its class
    (down/flat/up at the support's terciles,
    ``metabt.learn.algorithms.protonet.label_classes``) depends on a task-specific linear
    rule of x. A learned embedding can discard the nuisance dims;
    a nearest-class-mean rule on raw features (:func:`nearest_mean_accuracy`) cannot.

    Args:
        support: rows per support set. Default 60. query: rows per query set. Default 20.
        features: input width F. Default 12. signal: informative dims. Default 2.
        nuisance_scale: std of the other dims. Default 3.0. noise: label noise. Default 0.3.

    Raises:
        ConfigError: sizes below 1, or ``signal`` > ``features``.
    """

    support: int = 60
    query: int = 20
    features: int = 12
    signal: int = 2
    nuisance_scale: float = 3.0
    noise: float = 0.3

    def __post_init__(self) -> None:
        if min(self.support, self.query, self.features, self.signal) < 1:
            raise ConfigError("support, query, features and signal must be >= 1")
        if self.signal > self.features:
            raise ConfigError(f"signal {self.signal} exceeds features {self.features}; lower it")

    def sample(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A batch: xs (B, S, F), ys (B, S), xq (B, Q, F), yq (B, Q), float32 tensors."""
        n = self.support + self.query
        scale = np.full(self.features, self.nuisance_scale)
        scale[: self.signal] = 1.0
        x = rng.standard_normal((batch_size, n, self.features)) * scale
        w = rng.standard_normal((batch_size, self.signal))
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        y = np.einsum("bnf,bf->bn", x[..., : self.signal], w)
        y += self.noise * rng.standard_normal(y.shape)
        k = self.support
        as_t = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
        return as_t(x[:, :k]), as_t(y[:, :k]), as_t(x[:, k:]), as_t(y[:, k:])

    def fixed(self, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A deterministic batch of ``n`` tasks (for validation and evaluation)."""
        return self.sample(n, np.random.default_rng([seed, 2018]))


def nearest_mean_accuracy(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
    """Accuracy of the nearest-class-mean rule on raw features (a non-learned baseline).

    The class means of each task's support inputs (classes as in
    ``metabt.learn.algorithms.protonet.label_classes``) classify each query row by the
    nearest mean in Euclidean distance; empty classes are never chosen.

    Args:
        xs (B, S, F), ys (B, S), xq (B, Q, F), yq (B, Q): a task batch.

    Returns:
        Share of the B·Q query rows classified correctly.
    """
    from metabt.learn.algorithms.protonet import label_classes

    xs, ys, xq, yq = (t.double() for t in (xs, ys, xq, yq))
    cs, mask, cq = label_classes(ys, yq)
    assert cq is not None
    onehot = torch.nn.functional.one_hot(cs, 3).double().transpose(-1, -2)  # (B, 3, S)
    means = onehot @ xs / onehot.sum(-1, keepdim=True).clamp(min=1.0)
    dist = ((xq.unsqueeze(-2) - means.unsqueeze(-3)) ** 2).sum(-1)  # (B, Q, 3)
    dist = torch.where(mask.unsqueeze(-2), dist, torch.full_like(dist, math.inf))
    return float((dist.argmin(-1) == cq).double().mean())
