"""Tests of mltm_jax.ot and mltm_jax.losses.{mltm, baselines} against POT and PyTorch.

References are independent: POT (float64 numpy, and its torch backend for
autograd through its own solvers), hand-written PyTorch losses, and
hand-computed cases. ``eps`` is passed as a traced argument to ``jax.jit`` so
one compilation per shape serves every ``eps``.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import torch

from mltm_jax.losses import baselines
from mltm_jax import ot as ot_lib
from mltm_jax.losses.mltm import mltm_loss

warnings.filterwarnings("ignore", message=".*did not converge.*")


@pytest.fixture(autouse=True)
def _torch_float64():
  """float64 torch references in this file only (restored after each test)."""
  dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
  torch.set_default_dtype(torch.float64)
  torch.set_num_threads(1)  # small tensors; avoids oversubscribing the CPU
  yield
  torch.set_default_dtype(dtype)
  torch.set_num_threads(threads)


# Converged settings used against POT (the loop stops on the L1 marginal
# error, measured every 10 iterations). Configurations are shared between
# tests where possible: each (variant, options, shape) compiles once.
TIGHT = dict(threshold=1e-6, max_iterations=5000)
PARTIAL_ITERS = 4000


def _cost(b: int, kind: str, seed: int) -> np.ndarray:
  """float64 [b, b] cost in [0, 2]: uniform noise or noisy-pair distances."""
  rng = np.random.default_rng(seed)
  if kind == "uniform":
    return 2.0 * rng.random((b, b))
  u = rng.normal(size=(b, 16))
  v = u + rng.normal(size=(b, 16))
  return np.sqrt(((u[:, None] - v[None]) ** 2).sum(-1))


def _diag_loss_np(plan: np.ndarray) -> float:
  return float(-np.mean(np.log(np.diag(plan))))


def _generalised_kl_np(plan: np.ndarray) -> float:
  """``KL(Q || P) = sum Q log(Q / P) - sum Q + sum P`` for ``Q = I / B``, float64."""
  b = plan.shape[0]
  q = np.eye(b) / b
  on = q > 0
  return float(np.sum(q[on] * np.log(q[on] / plan[on])) - q.sum() + plan.sum())


@functools.lru_cache(maxsize=None)
def _loss_fn(variant: str, **kw):
  """jit(value_and_grad) of mltm_loss wrt the cost; eps is traced."""

  def loss(cost, eps):
    return mltm_loss(cost, eps=eps, variant=variant, **kw)

  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _run(variant: str, cost: np.ndarray, eps: float, **kw):
  (loss, aux), grad = _loss_fn(variant, **kw)(jnp.asarray(cost, jnp.float32), jnp.float32(eps))
  return float(loss), aux, np.asarray(grad, np.float64)


# ----------------------------------------------------------------------------
# Losses against POT (float64).
# ----------------------------------------------------------------------------

_BALANCED_SOLVERS = {
  "native_auto": dict(**TIGHT),
  "native_log": dict(domain="log", **TIGHT),
  "ott_unroll": dict(solver="ott", **TIGHT),  # kernel mode at these eps (auto)
  "ott_log": dict(solver="ott", domain="log", **TIGHT),
  "ott_momentum": dict(solver="ott", momentum=1.5, **TIGHT),
}
_BALANCED_CASES = [
  ("native_auto", 8),
  ("native_auto", 64),
  ("native_log", 8),
  ("native_log", 64),
  ("ott_unroll", 8),
  ("ott_unroll", 64),
  ("ott_log", 64),
  ("ott_momentum", 64),
]


@pytest.mark.parametrize("solver,b", _BALANCED_CASES)
def test_balanced_loss_matches_pot(solver, b):
  for kind in ("uniform", "pairs"):
    for eps in (0.05, 0.1):
      cost = _cost(b, kind, seed=b)
      c = cost / cost.max()
      a = np.full(b, 1.0 / b)
      plan = ot.sinkhorn(a, a, c, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-12)
      loss, aux, _ = _run("balanced", cost, eps, **_BALANCED_SOLVERS[solver])
      assert bool(aux["ot_converged"]), (kind, eps, int(aux["ot_iterations"]))
      assert abs(loss - _diag_loss_np(plan)) <= 1e-5, (kind, eps)


@pytest.mark.slow  # compiles for several seconds on 2 cores
@pytest.mark.parametrize("mass,domain", [(0.95, "auto"), (0.6, "auto"), (0.95, "log")])
@pytest.mark.parametrize("b", [8, 64])
def test_partial_loss_matches_pot(mass, domain, b):
  for kind in ("uniform", "pairs"):
    for eps in (0.05, 0.1):
      cost = _cost(b, kind, seed=b + 1)
      c = cost / cost.max()
      a = np.full(b, 1.0 / b)
      plan = ot.partial.entropic_partial_wasserstein(
        a, a, c, reg=eps, m=mass, numItermax=20000, stopThr=1e-14
      )
      loss, aux, _ = _run(
        "partial", cost, eps, mass=mass, domain=domain, num_iterations=PARTIAL_ITERS
      )
      assert abs(loss - _diag_loss_np(plan)) <= 1e-5, (kind, eps)
      assert abs(float(aux["diag_mass"]) - np.trace(plan)) <= 1e-5


@pytest.mark.parametrize("tau", [0.5, 0.9])
@pytest.mark.parametrize("b,solver", [(8, "native"), (64, "native"), (64, "ott")])
def test_unbalanced_loss_matches_pot(tau, b, solver):
  """Generalised KL(I/B || P) + log B of POT's plan (tau = reg_m / (reg_m + eps),
  reg_type='entropy'), the KL written out here in float64."""
  for kind in ("uniform", "pairs"):
    for eps in (0.05, 0.1):
      cost = _cost(b, kind, seed=b + 2)
      c = cost / cost.max()
      a = np.full(b, 1.0 / b)
      reg_m = eps * tau / (1.0 - tau)
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = ot.unbalanced.sinkhorn_unbalanced(
          a, a, c, eps, reg_m, reg_type="entropy", numItermax=100000, stopThr=1e-13
        )
      loss, aux, _ = _run("unbalanced", cost, eps, tau=tau, solver=solver, **TIGHT)
      assert abs(loss - (_generalised_kl_np(plan) + math.log(b))) <= 1e-5, (kind, eps)
      assert abs(float(aux["plan_mass"]) - plan.sum()) <= 1e-5


# ----------------------------------------------------------------------------
# Gradients against torch autograd.
# ----------------------------------------------------------------------------


def _torch_balanced_loss(cost: torch.Tensor, eps: float, iters: int):
  """POT's log-domain Sinkhorn (torch backend), exactly ``iters`` iterations."""
  b = cost.shape[0]
  a = torch.full((b,), 1.0 / b)
  c = cost / cost.max()
  plan = ot.sinkhorn(a, a, c, eps, method="sinkhorn_log", numItermax=iters, stopThr=-1.0)
  return -torch.log(torch.diagonal(plan)).mean()


def _torch_grad(fn, cost: np.ndarray) -> np.ndarray:
  x = torch.tensor(cost, requires_grad=True)
  fn(x).backward()
  return x.grad.numpy()


def _assert_close_grad(grad, ref, rel=1e-4):
  scale = np.max(np.abs(ref))
  assert np.all(np.isfinite(grad))
  assert np.max(np.abs(grad - ref)) <= rel * scale, (np.max(np.abs(grad - ref)), scale)


@pytest.mark.parametrize("solver,b", _BALANCED_CASES)
def test_balanced_grad_matches_torch_same_iterations(solver, b):
  """Unrolled gradient == autograd through POT's iterations (same count)."""
  for kind, eps in (("pairs", 0.05), ("uniform", 0.1)):
    cost = _cost(b, kind, seed=3 * b)
    loss, aux, grad = _run("balanced", cost, eps, **_BALANCED_SOLVERS[solver])
    iters = int(aux["ot_iterations"])
    ref_loss = _torch_balanced_loss(torch.tensor(cost), eps, iters).item()
    assert abs(loss - ref_loss) <= 1e-5
    ref = _torch_grad(lambda x: _torch_balanced_loss(x, eps, iters), cost)
    _assert_close_grad(grad, ref)


def test_balanced_grad_converged_matches_torch_many_iterations():
  for b, kind, eps in ((8, "uniform", 0.05), (64, "pairs", 0.1)):
    cost = _cost(b, kind, seed=5 * b)
    _, aux, grad = _run("balanced", cost, eps, **TIGHT)
    assert int(aux["ot_iterations"]) < 3000
    ref = _torch_grad(lambda x: _torch_balanced_loss(x, eps, 3000), cost)
    _assert_close_grad(grad, ref)


@pytest.mark.parametrize("momentum", [1.3, 1.5])
def test_ott_momentum_same_fixed_point_fewer_iterations(momentum):
  """Over-relaxed ott Sinkhorn: the converged loss and gradient of plain Sinkhorn run to
  3000 iterations (torch autograd through POT's updates), in fewer iterations than
  without momentum."""
  b, eps = 64, 0.05
  cost = _cost(b, "pairs", seed=17)
  _, plain, _ = _run("balanced", cost, eps, solver="ott", **TIGHT)
  loss, aux, grad = _run("balanced", cost, eps, solver="ott", momentum=momentum, **TIGHT)
  assert bool(aux["ot_converged"])
  assert int(aux["ot_iterations"]) < int(plain["ot_iterations"]), (aux, plain)
  ref_loss = _torch_balanced_loss(torch.tensor(cost), eps, 3000).item()
  assert abs(loss - ref_loss) <= 1e-5
  _assert_close_grad(grad, _torch_grad(lambda x: _torch_balanced_loss(x, eps, 3000), cost))


@pytest.mark.parametrize("solver", ["ott", "native"])
def test_envelope_gradient_is_the_converged_gradient(solver):
  """differentiation='envelope': the loss of the iterations run, and the gradient of the
  converged loss (torch autograd through POT's updates run to 5000 iterations), from a solve
  that runs forward only."""
  for b, kind, eps in ((8, "uniform", 0.05), (64, "pairs", 0.05), (64, "uniform", 0.02)):
    cost = _cost(b, kind, seed=5 * b)
    loss, aux, grad = _run(
      "balanced", cost, eps, solver=solver, differentiation="envelope", **TIGHT
    )
    assert bool(aux["ot_converged"])
    unrolled, _, _ = _run("balanced", cost, eps, solver=solver, **TIGHT)
    assert abs(loss - unrolled) <= 1e-6
    ref_loss = _torch_balanced_loss(torch.tensor(cost), eps, 5000).item()
    assert abs(loss - ref_loss) <= 1e-5
    _assert_close_grad(grad, _torch_grad(lambda x: _torch_balanced_loss(x, eps, 5000), cost))


@pytest.mark.parametrize("threshold", [1e-3, 1e-4])
def test_envelope_gradient_error_follows_the_stopping_threshold(threshold):
  """Stopped early, the envelope gradient is off by about the marginal error it stopped at
  (measured: 1.6e-3 and 2.2e-4 of the largest entry at 1e-3 and 1e-4); bound: 10 x."""
  b, eps = 64, 0.05
  cost = _cost(b, "pairs", seed=5 * b)
  _, aux, grad = _run(
    "balanced", cost, eps, solver="ott", differentiation="envelope", threshold=threshold
  )
  assert float(aux["ot_error"]) <= threshold
  ref = _torch_grad(lambda x: _torch_balanced_loss(x, eps, 5000), cost)
  _assert_close_grad(grad, ref, rel=10 * threshold)


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_partial_grad_matches_torch_same_iterations():
  """Autograd through POT's own partial solver (torch backend), 200 cycles."""
  b, mass = 64, 0.95

  def ref_loss(x, eps):
    a = torch.full((b,), 1.0 / b)
    plan = ot.partial.entropic_partial_wasserstein(
      a, a, x / x.max(), reg=eps, m=mass, numItermax=200, stopThr=-1.0
    )
    return -torch.log(torch.diagonal(plan)).mean()

  for kind, eps in (("pairs", 0.05), ("uniform", 0.1)):
    cost = _cost(b, kind, seed=7 * b)
    ref = _torch_grad(lambda x: ref_loss(x, eps), cost)
    ref_value = ref_loss(torch.tensor(cost), eps).item()
    for domain in ("auto", "log"):
      loss, aux, grad = _run("partial", cost, eps, mass=mass, domain=domain)
      assert int(aux["ot_iterations"]) == 200  # the default
      assert abs(loss - ref_value) <= 1e-5
      _assert_close_grad(grad, ref)


def test_unbalanced_grad_matches_torch_same_iterations():
  """A torch kernel-domain unbalanced Sinkhorn written here, same count."""
  tau, eps, b = 0.5, 0.05, 8
  cost = _cost(b, "pairs", seed=11)

  def ref_loss(x, iters):
    c = x / x.max()
    k = torch.exp(-c / eps)
    u = torch.ones(b)
    for _ in range(iters):
      v = ((1.0 / b) / (k.T @ u)) ** tau
      u = ((1.0 / b) / (k @ v)) ** tau
    plan = u[:, None] * k * v[None, :]
    return -torch.log(torch.diagonal(plan)).mean() + plan.sum() - 1.0

  for domain in ("auto", "log"):
    loss, aux, grad = _run("unbalanced", cost, eps, tau=tau, domain=domain, **TIGHT)
    iters = int(aux["ot_iterations"])
    assert abs(loss - ref_loss(torch.tensor(cost), iters).item()) <= 1e-5
    _assert_close_grad(grad, _torch_grad(lambda x: ref_loss(x, iters), cost))


@pytest.mark.parametrize(
  "variant,kw",
  [("balanced", TIGHT), ("partial", dict(num_iterations=PARTIAL_ITERS)), ("unbalanced", TIGHT)],
)
def test_constant_cost_shift(variant, kw):
  """Lowering every cost by ``c`` (no max-normalisation).

  Balanced and partial OT: the plan, hence the loss, is unchanged. Unbalanced
  OT: the plan is scaled by ``lam = exp(c / (eps + 2 rho))`` with the same
  diagonal share, so the loss changes by exactly ``-log lam + (lam - 1) m``
  (``m`` the unshifted mass): it cannot be lowered by inflating the mass, and
  it is lowest where the mass is 1. ``-mean(log P_ii)`` alone would fall by
  ``log lam`` for every ``c > 0``.
  """
  b, eps, tau = 64, 0.05, 0.9
  rho = eps * tau / (1.0 - tau)
  cost = _cost(b, "pairs", seed=19)
  cost = cost / cost.max()
  opts = dict(normalize_max=False, **kw)
  if variant == "unbalanced":
    opts["tau"] = tau
  base, base_aux, _ = _run(variant, cost, eps, **opts)
  m0 = float(base_aux["plan_mass"])
  share0 = float(base_aux["diag_mass"]) / m0
  for shift in (0.05, 0.1, 0.2):
    loss, aux, _ = _run(variant, cost - shift, eps, **opts)
    if variant != "unbalanced":
      assert abs(loss - base) <= 1e-5, shift
      continue
    lam = math.exp(shift / (eps + 2.0 * rho))
    assert abs(float(aux["plan_mass"]) / m0 - lam) <= 1e-4 * lam, shift
    assert abs(float(aux["diag_mass"]) / float(aux["plan_mass"]) - share0) <= 1e-5
    assert abs(loss - (base - math.log(lam) + (lam - 1.0) * m0)) <= 1e-4, shift
  if variant == "unbalanced":
    # The shift that brings the mass to 1 gives the lowest loss of the family.
    best = -(eps + 2.0 * rho) * math.log(m0)
    at_best, aux, _ = _run(variant, cost - best, eps, **opts)
    assert abs(float(aux["plan_mass"]) - 1.0) <= 1e-4
    for delta in (-0.1, 0.1):
      assert _run(variant, cost - best - delta, eps, **opts)[0] > at_best + 1e-4


def test_ott_constant_epsilon_geometry_is_otts_kernel_product():
  """The kernel-mode geometry of the ott path: ott's own Geometry's products (K v, K^T v) at
  the geometry's epsilon, read without a transposed copy."""
  from ott.geometry import geometry
  from mltm_jax.ot.ott_sinkhorn import ConstantEpsilonGeometry

  rng = np.random.default_rng(43)
  k = jnp.asarray(np.exp(-rng.random((12, 7)) / 0.05), jnp.float32)
  ours = ConstantEpsilonGeometry(kernel_matrix=k, epsilon=0.05)
  otts = geometry.Geometry(kernel_matrix=k, epsilon=0.05)
  for axis, vec in ((1, rng.random(7)), (0, rng.random(12))):
    vec = jnp.asarray(vec, jnp.float32)
    np.testing.assert_allclose(
      ours.apply_kernel(vec, 0.05, axis=axis), otts.apply_kernel(vec, 0.05, axis=axis), rtol=1e-5
    )
  leaves, tree = jax.tree_util.tree_flatten(ours)  # a pytree of its own class, as ott needs
  assert type(jax.tree_util.tree_unflatten(tree, leaves)) is ConstantEpsilonGeometry


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_ott_kernel_and_log_modes_agree():
  """ott's kernel mode (the ConstantEpsilonGeometry) and log mode: the same iterations, so the
  same converged loss and unrolled gradient, for balanced (a shifted cost) and unbalanced OT."""
  cost = _cost(64, "pairs", seed=47)
  for variant, kw in (("balanced", {}), ("unbalanced", dict(tau=0.9))):
    for eps in (0.03, 0.1):
      runs = [
        _run(variant, cost, eps, solver="ott", domain=d, **kw, **TIGHT) for d in ("kernel", "log")
      ]
      (lk, ak, gk), (ll, al, gl) = runs
      # Same iterates up to roundoff; near a 1e-6 threshold the stop may differ by a block.
      assert bool(ak["ot_converged"]) and bool(al["ot_converged"]), (variant, eps)
      assert abs(lk - ll) <= 1e-5, (variant, eps)
      _assert_close_grad(gk, gl, rel=1e-4)


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_kernel_and_log_domains_agree_near_switch():
  """Just inside the kernel domain's range, both domains give the same grads."""
  cost = _cost(64, "pairs", seed=13)
  c = cost / cost.max()
  eps = float(c.max() - c.min()) / (ot_lib.KERNEL_MAX_EXPONENT - 0.1)
  for variant, kw in (("balanced", TIGHT), ("partial", dict(mass=0.95))):
    runs = [_run(variant, cost, eps, domain=d, **kw) for d in ("kernel", "log")]
    (lk, ak, gk), (ll, al, gl) = runs
    assert int(ak["ot_iterations"]) == int(al["ot_iterations"])
    assert abs(lk - ll) <= 1e-5
    _assert_close_grad(gk, gl, rel=1e-4)


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_ott_implicit_option_runs():
  cost = _cost(8, "uniform", seed=17)
  _, _, g_unroll = _run("balanced", cost, 0.1, **TIGHT)
  _, aux, g_implicit = _run(
    "balanced", cost, 0.1, solver="ott", differentiation="implicit", **TIGHT
  )
  assert bool(aux["ot_converged"])
  _assert_close_grad(g_implicit, g_unroll, rel=1e-3)


# ----------------------------------------------------------------------------
# Robustness: finite loss and gradients, no exception.
# ----------------------------------------------------------------------------

_DEFAULTS = {"balanced": {}, "partial": {}, "unbalanced": dict(tau=0.9)}


@pytest.mark.slow  # compiles for several seconds on 2 cores
@pytest.mark.parametrize("variant", list(_DEFAULTS))
def test_finite_everywhere(variant):
  rng = np.random.default_rng(19)
  for b in (1, 2, 64, 512):
    cases = [_cost(b, "pairs", seed=b)]
    if b == 64:
      dup = _cost(b, "uniform", seed=23)
      dup[1] = dup[0]
      dup[:, 5] = dup[:, 4]
      cases += [dup, np.zeros((b, b)), np.full((b, b), 3.0), 1e-3 * rng.random((b, b))]
    for cost in cases:
      for eps in (0.005, 0.01, 0.05, 0.5):
        loss, aux, grad = _run(variant, cost, eps, **_DEFAULTS[variant])
        assert np.isfinite(loss) and np.all(np.isfinite(grad)), (b, eps)
        assert all(np.all(np.isfinite(np.asarray(v))) for v in aux.values())


@pytest.mark.parametrize("variant", list(_DEFAULTS))
def test_normalize_max_off_with_large_costs(variant):
  cost = 5.0 * _cost(64, "pairs", seed=29)  # max ~ 30: log domain at eps .05
  loss, _, grad = _run(variant, cost, 0.05, normalize_max=False, **_DEFAULTS[variant])
  assert np.isfinite(loss) and np.all(np.isfinite(grad))


# ----------------------------------------------------------------------------
# Hand cases of the m-LTM loss.
# ----------------------------------------------------------------------------


def test_zero_cost_gives_uniform_plan():
  """All-zero cost: the balanced plan is 1 / B^2, so the loss is 2 log B."""
  for b in (1, 2, 64):
    loss, aux, grad = _run("balanced", np.zeros((b, b)), 0.05)
    assert abs(loss - 2 * math.log(b)) <= 1e-5
    assert abs(float(aux["diag_mass"]) - 1.0 / b) <= 1e-6
    assert np.all(np.isfinite(grad))


def test_single_pair_and_perfect_alignment():
  loss, aux, _ = _run("balanced", np.array([[0.7]]), 0.05)
  assert abs(loss) <= 1e-6 and abs(float(aux["diag_mass"]) - 1.0) <= 1e-6
  # Matched pairs at cost 0, all others at 1: P_ii -> 1/B as eps -> 0.
  b = 64
  loss, aux, _ = _run("balanced", 1.0 - np.eye(b), 0.02)
  assert abs(loss - math.log(b)) <= 1e-3
  assert float(aux["diag_mass"]) >= 0.99


def test_scale_invariance_with_normalize_max():
  cost = _cost(64, "pairs", seed=31)
  for variant, kw in _DEFAULTS.items():
    l1, _, g1 = _run(variant, cost, 0.05, **kw)
    l2, _, g2 = _run(variant, 7.0 * cost, 0.05, **kw)
    assert abs(l1 - l2) <= 1e-5
    np.testing.assert_allclose(g2 * 7.0, g1, atol=1e-4 * np.abs(g1).max())


def test_partial_full_mass_equals_balanced():
  cost = _cost(64, "pairs", seed=37)
  lb, _, gb = _run("balanced", cost, 0.1, **TIGHT)
  lp, _, gp = _run("partial", cost, 0.1, mass=1.0, num_iterations=PARTIAL_ITERS)
  assert abs(lb - lp) <= 1e-5
  _assert_close_grad(gp, gb, rel=1e-3)


def test_bad_arguments_raise():
  c = jnp.zeros((4, 4))
  with pytest.raises(ValueError, match="variant"):
    mltm_loss(c, eps=0.05, variant="nope")
  with pytest.raises(ValueError, match="square"):
    mltm_loss(jnp.zeros((4, 3)), eps=0.05)
  with pytest.raises(ValueError, match="eps"):
    ot_lib.solve_balanced(c, -1.0)
  with pytest.raises(ValueError, match="mass"):
    ot_lib.solve_partial(c, 0.05, 1.5)
  with pytest.raises(ValueError, match="implicit"):
    ot_lib.solve_balanced(c, 0.05, differentiation="implicit")
  with pytest.raises(ValueError, match="momentum must be in"):
    ot_lib.solve_balanced(c, 0.05, solver="ott", momentum=2.0)
  with pytest.raises(ValueError, match="needs solver='ott'"):
    ot_lib.solve_balanced(c, 0.05, momentum=1.3)
  with pytest.raises(TypeError, match="solver option"):
    mltm_loss(c, eps=0.05, variant="partial", threshold=1e-3)
  with pytest.raises(ValueError, match="differentiation must be one of"):
    mltm_loss(c, eps=0.05, differentiation="nope")
  for variant in ("partial", "unbalanced"):
    with pytest.raises(ValueError, match="envelope' needs variant 'balanced'"):
      mltm_loss(c, eps=0.05, variant=variant, differentiation="envelope")


def test_log_plan_rectangular_marginals():
  cost = jnp.asarray(_cost(12, "uniform", seed=41)[:, :7], jnp.float32)
  p = np.exp(np.asarray(ot_lib.balanced_log_plan(cost, 0.1, threshold=1e-6), np.float64))
  np.testing.assert_allclose(p.sum(1), 1 / 12, atol=1e-6)
  np.testing.assert_allclose(p.sum(0), 1 / 7, atol=1e-6)
  q = np.exp(np.asarray(ot_lib.partial_log_plan(cost, 0.1, 0.5), np.float64))
  assert q.shape == (12, 7) and abs(q.sum() - 0.5) <= 1e-5
  assert np.all(q.sum(1) <= 1 / 12 + 1e-6) and np.all(q.sum(0) <= 1 / 7 + 1e-6)


# ----------------------------------------------------------------------------
# Baselines against torch.
# ----------------------------------------------------------------------------


def _torch_triplet(sim, margin):
  b = sim.shape[0]
  pos = torch.diagonal(sim)
  total = sim.new_zeros(())
  for i in range(b):
    neg = [j for j in range(b) if j != i]
    if not neg:
      continue
    a2t = torch.clamp(margin + sim[i, neg] - pos[i], min=0).max()
    t2a = torch.clamp(margin + sim[neg, i] - pos[i], min=0).max()
    total = total + a2t + t2a
  return total / b


def _torch_ranking(sim, margin):
  b = sim.shape[0]
  pos = torch.diagonal(sim)
  mask = ~torch.eye(b, dtype=torch.bool)
  a2t = torch.clamp(margin + sim - pos[:, None], min=0)[mask].sum()
  t2a = torch.clamp(margin + sim - pos[None, :], min=0)[mask].sum()
  return (a2t + t2a) / b


def _torch_infonce(sim, temperature):
  logits = sim / temperature
  target = torch.arange(sim.shape[0])
  return 0.5 * (
    torch.nn.functional.cross_entropy(logits, target)
    + torch.nn.functional.cross_entropy(logits.T, target)
  )


def _torch_entropic(cost, eps):
  return _torch_infonce(-cost / cost.max(), eps)


def _check_against_torch(jax_fn, torch_fn, x: np.ndarray):
  value, grad = jax.jit(jax.value_and_grad(jax_fn))(jnp.asarray(x, jnp.float32))
  xt = torch.tensor(x, requires_grad=True)
  ref = torch_fn(xt)
  assert abs(float(value) - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))
  if ref.requires_grad:
    ref.backward()
    ref_grad = xt.grad.numpy()
  else:  # e.g. no negative pair at B = 1: the loss is a constant.
    ref_grad = np.zeros_like(x)
  np.testing.assert_allclose(np.asarray(grad), ref_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("b", [1, 2, 16])
def test_baselines_match_torch(b):
  rng = np.random.default_rng(b)
  emb_a = rng.normal(size=(b, 8))
  emb_t = emb_a + 0.8 * rng.normal(size=(b, 8))
  emb_a /= np.linalg.norm(emb_a, axis=1, keepdims=True)
  emb_t /= np.linalg.norm(emb_t, axis=1, keepdims=True)
  sim = emb_a @ emb_t.T
  cost = np.sqrt(((emb_a[:, None] - emb_t[None]) ** 2).sum(-1)) + 0.1
  _check_against_torch(
    lambda s: baselines.triplet_hardest_negative(s, 0.2), lambda s: _torch_triplet(s, 0.2), sim
  )
  _check_against_torch(
    lambda s: baselines.bidirectional_ranking(s, 0.2), lambda s: _torch_ranking(s, 0.2), sim
  )
  _check_against_torch(
    lambda s: baselines.symmetric_infonce(s, 0.07), lambda s: _torch_infonce(s, 0.07), sim
  )
  _check_against_torch(
    lambda c: baselines.entropic_infonce(c, 0.05), lambda c: _torch_entropic(c, 0.05), cost
  )


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_infonce_learnable_temperature_gradient():
  sim = np.random.default_rng(3).uniform(-1, 1, size=(6, 6))
  t = 0.1
  g = jax.grad(lambda tt: baselines.symmetric_infonce(jnp.asarray(sim, jnp.float32), tt))(
    jnp.float32(t)
  )
  tt = torch.tensor(t, requires_grad=True)
  _torch_infonce(torch.tensor(sim), tt).backward()
  assert abs(float(g) - tt.grad.item()) <= 1e-4 * max(1.0, abs(tt.grad.item()))
  # Jittable with a traced temperature.
  jax.jit(baselines.symmetric_infonce)(jnp.asarray(sim, jnp.float32), 0.07)


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_baseline_hand_cases():
  b = 5
  perfect = np.eye(b)  # positives 1, negatives 0: margin 0.2 satisfied.
  assert float(baselines.triplet_hardest_negative(jnp.asarray(perfect))) == 0.0
  assert float(baselines.bidirectional_ranking(jnp.asarray(perfect))) == 0.0
  # All similarities equal: every negative violates by exactly the margin.
  flat = jnp.zeros((b, b))
  assert abs(float(baselines.triplet_hardest_negative(flat, 0.2)) - 0.4) < 1e-6
  assert abs(float(baselines.bidirectional_ranking(flat, 0.2)) - 2 * (b - 1) * 0.2) < 1e-6
  # Uniform logits: cross-entropy log B in both directions.
  assert abs(float(baselines.symmetric_infonce(flat, 0.07)) - math.log(b)) < 1e-6
  # One hard negative: sim[0, 1] = 0.9 against positive 1.0.
  sim = np.eye(b)
  sim[0, 1] = 0.9
  expected = 2 * (0.2 + 0.9 - 1.0) / b  # audio 0 -> caption 1, caption 1 <- audio 0
  assert abs(float(baselines.triplet_hardest_negative(jnp.asarray(sim))) - expected) < 1e-6
  # entropic_infonce == symmetric_infonce(-C / max C, eps).
  cost = jnp.asarray(_cost(7, "pairs", seed=43), jnp.float32)
  np.testing.assert_allclose(
    float(baselines.entropic_infonce(cost, 0.05)),
    float(baselines.symmetric_infonce(-cost / jnp.max(cost), 0.05)),
    rtol=1e-6,
  )
  assert np.isfinite(float(baselines.entropic_infonce(jnp.zeros((4, 4)), 0.05)))


@pytest.mark.slow
@pytest.mark.parametrize("eps", [0.005, 0.5])
@pytest.mark.parametrize(
  "variant,momentum,differentiation",
  [
    ("balanced", 1.0, "envelope"),
    ("balanced", 1.3, "envelope"),
    ("balanced", 1.0, "unroll"),
    ("unbalanced", 1.0, "unroll"),
    ("balanced", 1.5, "unroll"),
    ("unbalanced", 1.5, "unroll"),
  ],
)
def test_ott_solver_path_finite_over_eps_range(eps, variant, momentum, differentiation):
  """The ott-jax path (the default of launch.train, with the envelope gradient for balanced
  OT) is finite at both ends of the eps range, with and without over-relaxation
  (--ot_momentum), and so is the unrolled gradient."""
  from mltm_jax.losses.mltm import mltm_loss

  rng = np.random.default_rng(0)
  f = jax.jit(
    jax.value_and_grad(
      lambda x: mltm_loss(
        x,
        eps=eps,
        variant=variant,
        tau=0.9 if variant == "unbalanced" else 1.0,
        solver="ott",
        momentum=momentum,
        differentiation=differentiation,
      )[0]
    )
  )  # one program for the three costs, as in the train step
  for c in (
    rng.uniform(size=(64, 64)),
    np.zeros((64, 64)),
    np.tile(rng.uniform(size=(1, 64)), (64, 1)),
  ):
    loss, grad = f(jnp.asarray(c, jnp.float32))
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))


def test_triplet_warmup_uses_every_negative_then_the_hardest():
  """--triplet_warmup_steps: the torch ranking loss before step k, the torch triplet after."""
  from mltm_jax.config import Config
  from mltm_jax.losses import batch_loss

  rng = np.random.default_rng(23)
  a = rng.normal(size=(16, 8))
  t = a + rng.normal(size=(16, 8))
  a /= np.linalg.norm(a, axis=1, keepdims=True)
  t /= np.linalg.norm(t, axis=1, keepdims=True)
  sim = torch.tensor(a @ t.T)
  cfg = Config(loss="triplet", margin=0.2, triplet_warmup_steps=10)
  fn = jax.jit(lambda x, y, s: batch_loss(cfg, x, y, {}, {}, s)[0])
  x, y = jnp.asarray(a, jnp.float32), jnp.asarray(t, jnp.float32)
  for step, ref in ((0, _torch_ranking), (9, _torch_ranking), (10, _torch_triplet)):
    assert abs(float(fn(x, y, step)) - ref(sim, 0.2).item()) <= 1e-5, step
  no_warmup = batch_loss(cfg.replace(triplet_warmup_steps=0), x, y, {}, {}, 0)[0]
  assert abs(float(no_warmup) - _torch_triplet(sim, 0.2).item()) <= 1e-5


def _unit_pairs(seed: int, b: int = 64, d: int = 16) -> tuple[jax.Array, jax.Array]:
  """float32 unit embeddings x [b, d] and their noisy pairs y [b, d] (batch_loss's inputs)."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(b, d))
  t = a + rng.normal(size=(b, d))
  unit = lambda z: jnp.asarray(z / np.linalg.norm(z, axis=1, keepdims=True), jnp.float32)
  return unit(a), unit(t)


def test_ot_momentum_flag_reaches_the_ott_solver():
  """--ot_momentum: the train step's loss has the same value in fewer Sinkhorn iterations."""
  from mltm_jax.config import Config
  from mltm_jax.losses import batch_loss

  x, y = _unit_pairs(seed=29)
  metric = {"M": jnp.eye(16)}
  plain_loss, plain = batch_loss(Config(metric="full"), x, y, metric, {}, 0)
  loss, aux = batch_loss(Config(metric="full", ot_momentum=1.5), x, y, metric, {}, 0)
  assert int(aux["ot_iterations"]) < int(plain["ot_iterations"]), (aux, plain)
  assert abs(float(loss) - float(plain_loss)) <= 1e-3


def test_default_train_loss_uses_the_envelope_gradient():
  """--ot_differentiation=auto (the default) gives balanced m-LTM the envelope gradient, and
  --ot_differentiation=unroll the unrolled one: same loss; gradients w.r.t. the embeddings
  apart by about the default stopping threshold (1e-3). (Each against the converged gradient:
  the tests above.)"""
  from mltm_jax.config import Config
  from mltm_jax.losses import batch_loss

  x, y = _unit_pairs(seed=31)
  metric = {"M": jnp.eye(16)}

  def grads(cfg):
    fn = jax.value_and_grad(lambda u: batch_loss(cfg, u, y, metric, {}, 0)[0])
    loss, g = fn(x)
    return float(loss), np.asarray(g, np.float64)

  default = Config(metric="full")
  assert default.resolved_ot_differentiation == "envelope"
  loss_env, g_env = grads(default)
  loss_unr, g_unr = grads(default.replace(ot_differentiation="unroll"))
  assert abs(loss_env - loss_unr) <= 1e-6
  gap = np.max(np.abs(g_env - g_unr)) / np.max(np.abs(g_unr))
  assert 0.0 < gap <= 1e-2, gap
