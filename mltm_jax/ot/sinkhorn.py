"""Entropic (un)balanced OT by Sinkhorn iterations: the native solver and ott-jax's.

Pure JAX functions of a cost matrix ``cost`` of shape ``[B, B']`` (float32 by
default) and a regularisation strength ``eps`` (absolute, in the units of the
cost; a Python float or a scalar array, which may be traced). Marginals are
uniform, ``a = 1/B`` and ``b = 1/B'``. Every function returns the *log* of the
plan built from dual variables / scalings, never ``log(plan)``, so entries far
below the float's smallest normal stay finite.

* :func:`solve_balanced` / :func:`balanced_log_plan`: entropic OT, balanced
  (``tau_a = tau_b = 1``) or unbalanced with KL-relaxed marginals (``tau < 1``),
  until a marginal-error threshold is met (the m-LTM losses).
* :func:`sinkhorn_fixed` / :func:`sinkhorn_fixed_both`: POT's Sinkhorn-Knopp
  (``ot.sinkhorn(a, b, C, reg, numItermax=n)``) for exactly ``n`` iterations
  from ``u = a``, for one or both orientations of one cost (the plan ranking of
  :mod:`mltm_jax.evaluation.plan_ranking`).

Conventions (checked against POT in ``tests/test_losses.py`` and
``tests/test_retrieval.py``):

* ``log P_ij = (f_i + g_j - C_ij) / eps`` for dual potentials ``f [B]``,
  ``g [B']``: the plan ``diag(u) K diag(v)``, ``K = exp(-C / eps)``,
  ``u = exp(f / eps)``, ``v = exp(g / eps)``; ott-jax's and POT's convention.
* Unbalanced (``tau < 1``): minimises ``<P, C> + eps KL(P | 1 1^T)
  + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)`` with ``rho = eps tau / (1 - tau)``
  (ott-jax's ``tau_a``, ``tau_b``). The Sinkhorn updates are
  ``v = (b / K^T u) ** tau_b`` and ``u = (a / K v) ** tau_a``, i.e. POT's
  ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg=eps, reg_m=rho,
  reg_type='entropy')``; so ``tau = reg_m / (reg_m + eps)``.

Solvers, differentiation. ``solver='native'`` (default) runs the iterations
written here, with the Gibbs kernel (matrix-vector products) or in the log
domain (log-sum-exps) as :func:`mltm_jax.ot.costs.choose_domain` decides
(``shift = min C`` where a constant shift leaves the plan unchanged: balanced
OT of :func:`solve_balanced`; 0 for unbalanced OT and for
:func:`sinkhorn_fixed`). The derivative is that of the iterations actually run
(unrolled differentiation), computed by a hand-written reverse pass
(``jax.custom_vjp``) over the recorded iterates: only ``O(iterations * B)``
vectors are stored and the gradient w.r.t. the cost is accumulated in place.
Reverse mode only (``jax.grad``/``vjp``; no ``jvp``/``jacfwd``).

:func:`solve_balanced` stops once its error (see
:class:`~mltm_jax.ot.result.OTResult`) is below ``threshold``, measured every
``inner_iterations``, or after ``max_iterations``. ``solver='ott'`` runs ott-jax's
``Sinkhorn`` (log domain) with ``differentiation='unroll'`` (``implicit_diff=None``:
JAX autodiff through ott's checkpointed loop) or ``'implicit'`` (ott's implicit
differentiation, whose linear solve is ill-conditioned in float32 for small
``eps``; an option only).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mltm_jax.config import OT_SOLVERS
from mltm_jax.ot import costs
from mltm_jax.ot.ott_sinkhorn import solve_ott
from mltm_jax.ot.result import OTResult

__all__ = [
  "DIFFERENTIATION_MODES",
  "balanced_log_plan",
  "sinkhorn_fixed",
  "sinkhorn_fixed_both",
  "solve_balanced",
]

DIFFERENTIATION_MODES = ("unroll", "implicit")


class _SinkhornConfig(NamedTuple):
  """Static settings of the native Sinkhorn (hashable).

  ``fixed``: exactly ``max_iterations`` iterations, no stopping test.
  ``uniform_init``: start from ``u_0 = a`` (POT) instead of ``u_0 = 1``.
  ``transposed``: solve the problem of ``mat.T`` (rows = ``mat``'s columns)
  without transposing ``mat``.
  """

  log_domain: bool
  tau_a: float
  tau_b: float
  threshold: float
  min_iterations: int
  max_iterations: int
  inner_iterations: int
  fixed: bool = False
  uniform_init: bool = False
  transposed: bool = False


def _power(x: jax.Array, tau: float) -> jax.Array:
  return x if tau == 1.0 else x**tau


def _shape(mat: jax.Array, cfg: _SinkhornConfig) -> tuple[int, int]:
  """(rows, columns) of the problem's kernel."""
  n, m = mat.shape
  return (m, n) if cfg.transposed else (n, m)


def _kt(mat, x, cfg: _SinkhornConfig):
  """``K^T x`` of the problem, ``[columns]``."""
  # x @ K, not K.T @ x: XLA:CPU transposes K on every call of the latter.
  return jnp.tensordot(x, mat, axes=(0, 1)) if cfg.transposed else x @ mat


def _k(mat, y, cfg: _SinkhornConfig):
  """``K y`` of the problem, ``[rows]``."""
  return jnp.tensordot(mat, y, axes=(0, 0)) if cfg.transposed else mat @ y


def _lse_kt(mat, x, cfg: _SinkhornConfig):
  """``log(K^T exp(x))`` of the problem (``mat = log K``), ``[columns]``."""
  if cfg.transposed:
    return jax.nn.logsumexp(mat + x[None, :], axis=1)
  return jax.nn.logsumexp(mat + x[:, None], axis=0)


def _lse_k(mat, y, cfg: _SinkhornConfig):
  """``log(K exp(y))`` of the problem (``mat = log K``), ``[rows]``."""
  if cfg.transposed:
    return jax.nn.logsumexp(mat + y[:, None], axis=0)
  return jax.nn.logsumexp(mat + y[None, :], axis=1)


def _sinkhorn_step(mat, x, y, cfg: _SinkhornConfig):
  """One Sinkhorn iteration: the column update, then the row update.

  Kernel domain (``mat = K``, ``x = u [rows]``, ``y = v [columns]``):
  ``v = (b / K^T u)^tau_b``, ``u = (a / K v)^tau_a``. Log domain
  (``mat = log K``, ``x = log u``, ``y = log v``): the same in log space.
  """
  n, m = _shape(mat, cfg)
  if cfg.log_domain:
    y = cfg.tau_b * (-math.log(m) - _lse_kt(mat, x, cfg))
    x = cfg.tau_a * (-math.log(n) - _lse_k(mat, y, cfg))
  else:
    y = _power((1.0 / m) / _kt(mat, x, cfg), cfg.tau_b)
    x = _power((1.0 / n) / _k(mat, y, cfg), cfg.tau_a)
  return x, y


def _sinkhorn_error(mat, x, y, cfg: _SinkhornConfig) -> jax.Array:
  """L1 distance of the column sums to their target ``b exp(-g / rho_b)``."""
  m = _shape(mat, cfg)[1]
  exponent = 0.0 if cfg.tau_b == 1.0 else (1.0 - cfg.tau_b) / cfg.tau_b
  if cfg.log_domain:
    col = jnp.exp(y + _lse_kt(mat, x, cfg))
    target = jnp.exp(-math.log(m) - exponent * y)
  else:
    col = y * _kt(mat, x, cfg)
    target = (1.0 / m) * (y**-exponent if exponent else 1.0)
  return jnp.sum(jnp.abs(col - target))


def _sinkhorn_loop(mat: jax.Array, cfg: _SinkhornConfig):
  """Bounded Sinkhorn loop that records every iterate for the reverse pass.

  Iteration ``k`` (0-based) maps ``x_k`` to ``y_{k+1}`` then ``x_{k+1}``
  (:func:`_sinkhorn_step`) from ``u_0 = 1`` (or ``a``). The error is measured
  after every ``inner_iterations``; the loop stops once it is below
  ``threshold`` (or NaN) and at least ``min_iterations`` were run, or after
  ``max_iterations``. ``cfg.fixed``: exactly ``max_iterations``, one error at
  the end.

  Returns:
    ``(t, x, y, error, xs, ys)``: ``t`` int32 iterations run, the last
    ``x [rows]``, ``y [columns]`` and error, and buffers ``xs [T + 1, rows]``
    with ``xs[k] = x_k`` and ``ys [T, columns]`` with ``ys[k] = y_{k+1}``
    (``T >= t``).
  """
  n, m = _shape(mat, cfg)
  dtype = mat.dtype
  inner = cfg.max_iterations if cfg.fixed else cfg.inner_iterations
  buffer = -(-cfg.max_iterations // inner) * inner
  if cfg.uniform_init:
    x0 = jnp.full((n,), -math.log(n) if cfg.log_domain else 1.0 / n, dtype)
  else:
    x0 = jnp.zeros((n,), dtype) if cfg.log_domain else jnp.ones((n,), dtype)
  xs = jnp.zeros((buffer + 1, n), dtype).at[0].set(x0)
  ys = jnp.zeros((buffer, m), dtype)
  y0 = jnp.zeros((m,), dtype)

  def one(i, carry):
    t, x, y, xs, ys = carry
    x, y = _sinkhorn_step(mat, x, y, cfg)
    xs = jax.lax.dynamic_update_index_in_dim(xs, x, t + i + 1, 0)
    ys = jax.lax.dynamic_update_index_in_dim(ys, y, t + i, 0)
    return t, x, y, xs, ys

  t0 = jnp.zeros((), jnp.int32)
  if cfg.fixed:
    _, x, y, xs, ys = jax.lax.fori_loop(0, cfg.max_iterations, one, (t0, x0, y0, xs, ys))
    t = jnp.asarray(cfg.max_iterations, jnp.int32)
    return t, x, y, _sinkhorn_error(mat, x, y, cfg), xs, ys

  def block(carry):
    t, x, y, _, xs, ys = carry
    _, x, y, xs, ys = jax.lax.fori_loop(0, inner, one, (t, x, y, xs, ys))
    return t + inner, x, y, _sinkhorn_error(mat, x, y, cfg), xs, ys

  def cond(carry):
    t, _, _, error, _, _ = carry
    done = jnp.logical_or(error < cfg.threshold, jnp.isnan(error))
    return jnp.logical_and(
      t < cfg.max_iterations,
      jnp.logical_or(t < cfg.min_iterations, jnp.logical_not(done)),
    )

  init = (t0, x0, y0, jnp.asarray(jnp.inf, dtype), xs, ys)
  return jax.lax.while_loop(cond, block, init)


def _as_logs(x, y, cfg: _SinkhornConfig):
  return (x, y) if cfg.log_domain else (jnp.log(x), jnp.log(y))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sinkhorn(mat: jax.Array, cfg: _SinkhornConfig):
  """``(log u [rows], log v [columns], iterations, error)`` of the native Sinkhorn.

  ``mat`` is ``K`` (kernel domain) or ``log K`` (log domain), ``[B, B']``.
  Differentiable w.r.t. ``mat`` by unrolling exactly the iterations that were
  run, with a hand-written reverse pass over the recorded iterates (vectors
  only are stored; the log domain recomputes the two softmax matrices of each
  iteration).
  """
  t, x, y, error, _, _ = _sinkhorn_loop(mat, cfg)
  return (*_as_logs(x, y, cfg), t, error)


def _sinkhorn_fwd(mat, cfg):
  t, x, y, error, xs, ys = _sinkhorn_loop(mat, cfg)
  return (*_as_logs(x, y, cfg), t, error), (mat, t, xs, ys)


def _sinkhorn_bwd(cfg, residuals, cotangents):
  """Reverse pass; cotangents are w.r.t. ``log u`` and ``log v``.

  With ``x_ct``, ``y_ct`` the cotangents of ``log u_{k+1}`` and
  ``log v_{k+1}``: the row update ``log u_{k+1} = tau_a (log a - log(K v))``
  sends ``-tau_a x_ct_i W_ij`` to ``log K`` and ``log v`` with
  ``W = diag(u_{k+1}^(1/tau_a) / a) K diag(v)`` the row-normalised kernel; the
  column update likewise sends ``-tau_b y_ct_j V_ij`` to ``log K`` and
  ``log u_k``, ``V`` the column-normalised kernel at ``(u_k, v_{k+1})``.
  A transposed problem runs this on ``mat.T`` and transposes the result.
  """
  mat, t, xs, ys = residuals
  if cfg.transposed:
    (mat_ct,) = _sinkhorn_bwd(cfg._replace(transposed=False), (mat.T, t, xs, ys), cotangents)
    return (mat_ct.T,)
  x_ct, y_ct = cotangents[0], cotangents[1]

  def one_kernel(i, carry):
    x_ct, y_ct, mat_ct = carry
    k = t - 1 - i
    u_prev, v = xs[k], ys[k]
    r_ct = -cfg.tau_a * x_ct / (mat @ v)  # of r = K v_{k+1}
    mat_ct = mat_ct + r_ct[:, None] * v[None, :]
    y_ct = y_ct + v * (r_ct @ mat)
    s_ct = -cfg.tau_b * y_ct / (u_prev @ mat)  # of s = K^T u_k
    mat_ct = mat_ct + u_prev[:, None] * s_ct[None, :]
    return u_prev * (mat @ s_ct), jnp.zeros_like(y_ct), mat_ct

  def one_log(i, carry):
    x_ct, y_ct, mat_ct = carry
    k = t - 1 - i
    x_prev, y = xs[k], ys[k]
    w = jax.nn.softmax(mat + y[None, :], axis=1)  # rows of the new plan
    row_ct = -cfg.tau_a * x_ct
    mat_ct = mat_ct + row_ct[:, None] * w
    y_ct = y_ct + row_ct @ w
    vmat = jax.nn.softmax(mat + x_prev[:, None], axis=0)
    col_ct = -cfg.tau_b * y_ct
    mat_ct = mat_ct + vmat * col_ct[None, :]
    return vmat @ col_ct, jnp.zeros_like(y_ct), mat_ct

  one = one_log if cfg.log_domain else one_kernel
  _, _, mat_ct = jax.lax.fori_loop(0, t, one, (x_ct, y_ct, jnp.zeros_like(mat)))
  return (mat_ct,)


_sinkhorn.defvjp(_sinkhorn_fwd, _sinkhorn_bwd)


def _potentials(log_k: jax.Array, cfg: _SinkhornConfig):
  """:func:`_sinkhorn` of ``log_k [B, B']`` (``-(C - shift) / eps``) in ``cfg``'s domain."""
  return _sinkhorn(log_k if cfg.log_domain else jnp.exp(log_k), cfg)


def _by_domain(fn, log_k: jax.Array, domain: str, cfg: _SinkhornConfig):
  """``fn(log_k, cfg)`` in the kernel or the log domain (:func:`costs.choose_domain`)."""
  return costs.choose_domain(
    domain,
    log_k,
    lambda: fn(log_k, cfg._replace(log_domain=False)),
    lambda: fn(log_k, cfg._replace(log_domain=True)),
  )


def _sinkhorn_native(log_k: jax.Array, domain: str, cfg: _SinkhornConfig) -> OTResult:
  """The plan of ``log_k [B, B']`` (``-(C - shift) / eps``) in ``domain``, not transposed.
  The log plan is formed outside the domain branch, so XLA fuses it into whatever reads it."""
  log_u, log_v, iterations, error = _by_domain(_potentials, log_k, domain, cfg)
  return OTResult(
    log_plan=log_k + log_u[:, None] + log_v[None, :],
    iterations=iterations,
    converged=error < cfg.threshold,
    error=jax.lax.stop_gradient(error),
  )


def solve_balanced(
  cost: jax.Array,
  eps: float | jax.Array,
  *,
  tau_a: float = 1.0,
  tau_b: float = 1.0,
  threshold: float = 1e-3,
  min_iterations: int = 0,
  max_iterations: int = 1000,
  inner_iterations: int = 10,
  domain: str = "auto",
  solver: str = "native",
  differentiation: str = "unroll",
  momentum: float = 1.0,
) -> OTResult:
  """Entropic (un)balanced OT with uniform marginals, by Sinkhorn iterations.

  Args:
    cost: float ``[B, B']`` cost matrix.
    eps: entropic regularisation (absolute; float or scalar array).
    tau_a: in (0, 1]; 1 is a hard row-marginal constraint, ``< 1`` relaxes it
      by ``rho_a KL(P 1 | a)``, ``rho_a = eps tau_a / (1 - tau_a)``.
    tau_b: same for the column marginal.
    threshold: stop once the L1 column-marginal error (see
      :class:`~mltm_jax.ot.result.OTResult`) is below this value. The marginals
      sum to 1, so this is a relative error.
    min_iterations: iterations always carried out.
    max_iterations: upper bound on the iterations (rounded up to a multiple
      of ``inner_iterations``: the loop runs whole blocks).
    inner_iterations: the error is measured every ``inner_iterations``
      iterations; also the block size of the unrolled backward pass.
    domain: ``'auto'``, ``'kernel'`` or ``'log'`` (see
      :func:`mltm_jax.ot.costs.choose_domain`; the ott solver in kernel mode:
      :mod:`mltm_jax.ot.ott_sinkhorn`).
    solver: one of ``mltm_jax.config.OT_SOLVERS``: ``'native'`` (the module
      docstring) or ``'ott'`` (ott-jax's ``Sinkhorn``).
    differentiation: ``'unroll'`` (back-propagate through the iterations run)
      or ``'implicit'`` (ott's implicit differentiation; ``solver='ott'`` only).
    momentum: ``solver='ott'`` only: over-relaxation weight w in [1, 2) of each
      potential update, ``(1 - w) old + w new`` (ott's constant ``Momentum``); the
      fixed point is the same, it is reached in fewer iterations. 1: plain Sinkhorn.

  Returns:
    :class:`~mltm_jax.ot.result.OTResult` with ``log_plan [B, B']``.
  """
  fn = "solve_balanced"
  costs.check_cost_eps(cost, eps, domain, fn)
  if solver not in OT_SOLVERS:
    raise costs.fail(fn, f"solver must be one of {OT_SOLVERS}, got {solver!r}")
  if differentiation not in DIFFERENTIATION_MODES:
    raise costs.fail(
      fn, f"differentiation must be one of {DIFFERENTIATION_MODES}, got {differentiation!r}"
    )
  if differentiation == "implicit" and solver != "ott":
    raise costs.fail(fn, "differentiation='implicit' needs solver='ott'")
  if not 1.0 <= momentum < 2.0:
    raise costs.fail(fn, f"momentum must be in [1, 2), got {momentum}")
  if momentum != 1.0 and solver != "ott":
    raise costs.fail(fn, "momentum != 1 needs solver='ott'")
  if not (0.0 < tau_a <= 1.0 and 0.0 < tau_b <= 1.0):
    raise costs.fail(fn, f"tau_a and tau_b must be in (0, 1], got {tau_a}, {tau_b}")
  if not (
    inner_iterations >= 1
    and max_iterations >= inner_iterations
    and 0 <= min_iterations <= max_iterations
  ):
    raise costs.fail(
      fn,
      "need inner_iterations >= 1, max_iterations >="
      " inner_iterations and 0 <= min_iterations <= max_iterations,"
      f" got {inner_iterations}, {max_iterations}, {min_iterations}",
    )
  loop_kw: dict[str, Any] = dict(
    threshold=threshold,
    min_iterations=min_iterations,
    max_iterations=max_iterations,
    inner_iterations=inner_iterations,
  )
  if solver == "ott":
    return solve_ott(cost, eps, tau_a, tau_b, differentiation, loop_kw, momentum, domain)
  balanced = tau_a == 1.0 and tau_b == 1.0
  # A constant shift of the cost leaves the balanced plan unchanged; it keeps
  # the kernel's largest entry at 1. The unbalanced plan depends on it.
  shift = jax.lax.stop_gradient(jnp.min(cost)) if balanced else 0.0
  cfg = _SinkhornConfig(
    log_domain=False,
    tau_a=float(tau_a),
    tau_b=float(tau_b),
    threshold=float(threshold),
    min_iterations=int(min_iterations),
    max_iterations=int(max_iterations),
    inner_iterations=int(inner_iterations),
  )
  return _sinkhorn_native(-(cost - shift) / eps, domain, cfg)


def balanced_log_plan(cost: jax.Array, eps: float | jax.Array, **options: Any) -> jax.Array:
  """Log of the entropic OT plan, float ``[B, B']``; ``options`` as :func:`solve_balanced`."""
  return solve_balanced(cost, eps, **options).log_plan


def sinkhorn_fixed(
  cost: jax.Array,
  eps: float | jax.Array,
  num_iterations: int,
  *,
  transposed: bool = False,
  domain: str = "auto",
) -> OTResult:
  """Balanced Sinkhorn-Knopp for exactly ``num_iterations``, POT's iterates.

  From ``u = a`` (POT's start), repeats ``v = b / K^T u; u = a / K v`` with
  ``K = exp(-C / eps)`` (no shift of the cost), natively (kernel or log
  domain as :func:`mltm_jax.ot.costs.choose_domain` decides from
  ``max |C| / eps``). POT may stop earlier (error below 1e-9 at iteration 0,
  or a zero/inf/NaN scaling); this never does.

  Args:
    cost: float ``[N, M]``.
    eps: entropic regularisation (absolute; float or scalar array).
    num_iterations: number of (v, u) update pairs, POT's ``numItermax``.
    transposed: solve the problem of ``cost.T`` (rows = ``cost``'s columns)
      without transposing the matrix; the plan is returned in ``cost``'s
      layout, i.e. ``sinkhorn_fixed(cost.T, ...).log_plan.T``.
    domain: ``'auto'``, ``'kernel'`` or ``'log'``.

  Returns:
    :class:`~mltm_jax.ot.result.OTResult`, ``log_plan`` float ``[N, M]``;
    ``iterations = num_iterations``; ``converged``: the column error is below
    1e-3.
  """
  fn = "sinkhorn_fixed"
  costs.check_cost_eps(cost, eps, domain, fn)
  if num_iterations < 1:
    raise costs.fail(fn, f"num_iterations must be >= 1, got {num_iterations}")
  cfg = _SinkhornConfig(
    log_domain=False,
    tau_a=1.0,
    tau_b=1.0,
    threshold=1e-3,
    min_iterations=int(num_iterations),
    max_iterations=int(num_iterations),
    inner_iterations=int(num_iterations),
    fixed=True,
    uniform_init=True,
    transposed=transposed,
  )
  # -C / eps is computed inside each domain branch and the plan outside, from C / eps.
  log_u, log_v, iterations, error = costs.choose_domain(
    domain,
    -cost / eps,
    lambda: _potentials(-cost / eps, cfg._replace(log_domain=False)),
    lambda: _potentials(-cost / eps, cfg._replace(log_domain=True)),
  )
  scaled = cost / eps
  if transposed:
    log_plan = log_v[:, None] - scaled + log_u[None, :]
  else:
    log_plan = log_u[:, None] - scaled + log_v[None, :]
  return OTResult(
    log_plan=log_plan,
    iterations=iterations,
    converged=error < cfg.threshold,
    error=jax.lax.stop_gradient(error),
  )


def sinkhorn_fixed_both(
  cost: jax.Array, eps: float | jax.Array, num_iterations: int
) -> tuple[jax.Array, jax.Array]:
  """Both orientations' log plans of one cost ``[N, M]``, in ``cost``'s layout.

  Returns:
    ``(log P of cost [N, M], log P' of cost.T transposed back [N, M])`` by
    :func:`sinkhorn_fixed`; the matrix is never transposed. Column ``j`` of
    the second ranks the rows for column ``j``.
  """
  rows = sinkhorn_fixed(cost, eps, num_iterations).log_plan
  cols = sinkhorn_fixed(cost, eps, num_iterations, transposed=True).log_plan
  return rows, cols
