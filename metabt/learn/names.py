"""The names the learning registries hold, importable without torch.

The command line builds its choices from these tuples (so ``metabt --help`` never imports
torch), and the registries check that they register exactly these names
(:data:`metabt.learn.algorithms.FAMILIES`, ``metabt.learn.models.build_model``).
"""

from __future__ import annotations

import difflib
import re

from metabt.errors import ConfigError

__all__ = [
    "ALGORITHM_NAMES",
    "ALGORITHM_PATH",
    "ENGINE_NAMES",
    "INNER_LR",
    "INNER_LR_BY_ALGORITHM",
    "INNER_OBJECTIVES",
    "MODEL_TYPES",
    "OBJECTIVES",
    "PAIRED_ALGORITHMS",
    "check_algorithm",
    "default_inner_lr",
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
#: What the import path of a user's learner family (a ``metabt.LearnerFamily`` subclass)
#: looks like, wherever an algorithm name goes: ``package.module:ClassName``.
ALGORITHM_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
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

#: Inner-loop learning rates that differ from :data:`INNER_LR`, by algorithm. CAVIA adapts
#: only a few context inputs initialised at 0, and Zintgraf et al. (2019) adapt them with
#: a rate of 1.0: at the network's 0.02 the context barely moves from 0 and CAVIA's
#: "adaptation" would change its predictions by ~1e-5.
INNER_LR_BY_ALGORITHM = {"cavia": 1.0}
#: The default inner-loop learning rate of every other algorithm, the same for
#: ``MetaLearner(...)`` in Python and for the command line.
INNER_LR = 0.02


def default_inner_lr(algorithm: str) -> float:
    """The inner-loop learning rate ``algorithm`` uses when none is given (1.0 for cavia).

    Args:
        algorithm: the algorithm's name.

    Returns:
        The rate.
    """
    return INNER_LR_BY_ALGORITHM.get(algorithm, INNER_LR)


def check_algorithm(value: str) -> str:
    """``value`` if it is a built-in algorithm name or reads as the import path of a user's
    learner family (``package.module:ClassName``); nothing is imported here.

    Args:
        value: the algorithm as given (a flag's or a config file's text).

    Returns:
        ``value``.

    Raises:
        ConfigError: neither a built-in name (with the closest one) nor an import path.
    """
    text = str(value)
    if text in ALGORITHM_NAMES or ALGORITHM_PATH.fullmatch(text):
        return text
    close = difflib.get_close_matches(text, ALGORITHM_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"algorithm {text!r} is unknown{hint}; use one of "
        f"{', '.join(ALGORITHM_NAMES)}, or the import path package.module:ClassName of your "
        "own LearnerFamily subclass"
    )
