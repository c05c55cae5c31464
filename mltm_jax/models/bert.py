"""BERT text tower in Flax Linen, numerically equivalent to Hugging Face `BertModel`.

Architecture (post-LayerNorm, as in the original BERT and HF `BertModel`):

    x = LayerNorm(word_emb[ids] + pos_emb[0..L-1] + type_emb[token_type_ids]); dropout
    for each layer:
        a = Dense_o(MultiHeadSelfAttention(x, mask));  x = LayerNorm(x + dropout(a))
        f = Dense_2(act(Dense_1(x)));                  x = LayerNorm(x + dropout(f))

Parameters are float32; the `dtype` attribute selects the compute dtype (e.g. bfloat16).
The pooler of `BertModel` is not part of this module (the paper uses the raw [CLS] vector).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact erf form (HF "gelu")
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation
  "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "relu": jax.nn.relu,
}


@dataclass(frozen=True)
class BertConfig:
  """Hyper-parameters of a BERT encoder. Defaults are those of bert-base-uncased."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12

  def __post_init__(self) -> None:
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(
        f"BertConfig.hidden_act={self.hidden_act!r} not supported; "
        f"use one of {sorted(_ACTIVATIONS)}"
      )
    if self.hidden_size % self.num_attention_heads != 0:
      raise ValueError(
        f"BertConfig.hidden_size={self.hidden_size} is not divisible by "
        f"num_attention_heads={self.num_attention_heads}"
      )

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_json(cls, path_or_dict: str | os.PathLike | Mapping[str, Any]) -> "BertConfig":
    """Build from an HF `config.json` (a file, a directory holding one, or a dict).

    Unknown keys are ignored. A non-absolute `position_embedding_type` is rejected, since
    this encoder implements absolute position embeddings only.
    """
    if isinstance(path_or_dict, Mapping):
      raw = dict(path_or_dict)
      where = "config dict"
    else:
      path = Path(path_or_dict)
      if path.is_dir():
        path = path / "config.json"
      where = str(path)
      if not path.is_file():
        raise FileNotFoundError(f"BERT config not found: {path}")
      raw = json.loads(path.read_text())
    pos_type = raw.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise ValueError(
        f"{where}: position_embedding_type={pos_type!r} not supported (only 'absolute')"
      )
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names})


LOOKUPS = ("gather", "onehot_types", "onehot")


def _embed_lookup(table: nn.Embed, ids: Array, one_hot: bool, dtype: Any) -> Array:
  """Rows of `table` for ids [...] -> [..., H] in `dtype`.

  gather: jnp.take, whose gradient is a scatter-add (atomics on GPU: slow when many ids
  repeat, e.g. every token type 0 or the [PAD]/[CLS] rows). one_hot: one_hot(ids) @ table at
  HIGHEST precision (the same numbers), whose gradient is a matrix product.
  """
  if not one_hot:
    return table(ids)
  oh = jax.nn.one_hot(ids, table.num_embeddings, dtype=dtype)
  return jnp.einsum(
    "...n,nh->...h", oh, table.embedding.astype(dtype), precision=jax.lax.Precision.HIGHEST
  )


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout -> [B, L, H] in `dtype`.

  lookup: "gather" (take) for both tables, "onehot_types" (token types by a one-hot matrix
  product; the default), or "onehot" (both); the same parameters and numbers, different
  gradients' cost: every token type is 0, so gather's scatter-add gradient piles B x L
  atomic adds (emulated for bf16) onto one row (timings: WORKSPACE.md, Benchmarks, GPU).
  """

  config: BertConfig
  dtype: Any = jnp.float32
  lookup: str = "onehot_types"

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Array, *, deterministic: bool) -> Array:
    cfg = self.config
    seq_len = input_ids.shape[1]
    if seq_len > cfg.max_position_embeddings:
      raise ValueError(
        f"sequence length {seq_len} exceeds max_position_embeddings={cfg.max_position_embeddings}"
      )
    init = nn.initializers.normal(stddev=0.02)
    embed = lambda n, name: nn.Embed(
      n, cfg.hidden_size, embedding_init=init, dtype=self.dtype, param_dtype=jnp.float32, name=name
    )
    if self.lookup not in LOOKUPS:
      raise ValueError(f"lookup={self.lookup!r} is not one of {', '.join(LOOKUPS)}")
    word = embed(cfg.vocab_size, "word_embeddings")
    x = _embed_lookup(word, input_ids, self.lookup == "onehot", self.dtype)
    x = x + embed(cfg.max_position_embeddings, "position_embeddings")(jnp.arange(seq_len)[None, :])
    types = embed(cfg.type_vocab_size, "token_type_embeddings")
    x = x + _embed_lookup(types, token_type_ids, self.lookup != "gather", self.dtype)
    x = nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=self.dtype, param_dtype=jnp.float32, name="LayerNorm"
    )(x)
    return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
  """Multi-head self-attention with output projection (no residual / norm).

  x: [B, L, H]; bias: [B, 1, 1, L] additive float32 mask bias. Returns [B, L, H] in `dtype`.
  """

  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> Array:
    cfg = self.config
    b, length, _ = x.shape
    dense = lambda name: nn.Dense(
      cfg.hidden_size,
      kernel_init=nn.initializers.normal(stddev=0.02),
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name=name,
    )
    split = lambda t: t.reshape(b, length, cfg.num_attention_heads, cfg.head_dim)
    q = split(dense("query")(x))
    k = split(dense("key")(x))
    v = split(dense("value")(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(cfg.head_dim, self.dtype))
    # Softmax in float32 for stability; masked keys get a large negative additive bias.
    probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(self.dtype)
    probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, length, cfg.hidden_size)
    return dense("output")(ctx)


class BertLayer(nn.Module):
  """One post-LN transformer block: [B, L, H] -> [B, L, H] in `dtype`."""

  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> Array:
    cfg = self.config
    norm = lambda name: nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=self.dtype, param_dtype=jnp.float32, name=name
    )
    dense = lambda n, name: nn.Dense(
      n,
      kernel_init=nn.initializers.normal(stddev=0.02),
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name=name,
    )
    drop = nn.Dropout(cfg.hidden_dropout_prob)
    a = BertSelfAttention(cfg, dtype=self.dtype, name="attention")(
      x, bias, deterministic=deterministic
    )
    x = norm("attention_LayerNorm")(x + drop(a, deterministic=deterministic))
    h = _ACTIVATIONS[cfg.hidden_act](dense(cfg.intermediate_size, "intermediate")(x))
    h = dense(cfg.hidden_size, "output")(h)
    return norm("output_LayerNorm")(x + drop(h, deterministic=deterministic))


class BertEncoder(nn.Module):
  """BERT encoder (HF `BertModel` without pooler).

  Args of __call__:
    input_ids: [B, L] int32 token ids.
    attention_mask: [B, L] int32/bool, 1/True = real token, 0/False = padding.
    token_type_ids: [B, L] int32 or None (zeros).
    deterministic: False enables dropout (needs the 'dropout' rng).
  Returns: last hidden states [B, L, H] float32.
  """

  config: BertConfig
  dtype: Any = jnp.float32
  lookup: str = "onehot_types"  # embedding lookup, see BertEmbeddings

  @nn.compact
  def __call__(
    self,
    input_ids: Array,
    attention_mask: Array,
    token_type_ids: Array | None = None,
    *,
    deterministic: bool = True,
  ) -> Array:
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = BertEmbeddings(self.config, dtype=self.dtype, lookup=self.lookup, name="embeddings")(
      input_ids, token_type_ids, deterministic=deterministic
    )
    keep = jnp.asarray(attention_mask).astype(bool)[:, None, None, :]  # [B, 1, 1, L]
    bias = jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    for i in range(self.config.num_hidden_layers):
      x = BertLayer(self.config, dtype=self.dtype, name=f"layer_{i}")(
        x, bias, deterministic=deterministic
      )
    return x.astype(jnp.float32)


def pool_text(hidden: Array, attention_mask: Array, mode: str) -> Array:
  """Pool token states into one vector per caption.

  hidden: [B, L, H]; attention_mask: [B, L] (1 = real token).
  mode 'cls': the first ([CLS]) token, as in the paper.
  mode 'mean': mask-weighted mean over real tokens (sentence-transformers pooling).
  Returns [B, H] float32.
  """
  hidden = hidden.astype(jnp.float32)
  if mode == "cls":
    return hidden[:, 0, :]
  if mode == "mean":
    m = jnp.asarray(attention_mask).astype(jnp.float32)[:, :, None]
    return jnp.sum(hidden * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)
  raise ValueError(f"pool_text mode={mode!r} not supported; use 'cls' or 'mean'")
