"""Pieces the audio encoders share (SmallCNN, TemporalCNN and the PANNs CNNs).

  batch_norm   BatchNorm over the last axis with PyTorch's defaults (momentum 0.1, eps 1e-5)
  conv         bias-free square conv, Xavier-uniform init, padding size // 2 (PyTorch's
               Conv2d(k, stride, padding=k // 2, bias=False) with PANNs' init_layer)
  avg_pool2    2x2 average pooling, stride 2, floor on odd sizes
  check_mel    the input check: mel [B, frames, n_mels], large enough for the downsampling
  MelEncoder   base of the encoders: shared fields, PANNs' input (bn0, then SpecAugment)
  time_pool    PANNs' clip pooling: max + mean over time

Modules are created inside the calling module's ``@nn.compact`` method, under the names given,
so the parameter trees are those of the modules that call them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mltm_jax.frontend import spec_augment

# PANNs' init_layer: Xavier-uniform for convs and linears, zero bias; BN scale 1, bias 0.
xavier = nn.initializers.xavier_uniform()


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """BatchNorm over the last axis with PyTorch's defaults (momentum 0.1, eps 1e-5): batch
  statistics (updating 'batch_stats') when ``train``, running averages otherwise; float32
  params, compute in ``dtype``."""
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


def conv(features: int, size: int, dtype: Any, name: str, stride: int = 1) -> nn.Conv:
  """Bias-free ``size`` x ``size`` conv with explicit padding size // 2 on every side, as
  PyTorch's Conv2d(size, stride, padding=size // 2, bias=False) (also for stride 2, where
  flax's "SAME" would pad (0, 1) and shift the sampling grid); Xavier-uniform kernel.
  [B, T, F, C_in] -> [B, ceil(T / stride), ceil(F / stride), features] for odd ``size``."""
  pad = size // 2
  return nn.Conv(
    features,
    (size, size),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    kernel_init=xavier,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


def avg_pool2(x: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, floor on odd sizes: [B, T, F, C] -> [B, T//2, F//2, C]."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def check_mel(mel: jax.Array, name: str, min_size: int = 1, sized_by: str = "") -> None:
  """Raises ValueError unless ``mel`` is [B, frames, n_mels] with frames and n_mels >=
  ``min_size``; ``sized_by``, if given, names what needs that size in the message."""
  if mel.ndim != 3:
    raise ValueError(f"{name}: mel must be [B, frames, n_mels], got shape {mel.shape}")
  if mel.shape[1] < min_size or mel.shape[2] < min_size:
    need = f"{sized_by} need frames and n_mels" if sized_by else "frames and n_mels must be"
    raise ValueError(f"{name}: {need} >= {min_size}, got mel shape {mel.shape}")


class MelEncoder(nn.Module):
  """Base of the audio encoders (log-mel [B, frames, n_mels] -> float32 [B, C]): the fields
  they share and PANNs' input stage.

  Attributes:
    dropout: dropout rate of the encoder's blocks (PANNs: 0.2).
    spec_augment: SpecAugment after bn0 when training; it draws from the 'dropout' rng
      stream, so training calls need rngs={'dropout': key}.
    time_masks, time_width, freq_masks, freq_width: SpecAugment settings (PANNs: 2 time
      stripes narrower than 64 frames at 100 frames/s, 2 frequency stripes narrower than 8
      bins; scale time_width to the frame rate in use). Training inputs need frames >=
      time_width.
    dtype: compute dtype; params and batch_stats stay float32, the embedding is float32.
  """

  dropout: float = 0.2
  spec_augment: bool = True
  time_masks: int = 2
  time_width: int = 64
  freq_masks: int = 2
  freq_width: int = 8
  dtype: Any = jnp.float32

  def _front(self, mel: jax.Array, train: bool) -> jax.Array:
    """bn0 (BatchNorm per mel bin, float32, submodule "bn0"), then SpecAugment when training
    with spec_augment on. mel [B, T, F] -> float32 [B, T, F]. Call from ``@nn.compact``."""
    x = batch_norm(train, jnp.float32, "bn0")(mel.astype(jnp.float32))
    if train and self.spec_augment:
      x = spec_augment(
        self.make_rng("dropout"),
        x,
        time_masks=self.time_masks,
        time_width=self.time_width,
        freq_masks=self.freq_masks,
        freq_width=self.freq_width,
      )
    return x


def time_pool(x: jax.Array) -> jax.Array:
  """PANNs' clip pooling: [B, T, C] -> float32 [B, C], max + mean over time."""
  x = x.astype(jnp.float32)
  return jnp.max(x, axis=1) + jnp.mean(x, axis=1)
