"""A 1-D (time) convolutional audio encoder: the demo's CPU tower.

Mel bins are channels and convolutions run over time, so every layer is one
large matrix product (its speed against the 2-D ``SmallCNN``: WORKSPACE.md, Results).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mltm_jax.frontend import spec_augment


class TemporalCNN(nn.Module):
  """log-mel [B, frames, n_mels] -> embedding [B, channels[-1]] float32.

  bn0 (per mel bin) -> SpecAugment (training) -> blocks of Conv1D (kernel 5 for
  the first, 3 after; stride 2 for the first two) - BatchNorm - ReLU - Dropout ->
  max + mean over time (the PANNs pooling). Batch statistics in the
  'batch_stats' collection; SpecAugment and dropout draw from the 'dropout' rng.
  """

  channels: Sequence[int] = (128, 256, 256)
  dropout: float = 0.2
  spec_augment: bool = True
  time_width: int = 16
  freq_width: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, mel: jax.Array, *, train: bool) -> jax.Array:
    if mel.ndim != 3:
      raise ValueError(f"TemporalCNN: mel must be [B, frames, n_mels], got shape {mel.shape}")
    norm = lambda name: nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, name=name
    )
    x = norm("bn0")(mel.astype(jnp.float32))
    if train and self.spec_augment:
      x = spec_augment(
        self.make_rng("dropout"), x, time_width=self.time_width, freq_width=self.freq_width
      )
    x = x.astype(self.dtype)
    for i, c in enumerate(self.channels):
      x = nn.Conv(
        c,
        (5,) if i == 0 else (3,),
        strides=(2,) if i < 2 else (1,),
        use_bias=False,
        dtype=self.dtype,
        name=f"conv{i}",
      )(x)
      x = nn.relu(norm(f"bn{i + 1}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = x.astype(jnp.float32)
    return jnp.max(x, axis=1) + jnp.mean(x, axis=1)
