"""Ranking scores from a distance matrix or from a transductive entropic OT plan.

The official evaluation ranks each query's row of an entropic OT plan computed between
all test queries and all gallery items: cost divided by its max, uniform marginals,
eps 0.03 and exactly 10 Sinkhorn-Knopp iterations (POT ``ot.sinkhorn(a, b, M, reg,
numItermax=10)``). Each direction uses its own plan with the queries as rows (T2A:
captions x clips; A2T: clips x captions); with a fixed iteration count the plan of the
transposed cost is not the transpose of the plan, so compute one per direction.

POT's Sinkhorn-Knopp, from u = 1/Nq, v = 1/Ng, repeats ``v = b / (K^T u); u = a / (K v)``
with K = exp(-C / eps) and returns diag(u) K diag(v). We run the same updates with the
kernel K (matrix-vector products; one exp of the cost) while max |C| / eps <= 40
(float32) or 300 (float64), where K and the scalings stay far inside the float range
(the official evaluation's eps 0.03 on a max-normalised cost: 33), and otherwise on
log u and log v with log-sum-exp (one exp per entry and iteration), so nothing
underflows at small eps. Either way the result is returned as log P = log u - C / eps +
log v, without underflow. Differences from POT: POT may stop before ``num_iterations``
(marginal error < 1e-9 at iteration 0, or a zero/inf/NaN scaling, in which case it
returns the previous iterate); we always run exactly ``num_iterations``. An all-zero
cost is not rescaled (POT would divide by 0).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

RankBy = Literal["distance", "plan"]
RANK_BY_CHOICES = ("distance", "plan")


# Largest max |C| / eps for which the kernel-domain iterations are used, by dtype.
KERNEL_MAX_EXPONENT = {"float32": 40.0, "float64": 300.0}


def _prepare(cost: jax.Array, eps, normalize_max: bool):
  """(cost as float >= 32 bits, max-normalised if asked; eps in its dtype)."""
  cost = jnp.asarray(cost)
  cost = cost.astype(jnp.result_type(cost.dtype, jnp.float32))
  if normalize_max:
    cmax = jnp.max(cost)
    cost = cost / jnp.where(cmax > 0, cmax, jnp.ones_like(cmax))
  return cost, jnp.asarray(eps, cost.dtype)


def _potentials(cost: jax.Array, eps: jax.Array, num_iterations: int, transposed: bool):
  """(log u, log v) after ``num_iterations`` Sinkhorn-Knopp steps.

  transposed=False: the problem with rows = cost's rows (log u [Nq], log v [Ng]).
  transposed=True: the problem of cost.T (log u [Ng], log v [Nq]), without
  transposing the matrix. Kernel or log domain as the module docstring says.
  """
  dt = cost.dtype
  nq, ng = cost.shape
  row_axis, col_axis = (1, 0) if transposed else (0, 1)  # reduction axes for v, u
  n_u, n_v = (ng, nq) if transposed else (nq, ng)
  log_a = -jnp.log(jnp.asarray(n_u, dt))
  log_b = -jnp.log(jnp.asarray(n_v, dt))
  u_axis = 1 - col_axis  # the axis of cost that indexes u

  def expand(x, axis):  # vector over cost's axis ``axis`` -> broadcastable [.., ..]
    return x[:, None] if axis == 0 else x[None, :]

  def kernel(_):
    k = jnp.exp(-cost / eps)
    u = jnp.full((n_u,), 1.0 / n_u, dt)
    v = jnp.full((n_v,), 1.0 / n_v, dt)

    def step(_, uv):
      u, _ = uv
      # v = b / (K^T u); u = a / (K v) (in the transposed problem K is cost.T's kernel).
      v = (1.0 / n_v) / (jnp.tensordot(u, k, axes=(0, u_axis)))
      u = (1.0 / n_u) / (jnp.tensordot(k, v, axes=(1 - u_axis, 0)))
      return u, v

    u, v = jax.lax.fori_loop(0, num_iterations, step, (u, v))
    return jnp.log(u), jnp.log(v)

  def log_domain(_):
    log_k = -cost / eps

    def step(_, uv):
      log_u, _ = uv
      log_v = log_b - logsumexp(log_k + expand(log_u, u_axis), axis=row_axis)
      log_u = log_a - logsumexp(log_k + expand(log_v, 1 - u_axis), axis=col_axis)
      return log_u, log_v

    init = (jnp.full((n_u,), log_a, dt), jnp.full((n_v,), log_b, dt))
    return jax.lax.fori_loop(0, num_iterations, step, init)

  limit = KERNEL_MAX_EXPONENT["float64" if dt == jnp.float64 else "float32"]
  use_kernel = jnp.max(jnp.abs(cost)) <= limit * eps
  return jax.lax.cond(use_kernel, kernel, log_domain, None)


@functools.partial(jax.jit, static_argnames=("num_iterations", "normalize_max"))
def sinkhorn_log_plan(
  cost: jax.Array, eps: float = 0.03, num_iterations: int = 10, normalize_max: bool = True
) -> jax.Array:
  """Log of the entropic OT plan after exactly ``num_iterations`` Sinkhorn-Knopp steps.

  Args:
    cost: float [Nq, Ng] ground cost (e.g. distances), queries x gallery.
    eps: entropic regularisation (POT's ``reg``), applied after max-normalisation.
    num_iterations: number of (v, u) update pairs, as POT's ``numItermax``.
    normalize_max: divide the cost by its maximum first (official evaluation).

  Returns:
    float [Nq, Ng] log P, P = diag(u) exp(-C/eps) diag(v) with uniform marginals
    a = 1/Nq, b = 1/Ng; same dtype as ``cost`` (float32 unless x64 inputs).
  """
  cost, eps = _prepare(cost, eps, normalize_max)
  log_u, log_v = _potentials(cost, eps, num_iterations, transposed=False)
  return log_u[:, None] - cost / eps + log_v[None, :]


@functools.partial(jax.jit, static_argnames=("num_iterations", "normalize_max"))
def sinkhorn_log_plans_both(
  cost: jax.Array, eps: float = 0.03, num_iterations: int = 10, normalize_max: bool = True
) -> tuple[jax.Array, jax.Array]:
  """Both directions' log plans from one cost [Nq, Ng], in cost's layout.

  Returns (log P of ``cost`` [Nq, Ng], log P' of ``cost.T`` transposed back to
  [Nq, Ng]): ``sinkhorn_log_plan(cost)`` and ``sinkhorn_log_plan(cost.T).T``, sharing
  one normalisation and one kernel and never transposing the matrix. Column j of
  the second ranks the queries for gallery item j.
  """
  cost, eps = _prepare(cost, eps, normalize_max)
  log_u, log_v = _potentials(cost, eps, num_iterations, transposed=False)
  log_u2, log_v2 = _potentials(cost, eps, num_iterations, transposed=True)
  scaled = cost / eps
  return (
    log_u[:, None] - scaled + log_v[None, :],
    log_v2[:, None] - scaled + log_u2[None, :],
  )


def sinkhorn_plan(
  cost: jax.Array, eps: float = 0.03, num_iterations: int = 10, normalize_max: bool = True
) -> jax.Array:
  """Entropic OT plan float [Nq, Ng] = exp(sinkhorn_log_plan(...)); may underflow to 0.

  Prefer :func:`sinkhorn_log_plan` for ranking: same order, no underflow ties.
  """
  return jnp.exp(sinkhorn_log_plan(cost, eps, num_iterations, normalize_max))


def score_matrix(
  cost: jax.Array,
  rank_by: RankBy = "distance",
  eps: float = 0.03,
  num_iterations: int = 10,
  normalize_max: bool = True,
) -> jax.Array:
  """Ranking scores (higher = better) float [Nq, Ng] from a cost [Nq, Ng].

  rank_by="distance": -cost (inductive). rank_by="plan": log of the transductive
  Sinkhorn plan between all queries (rows) and all gallery items (columns); ranking a
  row by log P equals ranking it by P, without ties from underflow.
  """
  if rank_by == "distance":
    return -jnp.asarray(cost)
  if rank_by == "plan":
    return sinkhorn_log_plan(cost, eps, num_iterations, normalize_max)
  raise ValueError(f"plan_ranking: rank_by must be one of {RANK_BY_CHOICES}, got {rank_by!r}")
