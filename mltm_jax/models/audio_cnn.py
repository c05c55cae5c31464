"""A small PANNs-style CNN audio encoder (Flax Linen), sized for a 2-core CPU.

Layout follows PANNs Cnn10/Cnn14: BatchNorm over mel bins on the input (bn0),
SpecAugment in training (after bn0, as PANNs does), then conv blocks
(3x3 conv -> BN -> ReLU [-> 3x3 conv -> BN -> ReLU] -> 2x2 average pool -> dropout),
then the clip embedding: mean over frequency, then max + mean over time.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mltm_jax.frontend import spec_augment as _spec_augment

# PANNs init_layer uses Xavier-uniform for convs; BN starts at scale 1, bias 0.
_conv_init = nn.initializers.xavier_uniform()


class ConvBlock(nn.Module):
  """(3x3 conv, BN, ReLU) x (1 or 2), then 2x2 average pooling.

  With strided=True the first conv has stride 2 and the pooling is skipped, so the
  block never builds a full-resolution activation (a quarter of the positions).
  Input [B, T, F, C_in] -> output [B, T // 2, F // 2, features]
  (strided: [B, ceil(T / 2), ceil(F / 2), features]). Same arithmetic as PyTorch
  Conv2d(3, padding=1, bias=False) -> BatchNorm2d -> ReLU -> avg_pool2d(2).
  """

  features: int
  double_conv: bool = False
  strided: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i in range(2 if self.double_conv else 1):
      stride = 2 if (self.strided and i == 0) else 1
      # Explicit (1, 1) padding = PyTorch Conv2d(padding=1), also for stride 2
      # (where flax "SAME" would pad (0, 1) and shift the sampling grid).
      x = nn.Conv(
        self.features,
        (3, 3),
        strides=(stride, stride),
        padding=((1, 1), (1, 1)),
        use_bias=False,
        kernel_init=_conv_init,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=f"conv{i}",
      )(x)
      x = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=f"bn{i}",
      )(x)
      x = nn.relu(x)
    if self.strided:
      return x
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class SmallCNN(nn.Module):
  """PANNs-style CNN encoder: log-mel [B, frames, n_mels] -> embedding [B, channels[-1]].

  Defaults: 4 single-conv blocks (16, 32, 64, 128) with a strided stem, about 98k
  parameters.

  Attributes:
    channels: output channels of each conv block (num_blocks = len(channels)).
    double_conv: two 3x3 convs per block (PANNs) instead of one.
    strided_stem: block 0 downsamples with a stride-2 first conv instead of a
      2x2 average pool after it (not PANNs; much cheaper on CPU).
    dropout: dropout rate after each block (PANNs Cnn14: 0.2).
    spec_augment: apply SpecAugment (PANNs defaults) after bn0 when train=True;
      it draws from the 'dropout' RNG stream, so training calls need
      rngs={'dropout': key} (dropout needs it anyway).
    time_width, freq_width, time_masks, freq_masks: SpecAugment settings (PANNs:
      64 frames at 100 frames/s; scale time_width to your frame rate, e.g. 16 at
      16 kHz / hop 640). Training inputs need frames >= time_width.
    dtype: compute dtype (e.g. jnp.bfloat16); params and batch_stats stay float32
      and the embedding is returned as float32.

  Call: `__call__(mel, *, train)`; mel float32 [B, frames, n_mels] (frames and
  n_mels >= 2 ** num_blocks). Batch norm uses batch statistics and updates the
  'batch_stats' collection when train=True (apply(..., mutable=['batch_stats'])),
  running averages when train=False.
  Returns float32 [B, channels[-1]].
  """

  channels: Sequence[int] = (16, 32, 64, 128)
  double_conv: bool = False
  strided_stem: bool = True
  dropout: float = 0.2
  spec_augment: bool = True
  time_masks: int = 2
  time_width: int = 64
  freq_masks: int = 2
  freq_width: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, mel: jax.Array, *, train: bool) -> jax.Array:
    if mel.ndim != 3:
      raise ValueError(f"SmallCNN: mel must be [B, frames, n_mels], got shape {mel.shape}")
    min_size = 2 ** len(self.channels)
    if mel.shape[1] < min_size or mel.shape[2] < min_size:
      raise ValueError(
        f"SmallCNN: {len(self.channels)} blocks need frames and n_mels "
        f">= {min_size}, got mel shape {mel.shape}"
      )
    # bn0: per-mel-bin normalisation, statistics over batch and time.
    x = nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      name="bn0",
    )(mel.astype(jnp.float32))
    if train and self.spec_augment:
      x = _spec_augment(
        self.make_rng("dropout"),
        x,
        time_masks=self.time_masks,
        time_width=self.time_width,
        freq_masks=self.freq_masks,
        freq_width=self.freq_width,
      )
    x = x.astype(self.dtype)[..., None]  # [B, T, F, 1]
    for i, c in enumerate(self.channels):
      x = ConvBlock(
        c,
        double_conv=self.double_conv,
        strided=self.strided_stem and i == 0,
        dtype=self.dtype,
        name=f"block{i}",
      )(x, train=train)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = jnp.mean(x.astype(jnp.float32), axis=2)  # over frequency -> [B, T', C]
    return jnp.max(x, axis=1) + jnp.mean(x, axis=1)  # over time -> [B, C]
