"""Projection heads into the joint embedding space."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ProjectionHead(nn.Module):
  """Linear(in, hidden) - ReLU - Dropout - Linear(hidden, out), then L2-normalise.

  The paper's heads: Linear(2048, 2048) - ReLU - Linear(2048, 1024), dropout 0.2.
  Input [B, C] -> output [B, out_dim] float32 with unit rows.
  """

  hidden_dim: int
  out_dim: int
  dropout: float = 0.2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x)
    x = nn.relu(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(self.out_dim, dtype=self.dtype, name="fc2")(x)
    return l2_normalize(x.astype(jnp.float32))


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows of x [..., D] scaled to unit norm (zero rows stay zero, gradient finite)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))
