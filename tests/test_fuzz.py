"""Property-based fuzzing of every loss and of the train step's NaN/inf guard (hypothesis).

Losses (mltm_jax/losses, through the learned-metric costs the train step uses) get random
embeddings, duplicates, zero vectors, all-identical batches, tiny/huge scales, degenerate
and indefinite metrics, eps in [0.005, 0.5] and batch sizes from 1 to 512: the loss and
its gradients w.r.t. both embeddings and the metric must be finite. The train step gets
batches with NaN/inf/huge entries: a step is either a finite update or counted as skipped
with every parameter, optimizer moment and batch statistic untouched; parameters are never
non-finite. Examples are bounded and derandomized (the same examples on every run); the
batch sizes are drawn from a few values because each new shape costs an XLA compilation.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mltm_jax import metric as metric_lib
from mltm_jax.losses.baselines import (
  bidirectional_ranking,
  entropic_infonce,
  symmetric_infonce,
  triplet_hardest_negative,
)
from mltm_jax.losses.mltm import mltm_loss

pytestmark = pytest.mark.slow  # property-based fuzzing: many compiled shapes

D = 8
# CI: a dozen derandomized examples per test. A longer random hunt (not in CI):
#   MLTM_FUZZ_EXAMPLES=300 MLTM_FUZZ_RANDOM=1 python -m pytest -q tests/test_fuzz.py
EXAMPLES = int(os.environ.get("MLTM_FUZZ_EXAMPLES", "12"))
FUZZ = settings(
  max_examples=EXAMPLES,
  deadline=None,
  derandomize=not os.environ.get("MLTM_FUZZ_RANDOM"),
  database=None,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KINDS = ("unit", "duplicates", "zeros", "identical", "tiny", "huge", "gaussian", "paired")
METRICS = ("identity", "psd", "rank1", "zero", "indefinite")


@st.composite
def batches(draw, sizes):
  """(u [B, D], v [B, D], M [D, D], eps, description) as float32 numpy."""
  b = draw(st.sampled_from(sizes))
  kind = draw(st.sampled_from(KINDS))
  metric = draw(st.sampled_from(METRICS))
  eps = draw(st.floats(0.005, 0.5))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  u, v = rng.normal(size=(2, b, D))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  if kind in ("unit", "duplicates", "zeros", "paired"):
    u, v = unit(u), unit(v)
  if kind == "duplicates":  # repeated rows within and across the two sides
    idx = rng.integers(0, max(1, b // 2), size=b)
    u, v = u[idx], u[rng.permutation(idx)]
  elif kind == "zeros":
    u[rng.random(b) < 0.5] = 0.0
    v[rng.random(b) < 0.5] = 0.0
    u[0] = 0.0
  elif kind == "identical":
    u = np.repeat(u[:1], b, axis=0)
    v = u.copy()
  elif kind == "tiny":
    u, v = 1e-20 * u, 1e-20 * v
  elif kind == "huge":
    u, v = 1e4 * u, 1e4 * v
  elif kind == "paired":  # v_i = u_i exactly: zero-cost diagonal
    v = u.copy()
  a = rng.normal(size=(D, D))
  m = {
    "identity": np.eye(D),
    "psd": a @ a.T / D,
    "rank1": np.outer(a[0], a[0]),
    "zero": np.zeros((D, D)),
    "indefinite": (a + a.T) / 2,  # between two PSD projections (--psd_every > 1)
  }[metric]
  f32 = lambda x: np.asarray(x, np.float32)
  return f32(u), f32(v), f32(m), np.float32(eps), f"B={b} {kind} {metric} eps={eps:.4g}"


def _assert_finite(loss, grads, what):
  assert np.isfinite(float(loss)), f"non-finite loss: {what}"
  for g in jax.tree.leaves(grads):
    assert np.all(np.isfinite(np.asarray(g))), f"non-finite gradient: {what}"


_MLTM = {}


def _mltm_fn(variant: str, solver: str, normalize: bool):
  key = (variant, solver, normalize)
  if key not in _MLTM:

    def loss(u, v, m, eps):
      cost = metric_lib.mahalanobis(u, v, {"M": m}, "full")
      opts = {} if variant == "partial" else {"solver": solver}
      return mltm_loss(
        cost, eps=eps, variant=variant, mass=0.9, tau=0.9, normalize_max=normalize, **opts
      )[0]

    _MLTM[key] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  return _MLTM[key]


@pytest.mark.parametrize(
  "variant,solver",
  [
    ("balanced", "ott"),
    ("balanced", "native"),
    ("unbalanced", "ott"),
    ("unbalanced", "native"),
    ("partial", "native"),
  ],
)
@FUZZ
@given(data=batches(sizes=(1, 2, 5, 512)), normalize=st.booleans())
def test_mltm_loss_and_gradients_are_finite(variant, solver, data, normalize):
  u, v, m, eps, what = data
  loss, grads = _mltm_fn(variant, solver, normalize)(u, v, m, eps)
  _assert_finite(loss, grads, f"{variant}/{solver} normalize={normalize} {what}")


@jax.jit
def _baselines(u, v, m, eps, log_t):
  def all_losses(u, v, m, eps, log_t):
    sim = u @ v.T
    cost = metric_lib.mahalanobis(u, v, {"M": m}, "full")
    return jnp.stack(
      [
        triplet_hardest_negative(sim, 0.2),
        bidirectional_ranking(sim, 0.2),
        symmetric_infonce(sim, jnp.exp(log_t)),
        entropic_infonce(cost, eps, normalize_max=True),
        entropic_infonce(cost, eps, normalize_max=False),
      ]
    )

  values = all_losses(u, v, m, eps, log_t)
  grads = [
    jax.grad(lambda *a, i=i: all_losses(*a)[i], argnums=(0, 1, 2, 4))(u, v, m, eps, log_t)
    for i in range(values.shape[0])
  ]
  return values, grads


@FUZZ
@given(
  data=batches(sizes=(1, 2, 5, 512)),
  temperature=st.floats(0.01, 1.0),
)
def test_baseline_losses_and_gradients_are_finite(data, temperature):
  """triplet, ranking, InfoNCE (learned temperature), entropic InfoNCE (both normalisations)."""
  u, v, m, eps, what = data
  values, grads = _baselines(u, v, m, eps, np.float32(np.log(temperature)))
  for value, g in zip(np.asarray(values), grads):
    _assert_finite(value, g, f"{what} T={temperature:.3g}")


# ------------------------------------------------------------------- train step guard

B_STEP, FRAMES, MELS, TEXT = 8, 24, 16, 12


@pytest.fixture(scope="module")
def step_setup():
  from mltm_jax.config import Config
  from mltm_jax.models.two_tower import build_towers
  from mltm_jax import model as model_lib
  from mltm_jax.train import state as state_lib
  from mltm_jax.train.step import make_train_step
  from mltm_jax.sharding import make_mesh, replicated

  cfg = Config(
    cnn_channels="8,16",
    embed_dim=8,
    head_hidden=16,
    n_mels=MELS,
    batch_size=B_STEP,
    num_steps=10,
    eps=0.01,
  )
  audio_tower, text_tower = build_towers(cfg, None)
  params, stats = model_lib.init_params(
    cfg, audio_tower, text_tower, np.zeros((2, TEXT), np.float32), jax.random.PRNGKey(0)
  )
  tx = state_lib.make_optimizer(cfg)
  mesh = make_mesh()
  host = jax.device_get(state_lib.create_state(cfg, params, stats, tx, jax.random.PRNGKey(1)))
  step = make_train_step(cfg, audio_tower, text_tower, tx, mesh)
  return host, step, mesh, replicated(mesh)


@settings(FUZZ, max_examples=2 * EXAMPLES)
@given(
  seed=st.integers(0, 2**31 - 1),
  poison=st.sampled_from(["none", "nan", "inf", "-inf", "huge", "zeros", "duplicates"]),
  where=st.sampled_from(["audio", "text", "both"]),
  count=st.integers(1, 5),
)
def test_train_step_updates_or_skips_and_never_stores_nan(step_setup, seed, poison, where, count):
  from mltm_jax.sharding import to_global

  host, step, mesh, rep = step_setup
  rng = np.random.default_rng(seed)
  batch = {
    "audio": rng.normal(size=(B_STEP, FRAMES, MELS)).astype(np.float32),
    "text": rng.normal(size=(B_STEP, TEXT)).astype(np.float32),
  }
  for key in ("audio", "text") if where == "both" else (where,):
    x = batch[key].reshape(B_STEP, -1)
    rows = rng.integers(0, B_STEP, size=count)
    cols = rng.integers(0, x.shape[1], size=count)
    if poison in ("nan", "inf", "-inf"):
      x[rows, cols] = float(poison)
    elif poison == "huge":
      x[rows] *= 1e30
    elif poison == "zeros":
      x[rows] = 0.0
    elif poison == "duplicates":
      x[:] = x[rng.integers(0, B_STEP, size=B_STEP)]
  state = jax.device_put(jax.tree.map(np.array, host), rep)  # the step donates its input
  new, m = step(state, to_global(mesh, batch))
  new = jax.device_get(new)
  finite = np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"]))
  assert int(new.step) == 1
  assert int(new.skipped) == (0 if finite else 1) == int(m["skipped"])
  for leaf in jax.tree.leaves(new.params):
    assert np.all(np.isfinite(leaf)), (poison, where)
  if poison in ("nan", "inf", "-inf"):
    assert not finite  # a non-finite input must not pass unnoticed
  if not finite:  # skipped: nothing moved
    for a, b in zip(
      jax.tree.leaves((host.params, host.opt_state, host.batch_stats)),
      jax.tree.leaves((new.params, new.opt_state, new.batch_stats)),
    ):
      np.testing.assert_array_equal(a, b)
  elif poison in ("none", "zeros", "duplicates"):
    moved = [
      np.max(np.abs(a - b)) for a, b in zip(*map(jax.tree.leaves, (host.params, new.params)))
    ]
    assert max(moved) > 0


def test_skipped_updates_are_logged_once_each(caplog):
  from mltm_jax.train.loop import log_skipped

  with caplog.at_level(logging.WARNING):
    assert log_skipped(25, 0, 0) == 0
    assert log_skipped(50, 3, 0) == 3
    assert log_skipped(75, 3, 3) == 3
    assert log_skipped(100, 4, 3) == 4
  msgs = [r.getMessage() for r in caplog.records]
  assert len(msgs) == 2
  assert "step 50: 3 update(s) skipped" in msgs[0] and "3 in total" in msgs[0]
  assert "step 100: 1 update(s) skipped" in msgs[1] and "4 in total" in msgs[1]


_HUGE_U = [
  [1257.3022, -1321.0486, 6404.2266, 1049.0012, -5356.694, 3615.9504, 13040.0, 9470.81],
  [-7037.3525, -12654.215, -6232.7446, 413.2598, -23250.309, -2187.9167, -12459.109, -7322.6733],
  [-5442.59, -3163.0015, 4116.305, 10425.134, -1285.3467, 13664.635, -6651.947, 3515.1006],
  [9034.702, 940.123, -7434.9927, -9217.254, -4577.2583, 2201.9512, -10096.182, -2091.7559],
  [-1592.2501, 5408.456, 2146.5913, 3553.727, -6538.286, -1296.1364, 7839.755, 14934.312],
]
_HUGE_V = [
  [-12590.655, 15139.237, 13458.754, 7813.114, 2644.5564, -3139.228, 14580.207, 19602.584],
  [18016.35, 13151.038, 3573.8042, -12083.187, -44.541332, 6564.7495, -12883.614, 3951.2207],
  [4298.6367, 6960.4272, -11841.18, -6617.026, -4364.3525, -11698.02, 17393.68, -4959.1074],
  [3289.6963, -2585.7253, 15834.729, 13203.61, 6333.5264, -22035.1, 520.28973, 6836.862],
  [10039.616, -6179.0703, 18220.113, -13204.31, -6615.2803, 9350.5, 490.54614, 20023.926],
]


@pytest.mark.parametrize(
  "u,v,temperature",
  [
    (_HUGE_U[:2], _HUGE_U[2:4], 0.09375),  # logits up to 2.2e9: exp overflowed (+inf loss)
    (_HUGE_U, _HUGE_V, 0.01171875),  # up to 4.8e10: every exp underflowed (-inf loss)
  ],
)
def test_infonce_with_huge_logits_is_finite_and_exact(u, v, temperature):
  """Regressions found by the fuzzer: with a traced temperature, XLA:CPU fuses the division
  into `x - max(x)` (an FMA), and logits beyond ~1e9 overflowed or underflowed exp."""
  sim = np.asarray(u, np.float32) @ np.asarray(v, np.float32).T
  log_t = np.float32(np.log(temperature))
  fn = lambda s, lt: symmetric_infonce(s, jnp.exp(lt))
  loss, grads = jax.jit(fn)(sim, log_t), jax.jit(jax.grad(fn, (0, 1)))(sim, log_t)
  _assert_finite(loss, grads, "huge logits")
  x = sim.astype(np.float64) / np.float64(np.exp(log_t))

  def log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))

  ref = -0.5 * (np.diag(log_softmax(x, 1)).mean() + np.diag(log_softmax(x, 0)).mean())
  assert float(loss) == pytest.approx(ref, rel=1e-5)
