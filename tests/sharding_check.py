"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (see test_sharding.py).

``python -m tests.sharding_check LOSS,OT [LOSS,OT ...]``: for each variant, two SGD train steps (lr
1: the first step's change is the gradient) of the same state and GLOBAL batch on a 1-device mesh
and on an 8-device mesh; prints (one JSON line per variant) the max abs differences of losses,
params and batch stats.
"""

import json
import sys

import jax
import numpy as np
import optax
from mltm_jax.config import Config
from mltm_jax.models.two_tower import build_towers
from mltm_jax import model as model_lib
from mltm_jax.train import state as state_lib
from mltm_jax.train.step import make_train_step
from mltm_jax.sharding import make_mesh, replicated, to_global


def main(loss: str, ot: str) -> None:
  cfg = Config(
    sample_rate=8000,
    clip_seconds=2.0,
    n_fft=256,
    hop_length=128,
    fmax=4000.0,
    cnn_channels="8,16",
    embed_dim=32,
    head_hidden=64,
    batch_size=32,
    loss=loss,
    ot=ot,
    ot_solver="native" if ot == "partial" else "ott",
    num_steps=10,
    dropout=0.0,
  )
  audio_tower, text_tower = build_towers(cfg, None)
  rng = np.random.default_rng(0)
  batches = [
    {
      "audio": rng.normal(size=(32, cfg.clip_samples)).astype(np.float32) * 0.1,
      "text": rng.normal(size=(32, 48)).astype(np.float32),
    }
    for _ in range(2)
  ]
  params, stats = model_lib.init_params(
    cfg, audio_tower, text_tower, batches[0]["text"][:2], jax.random.PRNGKey(0)
  )
  # Plain SGD with lr 1: the parameter change of the first step is minus the gradient,
  # so comparing changes compares gradients (and batch-norm statistics updates).
  tx = optax.sgd(1.0)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = make_mesh(devices)
    fresh = jax.tree.map(np.array, (params, stats))  # the step donates its input buffers
    state = jax.device_put(
      state_lib.create_state(cfg, *fresh, tx, jax.random.PRNGKey(1)), replicated(mesh)
    )
    step = make_train_step(cfg, audio_tower, text_tower, tx, mesh)
    losses, changes = [], []
    for b in batches:
      before = jax.device_get((state.params, state.batch_stats))
      state, m = step(state, to_global(mesh, b))
      after = jax.device_get((state.params, state.batch_stats))
      losses.append(float(m["loss"]))
      changes.append(jax.tree.map(lambda x, y: np.asarray(y, np.float64) - x, before, after))
    results.append((losses, changes))
  (l1, c1), (l8, c8) = results
  # Per leaf and step: max |change_8 - change_1| relative to max |change_1| (the gradient,
  # or the batch-stat update), floored at 1e-3 so leaves with ~0 gradient count absolutely.
  rel = jax.tree.map(
    lambda a, b: float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-3)), c1[0], c8[0]
  )
  flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(rel)}
  worst = max(flat.values())
  worst_outside_cnn = max(v for k, v in flat.items() if "'cnn'" not in k)
  for path, v in jax.tree_util.tree_leaves_with_path(rel):
    if v > 1e-6:
      print(jax.tree_util.keystr(path), v, file=sys.stderr)
  print(
    json.dumps(
      {
        "devices": len(jax.devices()),
        "loss_1": l1,
        "loss_8": l8,
        "loss_diff": max(abs(a - b) for a, b in zip(l1, l8)),
        "grad_rel_diff": worst,
        "grad_rel_diff_outside_cnn": worst_outside_cnn,
      }
    )
  )


if __name__ == "__main__":
  for variant in sys.argv[1:]:  # each "loss,ot": one JSON line
    main(*variant.split(","))
