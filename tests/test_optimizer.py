"""The optimizer chain: --metric_learning_rate gives the metric its own Adam rate and schedule;
0 keeps the single-rate chain (and its state structure)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.train.state import learning_rate_schedule, make_optimizer


def _params(dim: int = 4) -> dict:
  return {
    "audio": {"w": jnp.zeros((3, 2))},
    "text": {"w": jnp.zeros((5,))},
    "metric": metric_lib.init_metric("diagonal", dim),
    "loss": {},
  }


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_metric_has_its_own_rate_and_schedule():
  cfg = Config(
    metric="diagonal",
    learning_rate=1e-3,
    metric_learning_rate=1e-5,
    grad_clip=0.0,
    num_steps=10,
    lr_decay_steps=2,
    lr_decay_factor=0.5,
  )
  params = _params()
  grads = jax.tree.map(lambda x: -jnp.ones_like(x), params)  # Adam's first steps: lr * sign
  tx = make_optimizer(cfg)
  state = tx.init(params)
  for step, scale in enumerate((1.0, 1.0, 0.5)):  # the decay at step 2 hits both groups
    updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["audio"]["w"], 1e-3 * scale, rtol=1e-3, err_msg=str(step))
    np.testing.assert_allclose(updates["text"]["w"], 1e-3 * scale, rtol=1e-3)
    # (d + u) - d in float32 (the PSD clip) rounds at ~1e-7 absolute: 2 % of 1e-5
    np.testing.assert_allclose(updates["metric"]["diag"], 1e-5 * scale, rtol=2e-2)
    params = optax.apply_updates(params, updates)


def test_zero_keeps_the_single_rate_chain():
  params = _params()
  one = make_optimizer(Config(metric="diagonal", metric_learning_rate=0.0))
  ref = optax.chain(
    optax.clip_by_global_norm(Config().grad_clip),
    optax.adam(learning_rate_schedule(Config())),
    metric_lib.psd_projection(),
  )
  assert jax.tree.structure(one.init(params)) == jax.tree.structure(ref.init(params))
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), params)
  a, _ = one.update(grads, one.init(params), params)
  b, _ = ref.update(grads, ref.init(params), params)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert any("--metric_learning_rate" in p for p in Config(metric_learning_rate=-1).problems())


def test_fine_tuned_text_encoder_has_its_own_rate():
  """--text_learning_rate: the text encoder (not its head) at its own rate when fine-tuned;
  ignored when the encoder is frozen (no encoder parameters then)."""
  params = _params()
  params["text"] = {"encoder": {"w": jnp.zeros((5,))}, "head": {"w": jnp.zeros((2,))}}
  grads = jax.tree.map(lambda x: -jnp.ones_like(x), params)
  cfg = Config(
    metric="diagonal",
    learning_rate=1e-3,
    metric_learning_rate=1e-5,
    text_learning_rate=5e-5,
    freeze_text=False,
    grad_clip=0.0,
  )
  tx = make_optimizer(cfg)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["text"]["encoder"]["w"], 5e-5, rtol=1e-3)
  np.testing.assert_allclose(updates["text"]["head"]["w"], 1e-3, rtol=1e-3)
  np.testing.assert_allclose(updates["audio"]["w"], 1e-3, rtol=1e-3)
  np.testing.assert_allclose(updates["metric"]["diag"], 1e-5, rtol=2e-2)
  frozen = _params()  # frozen encoder: features in, the head is all the text tower has
  one = make_optimizer(Config(metric="diagonal", text_learning_rate=5e-5, grad_clip=0.0))
  up, _ = one.update(jax.tree.map(lambda x: -jnp.ones_like(x), frozen), one.init(frozen), frozen)
  np.testing.assert_allclose(up["text"]["w"], 1e-3, rtol=1e-3)
  assert any("--text_learning_rate" in p for p in Config(text_learning_rate=-1).problems())
