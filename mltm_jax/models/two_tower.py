"""The two towers: waveform -> audio embedding, caption -> text embedding.

Both end in a ``ProjectionHead`` and return unit-norm [B, D] float32 embeddings.
Flax Linen throughout. The ground metric and loss parameters are not part of
these modules (they are plain pytrees, see ``mltm_jax.metric``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mltm_jax import frontend
from mltm_jax.config import Config
from mltm_jax.models.audio_cnn import SmallCNN
from mltm_jax.models.bert import BertConfig, BertEncoder, pool_text
from mltm_jax.models.heads import ProjectionHead
from mltm_jax.models.panns import PANNS_MODELS
from mltm_jax.models.temporal_cnn import TemporalCNN


class AudioTower(nn.Module):
  """Waveforms [B, T] (or their log-mel [B, frames, n_mels]) -> [B, D] unit embeddings.

  log-mel (JAX) -> CNN (input batch norm, then SpecAugment when training)
  -> PANNs pooling -> projection head. ``encoder``: "temporal_cnn" (1-D convs
  over time, the CPU demo), "small_cnn" (2-D PANNs-style blocks) or a PANNs CNN
  "cnn10", "cnn14", "resnet38" (without fc1: the head takes its pooled embedding).
  """

  mel: frontend.MelConfig
  encoder: str
  channels: tuple[int, ...]
  embed_dim: int
  head_hidden: int
  dropout: float
  spec_augment: bool = True
  spec_time_width: int = 16
  spec_freq_width: int = 8
  double_conv: bool = False
  strided_stem: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio: jax.Array, *, train: bool) -> jax.Array:
    mel = frontend.log_mel(audio, self.mel) if audio.ndim == 2 else audio
    if self.encoder == "temporal_cnn":
      cnn = TemporalCNN(
        channels=self.channels,
        dropout=self.dropout,
        spec_augment=self.spec_augment,
        time_width=self.spec_time_width,
        freq_width=self.spec_freq_width,
        dtype=self.dtype,
        name="cnn",
      )
    elif self.encoder == "small_cnn":
      cnn = SmallCNN(
        channels=self.channels,
        double_conv=self.double_conv,
        strided_stem=self.strided_stem,
        dropout=self.dropout,
        spec_augment=self.spec_augment,
        time_width=self.spec_time_width,
        freq_width=self.spec_freq_width,
        dtype=self.dtype,
        name="cnn",
      )
    elif self.encoder in PANNS_MODELS:
      cnn = PANNS_MODELS[self.encoder](
        dropout=self.dropout,
        include_fc1=False,
        spec_augment=self.spec_augment,
        time_width=self.spec_time_width,
        freq_width=self.spec_freq_width,
        dtype=self.dtype,
        name="cnn",
      )
    else:
      raise ValueError(f"unknown audio encoder {self.encoder!r}")
    feats = cnn(mel, train=train)
    return ProjectionHead(
      self.head_hidden, self.embed_dim, self.dropout, dtype=self.dtype, name="head"
    )(feats, train=train)


class TextTower(nn.Module):
  """Captions -> [B, D] unit embeddings.

  With ``bert`` set, inputs are token arrays {input_ids, attention_mask,
  token_type_ids} [B, L] and the encoder runs (fine-tuned). With ``bert=None``
  inputs are pooled encoder features [B, H] computed once by a frozen encoder.
  """

  bert: BertConfig | None
  pooling: str
  embed_dim: int
  head_hidden: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Any, *, train: bool) -> jax.Array:
    if self.bert is not None:
      hidden = BertEncoder(self.bert, dtype=self.dtype, name="encoder")(
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs.get("token_type_ids"),
        deterministic=not train,
      )
      feats = pool_text(hidden, inputs["attention_mask"], self.pooling)
    else:
      feats = inputs
    return ProjectionHead(
      self.head_hidden, self.embed_dim, self.dropout, dtype=self.dtype, name="head"
    )(feats.astype(jnp.float32), train=train)


def mel_config(cfg: Config) -> frontend.MelConfig:
  return frontend.MelConfig(
    sample_rate=cfg.sample_rate,
    n_fft=cfg.n_fft,
    win_length=cfg.n_fft,
    hop_length=cfg.hop_length,
    n_mels=cfg.n_mels,
    fmin=cfg.fmin,
    fmax=cfg.fmax,
  )


def compute_dtype(cfg: Config):
  return jnp.bfloat16 if cfg.precision == "bfloat16" else jnp.float32


def build_towers(cfg: Config, bert: BertConfig | None) -> tuple[AudioTower, TextTower]:
  """The two towers for a config; ``bert`` is None when the text encoder is frozen."""
  dtype = compute_dtype(cfg)
  audio = AudioTower(
    mel=mel_config(cfg),
    encoder=cfg.audio_encoder,
    channels=cfg.channels,
    embed_dim=cfg.embed_dim,
    head_hidden=cfg.head_hidden,
    dropout=cfg.dropout,
    spec_augment=cfg.spec_augment,
    spec_time_width=cfg.spec_time_width,
    spec_freq_width=cfg.spec_freq_width,
    double_conv=cfg.cnn_double_conv,
    strided_stem=cfg.cnn_strided_stem,
    dtype=dtype,
  )
  text = TextTower(
    bert=None if cfg.freeze_text else bert,
    pooling=cfg.text_pooling,
    embed_dim=cfg.embed_dim,
    head_hidden=cfg.head_hidden,
    dropout=cfg.dropout,
    dtype=dtype,
  )
  return audio, text
