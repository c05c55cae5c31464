"""Ranking scores from a distance matrix or from a transductive entropic OT plan.

The official evaluation ranks each query's row of an entropic OT plan computed between
all test queries and all gallery items: cost divided by its max, uniform marginals,
eps 0.03 and exactly 10 Sinkhorn-Knopp iterations (POT ``ot.sinkhorn(a, b, M, reg,
numItermax=10)``). Each direction uses its own plan with the queries as rows (T2A:
captions x clips; A2T: clips x captions); with a fixed iteration count the plan of the
transposed cost is not the transpose of the plan, so compute one per direction.

POT's Sinkhorn-Knopp, from u = 1/Nq, v = 1/Ng, repeats ``v = b / (K^T u); u = a / (K v)``
with K = exp(-C / eps) and returns diag(u) K diag(v). We run the same updates on
log u and log v with log-sum-exp, so nothing underflows at small eps. Differences from
POT: POT may stop before ``num_iterations`` (marginal error < 1e-9 at iteration 0, or a
zero/inf/NaN scaling, in which case it returns the previous iterate); we always run
exactly ``num_iterations``. An all-zero cost is not rescaled (POT would divide by 0).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

RankBy = Literal["distance", "plan"]
RANK_BY_CHOICES = ("distance", "plan")


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
  cost = jnp.asarray(cost)
  cost = cost.astype(jnp.result_type(cost.dtype, jnp.float32))
  if normalize_max:
    cmax = jnp.max(cost)
    cost = cost / jnp.where(cmax > 0, cmax, jnp.ones_like(cmax))
  nq, ng = cost.shape
  log_k = -cost / jnp.asarray(eps, cost.dtype)
  log_a = -jnp.log(jnp.asarray(nq, cost.dtype))
  log_b = -jnp.log(jnp.asarray(ng, cost.dtype))
  log_u = jnp.full((nq,), log_a, cost.dtype)
  log_v = jnp.full((ng,), log_b, cost.dtype)

  def step(_, carry):
    log_u, _ = carry
    log_v = log_b - logsumexp(log_k + log_u[:, None], axis=0)  # v = b / K^T u
    log_u = log_a - logsumexp(log_k + log_v[None, :], axis=1)  # u = a / K v
    return log_u, log_v

  log_u, log_v = jax.lax.fori_loop(0, num_iterations, step, (log_u, log_v))
  return log_u[:, None] + log_k + log_v[None, :]


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
