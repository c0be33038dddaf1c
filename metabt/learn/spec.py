"""The feature spec as the learning core sees it: a protocol, and the checkpoint record.

The learning core never imports a feature module. A learner holds any object with a
``horizon``, an ``n_features`` and ``to_dict()`` (:class:`FeatureSpecLike`); a checkpoint
stores ``to_dict()``, and loading turns the record back into a spec through the decoder
that ``metabt.features`` registers on import (:func:`register_spec_decoder`), or keeps it
as a :class:`SpecRecord` when no decoder is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["FeatureSpecLike", "SpecRecord", "decode_spec", "register_spec_decoder"]


@runtime_checkable
class FeatureSpecLike(Protocol):
    """What the learning core needs of a feature spec (``metabt.features.FeatureSpec`` is
    one): the label horizon in bars, the feature count, and a JSON record to save."""

    @property
    def horizon(self) -> int:
        """Label horizon in bars."""

    @property
    def n_features(self) -> int:
        """Features per bar."""

    def to_dict(self) -> dict[str, Any]:
        """JSON primitives the spec is rebuilt from."""


class SpecRecord:
    """A checkpoint's feature-spec record, kept as read while no decoder is registered.

    ``metabt.features`` registers ``FeatureSpec.from_dict`` as the decoder when it is
    imported (:func:`register_spec_decoder`), so a checkpoint loaded in a process that uses
    features gets a real ``FeatureSpec``. A learner loaded by the torch-only core alone keeps
    this record: it saves back unchanged and tells the horizon and feature count, and
    ``metabt.features.as_spec`` turns it into a ``FeatureSpec`` later.

    Args:
        record: the ``feature_spec`` entry of a checkpoint (a ``FeatureSpec.to_dict()``).
    """

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._record = dict(record)

    @property
    def horizon(self) -> int:
        """Label horizon in bars (the record's ``horizon``, default 5 as in FeatureSpec)."""
        return int(self._record.get("horizon", 5))

    @property
    def n_features(self) -> int:
        """Unknown without decoding: -1 (the width check is skipped for a record)."""
        return -1

    def to_dict(self) -> dict[str, Any]:
        """The record as read."""
        return dict(self._record)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SpecRecord):
            return self._record == other._record
        return isinstance(other, FeatureSpecLike) and other.to_dict() == self._record

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SpecRecord({self._record!r})"


_spec_decoder: Callable[[Mapping[str, Any], bool], FeatureSpecLike] | None = None


def register_spec_decoder(decode: Callable[[Mapping[str, Any], bool], FeatureSpecLike]) -> None:
    """Set how a checkpoint's feature-spec record becomes a spec object.

    ``metabt.features`` calls this on import with ``FeatureSpec.from_dict``; the learning
    core itself never imports a feature module.

    Args:
        decode: ``decode(record, allow_changed) -> spec``; raises ``ConfigError`` or
            ``DataError`` on a record it cannot rebuild.
    """
    global _spec_decoder
    _spec_decoder = decode


def decode_spec(record: Mapping[str, Any], *, allow_changed: bool = False) -> FeatureSpecLike:
    """The spec a checkpoint's record describes: decoded by the registered decoder, else a
    :class:`SpecRecord`.

    Args:
        record: a ``to_dict()`` record.
        allow_changed: accept user features whose source changed since the record.

    Raises:
        ConfigError, DataError: the decoder cannot rebuild the record.
    """
    if _spec_decoder is None:  # the torch-only core alone: keep the record as read
        return SpecRecord(record)
    return _spec_decoder(record, allow_changed)
