"""Text queries at interactive latency: captions embedded at the batch size they need.

A batch of n captions runs the frozen encoder and the text tower padded to
``data.text.padded_rows(n)`` rows (1, 8, 32 or the bulk batch size), never to the bulk size
for a single query; token widths are multiples of 8 (``data.text.width_buckets``). Every
shape a caller can hit is compiled by :func:`warm_up_text`, so after it no caption (any
text, any length) compiles anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from mltm_jax.data.text import BATCH_BUCKETS, batch_sizes, padded_rows


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def embed_captions(
  model: Any,
  params: Any,
  captions: Sequence[str],
  batch_size: int,
  progress: bool = False,
  buckets: tuple[int, ...] = BATCH_BUCKETS,
) -> np.ndarray:
  """[N, D] unit text embeddings of N captions.

  Args:
    model: a ``mltm_jax.model.Model`` (its encoder and compiled ``embed_text``).
    params: the run's params (``params["text"]`` is read).
    batch_size: bulk batch size (captions per compiled call at most).
  """
  captions = list(captions)
  if not captions:
    return np.zeros((0, model.cfg.embed_dim), np.float32)
  if model.cfg.freeze_text:
    inputs = model.encoder.features(captions, batch_size, progress, buckets)
  else:
    inputs = model.encoder.tokens(captions)
  n_dev = model.mesh.devices.size
  out = []
  for start in range(0, len(captions), batch_size):
    chunk = jax.tree.map(lambda x, s=start: x[s : s + batch_size], inputs)
    rows = jax.tree.leaves(chunk)[0].shape[0]
    size = _round_up(padded_rows(rows, batch_size, buckets), n_dev)
    if size > rows:
      chunk = jax.tree.map(
        lambda x, r=rows, b=size: np.concatenate([x, np.zeros((b - r,) + x.shape[1:], x.dtype)]),
        chunk,
      )
    out.append(np.asarray(model.embed_text(params, chunk))[:rows])
  return np.concatenate(out).astype(np.float32)


def query_batch_sizes(max_batch: int, batch_size: int) -> list[int]:
  """The padded batch sizes a call with at most ``max_batch`` captions can run at."""
  sizes = batch_sizes(batch_size)
  top = padded_rows(min(max_batch, batch_size), batch_size)
  return [b for b in sizes if b <= top]


def warm_up_text(model: Any, params: Any, max_batch: int, batch_size: int) -> int:
  """Compiles every shape :func:`embed_captions` can run for calls of at most ``max_batch``
  captions: the encoder at every (batch size, token width), the text tower at every batch
  size. Returns the number of shapes run."""
  count = 0
  n_dev = model.mesh.devices.size
  sizes = query_batch_sizes(max_batch, batch_size)
  if model.cfg.freeze_text:
    count += model.encoder.warm_up(sizes)
  for rows in sorted({_round_up(b, n_dev) for b in sizes}):
    if model.cfg.freeze_text:
      dummy = np.zeros((rows, model.encoder.config.hidden_size), np.float32)
    else:
      dummy = jax.tree.map(lambda x, r=rows: np.repeat(x, r, axis=0), model.encoder.tokens([""]))
    np.asarray(model.embed_text(params, dummy))
    count += 1
  return count
