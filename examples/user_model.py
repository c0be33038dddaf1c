"""A user model for metabt: any ``torch.nn.Module`` importable by path works.

metabt builds it as ``TanhNet(n_features=F, **model_kwargs)``, meta-trains it with the
batched ``torch.func`` engine, and saves it as this import path, its keyword arguments and
its weights (loaded with ``weights_only=True``)::

    metabt train --model-type examples.user_model:TanhNet --model-kwargs '{"hidden": 16}' ...

It maps (N, n_features) to (N, 1), as an ``nn.Linear(h, 1)`` head does; metabt squeezes
that to (N,) (any other output shape is a ``ConfigError`` naming the model).
"""

from __future__ import annotations

from torch import nn

__all__ = ["TanhNet"]


class TanhNet(nn.Sequential):
    """Linear -> tanh -> linear: a plain ``nn.Sequential``.

    Args:
        n_features: input width F (metabt passes the feature count).
        hidden: hidden units. Default 32.
    """

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
