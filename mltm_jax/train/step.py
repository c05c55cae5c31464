"""The train step, compiled once over a device mesh (mltm_jax.sharding).

The batch is sharded along the mesh's ``data`` axis, the state is replicated, and the loss is
computed on the GLOBAL batch (XLA gathers the [B, D] embeddings, so the OT plan couples all B
pairs whatever the number of devices or hosts). Batch-norm statistics are global too.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from mltm_jax.config import Config
from mltm_jax.losses import batch_loss
from mltm_jax.sharding import batch_sharded, replicated
from mltm_jax.train.state import TrainState


def make_train_step(
  cfg: Config, audio_tower, text_tower, tx: optax.GradientTransformation, mesh: Mesh
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """jit-compiled (state, batch) -> (state, metrics).

  batch: {"audio": [B, T] waveforms or [B, frames, n_mels] log-mels, float32;
          "text": [B, H] features or a token dict of [B, L] arrays},
  sharded over ``data``. A step whose loss or gradient norm is not finite leaves
  params, optimizer and batch stats unchanged and increments ``state.skipped``.
  """

  def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    r_drop_a, r_drop_t = jax.random.split(rng)

    def loss_fn(params):
      audio, new_vars = audio_tower.apply(
        {"params": params["audio"], "batch_stats": state.batch_stats},
        batch["audio"],
        train=True,
        rngs={"dropout": r_drop_a},
        mutable=["batch_stats"],
      )
      text = text_tower.apply(
        {"params": params["text"]}, batch["text"], train=True, rngs={"dropout": r_drop_t}
      )
      loss, aux = batch_loss(cfg, audio, text, params["metric"], params["loss"], state.step)
      return loss, (aux, new_vars["batch_stats"])

    (loss, (aux, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    new_state = state.replace(
      step=state.step + 1,
      params=keep(new_params, state.params),
      opt_state=keep(new_opt, state.opt_state),
      batch_stats=keep(new_stats, state.batch_stats),
      skipped=state.skipped + (~ok).astype(jnp.int32),
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "skipped": new_state.skipped, **aux}
    return new_state, metrics

  rep, data = replicated(mesh), batch_sharded(mesh)
  return jax.jit(step_fn, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)
