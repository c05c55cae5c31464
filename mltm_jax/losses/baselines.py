"""Baseline retrieval losses: pure JAX functions of a similarity or cost matrix.

Inputs are square float matrices ``[B, B]`` (float32 by default). For the
similarity-based losses ``sim[i, j]`` scores audio ``i`` against caption ``j``
(higher is more similar) and the positive pairs are on the diagonal. Every loss
is a float scalar, a *mean over the batch* (not a sum), so its scale does not
grow with ``B``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mltm_jax.ot.costs import normalize_cost_max

__all__ = [
  "bidirectional_ranking",
  "entropic_infonce",
  "symmetric_infonce",
  "triplet_hardest_negative",
]


def _check_square(x: jax.Array, fn: str, name: str) -> None:
  if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] < 1:
    raise ValueError(f"{fn}: {name} must be a non-empty square [B, B] matrix, got shape {x.shape}")


def _hinge_violations(sim: jax.Array, margin: float) -> tuple[jax.Array, jax.Array]:
  """Hinge violations of every negative, both directions, diagonal zeroed.

  Returns:
    ``(a2t, t2a)``, each float ``[B, B]``:
    ``a2t[i, j] = max(0, margin + sim[i, j] - sim[i, i])`` (audio ``i`` queries,
    caption ``j`` is the negative) and
    ``t2a[i, j] = max(0, margin + sim[j, i] - sim[i, i])`` (caption ``i``
    queries, audio ``j`` is the negative); both are 0 for ``j == i``.
  """
  pos = jnp.diagonal(sim)
  off_diag = ~jnp.eye(sim.shape[0], dtype=bool)
  a2t = jnp.where(off_diag, jax.nn.relu(margin + sim - pos[:, None]), 0.0)
  t2a = jnp.where(off_diag, jax.nn.relu(margin + sim.T - pos[:, None]), 0.0)
  return a2t, t2a


def triplet_hardest_negative(sim: jax.Array, margin: float = 0.2) -> jax.Array:
  """VSE++ triplet loss with the hardest negative (max of hinges), both directions.

  ``loss = (1/B) sum_i [ max_{j != i} (margin + s_ij - s_ii)_+
                        + max_{j != i} (margin + s_ji - s_ii)_+ ]``

  i.e. the sum of the two directions' max-violation hinges, averaged (not
  summed, as VSE++ does) over the batch. ``B = 1`` has no negative: loss 0.

  Args:
    sim: float ``[B, B]`` similarities, positives on the diagonal.
    margin: hinge margin.

  Returns:
    float scalar.
  """
  _check_square(sim, "triplet_hardest_negative", "sim")
  a2t, t2a = _hinge_violations(sim, margin)
  return jnp.mean(jnp.max(a2t, axis=1) + jnp.max(t2a, axis=1))


def bidirectional_ranking(sim: jax.Array, margin: float = 0.2) -> jax.Array:
  """Bidirectional ranking loss: every hinge violation, both directions.

  ``loss = (1/B) sum_i sum_{j != i} [ (margin + s_ij - s_ii)_+
                                     + (margin + s_ji - s_ii)_+ ]``

  Args:
    sim: float ``[B, B]`` similarities, positives on the diagonal.
    margin: hinge margin.

  Returns:
    float scalar (sum of violations divided by ``B``).
  """
  _check_square(sim, "bidirectional_ranking", "sim")
  a2t, t2a = _hinge_violations(sim, margin)
  return (jnp.sum(a2t) + jnp.sum(t2a)) / sim.shape[0]


def _log_softmax(x: jax.Array, axis: int) -> jax.Array:
  """``jax.nn.log_softmax``, robust to huge logits.

  XLA:CPU fuses ``x - max(x)`` with the division that made ``x`` (logits / temperature) into
  a fused multiply-add, so the max element's shifted logit is the product's rounding error
  instead of 0: up to half an ulp of ``x``, i.e. beyond +-88 (where float32's exp overflows
  or every term underflows) once ``|x| > ~1.5e9`` (found by tests/test_fuzz.py: an infinite
  InfoNCE loss). A second shift by the max of the shifted logits (a plain subtraction)
  makes the largest 0 up to rounding. The result and the gradient are those of log_softmax
  (a constant shift changes neither).
  """
  sg = jax.lax.stop_gradient
  shifted = x - sg(jnp.max(x, axis=axis, keepdims=True))
  shifted = shifted - sg(jnp.max(shifted, axis=axis, keepdims=True))
  return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def _diag_cross_entropy(logits: jax.Array) -> jax.Array:
  """Symmetric cross-entropy with diagonal targets, ``[B, B]`` -> scalar."""
  row = _log_softmax(logits, axis=1)
  col = _log_softmax(logits, axis=0)
  return -0.5 * (jnp.mean(jnp.diagonal(row)) + jnp.mean(jnp.diagonal(col)))


def symmetric_infonce(sim: jax.Array, temperature: float | jax.Array) -> jax.Array:
  """Symmetric InfoNCE / NT-Xent (CLIP loss).

  ``loss = 1/2 [ CE_rows(sim / T) + CE_cols(sim / T) ]`` where ``CE_rows`` is
  the mean over ``i`` of ``-log softmax_j(sim[i, :] / T)[i]`` (audio -> text)
  and ``CE_cols`` the same over columns (text -> audio).

  Args:
    sim: float ``[B, B]`` similarities (e.g. cosine), positives on the diagonal.
    temperature: positive float or traced scalar (a learnable temperature).

  Returns:
    float scalar.
  """
  _check_square(sim, "symmetric_infonce", "sim")
  return _diag_cross_entropy(sim / temperature)


def entropic_infonce(
  cost: jax.Array, eps: float | jax.Array, normalize_max: bool = True
) -> jax.Array:
  """Entropy-regularised contrastive baseline: m-LTM with one marginal only.

  Definition. The entropic OT plan under the single constraint ``P 1 = a``
  (rows only) is the row-softmax ``P_ij = a_i softmax_j(-C_ij / eps)``; with
  only ``P^T 1 = b`` it is the column-softmax. This loss is the symmetric
  cross-entropy of those two one-sided plans against the diagonal target::

    loss = 1/2 [ mean_i -log softmax_j(-C / eps)[i, i]
               + mean_j -log softmax_i(-C / eps)[j, j] ]

  on the same (optionally max-normalised) ground cost as m-LTM. It is the
  m-LTM loss ``-(1/B) sum_i log P_ii`` with the fully coupled Sinkhorn plan
  replaced by a single Sinkhorn half-step (one marginal projection), averaged
  over the two directions, minus the constant ``log B``; equivalently
  :func:`symmetric_infonce` on ``sim = -C`` with temperature ``eps``.

  Args:
    cost: float ``[B, B]`` ground cost (e.g. Mahalanobis distances), positives
      on the diagonal.
    eps: entropic regularisation (plays the role of a temperature).
    normalize_max: divide ``cost`` by its maximum first (as m-LTM does; the
      gradient flows through the max; an all-zero cost is left unscaled).

  Returns:
    float scalar.
  """
  _check_square(cost, "entropic_infonce", "cost")
  if normalize_max:
    cost = normalize_cost_max(cost)
  return _diag_cross_entropy(-cost / eps)
