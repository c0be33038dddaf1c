"""metabt.learn.algorithms.inner: the pure inner loops agree with each other in float64."""

from __future__ import annotations

import torch
from synthetic import linear_task_batch as _batch

from metabt.learn.algorithms.inner import (
    adapt_autograd,
    adapt_vmap,
    head_query_loss,
    partial_query_loss,
    query_loss,
    query_losses,
)
from metabt.learn.models import MLP


def _theta(model):
    return {k: v.detach() for k, v in model.named_parameters()}


def test_head_only_query_loss_equals_the_whole_forward_pass_with_the_head_adapted():
    model = MLP(4, (6,), seed=0).double()
    theta, batch = _theta(model), _batch()
    lrs = {n: 0.1 for n in model.head_names}

    def head(*task):
        return head_query_loss(model, theta, lrs, 3, task, first_order=True)

    def partial(*task):
        return partial_query_loss(
            model.forward_with, theta, model.head_names, lrs, 3, task, first_order=True
        )

    torch.testing.assert_close(query_losses(head, batch), query_losses(partial, batch))
    assert query_losses(head, batch).shape == (batch[0].shape[0],)
    every = {n: 0.1 for n in theta}

    def full(*task):  # every parameter adapted, no step: θ's own query loss
        return query_loss(model.forward_with, theta, every, 0, task, first_order=True)

    def head0(*task):
        return head_query_loss(model, theta, lrs, 0, task, first_order=True)

    torch.testing.assert_close(query_losses(full, batch), query_losses(head0, batch))


def test_adapt_vmap_equals_one_autograd_adaptation_per_task():
    model = MLP(4, (6,), seed=0).double()
    theta, (xs, ys, _, _) = _theta(model), _batch()
    lrs = {n: 0.05 for n in theta}
    before, after, phi = adapt_vmap(model.forward_with, theta, lrs, xs, ys, 4)
    for b in range(xs.shape[0]):
        one = adapt_autograd(model.forward_with, theta, lrs, xs[b], ys[b], 4)
        assert abs(one[0] - float(before[b])) < 1e-12 and abs(one[1] - float(after[b])) < 1e-12
        for name, value in one[2].items():
            torch.testing.assert_close(phi[name][b], value, rtol=1e-12, atol=1e-12)
