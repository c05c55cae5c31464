"""ott-jax's log-domain Sinkhorn behind :func:`mltm_jax.ot.sinkhorn.solve_balanced`
(``solver='ott'``).

ott-jax (0.6) solves balanced and unbalanced (``tau_a``, ``tau_b``) entropic OT;
it has no partial-OT solver, so ``solver='ott'`` exists for Sinkhorn only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import acceleration
from ott.solvers.linear import implicit_differentiation
from ott.solvers.linear import sinkhorn

from mltm_jax.ot.result import OTResult

__all__ = ["solve_ott"]


def solve_ott(
  cost: jax.Array,
  eps: float | jax.Array,
  tau_a: float,
  tau_b: float,
  differentiation: str,
  loop_kw: dict[str, Any],
  momentum: float = 1.0,
) -> OTResult:
  """ott-jax's Sinkhorn on ``cost [B, B']`` with uniform marginals.

  Args:
    cost, eps, tau_a, tau_b, differentiation: as
      :func:`mltm_jax.ot.sinkhorn.solve_balanced` (checked there).
    loop_kw: ``threshold``, ``min_iterations``, ``max_iterations``,
      ``inner_iterations``.
    momentum: over-relaxation weight w of every potential update (``(1 - w) old + w new``,
      ott's constant ``Momentum``); 1 = plain Sinkhorn.

  Returns:
    :class:`OTResult`, ``log_plan = (f_i + g_j - C_ij) / eps`` float ``[B, B']``.
  """
  implicit = implicit_differentiation.ImplicitDiff() if differentiation == "implicit" else None
  geom = geometry.Geometry(cost_matrix=cost, epsilon=eps)
  prob = linear_problem.LinearProblem(geom, tau_a=tau_a, tau_b=tau_b)
  solver = sinkhorn.Sinkhorn(
    threshold=loop_kw["threshold"],
    # ott 0.6.0 does not measure the error of a block that ends exactly at
    # its ``min_iterations``, reads that missing error (+inf) as divergence
    # and stops; ``min_iterations - 1`` measures it. It also keeps
    # min < max (ott's scan path for min == max is not used).
    min_iterations=max(min(loop_kw["min_iterations"], loop_kw["max_iterations"]) - 1, 0),
    max_iterations=loop_kw["max_iterations"],
    inner_iterations=loop_kw["inner_iterations"],
    implicit_diff=implicit,
    momentum=acceleration.Momentum(value=momentum) if momentum != 1.0 else None,
  )
  out = solver(prob)
  errors = out.errors
  recorded = errors >= 0  # -1: loop ended before; +inf: not measured.
  last = jnp.max(jnp.where(recorded, jnp.arange(errors.shape[0]), -1))
  error = jnp.where(last >= 0, errors[jnp.maximum(last, 0)], jnp.inf)
  return OTResult(
    log_plan=(out.f[:, None] + out.g[None, :] - cost) / eps,
    iterations=jnp.asarray(out.n_iters, jnp.int32),
    converged=jnp.asarray(out.converged),
    error=jax.lax.stop_gradient(error),
  )
