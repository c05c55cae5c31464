"""The output of every OT solver of :mod:`mltm_jax.ot`."""

from __future__ import annotations

from typing import NamedTuple

import jax

__all__ = ["OTResult"]


class OTResult(NamedTuple):
  """Output of a solver.

  Attributes:
    log_plan: float ``[B, B']``, log of the entropic plan.
    iterations: int32 scalar, iterations carried out.
    converged: bool scalar, whether the stopping criterion was met (``True``
      for the fixed-iteration partial solver, which has none).
    error: float scalar (no gradient), the last measured error: L1 distance
      of the plan's column sums to their optimality target (``b``, or
      ``b exp(-g / rho_b)`` when unbalanced; rows are exact after the last
      update) for Sinkhorn; for partial OT, the L1 excess of the row and
      column sums over ``a`` and ``b`` plus ``|total mass - s|``.
  """

  log_plan: jax.Array
  iterations: jax.Array
  converged: jax.Array
  error: jax.Array
