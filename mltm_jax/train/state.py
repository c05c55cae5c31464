"""Train state, optimizer chain and parameter initialisation."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.losses import init_loss_params


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training (all leaves are arrays).

  params: {"audio": flax params, "text": flax params, "metric": metric params,
           "loss": loss params}.
  batch_stats: the audio tower's batch-norm running statistics.
  skipped: number of updates skipped because the loss or gradient was not finite.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  skipped: jax.Array


def learning_rate_schedule(cfg: Config) -> optax.Schedule:
  """Linear warm-up, then step decay x lr_decay_factor every lr_decay_steps."""
  base: optax.Schedule = optax.constant_schedule(cfg.learning_rate)
  if cfg.lr_decay_steps:
    boundaries = {
      k: cfg.lr_decay_factor
      for k in range(cfg.lr_decay_steps, cfg.num_steps + 1, cfg.lr_decay_steps)
    }
    base = optax.piecewise_constant_schedule(cfg.learning_rate, boundaries)
  if cfg.warmup_steps:
    warm = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
    return optax.join_schedules([warm, lambda s: base(s + cfg.warmup_steps)], [cfg.warmup_steps])
  return base


def make_optimizer(cfg: Config) -> optax.GradientTransformationExtraArgs:
  """clip -> Adam(schedule) -> PSD projection of the metric (last, needs params)."""
  parts = []
  if cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  parts.append(optax.adam(learning_rate_schedule(cfg)))
  parts.append(metric_lib.psd_projection(every=cfg.psd_every))
  return optax.chain(*parts)


def init_params(
  cfg: Config, audio_tower, text_tower, text_example: Any, rng: jax.Array
) -> tuple[Any, Any]:
  """Random initial params and batch stats. text_example: one batch of text inputs."""
  r_audio, r_text, r_metric, r_aug = jax.random.split(rng, 4)
  waves = jnp.zeros((2, cfg.clip_samples), jnp.float32)
  audio_vars = audio_tower.init({"params": r_audio, "dropout": r_aug}, waves, train=False)
  text_vars = text_tower.init({"params": r_text, "dropout": r_aug}, text_example, train=False)
  metric_params = metric_lib.init_metric(
    cfg.effective_metric,
    cfg.embed_dim,
    rank=cfg.metric_rank or None,
    init=cfg.metric_init,
    rng=r_metric,
  )
  params = {
    "audio": audio_vars["params"],
    "text": text_vars["params"],
    "metric": metric_params,
    "loss": init_loss_params(cfg),
  }
  return params, audio_vars.get("batch_stats", {})


def create_state(
  cfg: Config, params: Any, batch_stats: Any, tx: optax.GradientTransformation, rng: jax.Array
) -> TrainState:
  return TrainState(
    step=jnp.zeros([], jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=rng,
    skipped=jnp.zeros([], jnp.int32),
  )
