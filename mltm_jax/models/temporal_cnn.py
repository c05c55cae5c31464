"""A 1-D (time) convolutional audio encoder: the demo's CPU tower.

Mel bins are channels and convolutions run over time, so every layer is one
large matrix product (its speed against the 2-D ``SmallCNN``: WORKSPACE.md, Results).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mltm_jax.models.layers import MelEncoder, batch_norm, check_mel, time_pool


class TemporalCNN(MelEncoder):
  """log-mel [B, frames, n_mels] -> embedding [B, channels[-1]] float32.

  bn0 (per mel bin) -> SpecAugment (training) -> blocks of Conv1D (kernel 5 for
  the first, 3 after; stride 2 for the first two) - BatchNorm - ReLU - Dropout ->
  max + mean over time (the PANNs pooling). Batch statistics in the
  'batch_stats' collection; SpecAugment and dropout draw from the 'dropout' rng. The batch
  norms compute in float32 whatever ``dtype``. Other attributes: see
  `mltm_jax.models.layers.MelEncoder` (here time_width defaults to 16).
  """

  channels: Sequence[int] = (128, 256, 256)
  time_width: int = 16

  @nn.compact
  def __call__(self, mel: jax.Array, *, train: bool) -> jax.Array:
    check_mel(mel, "TemporalCNN")
    x = self._front(mel, train).astype(self.dtype)
    for i, c in enumerate(self.channels):
      x = nn.Conv(
        c,
        (5,) if i == 0 else (3,),
        strides=(2,) if i < 2 else (1,),
        use_bias=False,
        dtype=self.dtype,
        name=f"conv{i}",
      )(x)
      x = nn.relu(batch_norm(train, jnp.float32, f"bn{i + 1}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return time_pool(x)
