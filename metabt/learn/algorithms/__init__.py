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

A user's own family is a :class:`LearnerFamily` subclass named by its import path
``"package.module:ClassName"`` wherever an algorithm name goes (:func:`family_for`,
:func:`import_family`); its module is imported only if trusted (``metabt._trust``), and the
object is checked to be a concrete ``LearnerFamily`` subclass before it is instantiated.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType

from metabt._checks import did_you_mean
from metabt._trust import import_object
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
from metabt.learn.names import ALGORITHM_NAMES, ALGORITHM_PATH

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
    "family_class",
    "family_for",
    "family_path",
    "import_family",
    "inner_loop",
    "is_family_path",
    "mse",
    "prediction",
    "query_losses",
    "resolve_algorithm",
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


def is_family_path(algorithm: object) -> bool:
    """Whether ``algorithm`` is written as an import path ``"package.module:ClassName"``
    (a user's learner family) rather than a built-in name (a ``str`` containing ``":"``)."""
    return isinstance(algorithm, str) and ":" in algorithm


def _unknown(algorithm: str) -> ConfigError:
    return ConfigError(
        f"algorithm {algorithm!r} is unknown{did_you_mean(str(algorithm), ALGORITHMS)}; "
        f"use one of {', '.join(ALGORITHMS)}, or the import path 'package.module:ClassName' "
        "of your own LearnerFamily subclass"
    )


def family_class(obj: object, where: str) -> type[LearnerFamily]:
    """``obj`` checked to be a concrete :class:`LearnerFamily` subclass (nothing is called).

    Args:
        obj: the imported object (or a class the user passed).
        where: what named it, for messages (e.g. ``"algorithm 'pkg.mod:Net'"``).

    Returns:
        ``obj``.

    Raises:
        ConfigError: ``obj`` is not a class, not a ``LearnerFamily`` subclass, or abstract
            (it lacks ``meta_step`` or ``adapt``).
    """
    if not (isinstance(obj, type) and issubclass(obj, LearnerFamily)):
        raise ConfigError(
            f"{where} names {type(obj).__name__} {obj!r}, not a subclass of "
            "metabt.LearnerFamily; subclass LearnerFamily (or GradientFamily) and implement "
            "meta_step and adapt"
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise ConfigError(
            f"{where} is an abstract LearnerFamily: it does not implement {missing}; "
            "implement them in the subclass"
        )
    return obj


def family_path(cls: type) -> str:
    """The import path ``"module:QualName"`` a checkpoint records for a family class.

    Raises:
        ConfigError: the class cannot be imported again by name (defined in ``__main__`` or
            inside a function).
    """
    path = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        where = "in __main__" if cls.__module__ == "__main__" else "inside a function"
        raise ConfigError(
            f"learner family {path} is defined {where}, so a saved learner could not import "
            "it again by name; move it to an importable module (e.g. mypkg/families.py) and "
            "use 'mypkg.families:ClassName'"
        )
    return path


def import_family(path: str) -> type[LearnerFamily]:
    """Import the :class:`LearnerFamily` subclass named by ``"package.module:ClassName"``.

    The module is imported only if it is trusted (``metabt.trust``, ``METABT_TRUST``);
    the object is checked to be a concrete ``LearnerFamily`` subclass before anything
    calls it. Nothing is trusted here: the caller that stands for the user trusts.

    Args:
        path: the import path, module and qualified class name separated by ``":"``.

    Returns:
        The class.

    Raises:
        UntrustedModuleError: the module is not trusted; nothing was imported.
        ConfigError: a malformed path, an unimportable module, a missing name, or an object
            that is not a concrete ``LearnerFamily`` subclass.
    """
    path = str(path)
    if not ALGORITHM_PATH.fullmatch(path):
        raise ConfigError(
            f"algorithm {path!r} is not an import path 'package.module:ClassName' of a "
            "LearnerFamily subclass"
        )
    return family_class(import_object(path, "algorithm"), f"algorithm {path!r}")


def resolve_algorithm(algorithm: str | type[LearnerFamily]) -> str | type[LearnerFamily]:
    """A built-in name as given (checked), a family class as given (checked), or the class
    an import path names, imported under the trust rules (nothing is trusted here).

    What library code passes to ``MetaLearner(algorithm=...)`` for a name that came from
    a file (a config file, a sweep space): ``MetaLearner`` trusts a path it is handed as
    a string, because in Python that is the user naming it.

    Raises:
        UntrustedModuleError: a path whose module is not trusted.
        ConfigError: an unknown name (with the closest), or a bad path or class.
    """
    if isinstance(algorithm, type):
        return family_class(algorithm, f"algorithm {algorithm!r}")
    if is_family_path(algorithm):
        return import_family(algorithm)
    if algorithm not in FAMILIES:
        raise _unknown(str(algorithm))
    return algorithm


def family_for(algorithm: str | type[LearnerFamily], engine: str) -> LearnerFamily:
    """The family of ``algorithm``, after checking both names.

    Args:
        algorithm: one of ``ALGORITHMS``; or a user's :class:`LearnerFamily` subclass, as
            the class or its import path ``"package.module:ClassName"`` (imported only if
            its module is trusted; see :func:`import_family`).
        engine: one of ``ENGINES``.

    Returns:
        ``FAMILIES[algorithm]``, or a fresh instance ``cls()`` of the user's family (its
        fields at their defaults; MSE loss).

    Raises:
        UntrustedModuleError: an import path whose module is not trusted.
        ConfigError: an unknown algorithm (with the closest valid name) or engine; a path
            or class that is not a concrete ``LearnerFamily`` subclass, or whose
            constructor fails without arguments.
    """
    resolved = resolve_algorithm(algorithm)
    if engine not in ENGINES:
        raise ConfigError(
            f"engine {engine!r} is unknown{did_you_mean(str(engine), ENGINES)}; "
            f"use one of {', '.join(ENGINES)}"
        )
    if isinstance(resolved, str):
        return FAMILIES[resolved]
    try:
        return resolved()
    except TypeError as exc:
        raise ConfigError(
            f"learner family {resolved.__qualname__} cannot be built without arguments "
            f"({exc}); give every field a default"
        ) from exc
