"""The m-LTM loss: inverse optimal transport on a mini-batch (docs/method.md section 4).

For a batch of ``B`` aligned pairs with ground cost ``C [B, B]``
(``C[i, j]`` = cost between audio ``i`` and caption ``j``), the loss is the
generalised KL divergence ``KL(I / B || P(C)) + log B``, where ``P(C)`` is an
entropic OT plan between uniform marginals: balanced, partial (total mass
``s``) or unbalanced (KL-relaxed marginals). Written out,
``KL(Q || P) = sum Q log(Q / P) - sum Q + sum P``, so the loss is
``-(1/B) sum_i log P_ii(C) + (sum_ij P_ij - 1)``. The mass term is constant
for balanced (mass 1) and partial OT (mass ``s``) and is left out there; for
unbalanced OT the plan's mass moves with the cost, and without the term a
constant shift of every cost (which scales the plan, its diagonal share
unchanged) would lower the loss without bound.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mltm_jax import ot as ot_lib
from mltm_jax.config import OT_VARIANTS

__all__ = ["mltm_loss"]


def mltm_loss(
  cost: jax.Array,
  *,
  eps: float | jax.Array,
  variant: str = "balanced",
  mass: float = 0.95,
  tau: float = 1.0,
  normalize_max: bool = True,
  **solver_options: Any,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """m-LTM loss ``-(1/B) sum_i log P_ii (+ sum_ij P_ij - 1 if unbalanced)``.

  Args:
    cost: float ``[B, B]`` ground cost, positive pairs on the diagonal.
    eps: entropic regularisation (on the normalised cost if ``normalize_max``).
    variant: ``'balanced'`` (Sinkhorn, ``tau_a = tau_b = 1``), ``'partial'``
      (transport total mass ``mass``; Bregman projections) or
      ``'unbalanced'`` (Sinkhorn, ``tau_a = tau_b = tau``).
    mass: transported mass ``s`` in (0, 1] for ``'partial'``.
    tau: marginal relaxation in (0, 1] (1 = balanced) for ``'unbalanced'``
      (``rho = eps tau / (1 - tau)``; POT's ``reg_m = rho``).
    normalize_max: divide the cost by its maximum first (the official code's
      behaviour; the gradient flows through the max).
    **solver_options: passed to :func:`mltm_jax.ot.solve_balanced`
      (``threshold``, ``min_iterations``, ``max_iterations``,
      ``inner_iterations``, ``domain``, ``solver``, ``differentiation``, ``momentum``) or,
      for ``'partial'``, :func:`mltm_jax.ot.solve_partial`
      (``num_iterations``, ``domain``, ``solver``: ``'native'`` only).

  Returns:
    ``(loss, aux)``: ``loss`` a float scalar; ``aux`` a dict of gradient-free
    scalars: ``ot_iterations`` (int32), ``ot_converged`` (bool), ``ot_error``
    (the solver's last error), ``diag_mass`` (``sum_i P_ii``, the plan mass on
    the matched pairs; ``1`` for a perfect balanced plan) and ``cost_max``
    (the normaliser, ``max(cost)``) and ``plan_mass`` (``sum_ij P_ij``).
  """
  if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 1:
    raise ValueError(
      f"mltm_loss: cost must be a non-empty square [B, B] matrix, got shape {cost.shape}"
    )
  if variant not in OT_VARIANTS:
    raise ValueError(f"mltm_loss: variant must be one of {OT_VARIANTS}, got {variant!r}")
  cost_max = jnp.max(cost)
  if normalize_max:
    cost = ot_lib.normalize_cost_max(cost)
  try:
    if variant == "balanced":
      result = ot_lib.solve_balanced(cost, eps, **solver_options)
    elif variant == "unbalanced":
      if not 0.0 < tau <= 1.0:
        raise ValueError(f"mltm_loss: variant 'unbalanced' needs tau in (0, 1], got {tau}")
      result = ot_lib.solve_balanced(cost, eps, tau_a=tau, tau_b=tau, **solver_options)
    else:
      result = ot_lib.solve_partial(cost, eps, mass, **solver_options)
  except TypeError as err:
    raise TypeError(f"mltm_loss: bad solver option for variant {variant!r}: {err}") from err
  log_diag = jnp.diagonal(result.log_plan)
  loss = -jnp.mean(log_diag)
  if variant == "unbalanced":
    loss = loss + jnp.sum(jnp.exp(result.log_plan)) - 1.0
  aux = {
    "ot_iterations": result.iterations,
    "ot_converged": result.converged,
    "ot_error": result.error,
    "diag_mass": jax.lax.stop_gradient(jnp.sum(jnp.exp(log_diag))),
    "cost_max": jax.lax.stop_gradient(cost_max),
    "plan_mass": jax.lax.stop_gradient(jnp.sum(jnp.exp(result.log_plan))),
  }
  return loss, aux
