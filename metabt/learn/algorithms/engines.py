"""The meta-gradient engines: ``higher`` (the reference) and ``func`` (batched ``torch.func``).

Every gradient family runs on any ``torch.nn.Module`` mapping (N, F_in) to (N,) or (N, 1):
the ``func`` engine calls it through ``torch.func.functional_call`` inside ``vmap``/``grad``
(PyTorch docs, "torch.func"), the ``higher`` engine patches it (Grefenstette et al. 2019).
"auto" picks ``func`` unless a trial call (:func:`vmap_failure`) shows that ``vmap`` cannot
batch the model.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from metabt.errors import ConfigError
from metabt.learn.adapted import Params
from metabt.learn.algorithms.base import LearnerFamily
from metabt.learn.algorithms.inner import prediction
from metabt.learn.losses import mse
from metabt.learn.models import MetaModel, input_width
from metabt.learn.names import ENGINE_NAMES

__all__ = ["ENGINES", "resolve_engine", "vmap_failure"]

#: Engines computing the MAML-family meta-gradient: "auto" picks "func" unless the model
#: cannot be batched by ``torch.func.vmap`` (then "higher").
ENGINES = ENGINE_NAMES


def vmap_failure(model: nn.Module) -> str | None:
    """Why ``torch.func.vmap`` cannot batch ``model``'s inner loop, or None when it can.

    A trial: ``grad`` inside ``vmap`` on two zero tasks, via ``functional_call`` on copies of
    the buffers (module, buffers and torch's random state untouched). Typical failures:
    dropout or batch norm in training mode, ``.item()``, data-dependent control flow.

    Args:
        model: the module (input width: :func:`metabt.learn.models.input_width`, else the
            first ``nn.Linear``'s).

    Returns:
        The error's first line, or None (also when the width is unknown or wrong).

    Raises:
        ConfigError: the model runs but its output is not (N,) or (N, 1).

    References:
        PyTorch docs, "torch.func", "UX Limitations" (what vmap cannot batch).
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    width = input_width(model) or (linears[0].in_features if linears else None)
    if not params or width is None:
        return None
    state = {**params, **{k: v.clone() for k, v in model.named_buffers()}}
    x = torch.zeros(2, 3, width, dtype=next(iter(params.values())).dtype)

    def loss(p: Params, xb: Tensor) -> Tensor:
        out = torch.func.functional_call(model, {**state, **p}, (xb,))
        return mse(prediction(out, xb, model), xb[:, 0])

    with torch.random.fork_rng(devices=[]):
        try:
            with torch.no_grad():
                out = torch.func.functional_call(model, state, (x[0],))
        except Exception:  # a wrong width guess: nothing to learn from the trial
            return None
        prediction(out, x[0], model)  # ConfigError for a wrong output shape
        try:
            torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
        except ConfigError:
            raise
        except Exception as exc:  # whatever torch.func refuses
            text = str(exc).strip()
            return text.splitlines()[0] if text else type(exc).__name__
    return None


def resolve_engine(engine: str, model: nn.Module, family: LearnerFamily) -> str:
    """The engine that runs ``family`` on ``model``: "auto" is "func" unless vmap cannot batch it.

    metabt's models always run on ``func``. For any other module a trial call
    (:func:`vmap_failure`) decides: "auto" falls back to "higher" with a warning naming
    the cause; an explicit "func" that cannot work is a ConfigError.

    Args:
        engine: "auto", "higher" or "func".
        model: the module holding θ.
        family: the algorithm's family (its :meth:`~LearnerFamily.check_model` runs first).

    Returns:
        "func" or "higher".

    Raises:
        ConfigError: "func" for a model ``torch.func.vmap`` cannot batch, a model whose
            output is not (N,) or (N, 1), or a model of another family
            (:meth:`metabt.learn.algorithms.base.LearnerFamily.check_model`).

    Warns:
        UserWarning: "auto" fell back to "higher".
    """
    family.check_model(model)
    if engine == "higher" or isinstance(model, MetaModel):
        return "func" if engine == "auto" else engine
    failure = vmap_failure(model)
    if failure is None:
        return "func"
    name = type(model).__name__
    if engine == "func":
        raise ConfigError(
            f"engine 'func' cannot batch {name} with torch.func.vmap ({failure}); use "
            "engine='higher', or make the forward pass vmap-compatible (no dropout or batch "
            "norm in training mode, no .item(), no in-place updates of buffers)"
        )
    warnings.warn(
        f"engine='auto': torch.func.vmap cannot batch {name} ({failure}); using "
        "engine='higher' (one task at a time, slower). Pass engine='higher' to silence this.",
        UserWarning,
        stacklevel=3,
    )
    return "higher"
