"""The train step, compiled once over a device mesh.

The only module that knows about devices: the batch is sharded along the mesh's
``data`` axis, the state is replicated, and the loss is computed on the GLOBAL
batch (XLA gathers the [B, D] embeddings, so the OT plan couples all B pairs
whatever the number of devices or hosts). Batch-norm statistics are global too.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mltm_jax.config import Config
from mltm_jax.losses import batch_loss
from mltm_jax.train.state import TrainState

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices, axis ``data``.

  Devices are ordered by (process, id), so each process's devices hold a contiguous block of
  batch rows: process p's rows are ``host_slice(B, p, process_count)``.
  """
  if devices is None:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def to_global(mesh: Mesh, local: Any) -> Any:
  """Host-local numpy batch (leading axis = this host's rows) -> global sharded arrays."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
  )


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
      loss, aux = batch_loss(cfg, audio, text, params["metric"], params["loss"])
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


def from_host_copy(mesh: Mesh, full: Any) -> Any:
  """A batch that EVERY process holds in full (numpy, leading axis B) -> global arrays sharded
  over ``data`` (each process contributes its devices' rows). Global arrays pass unchanged."""

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x
    if not hasattr(x, "padded"):  # lazy rows (LazyRows) are read per addressable shard only
      x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, batch_sharded(mesh), lambda idx: x[idx])

  return jax.tree.map(one, full)


def make_embed_fns(audio_tower, text_tower, mesh: Mesh):
  """jit-compiled eval-mode embedders: (params, stats, audio [B, T] or [B, F, M]) -> [B, D] and
  (params, text inputs [B, ...]) -> [B, D]; B must be a multiple of the device count.

  With several processes, every process passes the same full batch (numpy) and gets the full
  replicated embeddings back."""
  rep, data = replicated(mesh), batch_sharded(mesh)

  def embed_audio(params, batch_stats, audio):
    return audio_tower.apply(
      {"params": params["audio"], "batch_stats": batch_stats}, audio, train=False
    )

  def embed_text(params, text):
    return text_tower.apply({"params": params["text"]}, text, train=False)

  audio_fn = jax.jit(embed_audio, in_shardings=(rep, rep, data), out_shardings=rep)
  text_fn = jax.jit(embed_text, in_shardings=(rep, data), out_shardings=rep)
  if jax.process_count() == 1:
    dense = lambda x: np.asarray(x) if hasattr(x, "padded") else x  # lazy rows -> numpy
    return (
      lambda params, stats, audio: audio_fn(params, stats, dense(audio)),
      lambda params, text: text_fn(params, text),
    )
  return (
    lambda params, stats, audio: audio_fn(params, stats, from_host_copy(mesh, audio)),
    lambda params, text: text_fn(params, from_host_copy(mesh, text)),
  )
