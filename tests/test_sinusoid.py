"""Proof that the engine meta-learns: sinusoid few-shot regression (Finn et al. 2017, 5.1)."""

from __future__ import annotations

import numpy as np

from metabt.experiments.sinusoid import SinusoidTasks, run_sinusoid


def test_sinusoid_tasks_follow_the_paper_distribution():
    xs, ys, xq, yq = SinusoidTasks().sample(500, np.random.default_rng(0))
    assert xs.shape == (500, 10, 1) and ys.shape == (500, 10) and xq.shape == (500, 10, 1)
    x = np.concatenate([xs.numpy()[..., 0], xq.numpy()[..., 0]], 1)
    y = np.concatenate([ys.numpy(), yq.numpy()], 1)
    assert x.min() >= -5 and x.max() <= 5
    assert np.abs(y).max() <= 5.0 + 1e-6


def test_maml_beats_erm_and_scratch_after_a_few_inner_steps():
    # MLP 1-40-40-1, K=10, inner lr 0.01, one inner step in training, meta-batch 25 (the
    # paper's setting), 1,500 outer steps instead of 70,000; every method is then fine-tuned
    # the same way (10 SGD steps on K=10 points) on the same 200 held-out tasks.
    maml = run_sinusoid("maml", steps=1500, seed=0)
    erm = run_sinusoid("erm", steps=1500, seed=0)
    scratch = run_sinusoid("scratch", steps=1500, seed=0)
    assert maml["query_mse"] < 0.5 * erm["query_mse"]
    assert maml["query_mse"] < 0.25 * scratch["query_mse"]
    # adaptation is what MAML learned: before any step it is no better than ERM
    assert maml["query_mse_0step"] > 0.8 * erm["query_mse_0step"]
    assert maml["query_mse"] < 0.5 * maml["query_mse_0step"]
