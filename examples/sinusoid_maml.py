"""Few-shot sinusoid regression with MetaLearner (Finn et al. 2017, section 5.1).

Meta-trains MAML on random sinusoids, then fits a new sinusoid from 10 points in a few
gradient steps, beside ERM (joint training) and scratch (random init) fine-tuned the same way.

    python examples/sinusoid_maml.py [--steps 1500]
"""

from __future__ import annotations

import argparse

import numpy as np

from metabt.experiments.sinusoid import SinusoidTasks
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP


def main(steps: int) -> None:
    tasks = SinusoidTasks(support=10, query=10)
    test = tasks.fixed(100, seed=123)  # held-out tasks

    for algorithm in ("maml", "erm", "scratch"):
        learner = MetaLearner(
            MLP(1, (40, 40), seed=0),
            algorithm=algorithm,
            inner_lr=0.01,
            inner_steps=1,
            meta_lr=1e-3,
            seed=0,
        )
        learner.fit(tasks, steps=steps, batch_size=25, progress=False)
        mse = learner.evaluate(*test, steps=10)
        print(f"{algorithm:<8} query MSE after 10 steps on K=10 points: {mse:.3f}")

    # one new task, end to end
    xs, ys, _, _ = tasks.sample(1, np.random.default_rng(7))
    learner = MetaLearner(MLP(1, (40, 40), seed=0), inner_lr=0.01, inner_steps=1, seed=0)
    learner.fit(tasks, steps=steps, batch_size=25, progress=False)
    adapted = learner.adapt(xs[0], ys[0], steps=10)
    print(f"support MSE {adapted.loss_before:.3f} -> {adapted.loss_after:.3f} after 10 steps")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="meta-training steps")
    main(parser.parse_args().steps)
