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

Gradient (``differentiation``). ``'unroll'`` differentiates the iterations the solver ran,
as the official code does through POT's loop. ``'envelope'`` (balanced OT only) uses the
envelope theorem (Danskin's theorem; ott-jax's ``use_danskin``): with uniform marginals
``a = b = 1/B``, ``-(1/B) sum_i log P_ii = (tr(C)/B - <a, f> - <b, g>) / eps`` for the
potentials ``f, g`` of the plan, and at the optimum ``<a, f> + <b, g>`` is the entropic OT
value ``W(C)``, whose gradient is the plan ``P``. So ``dL/dC = (I/B - P) / eps``: the solver
runs forward only and nothing is differentiated through its loop; the plan it returns is
kept for the backward pass (a ``jax.custom_vjp``), which is one elementwise pass over it.
Exact at convergence; its error is of the order of the marginal error at which the loop
stopped (docs/method.md, section 4).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from mltm_jax import ot as ot_lib
from mltm_jax.config import OT_VARIANTS
from mltm_jax.ot.sinkhorn import DIFFERENTIATION_MODES

__all__ = ["LOSS_DIFFERENTIATION_MODES", "mltm_loss"]

LOSS_DIFFERENTIATION_MODES = ("envelope",) + DIFFERENTIATION_MODES


def mltm_loss(
  cost: jax.Array,
  *,
  eps: float | jax.Array,
  variant: str = "balanced",
  mass: float = 0.95,
  tau: float = 1.0,
  normalize_max: bool = True,
  differentiation: str = "unroll",
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
    differentiation: ``'unroll'`` (through the solver's iterations), ``'envelope'``
      (balanced only: ``dL/dC = (I/B - P) / eps``, the module docstring) or ``'implicit'``
      (ott's implicit differentiation; ``solver='ott'`` only).
    **solver_options: passed to :func:`mltm_jax.ot.solve_balanced`
      (``threshold``, ``min_iterations``, ``max_iterations``,
      ``inner_iterations``, ``domain``, ``solver``, ``momentum``) or,
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
  if differentiation not in LOSS_DIFFERENTIATION_MODES:
    raise ValueError(
      f"mltm_loss: differentiation must be one of {LOSS_DIFFERENTIATION_MODES}, "
      f"got {differentiation!r}"
    )
  envelope = differentiation == "envelope"
  if envelope and variant != "balanced":
    raise ValueError(
      f"mltm_loss: differentiation='envelope' needs variant 'balanced', got {variant!r}"
    )
  if differentiation == "implicit":  # solve_balanced's option ('unroll' is its default)
    solver_options["differentiation"] = differentiation
  cost_max = jnp.max(cost)
  if normalize_max:
    cost = ot_lib.normalize_cost_max(cost)
  try:
    if envelope:
      loss, stats = envelope_loss(cost, eps, tuple(sorted(solver_options.items())))
    else:
      loss, _, stats = _diagonal_loss(_solve(cost, eps, variant, mass, tau, solver_options))
  except TypeError as err:
    raise TypeError(f"mltm_loss: bad solver option for variant {variant!r}: {err}") from err
  if variant == "unbalanced":
    loss = loss + stats[STAT_NAMES.index("plan_mass")] - 1.0
  aux = dict(zip(STAT_NAMES, jax.lax.stop_gradient(stats)))
  return loss, {**aux, "cost_max": jax.lax.stop_gradient(cost_max)}


def _solve(cost, eps, variant: str, mass: float, tau: float, options) -> ot_lib.OTResult:
  """The plan of ``variant`` (mltm_loss's arguments; ``options``: the solver's)."""
  if variant == "balanced":
    return ot_lib.solve_balanced(cost, eps, **options)
  if variant == "unbalanced":
    if not 0.0 < tau <= 1.0:
      raise ValueError(f"mltm_loss: variant 'unbalanced' needs tau in (0, 1], got {tau}")
    return ot_lib.solve_balanced(cost, eps, tau_a=tau, tau_b=tau, **options)
  return ot_lib.solve_partial(cost, eps, mass, **options)


# The solver's diagnostics, in the order envelope_loss returns them (mltm_loss's aux).
STAT_NAMES = ("ot_iterations", "ot_converged", "ot_error", "diag_mass", "plan_mass")


def _diagonal_loss(result: ot_lib.OTResult):
  """``(-(1/B) sum_i log P_ii, P [B, B], the STAT_NAMES scalars)`` of a solve."""
  plan = jnp.exp(result.log_plan)
  loss = -jnp.mean(jnp.diagonal(result.log_plan))
  stats = (result.iterations, result.converged, result.error, jnp.trace(plan), jnp.sum(plan))
  return loss, plan, stats


def _envelope_forward(cost, eps, options):
  loss, plan, stats = _diagonal_loss(ot_lib.solve_balanced(cost, eps, **dict(options)))
  return (loss, stats), plan


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def envelope_loss(
  cost: jax.Array, eps: float | jax.Array, options: tuple[tuple[str, Any], ...]
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """Balanced m-LTM loss ``-(1/B) sum_i log P_ii`` with the envelope gradient.

  Args:
    cost: float ``[B, B]`` (already max-normalised if asked).
    eps: entropic regularisation; it receives no gradient.
    options: :func:`mltm_jax.ot.solve_balanced`'s keyword options as ``(name, value)`` pairs.

  Returns:
    ``(loss, stats)``: a float scalar, and the STAT_NAMES scalars of the solve. The gradient
    w.r.t. ``cost`` is ``(I/B - P) / eps`` times the loss's cotangent (the stats' are ignored).
  """
  return _envelope_forward(cost, eps, options)[0]


def _envelope_fwd(cost, eps, options):
  out, plan = _envelope_forward(cost, eps, options)
  return out, (plan, eps)


def _envelope_bwd(options, residuals, cotangents):
  del options
  plan, eps = residuals
  b = plan.shape[0]
  scale = cotangents[0] / eps
  d_cost = (jnp.eye(b, dtype=plan.dtype) / b - plan) * scale
  return d_cost, jnp.zeros_like(eps)


envelope_loss.defvjp(_envelope_fwd, _envelope_bwd)
