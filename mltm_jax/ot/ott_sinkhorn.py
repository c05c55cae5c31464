"""ott-jax's Sinkhorn behind :func:`mltm_jax.ot.sinkhorn.solve_balanced` (``solver='ott'``).

ott-jax (0.6) solves balanced and unbalanced (``tau_a``, ``tau_b``) entropic OT;
it has no partial-OT solver, so ``solver='ott'`` exists for Sinkhorn only.

Domains, as for the native solver (:func:`mltm_jax.ot.costs.choose_domain`): ott's kernel
mode (``lse_mode=False``) on a :class:`ConstantEpsilonGeometry` holding the Gibbs kernel of
the shifted cost while ``max |C - shift| / eps`` is small enough, else ott's log mode on the
cost. ott 0.6's own kernel products cost more than its log-sum-exps on CPU (each call raises
the kernel to the power ``epsilon / eps`` for epsilon schedules, and ``K^T v`` transposes K
first); the subclass, ott's extension point for geometries, makes them matrix-vector products.
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

from mltm_jax.ot import costs
from mltm_jax.ot.result import OTResult

__all__ = ["ConstantEpsilonGeometry", "solve_ott"]


@jax.tree_util.register_pytree_node_class
class ConstantEpsilonGeometry(geometry.Geometry):
  """An ott ``Geometry`` given its kernel ``K [N, M]``, for Sinkhorn at its own epsilon.

  Kernel products read K as stored: ``K v`` (``axis=1``) and ``v^T K`` (``axis=0``, i.e.
  ``K^T v`` without a transposed copy). The ``eps`` ott passes is ignored: it is the
  geometry's own epsilon (no epsilon schedule), for which ott's ``K ** (epsilon / eps)``
  is K itself.
  """

  def apply_kernel(self, vec: jax.Array, eps: Any = None, axis: int = 0) -> jax.Array:
    """``K v`` (axis 1, ``vec [M]`` -> ``[N]``) or ``K^T v`` (axis 0, ``vec [N]`` -> ``[M]``)."""
    del eps
    if axis == 1:
      return jnp.dot(self.kernel_matrix, vec)
    return jnp.dot(vec, self.kernel_matrix)


def solve_ott(
  cost: jax.Array,
  eps: float | jax.Array,
  tau_a: float,
  tau_b: float,
  differentiation: str,
  loop_kw: dict[str, Any],
  momentum: float = 1.0,
  domain: str = "auto",
) -> OTResult:
  """ott-jax's Sinkhorn on ``cost [B, B']`` with uniform marginals.

  Args:
    cost, eps, tau_a, tau_b, differentiation: as
      :func:`mltm_jax.ot.sinkhorn.solve_balanced` (checked there).
    loop_kw: ``threshold``, ``min_iterations``, ``max_iterations``,
      ``inner_iterations``.
    momentum: over-relaxation weight w of every potential update (``(1 - w) old + w new``,
      ott's constant ``Momentum``); 1 = plain Sinkhorn.
    domain: ``'auto'``, ``'kernel'`` or ``'log'`` (the module docstring; implicit
      differentiation always runs ott's log mode).

  Returns:
    :class:`OTResult`, ``log_plan = (f_i + g_j - C_ij) / eps`` float ``[B, B']``.
  """
  implicit = differentiation == "implicit"
  options = dict(
    threshold=loop_kw["threshold"],
    # ott 0.6.0 does not measure the error of a block that ends exactly at
    # its ``min_iterations``, reads that missing error (+inf) as divergence
    # and stops; ``min_iterations - 1`` measures it. It also keeps
    # min < max (ott's scan path for min == max is not used).
    min_iterations=max(min(loop_kw["min_iterations"], loop_kw["max_iterations"]) - 1, 0),
    max_iterations=loop_kw["max_iterations"],
    inner_iterations=loop_kw["inner_iterations"],
    implicit_diff=implicit_differentiation.ImplicitDiff() if implicit else None,
    momentum=acceleration.Momentum(value=momentum) if momentum != 1.0 else None,
  )
  # A constant shift leaves the balanced plan unchanged and keeps K's largest entry at 1;
  # the unbalanced plan depends on it.
  balanced = tau_a == 1.0 and tau_b == 1.0
  shift = jax.lax.stop_gradient(jnp.min(cost)) if balanced else jnp.zeros((), cost.dtype)
  shifted = cost - shift

  def solve(geom: geometry.Geometry, kernel: bool):
    """(f, g, iterations, converged, error): potentials for ``cost`` itself (kernel mode
    solves for ``shifted``: its f is ``shift`` lower)."""
    solver = sinkhorn.Sinkhorn(lse_mode=not kernel, **options)
    out = solver(linear_problem.LinearProblem(geom, tau_a=tau_a, tau_b=tau_b))
    errors = out.errors
    recorded = errors >= 0  # -1: loop ended before; +inf: not measured.
    last = jnp.max(jnp.where(recorded, jnp.arange(errors.shape[0]), -1))
    error = jnp.where(last >= 0, errors[jnp.maximum(last, 0)], jnp.inf)
    f = out.f + shift if kernel else out.f
    return f, out.g, jnp.asarray(out.n_iters, jnp.int32), jnp.asarray(out.converged), error

  f, g, iterations, converged, error = costs.choose_domain(
    "log" if implicit else domain,
    -shifted / eps,
    lambda: solve(
      ConstantEpsilonGeometry(kernel_matrix=jnp.exp(-shifted / eps), epsilon=eps), True
    ),
    lambda: solve(geometry.Geometry(cost_matrix=cost, epsilon=eps), False),
  )
  # Formed outside the branch, so XLA fuses it into whatever reads it (the plan's exp).
  return OTResult(
    log_plan=(f[:, None] + g[None, :] - cost) / eps,
    iterations=iterations,
    converged=converged,
    error=jax.lax.stop_gradient(error),
  )
