"""A user learner family for metabt: iMAML, implicit gradients by conjugate gradients.

iMAML (Rajeswaran, Finn, Kakade & Levine 2019, "Meta-Learning with Implicit Gradients",
NeurIPS) adapts θ to a task by minimising the support loss plus a proximal term,

    φ*(θ) = argmin_φ  L_s(φ) + (λ/2)·||φ − θ||²,

and differentiates the query loss through that minimiser with the implicit function
theorem instead of back-propagating through the inner steps: the stationarity condition
∇L_s(φ*) + λ(φ* − θ) = 0 gives dφ*/dθ = (I + H/λ)⁻¹ with H = ∇²L_s(φ*), so

    meta-gradient = (I + H/λ)⁻¹ ∇_φ L_q(φ*)          (their eq. 5 and algorithm 2),

solved by a few conjugate-gradient steps that need only Hessian-vector products
(``torch.autograd.grad`` twice). The memory of the meta-gradient does not grow with the
inner steps, and none of metabt's built-in families takes this outer step.

Test-time adaptation is the same regularised inner loop (``adapt``): the proximal term is
part of the inner problem whose minimiser θ was meta-trained for, so dropping it in the
backtest would adapt to a different φ than the one scored in training.

Use it from Python::

    from metabt import MetaLearner
    learner = MetaLearner(model, algorithm="examples.imaml:ImamlFamily")

or from the command line (naming the path there trusts its module)::

    metabt compare --algorithm examples.imaml:ImamlFamily --data sample_data/AAPL.csv ...

The family's settings are its fields' defaults (``λ`` = :attr:`ImamlFamily.lam`, the CG
steps); to change them, subclass with other defaults and name the subclass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from metabt import ConfigError, LearnerFamily
from metabt.learn import AdaptedModel, Extra, Learner, support_arrays

__all__ = ["ImamlFamily", "conjugate_gradient"]

Params = dict[str, Tensor]


def _dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)  # type: ignore[return-value]


def conjugate_gradient(
    matvec: object, b: Mapping[str, Tensor], steps: int, tol: float = 1e-12
) -> Params:
    """Solve A v = b for a symmetric positive definite A given as ``matvec(v) -> A v``.

    Args:
        matvec: the callable v -> A v on dicts of tensors shaped like ``b``.
        b: the right-hand side, name -> tensor.
        steps: at most this many CG iterations (exact after dim(b) in exact arithmetic).
        tol: stop once the squared residual norm is below ``tol`` times b's.

    Returns:
        v, name -> tensor of b's shapes (v₀ = 0). Where A has a direction of non-positive
        curvature (I + H/λ of a non-convex support loss can), CG stops before stepping
        along it (truncated CG, Steihaug 1983), so v stays a descent direction: vᵀb > 0.

    References:
        Nocedal & Wright, "Numerical Optimization", 2nd ed., algorithm 5.2 (CG) and
        algorithm 7.2 (CG-Steihaug).
    """
    assert callable(matvec)
    v = {k: torch.zeros_like(t) for k, t in b.items()}
    r = {k: t.clone() for k, t in b.items()}
    p = {k: t.clone() for k, t in b.items()}
    rs = _dot(r, r)
    stop = tol * float(rs)
    for _ in range(steps):
        if float(rs) <= stop or float(rs) == 0.0:
            break
        ap = matvec(p)
        curvature = _dot(p, ap)
        if float(curvature) <= 0.0:  # A is not positive definite along p: stop (Steihaug)
            break
        alpha = rs / curvature
        v = {k: v[k] + alpha * p[k] for k in v}
        r = {k: r[k] - alpha * ap[k] for k in r}
        rs_new = _dot(r, r)
        p = {k: r[k] + (rs_new / rs) * p[k] for k in p}
        rs = rs_new
    return v


@dataclass(frozen=True, kw_only=True)
class ImamlFamily(LearnerFamily):
    """iMAML: proximal inner loop, implicit meta-gradient by conjugate gradients.

    Inner loop (meta-training and test time alike): ``learner.inner_steps`` steps of
    gradient descent at ``learner.inner_lr`` on the support MSE plus (λ/2)·||φ − θ||²,
    from φ = θ, over every parameter. Outer step: for each task b, the query loss's
    gradient g_b at φ_b, then v_b ≈ (I + H_b/λ)⁻¹ g_b by :attr:`cg_steps` CG steps, H_b the
    support MSE's Hessian at φ_b; θ's gradient is Σ_b v_b (g_b already carries the task
    mean's 1/B), handed to ``learner.optimizer``.

    The query loss is the family's ``loss`` (MSE, or a cost-aware
    ``metabt.learn.losses.PnLLoss`` pooled over the batch: its gradient with respect to
    every φ_b comes from one backward pass, which also fills the gradient of a learned
    partial-adjustment rate κ), so ``objective="sharpe"`` works unchanged.

    Args:
        loss: the query loss (``LearnerFamily``'s field). Default MSE.
        lam: λ > 0, the proximal strength: larger keeps φ near θ. Default 2.0.
        cg_steps: conjugate-gradient iterations per task, 1 to 1000. Default 5.

    Raises:
        ConfigError: λ not a positive finite number, or ``cg_steps`` out of range.

    References:
        Rajeswaran, Finn, Kakade & Levine 2019, "Meta-Learning with Implicit Gradients",
        NeurIPS, section 3 and algorithm 2.
    """

    lam: float = 2.0
    cg_steps: int = 5
    learns_adjust_rate: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.lam, bool) or not (
            isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam > 0
        ):
            raise ConfigError(f"iMAML lam must be a positive number, got {self.lam!r}")
        if isinstance(self.cg_steps, bool) or not (
            isinstance(self.cg_steps, int) and 1 <= self.cg_steps <= 1000
        ):
            raise ConfigError(
                f"iMAML cg_steps must be an integer in 1..1000, got {self.cg_steps!r}"
            )

    # ------------------------------------------------------------------ inner loop
    @staticmethod
    def _support_mse(learner: Learner, phi: Mapping[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return ((learner.forward_with(phi, x) - y) ** 2).mean()

    def inner(self, learner: Learner, theta: Params, x: Tensor, y: Tensor, steps: int) -> Params:
        """φ after ``steps`` steps of descent on L_s(φ) + (λ/2)||φ − θ||² from θ.

        Args:
            learner: supplies ``forward_with`` and ``inner_lr``.
            theta: θ, name -> tensor (its autograd history is ignored).
            x: (S, F_in) support inputs; y: (S,) labels, θ's dtype.
            steps: inner steps (>= 0).

        Returns:
            φ, name -> detached tensor (no autograd history).
        """
        lr, lam = learner.inner_lr, self.lam
        theta = {k: v.detach() for k, v in theta.items()}
        phi = {k: v.clone() for k, v in theta.items()}
        for _ in range(steps):
            leaves = {k: v.requires_grad_(True) for k, v in phi.items()}
            with torch.enable_grad():
                loss = self._support_mse(learner, leaves, x, y)
                grads = torch.autograd.grad(loss, list(leaves.values()))
            phi = {
                k: (v - lr * (g + lam * (v - theta[k]))).detach()
                for (k, v), g in zip(leaves.items(), grads, strict=True)
            }
        return phi

    def implicit_gradient(
        self, learner: Learner, phi: Params, x: Tensor, y: Tensor, g: Mapping[str, Tensor]
    ) -> Params:
        """(I + H/λ)⁻¹ g by CG, H the support MSE's Hessian at φ (Hessian-vector products
        by double backward). phi: name -> tensor; x (S, F_in), y (S,); g shaped like φ."""
        leaves = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
        with torch.enable_grad():
            loss = self._support_mse(learner, leaves, x, y)
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)

        def matvec(v: Mapping[str, Tensor]) -> Params:
            hv = torch.autograd.grad(
                grads, list(leaves.values()), grad_outputs=list(v.values()), retain_graph=True
            )
            return {k: v[k] + h.detach() / self.lam for k, h in zip(v, hv, strict=True)}

        return conjugate_gradient(matvec, {k: t.detach() for k, t in g.items()}, self.cg_steps)

    # ----------------------------------------------------------------- outer step
    def meta_gradient(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> tuple[Tensor, Params]:
        """The batch's query loss and iMAML's gradient of it with respect to θ.

        Args:
            learner: the learner (θ is ``learner.model``'s parameters).
            xs: (B, S, F_in), ys: (B, S), xq: (B, Q, F_in), yq: (B, Q), θ's dtype.
            extra: the loss's per-row arrays (name -> (B, Q)) or None.

        Returns:
            (loss, grads): the () query loss after adaptation, with autograd history to
            any learned loss parameter (κ) but none to θ; θ's meta-gradient, name -> tensor.
        """
        theta = {k: v.detach() for k, v in learner.model.named_parameters()}
        phis = [
            self.inner(learner, theta, xs[b], ys[b], learner.inner_steps) for b in range(len(xs))
        ]
        leaves = [{k: v.requires_grad_(True) for k, v in phi.items()} for phi in phis]
        with torch.enable_grad():
            per_task = torch.stack(
                [self.per_task(learner.forward_with(p, xq[b]), yq[b]) for b, p in enumerate(leaves)]
            )
            loss = self.batch_loss(per_task, yq, extra)
            flat = [t for p in leaves for t in p.values()]
            grads = torch.autograd.grad(loss, flat, retain_graph=True)
        n = len(theta)
        total = {k: torch.zeros_like(v) for k, v in theta.items()}
        for b, phi in enumerate(phis):
            g = dict(zip(theta, grads[b * n : (b + 1) * n], strict=True))
            v = self.implicit_gradient(learner, phi, xs[b], ys[b], g)
            total = {k: total[k] + v[k] for k in total}
        return loss, total

    def meta_step(
        self,
        learner: Learner,
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        extra: Extra = None,
    ) -> float:
        """One outer step with the implicit meta-gradient; returns the query loss before it."""
        loss, grads = self.meta_gradient(learner, xs, ys, xq, yq, extra)
        learner.optimizer.zero_grad(set_to_none=True)
        # the gradient of a learned loss parameter (κ of a P&L loss) from the same loss; θ
        # gets none here (each φ_b was detached from it), it gets the implicit gradient
        loss.backward()
        for name, p in learner.model.named_parameters():
            p.grad = grads[name].clone()
        learner.optimizer.step()
        return float(loss.detach())

    # ----------------------------------------------------------------- test time
    def adapt(
        self,
        learner: Learner,
        x: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        steps: int,
        *,
        reference: bool = False,
    ) -> AdaptedModel:
        """The proximal inner loop on one support set, x (S, F_in), y (S,); θ untouched.

        ``reference`` is accepted and ignored (there is one path). Support losses reported
        are the plain support MSE at θ and at φ.

        Raises:
            ConfigError: mismatched shapes, an empty support set or non-finite values.
        """
        theta = {k: v.detach() for k, v in learner.model.named_parameters()}
        xn, yn = support_arrays(x, y, next(iter(theta.values())))
        xt, yt = torch.from_numpy(xn), torch.from_numpy(yn)
        phi = self.inner(learner, theta, xt, yt, steps)
        with torch.no_grad():
            before = float(self._support_mse(learner, theta, xt, yt))
            after = float(self._support_mse(learner, phi, xt, yt))
        return AdaptedModel(
            learner.forward_with, phi, loss_before=before, loss_after=after, steps=steps
        )
