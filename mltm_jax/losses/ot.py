"""Entropic optimal-transport plans (in log space) for the m-LTM losses.

Pure JAX functions of a cost matrix ``cost`` of shape ``[B, B']`` (float32 by
default) and a regularisation strength ``eps`` (absolute, in the units of the
cost; a Python float or a scalar array, which may be traced). Marginals are
uniform, ``a = 1/B`` and ``b = 1/B'``. Every function returns the *log* of the
plan built from dual variables / scalings, never ``log(plan)``, so entries far
below float32's smallest normal stay finite.

* :func:`solve_balanced` / :func:`balanced_log_plan`: entropic OT, balanced
  (``tau_a = tau_b = 1``) or unbalanced with KL-relaxed marginals (``tau < 1``),
  by Sinkhorn iterations.
* :func:`solve_partial` / :func:`partial_log_plan`: entropic *partial* OT of
  total mass ``s`` by iterated Bregman (KL) projections with Dykstra's
  corrections (Benamou et al. 2015), the problem solved by POT's
  ``ot.partial.entropic_partial_wasserstein``.

Conventions (checked against POT in ``tests/test_losses.py``):

* ``log P_ij = (f_i + g_j - C_ij) / eps`` for dual potentials ``f [B]``,
  ``g [B']``: the plan ``diag(u) K diag(v)``, ``K = exp(-C / eps)``,
  ``u = exp(f / eps)``, ``v = exp(g / eps)``; ott-jax's and POT's convention.
* Unbalanced (``tau < 1``): minimises ``<P, C> + eps KL(P | 1 1^T)
  + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)`` with ``rho = eps tau / (1 - tau)``
  (ott-jax's ``tau_a``, ``tau_b``). The Sinkhorn updates are
  ``v = (b / K^T u) ** tau_b`` and ``u = (a / K v) ** tau_a``, i.e. POT's
  ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg=eps, reg_m=rho,
  reg_type='entropy')``; so ``tau = reg_m / (reg_m + eps)``.

Solvers, differentiation and speed. ``solver='native'`` (default) runs the
iterations written here. With ``domain='auto'`` it iterates with the Gibbs
kernel ``K`` (matrix-vector products) whenever ``max |C - shift| / eps <= 40``
(``shift = min C`` where a constant shift leaves the plan unchanged: balanced
and partial OT; 0 for unbalanced OT), so ``K`` and the scalings stay well inside
float32's range, and in the log domain (log-sum-exps, about 10x slower on CPU)
otherwise, e.g. for ``eps < 0.025`` on a max-normalised cost. The derivative is
that of the iterations actually run (unrolled differentiation), computed by a
hand-written reverse pass (``jax.custom_vjp``) over the recorded iterates: only
``O(iterations * B)`` vectors are stored, and the gradient w.r.t. the cost is
accumulated in place, which makes loss + gradient cost about 2x the forward
pass instead of the ~10x of JAX's autodiff through a loop. These are
reverse-mode only (``jax.grad``/``vjp``; no ``jvp``/``jacfwd``).

Sinkhorn stops once its error (see :class:`OTResult`) is below ``threshold``,
measured every ``inner_iterations``, or after ``max_iterations``; the partial
solver runs a fixed number of cycles. ``solver='ott'`` runs ott-jax's
``Sinkhorn`` (log domain) with ``differentiation='unroll'``
(``implicit_diff=None``: JAX autodiff through ott's checkpointed loop) or
``'implicit'`` (ott's implicit differentiation, whose linear solve is
ill-conditioned in float32 for small ``eps`` and has been seen to raise or to
return non-finite gradients; an option only). Unrolled differentiation gives
finite gradients for every ``eps`` in [0.005, 0.5] in float32.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import implicit_differentiation
from ott.solvers.linear import sinkhorn

__all__ = [
  "KERNEL_MAX_EXPONENT",
  "OTResult",
  "balanced_log_plan",
  "partial_log_plan",
  "solve_balanced",
  "solve_partial",
]

# Kernel-domain iterations are used while max |C - shift| / eps <= this value:
# K >= exp(-40) ~ 4e-18 and the scalings stay within ~exp(+-40), far from
# float32's limits (~1e-38 .. 3e38).
KERNEL_MAX_EXPONENT = 40.0

_DOMAINS = ("auto", "kernel", "log")
_SOLVERS = ("native", "ott")
_DIFFERENTIATION_MODES = ("unroll", "implicit")


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


def _fail(fn: str, msg: str) -> ValueError:
  return ValueError(f"mltm_jax/losses/ot.py:{fn}: {msg}")


def _check_common(cost: jax.Array, eps: float | jax.Array, domain: str, fn: str) -> None:
  if cost.ndim != 2 or cost.shape[0] < 1 or cost.shape[1] < 1:
    raise _fail(fn, f"cost must be a non-empty [B, B'] matrix, got {cost.shape}")
  if not jnp.issubdtype(cost.dtype, jnp.floating):
    raise _fail(fn, f"cost must be floating point, got {cost.dtype}")
  if isinstance(eps, (int, float)):
    if not eps > 0:
      raise _fail(fn, f"eps must be > 0, got {eps!r}")
  elif jnp.ndim(eps) != 0:
    raise _fail(fn, f"eps must be a scalar, got shape {jnp.shape(eps)}")
  if domain not in _DOMAINS:
    raise _fail(fn, f"domain must be one of {_DOMAINS}, got {domain!r}")


def _choose_domain(
  domain: str,
  scaled: jax.Array,
  kernel_fn: Callable[[], OTResult],
  log_fn: Callable[[], OTResult],
) -> OTResult:
  """Runs ``kernel_fn`` if safe (or forced), else ``log_fn``.

  ``scaled`` is the shifted cost divided by eps; 'auto' picks the kernel
  domain when ``max |scaled| <= KERNEL_MAX_EXPONENT`` (a traced test).
  """
  if domain == "kernel":
    return kernel_fn()
  if domain == "log":
    return log_fn()
  safe = jnp.max(jnp.abs(jax.lax.stop_gradient(scaled))) <= KERNEL_MAX_EXPONENT
  return jax.lax.cond(safe, kernel_fn, log_fn)


# ----------------------------------------------------------------------------
# Sinkhorn (balanced and unbalanced).
# ----------------------------------------------------------------------------


class _SinkhornConfig(NamedTuple):
  """Static settings of the native Sinkhorn (hashable)."""

  log_domain: bool
  tau_a: float
  tau_b: float
  threshold: float
  min_iterations: int
  max_iterations: int
  inner_iterations: int


def _power(x: jax.Array, tau: float) -> jax.Array:
  return x if tau == 1.0 else x**tau


def _sinkhorn_step(mat, x, y, cfg: _SinkhornConfig):
  """One Sinkhorn iteration: the column update, then the row update.

  Kernel domain (``mat = K``, ``x = u``, ``y = v``):
  ``v = (b / K^T u)^tau_b``, ``u = (a / K v)^tau_a``. Log domain
  (``mat = log K``, ``x = log u``, ``y = log v``): the same in log space.
  """
  n, m = mat.shape
  if cfg.log_domain:
    y = cfg.tau_b * (-math.log(m) - jax.nn.logsumexp(mat + x[:, None], axis=0))
    x = cfg.tau_a * (-math.log(n) - jax.nn.logsumexp(mat + y[None, :], axis=1))
  else:
    # x @ K, not K.T @ x: XLA:CPU transposes K on every call of the latter.
    y = _power((1.0 / m) / (x @ mat), cfg.tau_b)
    x = _power((1.0 / n) / (mat @ y), cfg.tau_a)
  return x, y


def _sinkhorn_error(mat, x, y, cfg: _SinkhornConfig) -> jax.Array:
  """L1 distance of the column sums to their target ``b exp(-g / rho_b)``."""
  m = mat.shape[1]
  exponent = 0.0 if cfg.tau_b == 1.0 else (1.0 - cfg.tau_b) / cfg.tau_b
  if cfg.log_domain:
    col = jnp.exp(y + jax.nn.logsumexp(mat + x[:, None], axis=0))
    target = jnp.exp(-math.log(m) - exponent * y)
  else:
    col = y * (x @ mat)
    target = (1.0 / m) * (y**-exponent if exponent else 1.0)
  return jnp.sum(jnp.abs(col - target))


def _sinkhorn_loop(mat: jax.Array, cfg: _SinkhornConfig):
  """Bounded Sinkhorn loop that records every iterate for the reverse pass.

  Iteration ``k`` (0-based) maps ``x_k`` to ``y_{k+1}`` then ``x_{k+1}``
  (:func:`_sinkhorn_step`) from ``u_0 = 1``. The error is measured after every
  ``inner_iterations``; the loop stops once it is below ``threshold`` (or
  NaN) and at least ``min_iterations`` were run, or after ``max_iterations``.

  Returns:
    ``(t, x, y, error, xs, ys)``: ``t`` int32 iterations run, the last
    ``x [B]``, ``y [B']`` and error, and buffers ``xs [T + 1, B]`` with
    ``xs[k] = x_k`` and ``ys [T, B']`` with ``ys[k] = y_{k+1}`` (``T >= t``).
  """
  n, m = mat.shape
  dtype = mat.dtype
  inner = cfg.inner_iterations
  buffer = -(-cfg.max_iterations // inner) * inner
  x0 = jnp.zeros((n,), dtype) if cfg.log_domain else jnp.ones((n,), dtype)
  xs = jnp.zeros((buffer + 1, n), dtype).at[0].set(x0)
  ys = jnp.zeros((buffer, m), dtype)

  def one(i, carry):
    t, x, y, xs, ys = carry
    x, y = _sinkhorn_step(mat, x, y, cfg)
    xs = jax.lax.dynamic_update_index_in_dim(xs, x, t + i + 1, 0)
    ys = jax.lax.dynamic_update_index_in_dim(ys, y, t + i, 0)
    return t, x, y, xs, ys

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

  init = (jnp.zeros((), jnp.int32), x0, jnp.zeros((m,), dtype), jnp.asarray(jnp.inf, dtype), xs, ys)
  return jax.lax.while_loop(cond, block, init)


def _as_logs(x, y, cfg: _SinkhornConfig):
  return (x, y) if cfg.log_domain else (jnp.log(x), jnp.log(y))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sinkhorn(mat: jax.Array, cfg: _SinkhornConfig):
  """``(log u, log v, iterations, error)`` of the native Sinkhorn.

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
  """
  mat, t, xs, ys = residuals
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


def _sinkhorn_native(
  log_k: jax.Array, log_domain: bool, tau_a: float, tau_b: float, loop_kw: dict[str, Any]
) -> OTResult:
  cfg = _SinkhornConfig(
    log_domain=log_domain,
    tau_a=float(tau_a),
    tau_b=float(tau_b),
    threshold=float(loop_kw["threshold"]),
    min_iterations=int(loop_kw["min_iterations"]),
    max_iterations=int(loop_kw["max_iterations"]),
    inner_iterations=int(loop_kw["inner_iterations"]),
  )
  mat = log_k if log_domain else jnp.exp(log_k)
  log_u, log_v, iterations, error = _sinkhorn(mat, cfg)
  return OTResult(
    log_plan=log_k + log_u[:, None] + log_v[None, :],
    iterations=iterations,
    converged=error < cfg.threshold,
    error=jax.lax.stop_gradient(error),
  )


def _solve_ott(
  cost: jax.Array,
  eps: float | jax.Array,
  tau_a: float,
  tau_b: float,
  differentiation: str,
  loop_kw: dict[str, Any],
) -> OTResult:
  """ott-jax's log-domain Sinkhorn."""
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
) -> OTResult:
  """Entropic (un)balanced OT with uniform marginals, by Sinkhorn iterations.

  Args:
    cost: float ``[B, B']`` cost matrix.
    eps: entropic regularisation (absolute; float or scalar array).
    tau_a: in (0, 1]; 1 is a hard row-marginal constraint, ``< 1`` relaxes it
      by ``rho_a KL(P 1 | a)``, ``rho_a = eps tau_a / (1 - tau_a)``.
    tau_b: same for the column marginal.
    threshold: stop once the L1 column-marginal error (see
      :class:`OTResult`) is below this value. The marginals sum to 1, so this
      is a relative error.
    min_iterations: iterations always carried out.
    max_iterations: upper bound on the iterations (rounded up to a multiple
      of ``inner_iterations``: the loop runs whole blocks).
    inner_iterations: the error is measured every ``inner_iterations``
      iterations; also the block size of the unrolled backward pass.
    domain: native solver only: ``'auto'``, ``'kernel'`` or ``'log'`` (see
      the module docstring).
    solver: ``'native'`` (fast; see the module docstring) or ``'ott'``
      (ott-jax's ``Sinkhorn``).
    differentiation: ``'unroll'`` (back-propagate through the iterations run)
      or ``'implicit'`` (ott's implicit differentiation; ``solver='ott'`` only).

  Returns:
    :class:`OTResult` with ``log_plan [B, B']``.
  """
  fn = "solve_balanced"
  _check_common(cost, eps, domain, fn)
  if solver not in _SOLVERS:
    raise _fail(fn, f"solver must be one of {_SOLVERS}, got {solver!r}")
  if differentiation not in _DIFFERENTIATION_MODES:
    raise _fail(
      fn, f"differentiation must be one of {_DIFFERENTIATION_MODES}, got {differentiation!r}"
    )
  if differentiation == "implicit" and solver != "ott":
    raise _fail(fn, "differentiation='implicit' needs solver='ott'")
  if not (0.0 < tau_a <= 1.0 and 0.0 < tau_b <= 1.0):
    raise _fail(fn, f"tau_a and tau_b must be in (0, 1], got {tau_a}, {tau_b}")
  if not (
    inner_iterations >= 1
    and max_iterations >= inner_iterations
    and 0 <= min_iterations <= max_iterations
  ):
    raise _fail(
      fn,
      "need inner_iterations >= 1, max_iterations >="
      " inner_iterations and 0 <= min_iterations <= max_iterations,"
      f" got {inner_iterations}, {max_iterations}, {min_iterations}",
    )
  loop_kw = dict(
    threshold=threshold,
    min_iterations=min_iterations,
    max_iterations=max_iterations,
    inner_iterations=inner_iterations,
  )
  if solver == "ott":
    return _solve_ott(cost, eps, tau_a, tau_b, differentiation, loop_kw)
  balanced = tau_a == 1.0 and tau_b == 1.0
  # A constant shift of the cost leaves the balanced plan unchanged; it keeps
  # the kernel's largest entry at 1. The unbalanced plan depends on it.
  shift = jax.lax.stop_gradient(jnp.min(cost)) if balanced else 0.0
  log_k = -(cost - shift) / eps
  return _choose_domain(
    domain,
    log_k,
    lambda: _sinkhorn_native(log_k, False, tau_a, tau_b, loop_kw),
    lambda: _sinkhorn_native(log_k, True, tau_a, tau_b, loop_kw),
  )


def balanced_log_plan(
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
) -> jax.Array:
  """Log of the entropic OT plan, float ``[B, B']``; see :func:`solve_balanced`."""
  return solve_balanced(
    cost,
    eps,
    tau_a=tau_a,
    tau_b=tau_b,
    threshold=threshold,
    min_iterations=min_iterations,
    max_iterations=max_iterations,
    inner_iterations=inner_iterations,
    domain=domain,
    solver=solver,
    differentiation=differentiation,
  ).log_plan


# ----------------------------------------------------------------------------
# Partial OT.
# ----------------------------------------------------------------------------


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
      col = r @ mat  # x @ K, not K.T @ x (see _sinkhorn_step).
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
  row-normalised kernels, as in :func:`_sinkhorn_bwd`.
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
  Measured at B = 256 on max-normalised costs, eps in [0.03, 0.1]: the loss
  is within float32 noise (<= 4e-5) of its limit after 200 cycles and
  usually after 100; smaller eps needs more.

  Args:
    cost: float ``[B, B']`` cost matrix.
    eps: entropic regularisation (absolute; float or scalar array).
    mass: transported mass ``s`` in (0, 1] (a Python float).
    num_iterations: projection cycles (rows, columns, mass).
    domain: ``'auto'``, ``'kernel'`` or ``'log'`` (as in the module docstring;
      'auto' uses the kernel while ``(max C - min C) / eps <= 40``).

  Returns:
    :class:`OTResult`; ``log_plan`` float ``[B, B']``, ``iterations =
    num_iterations``, ``converged = True``.
  """
  fn = "solve_partial"
  _check_common(cost, eps, domain, fn)
  if not 0.0 < mass <= 1.0:
    raise _fail(fn, f"mass must be in (0, 1], got {mass}")
  if num_iterations < 1:
    raise _fail(fn, f"num_iterations must be >= 1, got {num_iterations}")
  log_k = -(cost - jax.lax.stop_gradient(jnp.min(cost))) / eps
  return _choose_domain(
    domain,
    log_k,
    lambda: _partial_native(log_k, False, mass, num_iterations),
    lambda: _partial_native(log_k, True, mass, num_iterations),
  )


def partial_log_plan(
  cost: jax.Array,
  eps: float | jax.Array,
  mass: float,
  *,
  num_iterations: int = 200,
  domain: str = "auto",
) -> jax.Array:
  """Log of the entropic partial OT plan, float ``[B, B']``; see :func:`solve_partial`."""
  return solve_partial(cost, eps, mass, num_iterations=num_iterations, domain=domain).log_plan
