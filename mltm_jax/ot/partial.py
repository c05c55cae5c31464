"""Entropic partial OT by log-domain Bregman projections (POT's algorithm).

:func:`solve_partial` / :func:`partial_log_plan`: entropic *partial* OT of total
mass ``s`` between uniform marginals ``a = 1/B``, ``b = 1/B'`` of a cost
``[B, B']``, by iterated Bregman (KL) projections with Dykstra's corrections
(Benamou et al. 2015), the problem solved by POT's
``ot.partial.entropic_partial_wasserstein``. Kernel or log domain as
:func:`mltm_jax.ot.costs.choose_domain` decides; the derivative unrolls the
cycles with a hand-written reverse pass (``jax.custom_vjp``, reverse mode only),
as the native Sinkhorn of :mod:`mltm_jax.ot.sinkhorn` does. ott-jax has no
partial-OT solver: ``solver='native'`` is the only one.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mltm_jax.config import OT_SOLVERS, PARTIAL_OT_SOLVERS
from mltm_jax.ot import costs
from mltm_jax.ot.result import OTResult

__all__ = ["partial_log_plan", "solve_partial"]


def _partial_result(log_plan: jax.Array, mass: float, num_iterations: int) -> OTResult:
  n, m = log_plan.shape
  row = jnp.exp(jax.nn.logsumexp(log_plan, axis=1))
  col = jnp.exp(jax.nn.logsumexp(log_plan, axis=0))
  error = (
    jnp.sum(jnp.maximum(row - 1.0 / n, 0.0))
    + jnp.sum(jnp.maximum(col - 1.0 / m, 0.0))
    + jnp.abs(jnp.sum(row) - mass)
  )
  return OTResult(
    log_plan=log_plan,
    iterations=jnp.asarray(num_iterations, jnp.int32),
    converged=jnp.asarray(True),
    error=jax.lax.stop_gradient(error),
  )


class _PartialConfig(NamedTuple):
  """Static settings of the partial-OT solver (hashable)."""

  log_domain: bool
  mass: float
  num_iterations: int


def _partial_loop(mat: jax.Array, cfg: _PartialConfig):
  """Bregman projections for partial OT, recording every iterate.

  Kernel domain (``mat = K``): iteration ``k`` maps ``(t_k, c_k)`` to
  ``r_{k+1} = min(a / (c_k K t_k), 1)``,
  ``t_{k+1} = min(b / (c_k K^T r_{k+1}), 1)`` and
  ``c_{k+1} = s / (r_{k+1}^T K t_{k+1})``, from ``t_0 = 1``,
  ``c_0 = s / sum(K)``; the plan is ``c diag(r) K diag(t)``. Log domain
  (``mat = log K``): the same for ``log r``, ``log t``, ``log c``.

  Returns:
    ``(c0, rs [T, B], ts [T, B'], cs [T])`` with ``rs[k] = r_{k+1}``,
    ``ts[k] = t_{k+1}``, ``cs[k] = c_{k+1}`` (logs in the log domain).
  """
  n, m = mat.shape
  dtype = mat.dtype
  mass = cfg.mass
  if cfg.log_domain:
    log_a, log_b, log_s = -math.log(n), -math.log(m), math.log(mass)
    c0 = log_s - jax.nn.logsumexp(mat)

    def step(carry, _):
      t, c = carry
      r = jnp.minimum(log_a - c - jax.nn.logsumexp(mat + t[None, :], axis=1), 0.0)
      col = jax.nn.logsumexp(mat + r[:, None], axis=0)
      t = jnp.minimum(log_b - c - col, 0.0)
      c = log_s - jax.nn.logsumexp(col + t)
      return (t, c), (r, t, c)

    t0 = jnp.zeros((m,), dtype)
  else:
    a, b = 1.0 / n, 1.0 / m
    c0 = mass / jnp.sum(mat)

    def step(carry, _):
      t, c = carry
      r = jnp.minimum(a / (c * (mat @ t)), 1.0)
      col = r @ mat  # x @ K, not K.T @ x (see mltm_jax.ot.sinkhorn._kt).
      t = jnp.minimum(b / (c * col), 1.0)
      c = mass / jnp.dot(col, t)
      return (t, c), (r, t, c)

    t0 = jnp.ones((m,), dtype)
  _, (rs, ts, cs) = jax.lax.scan(step, (t0, c0), None, length=cfg.num_iterations)
  return c0, rs, ts, cs


def _partial_logs(rs, ts, cs, cfg: _PartialConfig):
  r, t, c = rs[-1], ts[-1], cs[-1]
  return (r, t, c) if cfg.log_domain else (jnp.log(r), jnp.log(t), jnp.log(c))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _partial(mat: jax.Array, cfg: _PartialConfig):
  """``(log r, log t, log c)`` of the last partial-OT iterate.

  ``mat`` is ``K`` or ``log K``, ``[B, B']``. Differentiable w.r.t. ``mat`` by
  unrolling the iterations, with a hand-written reverse pass over the
  recorded iterates.
  """
  _, rs, ts, cs = _partial_loop(mat, cfg)
  return _partial_logs(rs, ts, cs, cfg)


def _partial_fwd(mat, cfg):
  c0, rs, ts, cs = _partial_loop(mat, cfg)
  return _partial_logs(rs, ts, cs, cfg), (mat, c0, rs, ts, cs)


def _partial_bwd(cfg, residuals, cotangents):
  """Reverse pass; cotangents are w.r.t. ``log r``, ``log t``, ``log c``.

  In iteration ``k``: ``log c_{k+1} = log s - log(y . t_{k+1})`` with
  ``y = K^T r_{k+1}``; ``log t_{k+1} = log b - log c_k - log y`` on the
  entries where ``t_{k+1} < 1`` (0 elsewhere); ``log r_{k+1} = log a -
  log c_k - log(K t_k)`` where ``r_{k+1} < 1``. Cotangents of ``log y`` and
  ``log (K t)`` reach ``log K`` and the scalings through the column- and
  row-normalised kernels, as in :func:`mltm_jax.ot.sinkhorn._sinkhorn_bwd`.
  """
  mat, c0, rs, ts, cs = residuals
  ones = 0.0 if cfg.log_domain else 1.0
  ts_prev = jnp.concatenate([jnp.full_like(ts[:1], ones), ts[:-1]], axis=0)

  def step(carry, xs):
    r_ct, t_ct, c_ct, mat_ct = carry  # of log r_{k+1}, log t_{k+1}, log c_{k+1}
    r, t_prev, t = xs  # r_{k+1}, t_k, t_{k+1}
    if cfg.log_domain:
      col_lse = jax.nn.logsumexp(mat + r[:, None], axis=0)  # log y
      # log c_{k+1} = log s - lse(log y + log t): softmax weights.
      omega = jax.nn.softmax(col_lse + t)
      col_ct = -c_ct * omega  # of log y
      t_ct = t_ct - c_ct * omega
      t_active = jnp.where(t < 0.0, t_ct, 0.0)
      col_ct = col_ct - t_active
      c_prev_ct = -jnp.sum(t_active)
      vmat = jax.nn.softmax(mat + r[:, None], axis=0)
      mat_ct = mat_ct + vmat * col_ct[None, :]
      r_ct = r_ct + vmat @ col_ct
      r_active = jnp.where(r < 0.0, r_ct, 0.0)
      c_prev_ct = c_prev_ct - jnp.sum(r_active)
      wmat = jax.nn.softmax(mat + t_prev[None, :], axis=1)
      row_ct = -r_active  # of log (K t_k)
      mat_ct = mat_ct + row_ct[:, None] * wmat
      t_prev_ct = row_ct @ wmat
    else:
      col = r @ mat  # y
      z_ct = -c_ct / jnp.dot(col, t)  # of z = y . t_{k+1}
      col_ct = z_ct * t  # of y (linear)
      t_ct = t_ct + t * z_ct * col
      t_active = jnp.where(t < 1.0, t_ct, 0.0)
      col_ct = col_ct - t_active / col
      c_prev_ct = -jnp.sum(t_active)
      r_ct = r_ct + r * (mat @ col_ct)
      mat_ct = mat_ct + r[:, None] * col_ct[None, :]
      r_active = jnp.where(r < 1.0, r_ct, 0.0)
      c_prev_ct = c_prev_ct - jnp.sum(r_active)
      row_ct = -r_active / (mat @ t_prev)  # of K t_k (linear)
      mat_ct = mat_ct + row_ct[:, None] * t_prev[None, :]
      t_prev_ct = t_prev * (row_ct @ mat)
    return (jnp.zeros_like(r_ct), t_prev_ct, c_prev_ct, mat_ct), None

  log_r_ct, log_t_ct, log_c_ct = cotangents
  init = (log_r_ct, log_t_ct, log_c_ct, jnp.zeros_like(mat))
  (_, _, c0_ct, mat_ct), _ = jax.lax.scan(step, init, (rs, ts_prev, ts), reverse=True)
  # log c_0 = log s - log sum(K).
  if cfg.log_domain:
    mat_ct = mat_ct - c0_ct * jax.nn.softmax(mat.reshape(-1)).reshape(mat.shape)
  else:
    mat_ct = mat_ct - c0_ct / jnp.sum(mat)
  del c0, cs
  return (mat_ct,)


_partial.defvjp(_partial_fwd, _partial_bwd)


def _partial_native(
  log_k: jax.Array, log_domain: bool, mass: float, num_iterations: int
) -> OTResult:
  cfg = _PartialConfig(log_domain=log_domain, mass=float(mass), num_iterations=int(num_iterations))
  mat = log_k if log_domain else jnp.exp(log_k)
  log_r, log_t, log_c = _partial(mat, cfg)
  log_plan = log_k + log_r[:, None] + log_t[None, :] + log_c
  return _partial_result(log_plan, mass, num_iterations)


def solve_partial(
  cost: jax.Array,
  eps: float | jax.Array,
  mass: float,
  *,
  num_iterations: int = 200,
  domain: str = "auto",
  solver: str = "native",
) -> OTResult:
  """Entropic partial OT of total mass ``mass``, by Bregman projections.

  Solves, for uniform ``a = 1/B`` and ``b = 1/B'``::

    P_s = argmin_{P >= 0, P 1 <= a, P^T 1 <= b, 1^T P 1 = s}
          <P, C> + eps sum_ij P_ij log P_ij

  i.e. ``argmin KL(P | K)``, ``K = exp(-C / eps)``, over the intersection of
  three convex sets, by cyclic KL projections with Dykstra's corrections
  (Benamou et al. 2015, Prop. 5), starting from ``P = s K / sum(K)``:

  1. rows: every row whose sum exceeds ``a_i`` is scaled down to ``a_i``;
  2. columns: likewise with ``b_j``;
  3. mass: the plan is scaled to total ``s``.

  Dykstra's correction for a row (column) projection multiplies back the
  factor removed at the previous cycle before re-projecting, so the plan is
  always ``diag(r) K diag(t) * c`` with ``r = min(a / (c K t), 1)``,
  ``t = min(b / (c K^T r), 1)``, ``c = s / (r^T K t)``, updated in that order;
  the mass projection's correction is a constant that the next mass
  projection cancels. These iterates are those of POT's
  ``entropic_partial_wasserstein``; the state is ``O(B + B')``. The cost is
  shifted by its minimum first (the plan is invariant to a constant shift
  at fixed mass).

  The number of cycles is fixed (``jax.lax.scan``); the derivative unrolls
  them (hand-written reverse pass, memory ``O(num_iterations * (B + B'))``).
  Smaller eps needs more cycles.

  Args:
    cost: float ``[B, B']`` cost matrix.
    eps: entropic regularisation (absolute; float or scalar array).
    mass: transported mass ``s`` in (0, 1] (a Python float).
    num_iterations: projection cycles (rows, columns, mass).
    domain: ``'auto'``, ``'kernel'`` or ``'log'`` (``'auto'``: the kernel while
      ``(max C - min C) / eps`` is within :func:`mltm_jax.ot.costs.kernel_max_exponent`).
    solver: one of ``mltm_jax.config.PARTIAL_OT_SOLVERS`` (``'native'``); ``'ott'`` (of
      ``mltm_jax.config.OT_SOLVERS``) is refused: ott-jax has no partial-OT solver.

  Returns:
    :class:`~mltm_jax.ot.result.OTResult`; ``log_plan`` float ``[B, B']``, ``iterations =
    num_iterations``, ``converged = True``.
  """
  fn = "solve_partial"
  costs.check_cost_eps(cost, eps, domain, fn)
  if solver not in PARTIAL_OT_SOLVERS:
    raise costs.fail(
      fn,
      f"solver must be one of {PARTIAL_OT_SOLVERS}, got {solver!r}"
      + (" (ott-jax has no partial-OT solver)" if solver in OT_SOLVERS else ""),
    )
  if not 0.0 < mass <= 1.0:
    raise costs.fail(fn, f"mass must be in (0, 1], got {mass}")
  if num_iterations < 1:
    raise costs.fail(fn, f"num_iterations must be >= 1, got {num_iterations}")
  log_k = -(cost - jax.lax.stop_gradient(jnp.min(cost))) / eps
  return costs.choose_domain(
    domain,
    log_k,
    lambda: _partial_native(log_k, False, mass, num_iterations),
    lambda: _partial_native(log_k, True, mass, num_iterations),
  )


def partial_log_plan(
  cost: jax.Array, eps: float | jax.Array, mass: float, **options: Any
) -> jax.Array:
  """Log of the entropic partial OT plan, float ``[B, B']``; ``options``: :func:`solve_partial`."""
  return solve_partial(cost, eps, mass, **options).log_plan
