"""Checkpoint files of a MetaLearner: payload layout, atomic writing and safe reading.

A checkpoint holds tensors and plain Python values only and is read with
``torch.load(..., weights_only=True)``: never an arbitrary pickle. A user model
(:func:`metabt.learn.models.user_model`) is stored as its import path ``"module:QualName"``,
its JSON constructor arguments and its state dict; loading imports the class (an
``nn.Module`` subclass, else refused), builds it with those arguments, checks its output
shape and loads the state dict strictly. A user's learner family is stored as its import
path in ``hparams["algorithm"]``; loading imports it only if its module is trusted
(``metabt._trust``) and checks that it is a concrete ``LearnerFamily`` subclass before the
learner is built.
"""

from __future__ import annotations

import os
import pickle
import platform
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from metabt._util import atomic_path
from metabt._version import __version__
from metabt.errors import CheckpointError, ConfigError, DataError
from metabt.learn.algorithms import import_family, is_family_path
from metabt.learn.losses import loss_from_config
from metabt.learn.models import MetaModel, build_model, check_saveable, input_width
from metabt.learn.spec import FeatureSpecLike, decode_spec

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "Checkpointable",
    "MAX_CHECKPOINT_BYTES",
    "hparams",
    "learner_state",
    "load_learner",
    "load_learner_state",
    "model_config",
    "read_checkpoint",
    "restore_fit_state",
    "save_learner",
]

#: The ``"format"`` entry every metabt checkpoint carries.
CHECKPOINT_FORMAT = "metabt-checkpoint"
#: The newest checkpoint layout this version reads and writes.
CHECKPOINT_VERSION = 1

_REQUIRED = {"model_config", "hparams", "state", "feature_spec", "train_range"}


class Checkpointable(Protocol):
    """What a checkpoint holds of a learner (``metabt.learn.learner.MetaLearner`` is one).

    Attributes:
        model: a ``metabt.learn.models`` model or a :func:`metabt.learn.models.user_model` (its
            config is stored).
        inner_lrs: learned per-parameter inner rates (Meta-SGD), name -> tensor, or empty.
            A learner may also have ``adjust``, its learned partial-adjustment rate (an
            ``nn.Module``, or None), stored beside them.
        algorithm, inner_lr, inner_steps, meta_lr, engine, seed: hyper-parameters.
        feature_spec: the ``FeatureSpec`` of the model's inputs, or None.
        train_range: (first, last) training date as "YYYY-MM-DD", or None.
        train_config: how it was trained (support, query, horizon, validation years,
            budget, ``untrained`` flag) as JSON primitives, or None.
        step_count: outer steps taken so far.
        dtype: θ's dtype; optimizer: the outer-loop optimizer (its state is resumable).
    """

    model: nn.Module
    inner_lrs: dict[str, nn.Parameter]
    algorithm: str
    inner_lr: float
    inner_steps: int
    meta_lr: float
    engine: str
    seed: int
    head: str | None
    feature_spec: FeatureSpecLike | None
    train_range: tuple[str, str] | None
    train_config: dict[str, Any] | None
    step_count: int

    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...


L = TypeVar("L", bound=Checkpointable)


def learner_state(learner: Checkpointable) -> dict[str, Tensor]:
    """θ and learned inner rates, the checkpoint's ``"state"`` entry: name -> tensor.

    Keys are ``model.<name>`` (the model's ``state_dict()``), ``inner_lr.<name>`` and, for a
    learner with a learned partial-adjustment rate (``adjust``, an
    ``metabt.learn.losses.AdjustRate``), ``adjust.logit``. The tensors share storage with θ
    (as ``nn.Module.state_dict``); clone to keep them.
    """
    state = {f"model.{k}": v for k, v in learner.model.state_dict().items()}
    state.update({f"inner_lr.{k}": v for k, v in learner.inner_lrs.items()})
    adjust = getattr(learner, "adjust", None)
    if adjust is not None:
        state.update({f"adjust.{k}": v for k, v in adjust.state_dict().items()})
    return state


def load_learner_state(learner: Checkpointable, state: Mapping[str, Tensor]) -> None:
    """Copy θ and learned inner rates from a :func:`learner_state` dict, in place.

    Raises:
        RuntimeError, KeyError: the state does not fit the learner's model or rates.
    """
    with torch.no_grad():
        learner.model.load_state_dict(
            {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        )
        for k, p in learner.inner_lrs.items():
            p.copy_(state[f"inner_lr.{k}"])
        adjust = getattr(learner, "adjust", None)
        if adjust is not None:
            adjust.load_state_dict(
                {k[len("adjust.") :]: v for k, v in state.items() if k.startswith("adjust.")}
            )


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config a model is rebuilt from, as stored under ``"model_config"``.

    ``config()`` of metabt's models; for a user model the import path and constructor
    arguments recorded by :func:`metabt.learn.models.user_model`.

    Raises:
        CheckpointError: the class cannot be imported by name (defined in ``__main__`` or
            inside a function), or metabt does not know the model's constructor arguments.
    """
    try:
        return check_saveable(model)
    except ConfigError as exc:
        raise CheckpointError(f"cannot save {type(model).__name__}: {exc}") from exc


def hparams(learner: Checkpointable) -> dict[str, Any]:
    """The learner's hyper-parameters, as stored under ``"hparams"`` (dtype as "float32").

    ``"head"`` (ANIL's adapted submodule) is stored only when one was named.
    """
    out = {
        "algorithm": learner.algorithm,
        "inner_lr": learner.inner_lr,
        "inner_steps": learner.inner_steps,
        "meta_lr": learner.meta_lr,
        "engine": learner.engine,
        "seed": learner.seed,
        "dtype": str(learner.dtype).replace("torch.", ""),
    }
    if getattr(learner, "head", None) is not None:
        out["head"] = learner.head
    config = getattr(getattr(learner, "loss", None), "config", None)
    if callable(config) and config() != {"objective": "mse"}:
        out["loss"] = config()
    return out


def save_learner(
    learner: Checkpointable, path: str | os.PathLike[str], fit_state: dict[str, Any] | None = None
) -> Path:
    """Write a checkpoint atomically (``metabt._util.atomic_path``: a temporary file, renamed).

    The payload holds θ (and learned inner rates), the hyper-parameters, the model config,
    the feature spec, the training date range, the step count and package versions, all
    as tensors and plain Python values, so it loads with ``weights_only=True``.

    Args:
        learner: the learner to save.
        path: destination file (parent folders are created).
        fit_state: the state of an unfinished ``fit`` (resumable), or None.

    Returns:
        The path written.

    Raises:
        CheckpointError: the model cannot be rebuilt by name (see :func:`model_config`).
    """
    spec = learner.feature_spec
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_config": model_config(learner.model),
        "hparams": hparams(learner),
        "state": {k: v.detach().clone() for k, v in learner_state(learner).items()},
        "feature_spec": None if spec is None else spec.to_dict(),
        "train_range": None if learner.train_range is None else list(learner.train_range),
        "step_count": learner.step_count,
        "train_config": learner.train_config,
        "versions": {
            "metabt": __version__,
            "torch": str(torch.__version__),
            "numpy": str(np.__version__),
            "python": platform.python_version(),
        },
        "fit_state": fit_state,
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


#: The most a checkpoint may unpack to, bytes: metabt's models are kilobytes; a user's
#: model of a few million parameters is tens of megabytes.
MAX_CHECKPOINT_BYTES = 1 << 30


def _check_archive(path: Path, limit: int = MAX_CHECKPOINT_BYTES) -> None:
    """Refuse a checkpoint whose zip entries would unpack to more than ``limit`` bytes,
    before ``torch.load`` unpacks any (a small deflated file can hold gigabytes).

    A file that is not a zip archive is left to ``torch.load`` (its legacy format is
    refused there with a clear message).

    Raises:
        CheckpointError: the entries' declared sizes exceed ``limit``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    if total > limit:
        raise CheckpointError(
            f"{path}: the checkpoint would unpack to {total:,} bytes, more than metabt's "
            f"limit of {limit:,}; it is not a metabt checkpoint (re-create it with "
            "`metabt train`)"
        )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and sanity-check a checkpoint dict, never unpickling arbitrary objects.

    Args:
        path: the checkpoint file.

    Returns:
        The payload dict (see :func:`save_learner`).

    Raises:
        CheckpointError: missing, corrupt or truncated file; not a metabt checkpoint; a
            newer format version; missing entries.
    """
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; train one and save it there (MetaLearner.save, "
            "or the fit checkpoint= parameter)"
        )
    _check_archive(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        AttributeError,
        TypeError,
        IndexError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only load failed" in str(exc).lower():
            # torch's message goes on to suggest weights_only=False, which would run any code
            # the file holds: never follow it for a file you did not write
            raise CheckpointError(
                f"{path}: corrupt or unsafe checkpoint (it holds Python objects that a metabt "
                "checkpoint never contains, and metabt never unpickles arbitrary objects); "
                "re-create it with `metabt train`"
            ) from exc
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({first}); re-create it with `metabt train`"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a metabt checkpoint; train one with `metabt train`")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this metabt reads "
            f"({CHECKPOINT_VERSION}); upgrade metabt"
        )
    missing = _REQUIRED - set(ckpt)
    if missing:
        raise CheckpointError(
            f"{path}: checkpoint lacks {sorted(missing)}; re-create it with `metabt train`"
        )
    return ckpt


def restore_fit_state(learner: Checkpointable, path: Path) -> dict[str, Any]:
    """Load θ and the optimizer state of an unfinished ``fit`` into ``learner``.

    Args:
        learner: configured exactly as the run that wrote ``path``.
        path: a checkpoint written during ``fit``.

    Returns:
        The stored ``fit_state`` dict (step, best state, losses, ...).

    Raises:
        CheckpointError: unreadable file, another configuration, no training state, or a
            state that does not fit.
    """
    ckpt = read_checkpoint(path)
    if ckpt["hparams"] != hparams(learner) or ckpt["model_config"] != model_config(learner.model):
        raise CheckpointError(
            f"{path}: the checkpoint to resume from was written for another configuration "
            f"({ckpt['hparams']}, {ckpt['model_config']}); delete it or pass resume=False"
        )
    state = ckpt.get("fit_state")
    if state is None:
        raise CheckpointError(f"{path}: holds no training state to resume from; pass resume=False")
    try:
        load_learner_state(learner, ckpt["state"])
        learner.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: cannot resume ({exc}); delete it or pass resume=False"
        ) from exc
    return dict(state)


def load_learner(
    make: Callable[..., L],
    path: str | os.PathLike[str],
    *,
    feature_spec: FeatureSpecLike | None = None,
    engine: str | None = None,
    allow_changed_features: bool = False,
) -> L:
    """Build a learner from a checkpoint written by :func:`save_learner`.

    Args:
        make: the learner class (called as ``make(model, algorithm=..., inner_lr=...,
            inner_steps=..., meta_lr=..., engine=..., seed=..., feature_spec=...)``).
        path: checkpoint file.
        feature_spec: if given, must equal the checkpoint's feature spec.
        engine: override the saved engine ("auto", "higher", "func").
        allow_changed_features: load even if a user feature's source changed since
            training (its SHA-256 differs); default False refuses.

    Returns:
        The learner with θ, hyper-parameters, feature spec, training range and step count.

    Raises:
        CheckpointError: missing, corrupt or truncated file; not a metabt checkpoint; a
            newer format version; a model or feature spec that does not match.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    _check_payload(path, ckpt)
    algorithm = _family(path, ckpt["hparams"].get("algorithm"))
    model = _build(path, ckpt["model_config"])
    spec: FeatureSpecLike | None = None
    if ckpt["feature_spec"] is not None:
        try:  # user features: their modules must be trusted and their code unchanged
            spec = decode_spec(ckpt["feature_spec"], allow_changed=allow_changed_features)
        except (ConfigError, DataError) as exc:
            raise CheckpointError(f"{path}: {' '.join(str(exc).split())}") from exc
    try:
        hp = dict(ckpt["hparams"])
        dtype = getattr(torch, str(hp.pop("dtype", "float32")))
        model = model.to(dtype)
        learner = make(
            model,
            algorithm=algorithm,
            inner_lr=hp["inner_lr"],
            inner_steps=hp["inner_steps"],
            meta_lr=hp["meta_lr"],
            engine=engine or hp["engine"],
            seed=hp["seed"],
            feature_spec=spec,
            **({"head": hp["head"]} if hp.get("head") is not None else {}),
            **({"loss": loss_from_config(hp["loss"])} if hp.get("loss") is not None else {}),
        )
        load_learner_state(learner, ckpt["state"])
    except CheckpointError:
        raise
    except (ConfigError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        first = " ".join(lines[:2]) if lines else type(exc).__name__
        if not isinstance(model, MetaModel):
            kind = ckpt["model_config"].get("type")
            raise CheckpointError(
                f"{path}: the saved weights do not fit the user model {kind!r} ({first}); "
                "its class changed since the checkpoint was written: restore that version "
                "of the class or retrain"
            ) from exc
        raise CheckpointError(
            f"{path}: the checkpoint does not match this version of metabt ({first}); "
            "re-create it with `metabt train`"
        ) from exc
    width, window = input_width(model), int(getattr(model, "window", 1))
    known = spec is not None and spec.n_features >= 0
    if known and spec is not None and width is not None and width != spec.n_features * window:
        raise CheckpointError(
            f"{path}: the model takes {width} inputs but the feature spec gives "
            f"{spec.n_features} x window {window}; re-create it with `metabt train`"
        )
    if feature_spec is not None and spec != feature_spec:
        raise CheckpointError(
            f"{path}: the checkpoint was trained with features {spec}, not {feature_spec}; "
            "use the checkpoint's feature spec or retrain with `metabt train`"
        )
    if ckpt["train_range"] is not None:
        learner.train_range = (str(ckpt["train_range"][0]), str(ckpt["train_range"][1]))
    learner.train_config = ckpt.get("train_config")
    learner.step_count = int(ckpt.get("step_count", 0))
    return learner


_DTYPES = ("float32", "float64")


def _family(path: Path, algorithm: Any) -> Any:
    """The checkpoint's algorithm: a built-in name as stored, or the user's family class
    its import path names, imported only if trusted (before the model is built).

    Raises:
        CheckpointError: the family's module is not trusted (caused by
            ``UntrustedModuleError``: nothing was imported), cannot be imported, or names
            no concrete ``LearnerFamily`` subclass.
    """
    if not is_family_path(algorithm):
        return algorithm
    try:
        return import_family(str(algorithm))
    except ConfigError as exc:
        raise CheckpointError(
            f"{path}: cannot load the saved learner family: {' '.join(str(exc).split())}"
        ) from exc


def _build(path: Path, config: Any) -> nn.Module:
    """The checkpoint's model, freshly built; CheckpointError naming the cause and fix."""
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: the checkpoint's model_config is not a dict; re-create it")
    kind = config.get("type")
    try:
        return build_model(config)
    except ConfigError as exc:
        if isinstance(kind, str) and ":" in kind:  # a user model: name the import and the fix
            raise CheckpointError(f"{path}: cannot rebuild the saved user model: {exc}") from exc
        raise CheckpointError(
            f"{path}: the checkpoint does not match this version of metabt ({exc}); "
            "re-create it with `metabt train`"
        ) from exc


def _check_payload(path: Path, ckpt: Mapping[str, Any]) -> None:
    """CheckpointError for malformed metadata or weights that are not finite numbers."""
    hp = ckpt["hparams"]
    if not isinstance(hp, Mapping) or str(hp.get("dtype", "float32")) not in _DTYPES:
        dtype = hp.get("dtype") if isinstance(hp, Mapping) else hp
        raise CheckpointError(
            f"{path}: the checkpoint's dtype {dtype!r} is not one of {', '.join(_DTYPES)}; "
            "re-create it with `metabt train`"
        )
    train_range = ckpt["train_range"]
    if train_range is not None:
        ok = isinstance(train_range, (list, tuple)) and len(train_range) == 2
        try:
            dates = [pd.Timestamp(str(v)) for v in train_range] if ok else []
        except (ValueError, TypeError):
            dates = []
        if len(dates) != 2 or any(pd.isna(d) for d in dates) or dates[0] > dates[1]:
            raise CheckpointError(
                f"{path}: the checkpoint's training range {train_range!r} is not two dates "
                "(first, last); re-create it with `metabt train`"
            )
    state = ckpt["state"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: the checkpoint's weights are not tensors; re-create it")
    bad = [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise CheckpointError(
            f"{path}: the checkpoint has NaN or infinite weights ({', '.join(sorted(bad)[:3])}): "
            "its training diverged; re-create it with a lower inner_lr or meta_lr"
        )
    config = ckpt.get("train_config")
    if config is not None and not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: the checkpoint's train_config is not a dict; re-create it")
