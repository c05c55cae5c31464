"""Training objectives: embeddings + metric -> scalar loss.

``batch_loss`` is the one entry point the train step uses. Costs for m-LTM and
the entropic contrastive baseline come from the learned metric; the triplet,
ranking and InfoNCE baselines use cosine similarity (the official setup).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.losses.baselines import (
  bidirectional_ranking,
  entropic_infonce,
  symmetric_infonce,
  triplet_hardest_negative,
)
from mltm_jax.losses.mltm import mltm_loss


def init_loss_params(cfg: Config) -> dict[str, jax.Array]:
  """Trainable loss parameters (the InfoNCE log-temperature when learned)."""
  if cfg.loss == "contrastive" and cfg.learn_temperature:
    return {"log_temperature": jnp.log(jnp.asarray(cfg.temperature, jnp.float32))}
  return {}


def batch_loss(
  cfg: Config,
  audio: jax.Array,
  text: jax.Array,
  metric_params: dict,
  loss_params: dict,
  step: jax.Array | int = 0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Loss of a GLOBAL batch.

  Args:
    audio: [B, D] unit audio embeddings (row i pairs with text row i).
    text: [B, D] unit caption embeddings.
    metric_params: the ground metric (``mltm_jax.metric``), kind ``cfg.effective_metric``.
    loss_params: ``init_loss_params`` output.
    step: int32 scalar, the update being computed (``--triplet_warmup_steps``).
  Returns:
    (scalar loss, dict of scalar diagnostics).
  """
  if cfg.loss in ("mltm", "entropic_contrastive"):
    cost = metric_lib.mahalanobis(audio, text, metric_params, cfg.effective_metric)
    if cfg.loss == "mltm":
      loss, aux = mltm_loss(
        cost,
        eps=cfg.eps,
        variant=cfg.ot,
        mass=cfg.mass,
        tau=cfg.tau,
        normalize_max=cfg.normalize_cost,
        solver=cfg.resolved_ot_solver,  # partial OT: native (Config.problems refuses ott)
        differentiation=cfg.resolved_ot_differentiation,
        **({"momentum": cfg.ot_momentum} if cfg.ot_momentum != 1.0 else {}),
      )
      return loss, {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}
    return entropic_infonce(cost, cfg.eps, normalize_max=cfg.normalize_cost), {}
  sim = audio @ text.T
  if cfg.loss == "contrastive":
    temperature = (
      jnp.exp(loss_params["log_temperature"])
      if "log_temperature" in loss_params
      else cfg.temperature
    )
    return symmetric_infonce(sim, temperature), {"temperature": jnp.asarray(temperature)}
  if cfg.loss == "triplet":
    hardest = triplet_hardest_negative(sim, cfg.margin)
    if cfg.triplet_warmup_steps == 0:
      return hardest, {}
    warm = jnp.asarray(step) < cfg.triplet_warmup_steps
    return jnp.where(warm, bidirectional_ranking(sim, cfg.margin), hardest), {}
  if cfg.loss == "ranking":
    return bidirectional_ranking(sim, cfg.margin), {}
  raise ValueError(f"unknown loss {cfg.loss!r}")
