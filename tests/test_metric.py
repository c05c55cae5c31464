"""Ground costs against brute force, and the PSD projection inside the optax chain."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mltm_jax import metric as metric_lib

jax.config.update("jax_enable_x64", False)


def brute_force(u, v, m):
  """(u_i - v_j)^T M (u_i - v_j) with an explicit loop, float64."""
  u, v, m = (np.asarray(x, np.float64) for x in (u, v, m))
  out = np.zeros((len(u), len(v)))
  for i in range(len(u)):
    for j in range(len(v)):
      d = u[i] - v[j]
      out[i, j] = d @ m @ d
  return out


def random_psd(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d))
  return a @ a.T / d


@pytest.mark.parametrize("kind", ["full", "diagonal", "identity", "lowrank"])
def test_cost_matches_brute_force(kind):
  rng = np.random.default_rng(0)
  d = 12
  u = rng.normal(size=(7, d)).astype(np.float32)
  v = rng.normal(size=(5, d)).astype(np.float32)
  if kind == "full":
    params = {"M": jnp.asarray(random_psd(rng, d), jnp.float32)}
  elif kind == "diagonal":
    params = {"diag": jnp.asarray(rng.uniform(0.1, 2.0, d), jnp.float32)}
  elif kind == "lowrank":
    params = {"L": jnp.asarray(rng.normal(size=(d, 4)) / 2, jnp.float32)}
  else:
    params = {}
  m = np.asarray(metric_lib.metric_matrix(kind, params, d))
  got = np.asarray(metric_lib.squared_mahalanobis(u, v, params, kind))
  ref = brute_force(u, v, m)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
  dist = np.asarray(metric_lib.mahalanobis(u, v, params, kind))
  np.testing.assert_allclose(dist, np.sqrt(ref), rtol=1e-4, atol=1e-4)
  # The factor W (M = W W^T) turns the metric into a Euclidean one.
  w = metric_lib.metric_factor(kind, params, d)
  np.testing.assert_allclose(
    brute_force(u @ w, v @ w, np.eye(w.shape[1])), ref, rtol=1e-3, atol=1e-3
  )


def test_full_metric_reads_off_diagonal_entries():
  """The official einsum reads only diag(M); the full metric must use all of M."""
  d = 4
  m = np.eye(d) + 0.5 * (np.ones((d, d)) - np.eye(d))
  u = np.array([[1.0, 0, 0, 0]], np.float32)
  v = np.array([[0, 1.0, 0, 0]], np.float32)
  full = float(
    metric_lib.squared_mahalanobis(u, v, {"M": jnp.asarray(m, jnp.float32)}, "full")[0, 0]
  )
  diag = float(metric_lib.squared_mahalanobis(u, v, {"diag": jnp.ones(d)}, "diagonal")[0, 0])
  assert full == pytest.approx(1.0)  # 1 + 1 - 2 * 0.5
  assert diag == pytest.approx(2.0)


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_full_cost_and_gradient_of_unsymmetric_m_match_differences_formula():
  """(u - v)^T M (u - v) for any M, and its gradient sum_ij w_ij d_ij d_ij^T (symmetric)."""
  rng = np.random.default_rng(3)
  d = 6
  u = rng.normal(size=(4, d))
  v = rng.normal(size=(5, d))
  m = random_psd(rng, d) + 0.3 * rng.normal(size=(d, d))  # not symmetric
  w = rng.normal(size=(4, 5))
  with jax.enable_x64(True):
    f = lambda mm: jnp.sum(w * metric_lib.squared_mahalanobis(u, v, {"M": mm}, "full"))
    got, grad = jax.value_and_grad(f)(jnp.asarray(m))
  diff = u[:, None, :] - v[None, :, :]  # [4, 5, d]
  want = np.einsum("ij,ijk,kl,ijl->", w, diff, m, diff)
  want_grad = np.einsum("ij,ijk,ijl->kl", w, diff, diff)
  np.testing.assert_allclose(float(got), want, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_cost_gradient_finite_at_identical_points():
  u = jnp.ones((3, 8)) / jnp.sqrt(8.0)
  params = {"M": jnp.eye(8)}
  g = jax.grad(lambda p, x: metric_lib.mahalanobis(x, x, p, "full").sum(), argnums=(0, 1))(
    params, u
  )
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))


def test_project_psd_against_numpy():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(10, 10))
  w, v = np.linalg.eigh((a + a.T) / 2)
  ref = (v * np.maximum(w, 0)) @ v.T
  got = np.asarray(metric_lib.project_psd(jnp.asarray(a, jnp.float32)))
  np.testing.assert_allclose(got, ref, atol=1e-5)
  assert np.linalg.eigvalsh(got).min() > -1e-5
  # Idempotent on PSD input.
  np.testing.assert_allclose(
    np.asarray(metric_lib.project_psd(jnp.asarray(ref, jnp.float32))), ref, atol=1e-5
  )


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_psd_projection_in_optax_chain():
  """M stays PSD after each update; other leaves get exactly the Adam update."""
  rng = np.random.default_rng(2)
  params = {
    "metric": {"M": jnp.eye(6)},
    "head": {"kernel": jnp.ones((3, 3))},
    "other": {"M": jnp.zeros((2, 2))},
  }
  tx = optax.chain(optax.adam(0.5), metric_lib.psd_projection())
  plain = optax.adam(0.5)
  state, pstate = tx.init(params), plain.init(params)
  p, q = params, params
  for _ in range(5):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    upd, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, upd)
    pupd, pstate = plain.update(grads, pstate, q)
    q = optax.apply_updates(q, pupd)
    m = np.asarray(p["metric"]["M"])
    assert np.allclose(m, m.T, atol=1e-6)
    assert np.linalg.eigvalsh(m).min() > -1e-5
    np.testing.assert_allclose(p["head"]["kernel"], q["head"]["kernel"], atol=1e-6)
    np.testing.assert_allclose(p["other"]["M"], q["other"]["M"], atol=1e-6)
  # The step was big enough that without projection M would have left the cone.
  assert np.linalg.eigvalsh(np.asarray(q["metric"]["M"])).min() < 0


def test_diagonal_projection_clips_at_zero():
  params = {"metric": {"diag": jnp.array([1.0, 0.1, 2.0])}}
  tx = optax.chain(optax.sgd(1.0), metric_lib.psd_projection())
  upd, _ = tx.update({"metric": {"diag": jnp.array([0.0, 1.0, -1.0])}}, tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, upd)["metric"]["diag"], [1.0, 0.0, 3.0])


def test_projection_every_k():
  params = {"metric": {"M": jnp.eye(3)}}
  tx = metric_lib.psd_projection(every=2)
  state = tx.init(params)
  big = {"metric": {"M": -3.0 * jnp.eye(3)}}
  upd, state = tx.update(big, state, params)  # count 0: projected
  assert np.linalg.eigvalsh(np.asarray(params["metric"]["M"] + upd["metric"]["M"])).min() >= -1e-6
  upd, state = tx.update(big, state, params)  # count 1: only symmetrised
  assert np.linalg.eigvalsh(np.asarray(params["metric"]["M"] + upd["metric"]["M"])).min() < -1


def test_init_official_is_psd_and_bad_kind_fails():
  m = metric_lib.init_metric("full", 16, init="official", rng=jax.random.PRNGKey(0))["M"]
  assert np.linalg.eigvalsh(np.asarray(m)).min() > -1e-4
  with pytest.raises(ValueError, match="unknown metric kind"):
    metric_lib.init_metric("cosine", 4)


def test_diagonal_official_init_is_the_official_starts_diagonal():
  """--metric=diagonal --metric_init=official starts where the official code does: the
  diagonal of (A + A^T)/2 + I, i.e. 1 + A_ii with A ~ U[0, 1) (not the diagonal of the
  PSD-projected matrix, which differs)."""
  key = jax.random.PRNGKey(3)
  a = np.asarray(jax.random.uniform(key, (16, 16), jnp.float32))  # the same draw
  diag = np.asarray(metric_lib.init_metric("diagonal", 16, init="official", rng=key)["diag"])
  np.testing.assert_allclose(diag, 1.0 + np.diag(a), rtol=0, atol=1e-7)
  full = np.asarray(metric_lib.init_metric("full", 16, init="official", rng=key)["M"])
  assert np.max(np.abs(np.diag(full) - diag)) > 1e-3  # the projected diagonal is another start
