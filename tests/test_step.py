"""The train step's NaN guard: a non-finite loss or gradient never reaches the parameters."""

import jax
import numpy as np
import pytest

from mltm_jax.config import Config
from mltm_jax.models.two_tower import build_towers
from mltm_jax import model as model_lib
from mltm_jax.train import state as state_lib
from mltm_jax.train.step import make_train_step
from mltm_jax.sharding import make_mesh, replicated, to_global


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_non_finite_batch_is_skipped_and_counted():
  cfg = Config(cnn_channels="16,32", embed_dim=16, head_hidden=32, batch_size=8, num_steps=10)
  audio_tower, text_tower = build_towers(cfg, None)
  rng = np.random.default_rng(0)
  good = {
    "audio": rng.normal(size=(8, 40, 64)).astype(np.float32),
    "text": rng.normal(size=(8, 24)).astype(np.float32),
  }
  bad = {"audio": good["audio"].copy(), "text": good["text"]}
  bad["audio"][3, 5, 7] = np.nan
  params, stats = model_lib.init_params(
    cfg, audio_tower, text_tower, good["text"][:2], jax.random.PRNGKey(0)
  )
  tx = state_lib.make_optimizer(cfg)
  mesh = make_mesh()
  state = jax.device_put(
    state_lib.create_state(cfg, params, stats, tx, jax.random.PRNGKey(1)), replicated(mesh)
  )
  step = make_train_step(cfg, audio_tower, text_tower, tx, mesh)
  before = jax.device_get((state.params, state.batch_stats, state.opt_state))
  state, m = step(state, to_global(mesh, bad))
  after = jax.device_get((state.params, state.batch_stats, state.opt_state))
  assert not np.isfinite(float(m["loss"])) and int(m["skipped"]) == 1
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)
  state, m = step(state, to_global(mesh, good))
  assert np.isfinite(float(m["loss"])) and int(state.skipped) == 1 and int(state.step) == 2
  moved = jax.tree.map(
    lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
    before[0],
    jax.device_get(state.params),
  )
  assert max(jax.tree.leaves(moved)) > 0
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))
