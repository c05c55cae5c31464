"""Cost preparation and the kernel-domain limits shared by every OT solver.

The one place for what the solvers of :mod:`mltm_jax.ot` do to a cost matrix
``cost`` of shape ``[N, M]`` before iterating:

* max-normalisation (:func:`normalize_cost_max`), the official code's ``C / max C``,
  used by the m-LTM loss, the entropic InfoNCE baseline and the plan ranking;
* the choice between iterating with the Gibbs kernel ``K = exp(-C / eps)``
  (matrix-vector products) and iterating in the log domain (log-sum-exps):
  the kernel is used while ``max |C - shift| / eps`` is at most
  :func:`kernel_max_exponent` of the dtype, so ``K`` and the scalings stay far
  inside the float range (:func:`choose_domain`);
* argument checks with one-line errors (:func:`check_cost_eps`).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
import jax.numpy as jnp

__all__ = [
  "DOMAINS",
  "KERNEL_MAX_EXPONENT",
  "KERNEL_MAX_EXPONENT_FLOAT64",
  "check_cost_eps",
  "choose_domain",
  "fail",
  "kernel_max_exponent",
  "normalize_cost_max",
  "prepare_cost",
]

# Kernel-domain iterations are used while max |C - shift| / eps <= this value:
# K >= exp(-40) ~ 4e-18 and the scalings stay within ~exp(+-40), far from
# float32's limits (~1e-38 .. 3e38). Any floating dtype but float64.
KERNEL_MAX_EXPONENT = 40.0
# The same for float64 (limits ~1e-308 .. 1e308).
KERNEL_MAX_EXPONENT_FLOAT64 = 300.0

DOMAINS = ("auto", "kernel", "log")

T = TypeVar("T")


def kernel_max_exponent(dtype) -> float:
  """Largest ``max |C - shift| / eps`` iterated with the kernel, for ``dtype``."""
  return KERNEL_MAX_EXPONENT_FLOAT64 if jnp.dtype(dtype) == jnp.float64 else KERNEL_MAX_EXPONENT


def fail(fn: str, msg: str) -> ValueError:
  """A one-line ``ValueError`` naming the function."""
  return ValueError(f"{fn}: {msg}")


def normalize_cost_max(cost: jax.Array) -> jax.Array:
  """``cost / max(cost)``, float ``[N, M]``; the gradient flows through the max.

  An all-non-positive cost (e.g. all zeros) is returned unscaled, so the
  result and its gradient stay finite.
  """
  cmax = jnp.max(cost)
  return cost / jnp.where(cmax > 0, cmax, jnp.ones_like(cmax))


def prepare_cost(cost, eps, normalize_max: bool) -> tuple[jax.Array, jax.Array]:
  """``(cost, eps)`` for a solver: cost as float of at least 32 bits ``[N, M]``,
  max-normalised if asked; eps a scalar of the cost's dtype."""
  cost = jnp.asarray(cost)
  cost = cost.astype(jnp.result_type(cost.dtype, jnp.float32))
  if normalize_max:
    cost = normalize_cost_max(cost)
  return cost, jnp.asarray(eps, cost.dtype)


def check_cost_eps(cost: jax.Array, eps: float | jax.Array, domain: str, fn: str) -> None:
  """Raises a one-line ``ValueError`` unless ``cost`` is a non-empty float
  ``[N, M]``, ``eps`` a scalar (``> 0`` when a Python number) and ``domain``
  one of :data:`DOMAINS`."""
  if cost.ndim != 2 or cost.shape[0] < 1 or cost.shape[1] < 1:
    raise fail(fn, f"cost must be a non-empty [B, B'] matrix, got {cost.shape}")
  if not jnp.issubdtype(cost.dtype, jnp.floating):
    raise fail(fn, f"cost must be floating point, got {cost.dtype}")
  if isinstance(eps, (int, float)):
    if not eps > 0:
      raise fail(fn, f"eps must be > 0, got {eps!r}")
  elif jnp.ndim(eps) != 0:
    raise fail(fn, f"eps must be a scalar, got shape {jnp.shape(eps)}")
  if domain not in DOMAINS:
    raise fail(fn, f"domain must be one of {DOMAINS}, got {domain!r}")


def choose_domain(
  domain: str, scaled: jax.Array, kernel_fn: Callable[[], T], log_fn: Callable[[], T]
) -> T:
  """Runs ``kernel_fn`` if safe (or forced), else ``log_fn``.

  ``scaled`` is ``-(C - shift) / eps``, float ``[N, M]``; ``'auto'`` picks the
  kernel domain when ``max |scaled| <= kernel_max_exponent(scaled.dtype)``
  (a traced test: both branches are compiled).
  """
  if domain == "kernel":
    return kernel_fn()
  if domain == "log":
    return log_fn()
  limit = kernel_max_exponent(scaled.dtype)
  safe = jnp.max(jnp.abs(jax.lax.stop_gradient(scaled))) <= limit
  return jax.lax.cond(safe, kernel_fn, log_fn)
