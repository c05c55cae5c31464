"""Everything a run needs before its first step, shared by train and evaluate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mltm_jax.config import Config
from mltm_jax import frontend
from mltm_jax.data.pipeline import Split, attach_mels, eval_audio, load_split
from mltm_jax.data.synthcaps import ensure_synthcaps
from mltm_jax.data.text import TextEncoder, text_encoder_dir, text_inputs
from mltm_jax.models.two_tower import build_towers, mel_config
from mltm_jax.train import state as state_lib
from mltm_jax.train.step import make_embed_fns, make_mesh, replicated

SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}


def dataset_root(cfg: Config, progress: bool = True) -> Path:
  """The dataset directory; SynthCaps is rendered there first if it is not complete."""
  root = Path(cfg.data_dir)
  if cfg.dataset == "synthcaps":
    render = lambda: ensure_synthcaps(
      root, cfg.sizes, seed=cfg.synthcaps_seed, sample_rate=cfg.sample_rate
    )
    if jax.process_index() == 0:
      render()
    if jax.process_count() > 1:  # the others wait for process 0, then render only where
      from jax.experimental import multihost_utils  # root is not shared (host-local disks)

      multihost_utils.sync_global_devices(f"synthcaps {root}")
      if jax.process_index() > 0:
        render()
    return root
  if not root.is_dir():
    raise FileNotFoundError(f"--data_dir={root}: no such directory")
  return root


@dataclasses.dataclass
class Run:
  """Model, devices and optimizer of a config (no data, no state values)."""

  cfg: Config
  mesh: Any
  encoder: TextEncoder
  audio_tower: Any
  text_tower: Any
  tx: Any
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

  def init_state(self) -> state_lib.TrainState:
    """A fresh replicated train state (pretrained text weights loaded when fine-tuned, the
    audio trunk's from --audio_init when set)."""
    cfg = self.cfg
    rng = jax.random.PRNGKey(cfg.seed)
    r_init, r_train = jax.random.split(rng)
    example = (
      np.zeros((2, self.encoder.config.hidden_size), np.float32)
      if cfg.freeze_text
      else self.encoder.tokens(["", ""])
    )
    params, stats = state_lib.init_params(cfg, self.audio_tower, self.text_tower, example, r_init)
    if cfg.audio_init:
      params["audio"], stats = load_audio_init(cfg, params["audio"], stats)
    if not cfg.freeze_text:
      params["text"] = dict(params["text"])
      params["text"]["encoder"] = jax.tree.map(np.asarray, self.encoder.params)
    state = state_lib.create_state(cfg, params, stats, self.tx, r_train)
    return jax.device_put(state, replicated(self.mesh))

  def abstract_state(self) -> Any:
    """The train state as shapes, dtypes and replicated shardings, computing nothing: the
    restore target of a checkpoint (no initialisation run, no --audio_init weights read)."""
    plain = dataclasses.replace(self, cfg=self.cfg.replace(audio_init=""))
    rep = replicated(self.mesh)
    return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
      jax.eval_shape(plain.init_state),
    )

  def text_inputs(self, split: Split, cache_dir: Path, progress: bool = True) -> Any:
    return text_inputs(self.encoder, split.captions, self.cfg.freeze_text, cache_dir, progress)

  def embed_split(
    self, state: state_lib.TrainState, split: Split, text: Any, progress: bool = False
  ) -> tuple[np.ndarray, np.ndarray]:
    """(audio [N, D], text [Nc, D]) eval-mode embeddings of a split."""
    from mltm_jax.evaluation.evaluate import embed_in_batches

    n_dev = self.mesh.devices.size
    bs = self.cfg.eval_batch_size
    if self.cfg.long_audio == "chunk":
      audio = self.embed_waves(state, split.waves, progress)
    else:
      inputs = eval_audio(split, self.cfg.clip_samples, self.clip_frames)  # read per batch
      audio = embed_in_batches(
        lambda x: self.embed_audio(state.params, state.batch_stats, x),
        inputs,
        bs,
        n_dev,
        "embed audio",
        progress,
      )
    text_emb = embed_in_batches(
      lambda t: self.embed_text(state.params, t), text, bs, n_dev, "embed text", progress
    )
    return audio, text_emb

  def embed_waves(
    self, state: state_lib.TrainState, waves: Any, progress: bool = False
  ) -> np.ndarray:
    """[N, D] eval-mode embeddings of N waves of any length (float32 [T_i] each, model rate):
    windows of the clip length every --chunk_hop_seconds, pooled (mltm_jax.inference.chunking).
    """
    from mltm_jax.inference.chunking import embed_long, hop_samples

    def embed_windows(w):  # [B, clip_samples] -> [B, D]; log-mels as the run's eval inputs
      x = self.mel_fn(w) if self.cfg.precompute_mel else w
      return self.embed_audio(state.params, state.batch_stats, x)

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


def build_run(cfg: Config) -> Run:
  mesh = make_mesh()
  encoder = TextEncoder(
    text_encoder_dir(cfg.text_encoder_dir), cfg.max_text_length, cfg.text_pooling
  )
  audio_tower, text_tower = build_towers(cfg, encoder.config)
  tx = state_lib.make_optimizer(cfg)
  embed_audio, embed_text = make_embed_fns(audio_tower, text_tower, mesh)
  mcfg = mel_config(cfg)
  mel_fn = jax.jit(lambda w: frontend.log_mel(w, mcfg))
  return Run(cfg, mesh, encoder, audio_tower, text_tower, tx, embed_audio, embed_text, mel_fn)


def load(cfg: Config, which: str, progress: bool = True) -> Split:
  """A split by role: which in {"train", "val", "test"}."""
  if cfg.dataset == "prepared":  # launch.prepare names its splits train / val / test
    from mltm_jax.data.prepared import load_prepared_split

    return load_prepared_split(
      dataset_root(cfg, progress), which, cfg.sample_rate, progress=progress
    )
  return load_split(dataset_root(cfg, progress), SPLITS[which], cfg.sample_rate, progress=progress)
