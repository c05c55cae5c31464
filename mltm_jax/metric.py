"""Learned ground metric: Mahalanobis costs and the PSD projection.

Four parametrisations of the metric matrix M (D x D), selected by ``kind``:

* ``"full"``      -- params ``{"M": [D, D]}``, symmetric PSD (the paper's metric).
* ``"diagonal"``  -- params ``{"diag": [D]}``, non-negative (what the official code
                     actually trains: its einsum reads only diag(M)).
* ``"identity"``  -- params ``{}``, M = I (plain Euclidean distance).
* ``"lowrank"``   -- params ``{"L": [D, r]}``, M = L L^T (PSD by construction).

Costs are computed with matrix products, never a [N, K, D] tensor:
``d2 = rowsum(U M * U) + rowsum(V M * V)^T - 2 U M V^T``, clamped at 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mltm_jax.config import METRIC_INITS
from mltm_jax.config import METRICS as METRIC_KINDS

Params = dict[str, jax.Array]


def init_metric(
  kind: str,
  dim: int,
  *,
  rank: int | None = None,
  init: str = "identity",
  rng: jax.Array | None = None,
) -> Params:
  """Initial metric parameters.

  Args:
    kind: one of METRIC_KINDS.
    dim: embedding dimension D.
    rank: r for ``lowrank`` (default D).
    init: ``"identity"`` (M = I, default) or ``"official"`` (the authors' start
      (A + A^T)/2 + I with A ~ U[0, 1), projected onto the PSD cone so training
      starts from a valid metric; for ``diagonal`` the start's own diagonal 1 + A_ii, which
      the official code's einsum trains, not the diagonal of the projected matrix).
    rng: PRNG key, needed for ``init="official"`` and for ``lowrank``.
  Returns:
    dict of float32 arrays (see module docstring).
  """
  if kind not in METRIC_KINDS:
    raise ValueError(f"unknown metric kind {kind!r}; expected one of {METRIC_KINDS}")
  if init not in METRIC_INITS:
    raise ValueError(f"unknown metric init {init!r}; expected one of {METRIC_INITS}")
  if kind == "identity":
    return {}
  if init == "official":
    if rng is None:
      raise ValueError("init='official' needs an rng")
    a = jax.random.uniform(rng, (dim, dim), jnp.float32)
    if kind == "diagonal":  # the official start's diagonal, 1 + A_ii (already >= 0)
      return {"diag": 1.0 + jnp.diag(a)}
    m = project_psd((a + a.T) / 2 + jnp.eye(dim))
  else:
    m = jnp.eye(dim, dtype=jnp.float32)
  if kind == "full":
    return {"M": m}
  if kind == "diagonal":
    return {"diag": jnp.diag(m)}
  r = dim if rank is None else int(rank)
  if not 1 <= r <= dim:
    raise ValueError(f"metric rank must be in [1, {dim}], got {r}")
  if r == dim and init == "identity":
    return {"L": jnp.eye(dim, dtype=jnp.float32)}
  # A rank-r factor of the chosen start: top-r eigenpairs.
  w, v = jnp.linalg.eigh(m)
  return {"L": (v[:, -r:] * jnp.sqrt(jnp.maximum(w[-r:], 0.0))).astype(jnp.float32)}


def metric_matrix(kind: str, params: Params, dim: int) -> jax.Array:
  """Dense M [D, D] for any parametrisation (for inspection and tests)."""
  if kind == "full":
    return params["M"]
  if kind == "diagonal":
    return jnp.diag(params["diag"])
  if kind == "identity":
    return jnp.eye(dim, dtype=jnp.float32)
  if kind == "lowrank":
    return params["L"] @ params["L"].T
  raise ValueError(f"unknown metric kind {kind!r}")


def squared_mahalanobis(u: jax.Array, v: jax.Array, params: Params, kind: str) -> jax.Array:
  """Squared Mahalanobis costs between rows of u and rows of v.

  Args:
    u: [N, D] (e.g. audio embeddings).  v: [K, D] (e.g. text embeddings).
    params, kind: the metric (module docstring).
  Returns:
    [N, K] float32, d2[i, j] = (u_i - v_j)^T M (u_i - v_j), clamped at 0.
  """
  if kind == "lowrank":
    # c_M(u, v) = || L^T u - L^T v ||: transform once, Euclidean afterwards.
    return squared_euclidean(u @ params["L"], v @ params["L"])
  if kind == "identity":
    return squared_euclidean(u, v)
  if kind == "diagonal":
    d = params["diag"]
    uu = jnp.sum(u * u * d, axis=-1)
    vv = jnp.sum(v * v * d, axis=-1)
    cross = (u * d) @ v.T
  elif kind == "full":
    # The symmetric part: (u - v)^T M (u - v) depends on nothing else, and the gradient
    # w.r.t. M is then symmetric (that of the differences formula), so that Adam's
    # elementwise step does not see a spurious antisymmetric part.
    m = (params["M"] + params["M"].T) / 2
    um = u @ m
    uu = jnp.sum(um * u, axis=-1)
    vv = jnp.sum((v @ m) * v, axis=-1)
    cross = um @ v.T
  else:
    raise ValueError(f"unknown metric kind {kind!r}")
  return jnp.maximum(uu[:, None] + vv[None, :] - 2.0 * cross, 0.0)


def squared_euclidean(u: jax.Array, v: jax.Array) -> jax.Array:
  """[N, D], [K, D] -> [N, K] squared Euclidean distances, clamped at 0."""
  uu = jnp.sum(u * u, axis=-1)
  vv = jnp.sum(v * v, axis=-1)
  return jnp.maximum(uu[:, None] + vv[None, :] - 2.0 * (u @ v.T), 0.0)


def safe_sqrt(x: jax.Array, floor: float = 1e-12) -> jax.Array:
  """sqrt with a finite gradient at 0 (zero gradient below ``floor``)."""
  return jnp.sqrt(jnp.maximum(x, floor))


def mahalanobis(u: jax.Array, v: jax.Array, params: Params, kind: str) -> jax.Array:
  """[N, D], [K, D] -> [N, K] distances c_M(u_i, v_j) = sqrt(d2)."""
  return safe_sqrt(squared_mahalanobis(u, v, params, kind))


def metric_factor(kind: str, params: Params, dim: int) -> np.ndarray:
  """A factor W [D, r] with M = W W^T, so c_M(u, v) = ||u W - v W||.

  Lets a gallery be stored once as ``v @ W`` in any Euclidean index.
  """
  if kind == "identity":
    return np.eye(dim, dtype=np.float32)
  if kind == "diagonal":
    return np.diag(np.sqrt(np.maximum(np.asarray(params["diag"]), 0.0))).astype(np.float32)
  if kind == "lowrank":
    return np.asarray(params["L"], np.float32)
  m = np.asarray(params["M"], np.float64)
  w, v = np.linalg.eigh((m + m.T) / 2)
  return (v * np.sqrt(np.maximum(w, 0.0))).astype(np.float32)


def project_psd(m: jax.Array) -> jax.Array:
  """Nearest PSD matrix in Frobenius norm: V max(Lambda, 0) V^T of sym(m). [D, D]."""
  sym = (m + m.T) / 2
  w, v = jnp.linalg.eigh(sym)
  return (v * jnp.maximum(w, 0.0)) @ v.T


class PsdProjectionState(NamedTuple):
  count: jax.Array  # int32 scalar, number of updates seen


def psd_projection(every: int = 1) -> optax.GradientTransformationExtraArgs:
  """Optax transformation: projected gradient descent for the metric.

  Must be LAST in the chain and needs ``params``. Only leaves under a ``metric``
  key are touched. For a leaf named ``M`` (a
  full metric) it turns the update u into ``project_psd(M + u) - M``; for a leaf
  named ``diag`` into ``max(d + u, 0) - d``. Every other leaf passes through
  untouched. With ``every = k > 1`` the (eigh-based) full projection runs on
  every k-th update only (the diagonal clip always runs); between projections M
  may leave the PSD cone slightly -- the cost is clamped at 0 anyway.
  """
  if every < 1:
    raise ValueError(f"psd projection interval must be >= 1, got {every}")

  def init_fn(params):
    del params
    return PsdProjectionState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra):
    del extra
    if params is None:
      raise ValueError("psd_projection needs params: call update(updates, state, params)")
    do_full = (state.count % every) == 0

    def project(path, u, p):
      keys = _path_keys(path)
      name = keys[-1] if keys else ""
      if "metric" not in keys:
        return u
      if name == "M" and u.ndim == 2:
        new = jax.lax.cond(do_full, project_psd, lambda m: (m + m.T) / 2, p + u)
        return new - p
      if name == "diag" and u.ndim == 1:
        return jnp.maximum(p + u, 0.0) - p
      return u

    new_updates = jax.tree_util.tree_map_with_path(project, updates, params)
    return new_updates, PsdProjectionState(count=state.count + 1)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _path_keys(path: tuple[Any, ...]) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
