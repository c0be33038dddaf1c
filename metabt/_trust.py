"""Which modules a checkpoint, config or state file may make metabt import.

A checkpoint records import paths (a user model's class, a custom feature, a FeatureSpec
subclass) and a config file may name them too. Importing a module runs its top-level code,
so a file someone hands you must not choose what is imported. metabt imports a recorded
path only when its top-level package is metabt itself or a module the user trusts:

- ``metabt.trust("mypkg", ...)`` in Python;
- the ``METABT_TRUST`` environment variable, comma-separated module names;
- on the command line, ``--trust MODULE`` (repeatable), and any module the user names there
  directly (``--model-type mypkg.nets:Net``, ``--feature mypkg.feats:rsi``).

Trusting ``pkg`` covers its submodules (``pkg.sub``). The check happens *before* the import;
after it the caller checks the object's type before anything is built or called.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from metabt._checks import did_you_mean
from metabt.errors import ConfigError

__all__ = [
    "ENV_VAR",
    "MOVED_MODULES",
    "UntrustedModuleError",
    "current_path",
    "import_object",
    "is_trusted",
    "trust",
    "trusted",
]

#: The environment variable read for trusted module names (comma-separated).
ENV_VAR = "METABT_TRUST"

#: Where the flat modules of metabt 0.x moved (old module -> new module): checkpoints and
#: config files written before the subpackages name the old paths (``metabt.factors:beta``),
#: which resolve through this table, not through shim modules.
MOVED_MODULES: dict[str, str] = {
    "metabt.bars": "metabt.data.bars",
    "metabt.data": "metabt.data.ohlcv",
    "metabt.synthetic": "metabt.data.synthetic",
    "metabt.meta": "metabt.learn.learner",
    "metabt.models": "metabt.learn.models",
    "metabt.algorithms": "metabt.learn.algorithms",
    "metabt.learners": "metabt.learn.algorithms",
    "metabt._kernels": "metabt.learn.kernels.fused",
    "metabt._numpy_models": "metabt.learn.kernels.numpy_models",
    "metabt.batched": "metabt.learn.kernels.batched",
    "metabt.training": "metabt.learn.training",
    "metabt.checkpoint": "metabt.learn.checkpoint",
    "metabt.linear": "metabt.learn.linear",
    "metabt.online": "metabt.learn.online",
    "metabt.features": "metabt.features.spec",
    "metabt.feature_hook": "metabt.features.hooks",
    "metabt.feature_check": "metabt.features.causality",
    "metabt.factors": "metabt.features.factors",
    "metabt.tasks": "metabt.features.tasks",
    "metabt.config": "metabt.config.defaults",
    "metabt.configfile": "metabt.config.files",
    "metabt.trader": "metabt.strategies.trader",
    "metabt.strategy": "metabt.strategies.meta",
    "metabt.portfolio": "metabt.strategies.portfolio",
    "metabt.baselines": "metabt.strategies.baselines",
    "metabt.metrics": "metabt.evaluate.metrics",
    "metabt.evaluation": "metabt.evaluate.verdict",
    "metabt.report": "metabt.evaluate.report",
    "metabt.plotting": "metabt.evaluate.plotting",
    "metabt.backtest": "metabt.experiments.backtest",
    "metabt.recipe": "metabt.experiments.roster",
    "metabt.experiments": "metabt.experiments.compare",
    "metabt.executors": "metabt.experiments.executors",
    "metabt.walkforward": "metabt.experiments.walkforward",
    "metabt.sweep": "metabt.experiments.sweep",
    "metabt.records": "metabt.experiments.record",
    "metabt.pricing": "metabt.experiments.pricing",
    "metabt.sinusoid": "metabt.experiments.sinusoid",
    "metabt.cli": "metabt.cli.main",
    "metabt.commands": "metabt.cli.commands",
}

#: Always trusted: metabt's own modules.
_BUILT_IN = ("metabt",)

_trusted: set[str] = set()


class UntrustedModuleError(ConfigError):
    """A file names a module the user has not trusted; nothing was imported.

    Attributes:
        module: the module that would have been imported (e.g. ``"mypkg.nets"``).
    """

    def __init__(self, module: str, what: str) -> None:
        self.module = module
        super().__init__(
            f"{what} names module {module!r}, which is not trusted, so it was not imported "
            f"(a checkpoint or config file may import only metabt's modules or modules you "
            f"trust); if you wrote it or trust its author, trust it with "
            f"metabt.trust({module.split('.')[0]!r}) or {ENV_VAR}={module.split('.')[0]}"
        )


def _valid(name: str) -> str:
    name = str(name).strip()
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(
            f"trusted module {name!r} is not a module name (dotted identifiers, e.g. 'mypkg' "
            "or 'mypkg.nets'); give the module, not a file path"
        )
    return name


def trust(*modules: str) -> None:
    """Allow files (checkpoints, configs, state) to import these modules and their submodules.

    Trust is process-wide and also exported through ``METABT_TRUST``, so worker processes
    that metabt starts (process and Ray executors) trust the same modules.

    Args:
        *modules: module names, e.g. ``"mypkg"`` (covers ``mypkg.nets``).

    Raises:
        ConfigError: a name that is not a dotted module name.
    """
    names = [name for name in map(_valid, modules) if not is_trusted(name)]
    if not names:
        return
    _trusted.update(names)
    current = [n for n in os.environ.get(ENV_VAR, "").split(",") if n.strip()]
    merged = list(dict.fromkeys([*current, *names]))
    if merged:
        os.environ[ENV_VAR] = ",".join(merged)


def trusted() -> tuple[str, ...]:
    """The modules trusted now: metabt, ``trust()``'s and ``METABT_TRUST``'s, sorted."""
    env = {n.strip() for n in os.environ.get(ENV_VAR, "").split(",") if n.strip()}
    return tuple(sorted({*_BUILT_IN, *_trusted, *env}))


def is_trusted(module: str) -> bool:
    """Whether importing ``module`` is allowed: it or one of its parent packages is trusted."""
    parts = module.split(".")
    allowed = set(trusted())
    return any(".".join(parts[:i]) in allowed for i in range(1, len(parts) + 1))


def current_path(path: str) -> str:
    """``path`` (``"module:name"``) with a module that moved renamed (:data:`MOVED_MODULES`)."""
    module, sep, rest = str(path).partition(":")
    return f"{MOVED_MODULES.get(module, module)}{sep}{rest}"


def import_object(path: str, what: str) -> Any:
    """The object at ``"package.module:Qual.name"``, imported only if the module is trusted.

    Args:
        path: the import path, module and qualified name separated by ``":"``.
        what: what the path names, for messages (e.g. ``"model type"``).

    Returns:
        The object. The caller checks its type before building or calling it.

    Raises:
        UntrustedModuleError: the module is not trusted (checked before any import).
        ConfigError: a malformed path, a module that cannot be imported, a missing name.
    """
    module_name, sep, qualname = str(path).partition(":")
    if not sep or not module_name or not qualname:
        raise ConfigError(f"{what} {path!r} is not an import path 'package.module:name'")
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(f"{what} {path!r}: {module_name!r} is not a module name")
    if not is_trusted(module_name):
        raise UntrustedModuleError(module_name, f"{what} {path!r}")
    module_name = MOVED_MODULES.get(module_name, module_name)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what} {path!r}: cannot import module {module_name!r} ({exc}); install the "
            "package that defines it or put its folder on PYTHONPATH"
        ) from exc
    for part in qualname.split("."):
        if not part.isidentifier() or not hasattr(obj, part):
            options = [n for n in dir(obj) if not n.startswith("_")]
            raise ConfigError(
                f"{what} {path!r}: {module_name} has no {part!r}"
                f"{did_you_mean(part, options)}; check the name, or install the version "
                "of the module that defines it"
            )
        obj = getattr(obj, part)
    return obj
