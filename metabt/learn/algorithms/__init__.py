"""The learner families, one algorithm family per module, and their registry.

:data:`FAMILIES` maps each algorithm name (``metabt.learn.names.ALGORITHM_NAMES``) to its
family, a :class:`LearnerFamily` that ``metabt.learn.learner.MetaLearner`` delegates to:

* :class:`GradientFamily` (``gradient``): test-time adaptation by gradient descent on θ.

  * :class:`MamlFamily` (``maml``: ``maml``, ``fomaml``), :class:`MetaSgdFamily`
    (``metasgd``), :class:`AnilFamily` (``anil``);
  * :class:`ReptileFamily` (``reptile``);
  * :class:`ErmFamily`, :class:`ScratchFamily` (``erm``: the non-meta baselines).

* :class:`PairedFamily` (``base``): a family with its own model and adaptation.

  * :class:`CnpFamily` (``cnp``), :class:`ProtoNetFamily` (``protonet``),
    :class:`CaviaFamily` (``cavia``).

The inner loops are pure functions in ``metabt.learn.algorithms.inner``; the engines
(``higher``, ``func``) in ``metabt.learn.algorithms.engines``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from metabt._checks import did_you_mean
from metabt.errors import ConfigError
from metabt.learn.adapted import AdaptedModel, support_arrays
from metabt.learn.algorithms.base import Learner, LearnerFamily, PairedFamily
from metabt.learn.algorithms.cavia import CaviaFamily
from metabt.learn.algorithms.cnp import CnpFamily
from metabt.learn.algorithms.engines import ENGINES, resolve_engine, vmap_failure
from metabt.learn.algorithms.erm import ErmFamily, ScratchFamily
from metabt.learn.algorithms.gradient import GradientFamily
from metabt.learn.algorithms.inner import (
    adapt_autograd,
    adapt_head,
    inner_loop,
    prediction,
    query_losses,
)
from metabt.learn.algorithms.maml import AnilFamily, MamlFamily, MetaSgdFamily
from metabt.learn.algorithms.protonet import ProtoNetFamily
from metabt.learn.algorithms.reptile import ReptileFamily
from metabt.learn.losses import mse
from metabt.learn.names import ALGORITHM_NAMES

__all__ = [
    "ALGORITHMS",
    "AdaptedModel",
    "AnilFamily",
    "CaviaFamily",
    "CnpFamily",
    "ENGINES",
    "ErmFamily",
    "FAMILIES",
    "GradientFamily",
    "Learner",
    "LearnerFamily",
    "MamlFamily",
    "MetaSgdFamily",
    "OUTER_STEPS",
    "PairedFamily",
    "ProtoNetFamily",
    "ReptileFamily",
    "ScratchFamily",
    "adapt_autograd",
    "adapt_head",
    "family_for",
    "inner_loop",
    "mse",
    "prediction",
    "query_losses",
    "resolve_engine",
    "support_arrays",
    "vmap_failure",
]

#: Algorithm name -> its learner family (read only), in the order of ``ALGORITHM_NAMES``.
FAMILIES: Mapping[str, LearnerFamily] = MappingProxyType(
    {
        "maml": MamlFamily(second_order=True),
        "fomaml": MamlFamily(second_order=False),
        "metasgd": MetaSgdFamily(second_order=True),
        "anil": AnilFamily(second_order=True),
        "reptile": ReptileFamily(),
        "erm": ErmFamily(),
        "scratch": ScratchFamily(),
        "cnp": CnpFamily(),
        "protonet": ProtoNetFamily(),
        "cavia": CaviaFamily(),
    }
)
#: The registry's former name (each entry was an "outer step"): the same mapping.
OUTER_STEPS = FAMILIES

#: The algorithms a ``MetaLearner`` runs, in the order of the registry.
ALGORITHMS = tuple(FAMILIES)
if ALGORITHMS != ALGORITHM_NAMES:  # pragma: no cover - a registry edit without its name
    raise ImportError(
        f"metabt.learn.algorithms registers {ALGORITHMS}, but metabt.learn.names lists "
        f"{ALGORITHM_NAMES}: update both together"
    )


def family_for(algorithm: str, engine: str) -> LearnerFamily:
    """The registered family of ``algorithm``, after checking both names.

    Args:
        algorithm: one of ``ALGORITHMS``.
        engine: one of ``ENGINES``.

    Returns:
        ``FAMILIES[algorithm]``.

    Raises:
        ConfigError: an unknown algorithm or engine (with the closest valid name).
    """
    if algorithm not in FAMILIES:
        raise ConfigError(
            f"algorithm {algorithm!r} is unknown{did_you_mean(str(algorithm), ALGORITHMS)}; "
            f"use one of {', '.join(ALGORITHMS)}"
        )
    if engine not in ENGINES:
        raise ConfigError(
            f"engine {engine!r} is unknown{did_you_mean(str(engine), ENGINES)}; "
            f"use one of {', '.join(ENGINES)}"
        )
    return FAMILIES[algorithm]
