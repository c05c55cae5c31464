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
    # the MelEncoder fields every encoder takes from the tower
    common = dict(
      dropout=self.dropout,
      spec_augment=self.spec_augment,
      time_width=self.spec_time_width,
      freq_width=self.spec_freq_width,
      dtype=self.dtype,
      name="cnn",
    )
    if self.encoder == "temporal_cnn":
      cnn = TemporalCNN(channels=self.channels, **common)
    elif self.encoder == "small_cnn":
      cnn = SmallCNN(
        channels=self.channels,
        double_conv=self.double_conv,
        strided_stem=self.strided_stem,
        **common,
      )
    elif self.encoder in PANNS_MODELS:
      cnn = PANNS_MODELS[self.encoder](include_fc1=False, **common)
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


def _config_values(cfg: Config, *names: str) -> dict[str, Any]:
  """{name: cfg.<name>}: the fields a module takes from the Config under the same names."""
  return {name: getattr(cfg, name) for name in names}


def mel_config(cfg: Config) -> frontend.MelConfig:
  """The log-mel settings of a config (window length = n_fft)."""
  same = _config_values(cfg, "sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax")
  return frontend.MelConfig(win_length=cfg.n_fft, **same)


def compute_dtype(cfg: Config):
  return jnp.bfloat16 if cfg.precision == "bfloat16" else jnp.float32


def build_towers(cfg: Config, bert: BertConfig | None) -> tuple[AudioTower, TextTower]:
  """The two towers for a config; ``bert`` is None when the text encoder is frozen."""
  # what both towers share: the projection head and the compute dtype
  shared = _config_values(cfg, "embed_dim", "head_hidden", "dropout")
  shared["dtype"] = compute_dtype(cfg)
  audio = AudioTower(
    mel=mel_config(cfg),
    encoder=cfg.audio_encoder,
    channels=cfg.channels,
    double_conv=cfg.cnn_double_conv,
    strided_stem=cfg.cnn_strided_stem,
    **_config_values(cfg, "spec_augment", "spec_time_width", "spec_freq_width"),
    **shared,
  )
  text = TextTower(bert=None if cfg.freeze_text else bert, pooling=cfg.text_pooling, **shared)
  return audio, text
