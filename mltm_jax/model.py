"""The model of a config: the two towers, the metric and their compiled embedders.

What training, evaluation, zero-shot, the Python API and search all use. A ``Model`` holds no
parameter values; functions that embed take ``variables``: anything with ``.params`` and
``.batch_stats`` (a TrainState, or the ``Variables`` a run directory restores for inference).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mltm_jax import frontend
from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.data.pipeline import Split, attach_mels, eval_audio
from mltm_jax.data.text import TextEncoder, text_encoder_dir, text_inputs
from mltm_jax.losses import init_loss_params
from mltm_jax.models.two_tower import build_towers, mel_config
from mltm_jax.sharding import batch_sharded, from_host_copy, make_mesh, replicated

__all__ = [
  "Model",
  "Variables",
  "build_model",
  "check_audio_init",
  "init_params",
  "make_embed_fns",
]


class Variables(NamedTuple):
  """What inference needs of a checkpoint: its step, params and batch statistics."""

  step: int
  params: Any
  batch_stats: Any


def _compiled_init(tower):
  """(params rng, dropout rng, example input) -> the tower's eval-mode variables, as one compiled
  program (op by op, a ResNet38 + BERT init dispatches thousands of operations)."""
  return jax.jit(lambda r, a, x: tower.init({"params": r, "dropout": a}, x, train=False))


def init_params(
  cfg: Config, audio_tower, text_tower, text_example: Any, rng: jax.Array
) -> tuple[Any, Any]:
  """Random initial params {"audio", "text", "metric", "loss"} and the audio tower's batch
  stats. text_example: one batch of text inputs ([2, H] features or a token dict)."""
  r_audio, r_text, r_metric, r_aug = jax.random.split(rng, 4)
  waves = jnp.zeros((2, cfg.clip_samples), jnp.float32)
  audio_vars = _compiled_init(audio_tower)(r_audio, r_aug, waves)
  text_vars = _compiled_init(text_tower)(r_text, r_aug, text_example)
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


def make_embed_fns(audio_tower, text_tower, mesh):
  """jit-compiled eval-mode embedders: (params, stats, audio [B, T] or [B, F, M]) -> [B, D] and
  (params, text inputs [B, ...]) -> [B, D]; B must be a multiple of the device count. Audio may
  be lazy rows (read on demand).

  With several processes, every process passes the same full batch and gets the full
  replicated embeddings back (each reads only its devices' rows of lazy audio)."""
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


@dataclasses.dataclass
class Model:
  """Towers, text encoder, devices and compiled embedders of a config (no parameter values)."""

  cfg: Config
  mesh: Any
  encoder: TextEncoder
  audio_tower: Any
  text_tower: Any
  embed_audio: Any
  embed_text: Any
  mel_fn: Any

  @property
  def clip_frames(self) -> int:
    return 1 + self.cfg.clip_samples // self.cfg.hop_length

  def prepare_audio(
    self, split: Split, progress: bool = True, cache_dir: str | Path | None = None
  ) -> None:
    """With --precompute_mel, gives the split a log-mel cache (each clip's log-mel computed on
    its first use, kept in an unlinked file under ``cache_dir``); else nothing to do."""
    del progress
    if self.cfg.precompute_mel:
      cfg = self.cfg
      attach_mels(split, self.mel_fn, cfg.clip_samples, cfg.hop_length, cfg.n_mels, cache_dir)

  def text_inputs(self, split: Split, cache_dir: Path, progress: bool = True) -> Any:
    """The split's caption inputs: frozen-encoder features [Nc, H] (cached) or tokens."""
    return text_inputs(self.encoder, split.captions, self.cfg.freeze_text, cache_dir, progress)

  def init_params(self, rng: jax.Array) -> tuple[Any, Any]:
    """Fresh params and batch stats, with the pretrained text encoder when it is fine-tuned and
    the audio trunk from --audio_init when set (host arrays)."""
    cfg = self.cfg
    example = (
      np.zeros((2, self.encoder.config.hidden_size), np.float32)
      if cfg.freeze_text
      else self.encoder.tokens(["", ""])
    )
    params, stats = init_params(cfg, self.audio_tower, self.text_tower, example, rng)
    if cfg.audio_init:
      params["audio"], stats = load_audio_init(cfg, params["audio"], stats)
    if not cfg.freeze_text:
      params["text"] = dict(params["text"])
      params["text"]["encoder"] = jax.tree.map(np.asarray, self.encoder.params)
    return params, stats

  def abstract_variables(self) -> dict:
    """{"step", "params", "batch_stats"} as shapes, dtypes and replicated shardings, computing
    nothing: the restore target of inference (no --audio_init weights read)."""
    plain = dataclasses.replace(self, cfg=self.cfg.replace(audio_init=""))
    params, stats = jax.eval_shape(plain.init_params, jax.random.PRNGKey(0))
    rep = replicated(self.mesh)
    shaped = lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep)
    return {
      "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
      "params": jax.tree.map(shaped, params),
      "batch_stats": jax.tree.map(shaped, stats),
    }

  def embed_split(
    self, variables: Any, split: Split, text: Any, progress: bool = False
  ) -> tuple[np.ndarray, np.ndarray]:
    """(audio [N, D], text [Nc, D]) eval-mode embeddings of a split (audio read per batch)."""
    from mltm_jax.evaluation.evaluate import embed_in_batches

    n_dev = self.mesh.devices.size
    bs = self.cfg.eval_batch_size
    if self.cfg.long_audio == "chunk":
      audio = self.embed_waves(variables, split.waves, progress)
    else:
      audio = embed_in_batches(
        lambda x: self.embed_audio(variables.params, variables.batch_stats, x),
        eval_audio(split, self.cfg.clip_samples, self.clip_frames),
        bs,
        n_dev,
        "embed audio",
        progress,
      )
    text_emb = embed_in_batches(
      lambda t: self.embed_text(variables.params, t), text, bs, n_dev, "embed text", progress
    )
    return audio, text_emb

  def embed_waves(self, variables: Any, waves: Any, progress: bool = False) -> np.ndarray:
    """[N, D] eval-mode embeddings of N waves of any length (float32 [T_i] each, model rate):
    windows of the clip length every --chunk_hop_seconds, pooled (mltm_jax.inference.chunking).
    """
    from mltm_jax.inference.chunking import embed_long, hop_samples

    def embed_windows(w):  # [B, clip_samples] -> [B, D]; log-mels as the run's eval inputs
      x = self.mel_fn(w) if self.cfg.precompute_mel else w
      return self.embed_audio(variables.params, variables.batch_stats, x)

    cfg = self.cfg
    n = len(waves) if hasattr(waves, "__len__") else None
    return embed_long(
      embed_windows,
      waves,
      cfg.clip_samples,
      hop_samples(cfg),
      cfg.eval_batch_size,
      self.mesh.devices.size,
      progress,
      n,
    )


def build_model(cfg: Config) -> Model:
  """The model of ``cfg`` over all devices (text encoder weights read from disk)."""
  mesh = make_mesh()
  encoder = TextEncoder(
    text_encoder_dir(cfg.text_encoder_dir), cfg.max_text_length, cfg.text_pooling
  )
  audio_tower, text_tower = build_towers(cfg, encoder.config)
  embed_audio, embed_text = make_embed_fns(audio_tower, text_tower, mesh)
  mcfg = mel_config(cfg)
  mel_fn = jax.jit(lambda w: frontend.log_mel(w, mcfg))
  return Model(cfg, mesh, encoder, audio_tower, text_tower, embed_audio, embed_text, mel_fn)


def _audio_trunk_shapes(cfg: Config) -> tuple[Any, Any]:
  """Shapes of the audio tower's trunk params and batch stats (nothing computed)."""
  audio_tower, _ = build_towers(cfg, None)
  mel = jax.ShapeDtypeStruct((2, 64, cfg.n_mels), np.float32)  # frames do not change shapes
  rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
  v = jax.eval_shape(lambda x: audio_tower.init(rngs, x, train=False), mel)
  return v["params"]["cnn"], v["batch_stats"]["cnn"]


def check_audio_init(cfg: Config) -> None:
  """Fails early (one line naming the architecture or the variables) when --audio_init does
  not fit --audio_encoder; reads only the checkpoint's metadata. No-op without --audio_init."""
  if not cfg.audio_init:
    return
  from mltm_jax.models.panns_convert import check_trunk_checkpoint

  params, stats = _audio_trunk_shapes(cfg)
  try:
    check_trunk_checkpoint(cfg.audio_init, cfg.audio_encoder, params, stats)
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"--audio_init: {e}") from None


def load_audio_init(cfg: Config, audio_params: Any, audio_stats: Any) -> tuple[Any, Any]:
  """The audio tower's variables with its PANNs trunk ('cnn') replaced by --audio_init's
  converted weights (fc1 dropped; the projection head keeps its random init)."""
  from mltm_jax.models.panns_convert import load_trunk_checkpoint

  try:
    trunk, trunk_stats = load_trunk_checkpoint(
      cfg.audio_init, cfg.audio_encoder, audio_params["cnn"], audio_stats["cnn"]
    )
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"--audio_init: {e}") from None
  return {**audio_params, "cnn": trunk}, {**audio_stats, "cnn": trunk_stats}
