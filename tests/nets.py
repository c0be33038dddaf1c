"""Small importable user models for the tests (``tests.nets:TwoLayer``): any nn.Module works."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Dropper", "TwoLayer"]


class TwoLayer(nn.Module):
    """Linear -> tanh -> Linear(1): maps (N, n_features) to (N, 1).

    Args:
        n_features: input width F.
        hidden: hidden width. Default 16.
        seed: seed of the initial weights. Default 0.
        outputs: output width (anything but 1 is a wrong model, for the error tests).
    """

    def __init__(self, n_features: int, hidden: int = 16, seed: int = 0, outputs: int = 1) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
            torch.manual_seed(seed)
            self.body = nn.Linear(n_features, hidden)
            self.out = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) -> (N, 1)."""
        return self.out(torch.tanh(self.body(x)))


class Dropper(TwoLayer):
    """TwoLayer with dropout in training mode: ``torch.func.vmap`` cannot batch it."""

    def __init__(self, n_features: int, hidden: int = 16, seed: int = 0) -> None:
        super().__init__(n_features, hidden, seed)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) -> (N, 1)."""
        return self.out(self.drop(torch.tanh(self.body(x))))
