"""The names the learning registries hold, importable without torch.

The command line builds its choices from these tuples (so ``metabt --help`` never imports
torch), and the registries check that they register exactly these names
(:data:`metabt.learn.algorithms.FAMILIES`, ``metabt.learn.models.build_model``).
"""

from __future__ import annotations

__all__ = [
    "ALGORITHM_NAMES",
    "ENGINE_NAMES",
    "INNER_OBJECTIVES",
    "MODEL_TYPES",
    "OBJECTIVES",
    "PAIRED_ALGORITHMS",
]

#: Every ``MetaLearner`` algorithm, in the order of the registry.
ALGORITHM_NAMES = (
    "maml",
    "fomaml",
    "metasgd",
    "anil",
    "reptile",
    "erm",
    "scratch",
    "cnp",
    "protonet",
    "cavia",
)
#: The meta-gradient engines: ``higher`` (the reference), ``func`` (batched ``torch.func``)
#: and ``auto`` (``func`` unless vmap cannot batch the model).
ENGINE_NAMES = ("auto", "higher", "func")
#: metabt's own model types; the last three belong to the algorithm of the same name, and
#: only to it (``metabt.learn.models.MetaModel.paired_algorithm``).
MODEL_TYPES = ("mlp", "gru", "cnp", "protonet", "cavia")
#: Algorithms that run only on the model of their own name.
PAIRED_ALGORITHMS = ("cnp", "protonet", "cavia")

#: The meta-objectives (``RunConfig.objective``, ``--objective``): the forecast's MSE, or the
#: after-cost P&L of its sized path (:class:`metabt.learn.losses.PnLLoss`).
OBJECTIVES = ("mse", "sharpe", "utility")
#: What the meta-training inner loop descends (``RunConfig.inner_objective``,
#: ``--inner-objective``): the support MSE, or the P&L objective on the support path.
INNER_OBJECTIVES = ("mse", "same")
