"""Train state, optimizer chain and the initial state of a run."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.sharding import replicated


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


def learning_rate_schedule(cfg: Config, peak: float | None = None) -> optax.Schedule:
  """Linear warm-up to ``peak`` (default --learning_rate), then step decay x lr_decay_factor
  every lr_decay_steps."""
  peak = cfg.learning_rate if peak is None else peak
  base: optax.Schedule = optax.constant_schedule(peak)
  if cfg.lr_decay_steps:
    boundaries = {
      k: cfg.lr_decay_factor
      for k in range(cfg.lr_decay_steps, cfg.num_steps + 1, cfg.lr_decay_steps)
    }
    base = optax.piecewise_constant_schedule(peak, boundaries)
  if cfg.warmup_steps:
    warm = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
    return optax.join_schedules([warm, lambda s: base(s + cfg.warmup_steps)], [cfg.warmup_steps])
  return base


def _param_groups(groups: dict[str, float]):
  """params -> a prefix tree of labels among ``groups``: "metric" (the metric), "text_encoder"
  (the fine-tuned text encoder, params["text"]["encoder"]), "rest" (everything else)."""

  def labels(params: Any) -> dict:
    out = {}
    for k, v in params.items():
      if k == "metric" and "metric" in groups:
        out[k] = "metric"
      elif k == "text" and "text_encoder" in groups:
        out[k] = {name: "text_encoder" if name == "encoder" else "rest" for name in v}
      else:
        out[k] = "rest"
    return out

  return labels


def make_optimizer(cfg: Config) -> optax.GradientTransformationExtraArgs:
  """clip -> Adam(schedule) -> PSD projection of the metric (last, needs params).

  With --metric_learning_rate > 0 the metric, and with --text_learning_rate > 0 the fine-tuned
  text encoder, have their own Adam at that peak rate (same warm-up and decay steps) and the
  rest keeps --learning_rate (optax.multi_transform); with neither the chain is the
  single-rate one (and its optimizer state has the single-rate structure)."""
  parts = []
  if cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  groups = {"rest": cfg.learning_rate}
  if cfg.metric_learning_rate > 0:
    groups["metric"] = cfg.metric_learning_rate
  if cfg.text_learning_rate > 0 and not cfg.freeze_text:
    groups["text_encoder"] = cfg.text_learning_rate
  if len(groups) > 1:
    parts.append(
      optax.multi_transform(
        {name: optax.adam(learning_rate_schedule(cfg, lr)) for name, lr in groups.items()},
        _param_groups(groups),
      )
    )
  else:
    parts.append(optax.adam(learning_rate_schedule(cfg)))
  parts.append(metric_lib.psd_projection(every=cfg.psd_every))
  return optax.chain(*parts)


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


def init_state(model: Any, tx: optax.GradientTransformation) -> TrainState:
  """The run's first state, replicated over the model's mesh: ``model.init_params`` (pretrained
  text encoder / --audio_init trunk included) from the first half of PRNGKey(--seed), the
  train rng (dropout, SpecAugment) from the second."""
  cfg = model.cfg
  r_init, r_train = jax.random.split(jax.random.PRNGKey(cfg.seed))
  params, stats = model.init_params(r_init)
  state = create_state(cfg, params, stats, tx, r_train)
  return jax.device_put(state, replicated(model.mesh))
