"""Audio of any length: fixed windows of the training clip length, embedded and pooled.

A wave [T] is cut into windows of ``window`` samples (the training clip length)
starting at 0, hop, 2 hop, ... until a window reaches the end of the wave; the last
window is zero-padded. A wave no longer than one window gives exactly one window, the
zero-padded wave (what the crop-from-the-start evaluation feeds the tower). The
chunk embeddings of a wave are pooled by their mean, re-normalised to unit length
(the towers' outputs are unit vectors); a single chunk is returned unchanged.
Everything is a pure function of the wave: no randomness, no dependence on what
else is in the batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from mltm_jax.config import Config


def hop_samples(cfg: Config) -> int:
  """The hop between chunks in samples: --chunk_hop_seconds, or half a clip when 0."""
  seconds = cfg.chunk_hop_seconds if cfg.chunk_hop_seconds > 0 else cfg.clip_seconds / 2
  return max(1, round(seconds * cfg.sample_rate))


def window_starts(length: int, window: int, hop: int) -> np.ndarray:
  """int64 [K] start samples of the windows of a wave of ``length`` samples.

  K = 1 if length <= window, else 1 + ceil((length - window) / hop): the last window
  is the first one that reaches the end of the wave.
  """
  if window <= 0 or hop <= 0:
    raise ValueError(f"window and hop must be positive, got window={window}, hop={hop}")
  if length <= window:
    return np.zeros(1, np.int64)
  count = 1 + -(-(length - window) // hop)
  return np.arange(count, dtype=np.int64) * hop


def split_windows(wave: np.ndarray, window: int, hop: int) -> np.ndarray:
  """float32 [K, window]: the windows of a wave [T] (see :func:`window_starts`), the last
  one zero-padded."""
  wave = np.asarray(wave, np.float32)
  if wave.ndim != 1:
    raise ValueError(f"split_windows expects a 1-D wave, got shape {wave.shape}")
  starts = window_starts(wave.shape[0], window, hop)
  out = np.zeros((len(starts), window), np.float32)
  for r, s in enumerate(starts):
    piece = wave[s : s + window]
    out[r, : piece.shape[0]] = piece
  return out


def pool_chunks(chunks: np.ndarray) -> np.ndarray:
  """[K, D] chunk embeddings of one wave -> [D]: the mean, re-normalised to unit length
  (K = 1: the chunk embedding unchanged)."""
  chunks = np.asarray(chunks, np.float32)
  if chunks.ndim != 2 or chunks.shape[0] == 0:
    raise ValueError(f"pool_chunks expects [K >= 1, D], got shape {chunks.shape}")
  if chunks.shape[0] == 1:
    return chunks[0].copy()
  mean = chunks.astype(np.float64).mean(axis=0)
  norm = np.linalg.norm(mean)
  return (mean / norm if norm > 0 else mean).astype(np.float32)


def pool_segments(chunks: np.ndarray, counts: Sequence[int]) -> np.ndarray:
  """[sum(counts), D] chunk embeddings of consecutive waves -> [len(counts), D] pooled."""
  bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  if bounds[-1] != len(chunks):
    raise ValueError(f"pool_segments: counts sum to {bounds[-1]}, got {len(chunks)} chunks")
  return np.stack([pool_chunks(chunks[a:b]) for a, b in itertools.pairwise(bounds)])


def embed_long(
  embed_windows: Callable[[np.ndarray], np.ndarray],
  waves: Iterable[np.ndarray],
  window: int,
  hop: int,
  batch_size: int,
  multiple: int = 1,
  progress: bool = False,
  total: int | None = None,
) -> np.ndarray:
  """Embeddings [N, D] of N waves of any length.

  Args:
    embed_windows: float32 [B, window] -> [B, D] (B = batch_size rounded up to a multiple
      of ``multiple``; one compiled shape: the last batch is zero-padded).
    waves: the N waves, each float32 [T_i] at the model rate (an iterable: windows are
      cut as the batches fill, so memory holds one batch of windows at a time).
    window, hop: samples (see :func:`window_starts`).
  Returns:
    float32 [N, D], row i pooled from wave i's chunks (:func:`pool_chunks`).
  """
  bs = -(-max(batch_size, 1) // multiple) * multiple
  buf = np.zeros((bs, window), np.float32)
  fill = 0
  chunk_rows: list[np.ndarray] = []
  counts: list[int] = []

  def flush():
    nonlocal fill
    if fill:
      buf[fill:] = 0.0
      chunk_rows.append(np.asarray(embed_windows(buf))[:fill].astype(np.float32))
      fill = 0

  for wave in tqdm(
    waves, total=total, desc="embed audio", unit="file", leave=False, disable=not progress
  ):
    wins = split_windows(wave, window, hop)
    counts.append(len(wins))
    for w in wins:
      buf[fill] = w
      fill += 1
      if fill == bs:
        flush()
  flush()
  if not counts:
    return np.zeros((0, 0), np.float32)
  return pool_segments(np.concatenate(chunk_rows), counts)
