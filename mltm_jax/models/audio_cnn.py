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

from mltm_jax.models.layers import MelEncoder, avg_pool2, batch_norm, check_mel, conv, time_pool


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
      x = conv(self.features, 3, self.dtype, f"conv{i}", stride)(x)
      x = nn.relu(batch_norm(train, self.dtype, f"bn{i}")(x))
    return x if self.strided else avg_pool2(x)


class SmallCNN(MelEncoder):
  """PANNs-style CNN encoder: log-mel [B, frames, n_mels] -> embedding [B, channels[-1]].

  Defaults: 4 single-conv blocks (16, 32, 64, 128) with a strided stem, about 98k
  parameters.

  Attributes:
    channels: output channels of each conv block (num_blocks = len(channels)).
    double_conv: two 3x3 convs per block (PANNs) instead of one.
    strided_stem: block 0 downsamples with a stride-2 first conv instead of a
      2x2 average pool after it (not PANNs; much cheaper on CPU).
    dropout (after each block), spec_augment, time_width, freq_width, time_masks,
      freq_masks, dtype: see `mltm_jax.models.layers.MelEncoder` (e.g. time_width 16 at
      16 kHz / hop 640).

  Call: `__call__(mel, *, train)`; mel float32 [B, frames, n_mels] (frames and
  n_mels >= 2 ** num_blocks). Batch norm uses batch statistics and updates the
  'batch_stats' collection when train=True (apply(..., mutable=['batch_stats'])),
  running averages when train=False.
  Returns float32 [B, channels[-1]].
  """

  channels: Sequence[int] = (16, 32, 64, 128)
  double_conv: bool = False
  strided_stem: bool = True

  @nn.compact
  def __call__(self, mel: jax.Array, *, train: bool) -> jax.Array:
    n = len(self.channels)
    check_mel(mel, "SmallCNN", 2**n, f"{n} blocks")
    x = self._front(mel, train)  # bn0: per mel bin, statistics over batch and time
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
    return time_pool(jnp.mean(x.astype(jnp.float32), axis=2))  # [B, T', C] -> [B, C]
