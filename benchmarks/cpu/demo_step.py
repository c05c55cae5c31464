"""The demo train step of the ``step`` and ``memory`` benchmarks, ours (no torch import).

``bench_config``: ``Config()`` (``embed_dim`` 256) at a batch size, or the small model of
tests/sharding_check.py (``tiny``); ``demo_inputs``: its initial parameters and a random
batch (log-mels [B, 251, 64] around -40 dB, text features [B, 384]); ``OursStep``: the
jit-compiled step on one device, its state chained (donated) as in training.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.cpu.bench_psd import step_config
from mltm_jax.config import Config
from mltm_jax.models.two_tower import build_towers
from mltm_jax import model as model_lib
from mltm_jax.train import state as state_lib
from mltm_jax.train.step import make_train_step
from mltm_jax.sharding import make_mesh, replicated, to_global

BATCH = 128
TINY_BATCH = 8
TEXT_FEATURES = 384  # the bundled MiniLM-L6's hidden size
TINY_TEXT_FEATURES = 48


def bench_config(tiny: bool, batch: int | None = None) -> Config:
  cfg = step_config(256 if not tiny else 32, tiny)
  return cfg.replace(batch_size=batch or (TINY_BATCH if tiny else BATCH))


def demo_inputs(cfg: Config, text_dim: int, seed: int = 0):
  """(params, batch_stats, numpy batch {"audio": [B, F, M] log-mels, "text": [B, H]})."""
  audio_tower, text_tower = build_towers(cfg, None)
  frames = 1 + cfg.clip_samples // cfg.hop_length
  rng = np.random.default_rng(seed)
  batch = {
    "audio": (rng.normal(size=(cfg.batch_size, frames, cfg.n_mels)) * 10 - 40).astype(np.float32),
    "text": rng.normal(size=(cfg.batch_size, text_dim)).astype(np.float32),
  }
  params, stats = model_lib.init_params(
    cfg, audio_tower, text_tower, batch["text"][:2], jax.random.PRNGKey(0)
  )
  return params, stats, batch


class OursStep:
  """Our jit-compiled train step on one device, state chained (donated) as in training."""

  def __init__(self, cfg: Config, params, batch_stats, batch: dict):
    audio_tower, text_tower = build_towers(cfg, None)
    mesh = make_mesh(jax.devices()[:1])
    self.tx = state_lib.make_optimizer(cfg)
    start = state_lib.create_state(cfg, params, batch_stats, self.tx, jax.random.PRNGKey(1))
    self.state = jax.device_put(start, replicated(mesh))
    self.step = make_train_step(cfg, audio_tower, text_tower, self.tx, mesh)
    self.batch = to_global(mesh, batch)

  def __call__(self):
    self.state, metrics = self.step(self.state, self.batch)
    return metrics["loss"]
