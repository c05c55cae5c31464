"""Ranking scores from a distance matrix or from a transductive entropic OT plan.

The official evaluation ranks each query's row of an entropic OT plan computed between
all test queries and all gallery items: cost divided by its max, uniform marginals,
eps 0.03 and exactly 10 Sinkhorn-Knopp iterations (POT ``ot.sinkhorn(a, b, M, reg,
numItermax=10)``). Each direction uses its own plan with the queries as rows (T2A:
captions x clips; A2T: clips x captions); with a fixed iteration count the plan of the
transposed cost is not the transpose of the plan, so compute one per direction.

The plans are those of POT's Sinkhorn-Knopp (``mltm_jax.ot.sinkhorn_fixed``: from u = a,
exactly ``num_iterations`` (v, u) updates, kernel or log domain as ``mltm_jax.ot.costs``
decides, returned as log P without underflow); the cost is max-normalised by
``mltm_jax.ot.normalize_cost_max`` (an all-zero cost is not rescaled; POT would divide by 0).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mltm_jax import ot as ot_lib
from mltm_jax.config import RANK_BY as RANK_BY_CHOICES


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
  cost, eps = ot_lib.prepare_cost(cost, eps, normalize_max)
  return ot_lib.sinkhorn_fixed(cost, eps, num_iterations).log_plan


@functools.partial(jax.jit, static_argnames=("num_iterations", "normalize_max"))
def sinkhorn_log_plans_both(
  cost: jax.Array, eps: float = 0.03, num_iterations: int = 10, normalize_max: bool = True
) -> tuple[jax.Array, jax.Array]:
  """Both directions' log plans from one cost [Nq, Ng], in cost's layout.

  Returns (log P of ``cost`` [Nq, Ng], log P' of ``cost.T`` transposed back to
  [Nq, Ng]): ``sinkhorn_log_plan(cost)`` and ``sinkhorn_log_plan(cost.T).T``, sharing
  one normalisation and never transposing the matrix (``mltm_jax.ot.sinkhorn_fixed_both``).
  Column j of the second ranks the queries for gallery item j.
  """
  cost, eps = ot_lib.prepare_cost(cost, eps, normalize_max)
  return ot_lib.sinkhorn_fixed_both(cost, eps, num_iterations)


def sinkhorn_plan(
  cost: jax.Array, eps: float = 0.03, num_iterations: int = 10, normalize_max: bool = True
) -> jax.Array:
  """Entropic OT plan float [Nq, Ng] = exp(sinkhorn_log_plan(...)); may underflow to 0.

  Prefer :func:`sinkhorn_log_plan` for ranking: same order, no underflow ties.
  """
  return jnp.exp(sinkhorn_log_plan(cost, eps, num_iterations, normalize_max))


def score_matrix(
  cost: jax.Array,
  rank_by: str = "distance",
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
