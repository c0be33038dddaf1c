"""Small importable user models for the tests (``tests.nets:TwoLayer``): any nn.Module works.

``ReluMLP``, ``CellGRU`` and ``WindowConv`` are user versions of the built-in MLP and GRU
and a 1-D convolution over the window, for the fast user-model paths and
``benchmarks/bench_user_model.py``; ``TorchGRU`` (``nn.GRU``) is one ``torch.func.vmap``
cannot batch.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["CellGRU", "Dropper", "ReluMLP", "TorchGRU", "TwoLayer", "WindowConv"]


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


class ReluMLP(nn.Sequential):
    """The built-in MLP's shape as a plain ``nn.Sequential``: Linear-ReLU per hidden width,
    then Linear(1); (N, F) -> (N, 1).

    Args:
        n_features: input width F. hidden: hidden widths. Default [32, 32].
        activation: "relu" or "tanh". Default "relu". seed: seed of the initial weights.
    """

    def __init__(
        self,
        n_features: int,
        hidden: list[int] | tuple[int, ...] = (32, 32),
        activation: str = "relu",
        seed: int = 0,
    ) -> None:
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        widths = [n_features, *hidden]
        layers: list[nn.Module] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for a, b in itertools.pairwise(widths):
                layers += [nn.Linear(a, b), act()]
            layers.append(nn.Linear(widths[-1], 1))
        super().__init__(*layers)


class _Windowed(nn.Module):
    """A model reading ``window`` feature rows of ``n_features`` each, flattened oldest first."""

    def __init__(self, n_features: int, window: int) -> None:
        super().__init__()
        self.step_features = n_features  # not n_features: the input width is window * F
        self.window = window

    def _steps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, W * F) -> (N, W, F)."""
        return x.reshape(x.shape[0], self.window, self.step_features)


class CellGRU(_Windowed):
    """A user GRU: ``nn.GRUCell`` over the window, then Linear(1); (N, W * F) -> (N, 1).

    Args:
        n_features: features per bar F. hidden: state width. Default 32.
        window: bars W per input. Default 10. seed: seed of the initial weights.
    """

    def __init__(self, n_features: int, hidden: int = 32, window: int = 10, seed: int = 0) -> None:
        super().__init__(n_features, window)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.cell = nn.GRUCell(n_features, hidden)
            self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, W * F) -> (N, 1)."""
        steps = self._steps(x)
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        for t in range(self.window):
            h = self.cell(steps[:, t], h)
        return self.head(h)


class TorchGRU(_Windowed):
    """:class:`CellGRU` on ``nn.GRU``, which ``torch.func.vmap`` cannot batch (torch 2.x)."""

    def __init__(self, n_features: int, hidden: int = 32, window: int = 10, seed: int = 0) -> None:
        super().__init__(n_features, window)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.gru = nn.GRU(n_features, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, W * F) -> (N, 1)."""
        out, _ = self.gru(self._steps(x))
        return self.head(out[:, -1])


class WindowConv(_Windowed):
    """A 1-D convolution over the window: Conv1d(F, channels, kernel) -> tanh -> mean over
    time -> Linear(1); (N, W * F) -> (N, 1).

    Args:
        n_features: features per bar F. channels: Default 8. kernel: Default 3.
        window: bars W per input. Default 10. seed: seed of the initial weights.
    """

    def __init__(
        self, n_features: int, channels: int = 8, kernel: int = 3, window: int = 10, seed: int = 0
    ) -> None:
        super().__init__(n_features, window)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv = nn.Conv1d(n_features, channels, kernel)
            self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, W * F) -> (N, 1)."""
        return self.head(torch.tanh(self.conv(self._steps(x).transpose(1, 2))).mean(-1))
