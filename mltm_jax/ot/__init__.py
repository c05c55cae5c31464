"""Entropic optimal transport for the m-LTM losses and the plan ranking.

Split in the spirit of ott-jax (geometry / problems / solvers):

* :mod:`~mltm_jax.ot.costs`: cost preparation (max-normalisation) and the
  kernel-domain limits, the choice between kernel and log domain;
* :mod:`~mltm_jax.ot.sinkhorn`: balanced / unbalanced Sinkhorn, native (custom
  backward pass) or ott-jax's (:mod:`~mltm_jax.ot.ott_sinkhorn`), and POT's
  fixed-iteration Sinkhorn-Knopp for one or both orientations of a cost;
* :mod:`~mltm_jax.ot.partial`: partial OT (log-domain Bregman projections =
  POT's algorithm); native only (ott-jax has none);
* :mod:`~mltm_jax.ot.result`: :class:`OTResult`, every solver's output.

Solver names and OT variants are ``mltm_jax.config.OT_SOLVERS``,
``PARTIAL_OT_SOLVERS`` and ``OT_VARIANTS``.
"""

from mltm_jax.ot.costs import (
  KERNEL_MAX_EXPONENT,
  KERNEL_MAX_EXPONENT_FLOAT64,
  kernel_max_exponent,
  normalize_cost_max,
  prepare_cost,
)
from mltm_jax.ot.partial import partial_log_plan, solve_partial
from mltm_jax.ot.result import OTResult
from mltm_jax.ot.sinkhorn import (
  balanced_log_plan,
  sinkhorn_fixed,
  sinkhorn_fixed_both,
  solve_balanced,
)

__all__ = [
  "KERNEL_MAX_EXPONENT",
  "KERNEL_MAX_EXPONENT_FLOAT64",
  "OTResult",
  "balanced_log_plan",
  "kernel_max_exponent",
  "normalize_cost_max",
  "partial_log_plan",
  "prepare_cost",
  "sinkhorn_fixed",
  "sinkhorn_fixed_both",
  "solve_balanced",
  "solve_partial",
]
