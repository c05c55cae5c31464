"""PANNs audio encoders (Kong et al. 2020) in Flax Linen: Cnn10, Cnn14 and ResNet38.

The architectures are those of the AudioSet-pretrained PANNs, so their PyTorch checkpoints
load tensor for tensor (see `mltm_jax.models.panns_convert`):

  log-mel [B, frames, 64] -> bn0 (BatchNorm per mel bin) -> SpecAugment (training only)
  -> trunk -> mean over frequency -> max + mean over time (the clip `embedding`)
  -> dropout 0.5 -> fc1 -> ReLU (PANNs' own "embedding"; its fc_audioset classifier is not
     part of these modules).

Trunks (every 3x3 conv has no bias and padding 1; BN: momentum 0.9 / eps 1e-5 = PyTorch's
momentum 0.1; dropout p after every block):
  Cnn10:    ConvBlocks 64, 128, 256, 512, each with 2x2 average pooling       -> 512-d
  Cnn14:    ConvBlocks 64, 128, 256, 512, 1024 (2x2 pooling), 2048 (no pooling) -> 2048-d
  ResNet38: ConvBlock 64 (2x2 pooling) -> residual stages of BasicBlocks, [3, 4, 6, 3] blocks
            of 64, 128, 256, 512 channels; the first block of stages 2-4 halves time and
            frequency -> 2x2 average pooling -> ConvBlock 2048 (no pooling)          -> 2048-d
ConvBlock: (3x3 conv, BN, ReLU) x 2, then average pooling.
BasicBlock: [2x2 avg pool if downsampling] -> 3x3 conv -> BN -> ReLU -> dropout 0.1 -> 3x3 conv
  -> BN, plus the shortcut (identity, or 2x2 avg pool -> 1x1 conv -> BN when downsampling),
  then ReLU. PANNs downsamples by average pooling, never by a strided conv.

Which tensor is the `embedding`: the pooled conv features (mean over frequency, then max + mean
over time), BEFORE fc1. docs/method.md section 2 feeds exactly this 2048-d vector (512-d for Cnn10)
to the projection MLP Linear(2048, 2048) - ReLU - Linear(2048, 1024), as the audio-text
retrieval line of work does (it keeps the PANNs trunk and drops fc1 and the classifier).
fc1's ReLU output (what PANNs itself returns as "embedding") is available with
`return_fc1=True` and `include_fc1=True`.

Pooling and sizes: average pooling floors odd sizes (as torch's avg_pool2d). Frames and mel
bins must each be >= 16 (Cnn10) or >= 32 (Cnn14, ResNet38).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mltm_jax.models.layers import (
  MelEncoder,
  avg_pool2,
  batch_norm,
  check_mel,
  conv,
  time_pool,
  xavier,
)

CNN10_CHANNELS = (64, 128, 256, 512)
CNN14_CHANNELS = (64, 128, 256, 512, 1024, 2048)
RESNET38_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (channels, blocks) per stage
RESNET38_STEM = 64
RESNET38_AFTER = 2048
PANNS_MEL_BINS = 64  # bn0 size of the AudioSet checkpoints


class PannsConvBlock(nn.Module):
  """(3x3 conv, BN, ReLU) x 2, then 2x2 average pooling (``pool=False``: none).

  Input [B, T, F, C_in] -> [B, T // 2, F // 2, features] ([B, T, F, features] without pooling).
  Params: conv1, bn1, conv2, bn2 (PANNs' names).
  """

  features: int
  pool: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i in (1, 2):
      x = conv(self.features, 3, self.dtype, f"conv{i}")(x)
      x = nn.relu(batch_norm(train, self.dtype, f"bn{i}")(x))
    return avg_pool2(x) if self.pool else x


class PannsBasicBlock(nn.Module):
  """PANNs' residual basic block (expansion 1).

  downsample=True: the main path starts with 2x2 average pooling and the shortcut is
  2x2 average pooling -> 1x1 conv (no bias) -> BN; [B, T, F, C_in] -> [B, T//2, F//2, features].
  downsample=False: identity shortcut (needs C_in == features), same spatial size.
  Params: conv1, bn1, conv2, bn2, and shortcut_conv, shortcut_bn when downsampling.
  """

  features: int
  downsample: bool = False
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if not self.downsample and x.shape[-1] != self.features:
      raise ValueError(
        f"PannsBasicBlock: identity shortcut needs {self.features} input channels, "
        f"got {x.shape[-1]}"
      )
    shortcut = x
    if self.downsample:
      x = avg_pool2(x)
    y = conv(self.features, 3, self.dtype, "conv1")(x)
    y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = batch_norm(train, self.dtype, "bn2")(conv(self.features, 3, self.dtype, "conv2")(y))
    if self.downsample:
      shortcut = conv(self.features, 1, self.dtype, "shortcut_conv")(x)
      shortcut = batch_norm(train, self.dtype, "shortcut_bn")(shortcut)
    return nn.relu(y + shortcut)


class _Panns(MelEncoder):
  """Shared front (bn0, SpecAugment) and head (pooling, fc1) of the PANNs CNNs.

  Attributes:
    dropout: dropout after every conv block / stage (PANNs: 0.2).
    fc1_dropout: dropout before fc1 (PANNs: 0.5); only on the fc1 path.
    include_fc1: create fc1 (embedding_dim -> embedding_dim, with bias). Keep it to load a
      PANNs checkpoint tensor for tensor; drop it in a retrieval tower (the projection head
      replaces it) so that it carries no dead parameters.
    spec_augment, time_masks, time_width, freq_masks, freq_width, dtype: see
      `mltm_jax.models.layers.MelEncoder` (outputs are float32).

  Call: ``__call__(mel, *, train, return_fc1=False)``; mel float32 [B, frames, n_mels].
  Returns the embedding float32 [B, embedding_dim] (pooled conv features, before fc1), or with
  return_fc1=True the pair (embedding, relu(fc1(dropout(embedding)))). Batch norm uses batch
  statistics and updates 'batch_stats' when train=True (apply(..., mutable=['batch_stats'])).
  Training calls need rngs={'dropout': key}.
  """

  fc1_dropout: float = 0.5
  include_fc1: bool = True

  embedding_dim = 0  # set by subclasses (class constant, not a module field)
  min_size = 1  # total downsampling factor of time and frequency

  def _trunk(self, x: jax.Array, train: bool) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(
    self, mel: jax.Array, *, train: bool, return_fc1: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    name = type(self).__name__
    check_mel(mel, name, self.min_size)
    if return_fc1 and not self.include_fc1:
      raise ValueError(f"{name}: return_fc1=True needs include_fc1=True")
    x = self._front(mel, train)  # bn0 per mel bin, SpecAugment
    x = self._trunk(x.astype(self.dtype)[..., None], train)  # [B, T', F', C]
    x = jnp.mean(x.astype(jnp.float32), axis=2)  # over frequency -> [B, T', C]
    embedding = time_pool(x)  # over time -> [B, C]
    if not self.include_fc1:
      return embedding
    h = nn.Dropout(self.fc1_dropout, deterministic=not train)(embedding)
    h = nn.Dense(
      self.embedding_dim,
      kernel_init=xavier,
      bias_init=nn.initializers.zeros,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name="fc1",
    )(h.astype(self.dtype))
    fc1 = nn.relu(h).astype(jnp.float32)
    return (embedding, fc1) if return_fc1 else embedding

  def _drop(self, x: jax.Array, train: bool) -> jax.Array:
    return nn.Dropout(self.dropout, deterministic=not train)(x)


def _conv_trunk(module: _Panns, x: jax.Array, train: bool, channels: Sequence[int], pools) -> Any:
  for i, (c, pool) in enumerate(zip(channels, pools)):
    x = PannsConvBlock(c, pool=pool, dtype=module.dtype, name=f"conv_block{i + 1}")(x, train=train)
    x = module._drop(x, train)
  return x


class Cnn10(_Panns):
  """PANNs Cnn10: 4 ConvBlocks (64, 128, 256, 512), 2x2 pooling each -> 512-d embedding.

  Params: bn0, conv_block1..conv_block4, fc1 (512 -> 512). See `_Panns` for the call.
  """

  embedding_dim = CNN10_CHANNELS[-1]
  min_size = 16

  def _trunk(self, x: jax.Array, train: bool) -> jax.Array:
    return _conv_trunk(self, x, train, CNN10_CHANNELS, [True] * 4)


class Cnn14(_Panns):
  """PANNs Cnn14: 6 ConvBlocks (64 .. 2048), 2x2 pooling except the last -> 2048-d embedding.

  Params: bn0, conv_block1..conv_block6, fc1 (2048 -> 2048). See `_Panns` for the call.
  """

  embedding_dim = CNN14_CHANNELS[-1]
  min_size = 32

  def _trunk(self, x: jax.Array, train: bool) -> jax.Array:
    return _conv_trunk(self, x, train, CNN14_CHANNELS, [True] * 5 + [False])


class ResNet38(_Panns):
  """PANNs ResNet38: ConvBlock 64 -> BasicBlock stages [3, 4, 6, 3] -> 2x2 avg pool
  -> ConvBlock 2048 (no pooling) -> 2048-d embedding.

  Params: bn0, conv_block1, layer{s}_{j} (stage s = 1..4, block j), conv_block_after1, fc1.
  block_dropout: dropout inside each BasicBlock (PANNs: 0.1). See `_Panns` for the call.
  """

  block_dropout: float = 0.1

  embedding_dim = RESNET38_AFTER
  min_size = 32

  def _trunk(self, x: jax.Array, train: bool) -> jax.Array:
    x = PannsConvBlock(RESNET38_STEM, dtype=self.dtype, name="conv_block1")(x, train=train)
    x = self._drop(x, train)
    for s, (c, blocks) in enumerate(RESNET38_STAGES):
      for j in range(blocks):
        x = PannsBasicBlock(
          c,
          downsample=s > 0 and j == 0,
          dropout=self.block_dropout,
          dtype=self.dtype,
          name=f"layer{s + 1}_{j}",
        )(x, train=train)
    x = self._drop(avg_pool2(x), train)
    x = PannsConvBlock(RESNET38_AFTER, pool=False, dtype=self.dtype, name="conv_block_after1")(
      x, train=train
    )
    return self._drop(x, train)


PANNS_MODELS: dict[str, type[_Panns]] = {"cnn10": Cnn10, "cnn14": Cnn14, "resnet38": ResNet38}
