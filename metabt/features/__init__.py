"""Features and tasks: the causal FeatureSpec, user feature hooks, the causality check, factor
features and the support/query task samplers.

:class:`FeatureSpec` (:mod:`metabt.features.spec`), the user-feature hook
(:mod:`metabt.features.hooks`) and :func:`check_causal` (:mod:`metabt.features.causality`)
are re-exported here, the import path recorded in checkpoints and documented in the README.
"""

from __future__ import annotations

from typing import Any

from metabt.errors import ConfigError
from metabt.features.spec import (
    FeatureFunction,
    FeatureRef,
    FeatureSpec,
    OnlineComputer,
    OnlineFeatures,
    WindowedOnline,
    check_causal,
    register_feature,
    registered_features,
    stack_window,
)
from metabt.learn.spec import SpecRecord, register_spec_decoder


def _decode(record: Any, allow_changed: bool) -> FeatureSpec:
    return FeatureSpec.from_dict(record, allow_changed=allow_changed)


def as_spec(spec: Any) -> FeatureSpec | None:
    """A ``FeatureSpec`` from a learner's ``feature_spec``: itself, or rebuilt from the
    checkpoint record a torch-only load kept (``metabt.learn.checkpoint.SpecRecord``).

    Raises:
        ConfigError: a record that cannot be rebuilt (an untrusted or changed feature module).
    """
    if spec is None or isinstance(spec, FeatureSpec):
        return spec
    if isinstance(spec, SpecRecord):
        return FeatureSpec.from_dict(spec.to_dict())
    raise ConfigError(f"feature_spec must be a FeatureSpec, got {type(spec).__name__}")


register_spec_decoder(_decode)

__all__ = [
    "FeatureFunction",
    "FeatureRef",
    "FeatureSpec",
    "OnlineComputer",
    "OnlineFeatures",
    "WindowedOnline",
    "as_spec",
    "check_causal",
    "register_feature",
    "registered_features",
    "stack_window",
]
