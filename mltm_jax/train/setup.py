"""Everything a run needs before its first step, shared by train and evaluate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mltm_jax.config import Config
from mltm_jax import frontend
from mltm_jax.data.pipeline import Split, attach_mels, eval_mels, eval_waves, load_split
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
    if jax.process_index() == 0:
      ensure_synthcaps(root, cfg.sizes, seed=cfg.synthcaps_seed, sample_rate=cfg.sample_rate)
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

  def prepare_audio(self, split: Split, progress: bool = True) -> None:
    """Precomputes the split's log-mels when --precompute_mel (else nothing to do)."""
    if self.cfg.precompute_mel:
      attach_mels(split, self.mel_fn, self.cfg.clip_samples, self.cfg.hop_length, progress=progress)

  def init_state(self) -> state_lib.TrainState:
    """A fresh replicated train state (pretrained text weights loaded when fine-tuned)."""
    cfg = self.cfg
    rng = jax.random.PRNGKey(cfg.seed)
    r_init, r_train = jax.random.split(rng)
    example = (
      np.zeros((2, self.encoder.config.hidden_size), np.float32)
      if cfg.freeze_text
      else self.encoder.tokens(["", ""])
    )
    params, stats = state_lib.init_params(cfg, self.audio_tower, self.text_tower, example, r_init)
    if not cfg.freeze_text:
      params["text"] = dict(params["text"])
      params["text"]["encoder"] = jax.tree.map(np.asarray, self.encoder.params)
    state = state_lib.create_state(cfg, params, stats, self.tx, r_train)
    return jax.device_put(state, replicated(self.mesh))

  def text_inputs(self, split: Split, cache_dir: Path, progress: bool = True) -> Any:
    return text_inputs(self.encoder, split.captions, self.cfg.freeze_text, cache_dir, progress)

  def embed_split(
    self, state: state_lib.TrainState, split: Split, text: Any, progress: bool = False
  ) -> tuple[np.ndarray, np.ndarray]:
    """(audio [N, D], text [Nc, D]) eval-mode embeddings of a split."""
    from mltm_jax.evaluation.evaluate import embed_in_batches

    n_dev = self.mesh.devices.size
    bs = self.cfg.eval_batch_size
    inputs = (
      eval_mels(split, self.clip_frames)
      if split.mels is not None
      else eval_waves(split, self.cfg.clip_samples)
    )
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
  return load_split(dataset_root(cfg, progress), SPLITS[which], cfg.sample_rate, progress=progress)
