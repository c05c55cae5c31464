"""Vectorised retrieval metrics for text-to-audio (T2A) and audio-to-text (A2T).

Conventions (docs/method.md section 6):

* Scores: higher = better. Pass ``-distance`` or the (log) rows of a transport plan
  (see :mod:`mltm_jax.evaluation.plan_ranking`).
* ``caption_to_clip``: int [Nc], caption ``i`` belongs to clip ``caption_to_clip[i]``
  in ``[0, Nclips)``. Clips may have any number of captions (5 in Clotho and in the
  AudioCaps val/test splits).
* Ranks are 1-based.

Tie rule (pessimistic): a relevant item is ranked behind every non-relevant gallery
item whose score is >= its own. For a query with a single relevant item (T2A) the rank
is therefore the number of gallery items with score >= the target's score, so a
constant score matrix yields the worst rank (the gallery size), never a perfect one.
With several relevant items (A2T: a clip's captions), the clip's relevant scores are
sorted in decreasing order and the h-th one sits at
``#{non-relevant j : s_j >= t_h} + h``: ties with distractors count against the clip,
and relevant items tied with each other (e.g. duplicate captions) take consecutive
positions instead of all being pushed to the last one. Without ties this equals the
position in a descending argsort, i.e. the official evaluation's rank + 1.

Everything is vectorised with numpy and processed in chunks of queries, so the
temporary [chunk, K, Ngallery] comparison stays below ``max_chunk_elements``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

METRIC_KEYS = ("R@1", "R@5", "R@10", "R@50", "medR", "meanR", "mAP@10")
RECALL_KS = (1, 5, 10, 50)
MAP_CUTOFF = 10
DEFAULT_MAX_CHUNK_ELEMENTS = 1 << 24  # elements of the boolean comparison temp per chunk


def _as_scores(scores, name: str) -> np.ndarray:
  """Scores to a 2-D host float array; raises on wrong rank or NaN."""
  s = np.asarray(scores)
  if s.ndim != 2:
    raise ValueError(f"retrieval: {name} must be 2-D [queries, gallery], got shape {s.shape}")
  if not np.issubdtype(s.dtype, np.floating):
    s = s.astype(np.float64)
  if np.isnan(s).any():
    raise ValueError(f"retrieval: {name} contains NaN; cannot rank")
  return s


def _as_index(caption_to_clip, num_captions: int, num_clips: int) -> np.ndarray:
  """Validate caption_to_clip: int [Nc] with values in [0, Nclips)."""
  c2c = np.asarray(caption_to_clip)
  if c2c.ndim != 1 or c2c.shape[0] != num_captions:
    raise ValueError(
      f"retrieval: caption_to_clip must have shape [{num_captions}] (one entry per caption), "
      f"got {c2c.shape}"
    )
  if not np.issubdtype(c2c.dtype, np.integer):
    raise ValueError(f"retrieval: caption_to_clip must be integer, got dtype {c2c.dtype}")
  if num_captions and (c2c.min() < 0 or c2c.max() >= num_clips):
    raise ValueError(
      f"retrieval: caption_to_clip values must lie in [0, {num_clips}), "
      f"got range [{c2c.min()}, {c2c.max()}]"
    )
  return c2c.astype(np.int64)


def relevant_ranks(
  scores,
  relevant: np.ndarray,
  valid: np.ndarray,
  max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS,
) -> np.ndarray:
  """Pessimistic 1-based ranks of each query's relevant gallery items.

  Args:
    scores: float [Nq, Ng], higher = better.
    relevant: int [Nq, K], gallery indices of each query's relevant items (padding
      entries arbitrary but in range).
    valid: bool [Nq, K], False marks padding.
    max_chunk_elements: bound on Nq_chunk * K * Ng for the comparison temporary.

  Returns:
    int64 [Nq, K]: ranks sorted ascending within each row (best first); padding
    entries are Ng + 1. See the module docstring for the tie rule.
  """
  s = _as_scores(scores, "scores")
  nq, ng = s.shape
  relevant = np.asarray(relevant, dtype=np.int64)
  valid = np.asarray(valid, dtype=bool)
  if relevant.shape != valid.shape or relevant.ndim != 2 or relevant.shape[0] != nq:
    raise ValueError(
      f"retrieval: relevant {relevant.shape} and valid {valid.shape} must be [{nq}, K]"
    )
  k = relevant.shape[1]
  out = np.full((nq, k), ng + 1, dtype=np.int64)
  if nq == 0 or k == 0:
    return out
  chunk = max(1, int(max_chunk_elements) // max(1, k * ng))
  h = np.arange(1, k + 1, dtype=np.int64)[None, :]
  for start in range(0, nq, chunk):  # loop over chunks of queries, not single queries
    stop = min(nq, start + chunk)
    sc = s[start:stop]  # [C, Ng]
    val = valid[start:stop]  # [C, K]
    tgt = np.take_along_axis(sc, relevant[start:stop], axis=1)  # [C, K]
    # Sort each row's relevant scores in decreasing order, padding last.
    order = np.lexsort((-tgt, ~val), axis=-1)
    tgt = np.take_along_axis(tgt, order, axis=1)
    val = np.take_along_axis(val, order, axis=1)
    ge_all = np.count_nonzero(sc[:, None, :] >= tgt[:, :, None], axis=-1)  # [C, K]
    ge_rel = np.count_nonzero(
      val[:, None, :] & (tgt[:, None, :] >= tgt[:, :, None]), axis=-1
    )  # [C, K]
    ranks = ge_all - ge_rel + h
    out[start:stop] = np.where(val, ranks, ng + 1)
  return out


def t2a_ranks(
  scores, caption_to_clip, max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS
) -> np.ndarray:
  """Rank of each caption's clip when the caption queries all clips.

  Args:
    scores: float [Nc, Nclips] (captions x clips), higher = better.
    caption_to_clip: int [Nc].

  Returns:
    int64 [Nc], 1-based pessimistic rank (number of clips scoring >= the target clip).
  """
  s = _as_scores(scores, "t2a scores")
  c2c = _as_index(caption_to_clip, s.shape[0], s.shape[1])
  valid = np.ones((s.shape[0], 1), dtype=bool)
  return relevant_ranks(s, c2c[:, None], valid, max_chunk_elements)[:, 0]


def clip_caption_table(caption_to_clip, num_clips: int):
  """Captions of every clip as a padded table.

  Returns:
    (captions int64 [Nclips, Kmax], valid bool [Nclips, Kmax], counts int64 [Nclips]);
    row q lists the caption indices of clip q in increasing order, padding is 0/False.
  """
  c2c = np.asarray(caption_to_clip, dtype=np.int64)
  counts = np.bincount(c2c, minlength=num_clips).astype(np.int64)
  kmax = int(counts.max()) if counts.size else 0
  order = np.argsort(c2c, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  slot = np.arange(c2c.shape[0]) - starts[c2c[order]]
  table = np.zeros((num_clips, kmax), dtype=np.int64)
  valid = np.zeros((num_clips, kmax), dtype=bool)
  table[c2c[order], slot] = order
  valid[c2c[order], slot] = True
  return table, valid, counts


def captioned_clip_table(caption_to_clip, num_clips: int, who: str):
  """:func:`clip_caption_table` of a split where every clip must have a caption.

  Raises:
    ValueError: "<who> needs >= 1 caption per clip; N clip(s) have none (first: [...])".
  """
  table, valid, counts = clip_caption_table(caption_to_clip, num_clips)
  if (counts == 0).any():
    missing = np.flatnonzero(counts == 0)
    raise ValueError(
      f"{who} needs >= 1 caption per clip; {missing.size} clip(s) have none "
      f"(first: {missing[:5].tolist()})"
    )
  return table, valid, counts


def a2t_ranks(scores, caption_to_clip, max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS):
  """Ranks of every caption of each clip when the clip queries all captions.

  Args:
    scores: float [Nclips, Nc] (clips x captions), higher = better.
    caption_to_clip: int [Nc]; every clip needs at least one caption.

  Returns:
    (ranks int64 [Nclips, Kmax], counts int64 [Nclips]): row q holds the sorted 1-based
    ranks of clip q's captions (best first), padded with Nc + 1 beyond counts[q]
    captions. The A2T rank of clip q is ranks[q, 0].
  """
  s = _as_scores(scores, "a2t scores")
  nclips, nc = s.shape
  c2c = _as_index(caption_to_clip, nc, nclips)
  table, valid, counts = captioned_clip_table(c2c, nclips, "retrieval: a2t")
  return relevant_ranks(s, table, valid, max_chunk_elements), counts


@jax.jit
def _both_ranks(a2t_scores, t2a_scores_t, c2c, table, valid):
  """XLA version of :func:`relevant_ranks` for both directions of one split.

  a2t_scores [Nclips, Nc] (row i ranks the captions for clip i); t2a_scores_t
  [Nclips, Nc] (column j ranks the clips for caption j); c2c int32 [Nc]; table int32 /
  valid bool [Nclips, K] from :func:`clip_caption_table`. Comparisons only, so the
  ranks are exactly those of the numpy version on the same scores.
  """
  nc = c2c.shape[0]
  tgt = t2a_scores_t[c2c, jnp.arange(nc)]
  t2a = jnp.sum(t2a_scores_t >= tgt[None, :], axis=0, dtype=jnp.int32)
  t = jnp.take_along_axis(a2t_scores, table, axis=1)  # [N, K]
  # Relevant scores in decreasing order, padding last (valid scores are finite).
  order = jnp.argsort(jnp.where(valid, -t, jnp.inf), axis=1, stable=True)
  t = jnp.take_along_axis(t, order, axis=1)
  val = jnp.take_along_axis(valid, order, axis=1)
  # One reduction per loop iteration: XLA's CPU code runs several reductions of one
  # matrix fused together slower than one at a time (WORKSPACE.md, Benchmarks).
  ge_all = jax.lax.map(lambda x: jnp.sum(a2t_scores >= x[:, None], axis=1, dtype=jnp.int32), t.T).T
  ge_rel = jnp.sum(val[:, None, :] & (t[:, None, :] >= t[:, :, None]), axis=-1, dtype=jnp.int32)
  h = jnp.arange(1, table.shape[1] + 1, dtype=jnp.int32)[None, :]
  a2t = jnp.where(val, ge_all - ge_rel + h, nc + 1)
  return t2a, a2t


def split_ranks(a2t_scores, t2a_scores_t, caption_to_clip):
  """T2A and A2T ranks of one split from score matrices in the [Nclips, Nc] layout.

  Args:
    a2t_scores: float [Nclips, Nc]; row i scores every caption for clip i.
    t2a_scores_t: float [Nclips, Nc]; column j scores every clip for caption j (the
      transpose of the [Nc, Nclips] T2A score matrix; pass the same matrix as
      ``a2t_scores`` for a symmetric score such as ``-distance``).
    caption_to_clip: int [Nc].

  Returns:
    (t2a int64 [Nc], a2t int64 [Nclips, Kmax], counts int64 [Nclips]): the ranks of
    :func:`t2a_ranks` and :func:`a2t_ranks`, computed in one XLA program (no
    [chunk, K, Nc] temporaries).
  """
  s = _as_scores(a2t_scores, "a2t scores")
  st = _as_scores(t2a_scores_t, "t2a scores")
  if s.shape != st.shape:
    raise ValueError(f"retrieval: score matrices differ in shape: {s.shape} vs {st.shape}")
  nclips, nc = s.shape
  c2c = _as_index(caption_to_clip, nc, nclips)
  table, valid, counts = captioned_clip_table(c2c, nclips, "retrieval: a2t")
  t2a, a2t = _both_ranks(
    jnp.asarray(s),
    jnp.asarray(st),
    jnp.asarray(c2c, jnp.int32),
    jnp.asarray(table, jnp.int32),
    jnp.asarray(valid),
  )
  return np.asarray(t2a, np.int64), np.asarray(a2t, np.int64), counts


def split_metrics(a2t_scores, t2a_scores_t, caption_to_clip) -> dict[str, dict[str, float]]:
  """{"t2a": metrics, "a2t": metrics} of :func:`split_ranks`."""
  t2a, a2t, counts = split_ranks(a2t_scores, t2a_scores_t, caption_to_clip)
  return {"t2a": retrieval_metrics(t2a), "a2t": retrieval_metrics(a2t, counts)}


def retrieval_metrics(ranks, num_relevant: np.ndarray | None = None) -> dict[str, float]:
  """R@k, median/mean rank and mAP@10 from 1-based ranks.

  Args:
    ranks: int [Nq] (one relevant item per query, T2A) or int [Nq, K] (ranks of each
      query's relevant items sorted ascending, valid entries first, A2T). The query's rank
      is ranks[:, 0].
    num_relevant: int [Nq], required for 2-D ranks: number of relevant items of each
      query (the mAP@10 divisor; 5 in Clotho/AudioCaps, as in the official code).

  Returns:
    dict with "R@1","R@5","R@10","R@50" (percent of queries whose rank <= k),
    "medR" (floor of the median rank, the official convention), "meanR",
    "mAP@10" (percent): per query sum over relevant items ranked <= 10 of
    (hits so far / rank) divided by num_relevant, averaged over queries. For one
    relevant item this is 1/rank if rank <= 10 else 0.
  """
  r = np.asarray(ranks, dtype=np.int64)
  if r.ndim == 1:
    r = r[:, None]
    n_rel = np.ones(r.shape[0], dtype=np.float64)
  elif r.ndim == 2:
    if num_relevant is None:
      raise ValueError("retrieval_metrics: num_relevant is required for 2-D ranks")
    n_rel = np.asarray(num_relevant, dtype=np.float64)
    if n_rel.shape != (r.shape[0],) or (n_rel < 1).any():
      raise ValueError(f"retrieval_metrics: num_relevant must be [{r.shape[0]}] with values >= 1")
  else:
    raise ValueError(f"retrieval_metrics: ranks must be 1-D or 2-D, got shape {r.shape}")
  if r.shape[0] == 0:
    raise ValueError("retrieval_metrics: no queries")
  best = r[:, 0].astype(np.float64)
  out = {f"R@{k}": 100.0 * float(np.mean(best <= k)) for k in RECALL_KS}
  out["medR"] = float(np.floor(np.median(best)))
  out["meanR"] = float(np.mean(best))
  hits = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :]
  # Rows are sorted ascending, so the h-th kept rank has h hits so far; the hits <= n_rel
  # mask drops padding even when the gallery is smaller than the cutoff.
  within = (r <= MAP_CUTOFF) & (hits <= n_rel[:, None])
  ap = np.sum(np.where(within, hits / np.maximum(r, 1), 0.0), axis=1) / n_rel
  out["mAP@10"] = 100.0 * float(np.mean(ap))
  return out


def t2a_metrics(
  scores, caption_to_clip, max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS
) -> dict[str, float]:
  """T2A metrics; scores float [Nc, Nclips] (captions x clips), higher = better."""
  return retrieval_metrics(t2a_ranks(scores, caption_to_clip, max_chunk_elements))


def a2t_metrics(
  scores, caption_to_clip, max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS
) -> dict[str, float]:
  """A2T metrics; scores float [Nclips, Nc] (clips x captions), higher = better.

  mAP@10 divides by each clip's number of captions (5 in Clotho/AudioCaps test).
  """
  ranks, counts = a2t_ranks(scores, caption_to_clip, max_chunk_elements)
  return retrieval_metrics(ranks, counts)


def modality_gap(audio_emb, text_emb) -> float:
  """||mean_i audio_emb[i] - mean_j text_emb[j]||_2 (float64 accumulation).

  Args:
    audio_emb: float [N, D], one row per clip.
    text_emb: float [M, D], one row per caption.
  """
  a = np.asarray(audio_emb, dtype=np.float64)
  t = np.asarray(text_emb, dtype=np.float64)
  if a.ndim != 2 or t.ndim != 2 or a.shape[1] != t.shape[1] or not a.shape[0] or not t.shape[0]:
    raise ValueError(
      f"modality_gap: expected non-empty [N, D] and [M, D], got {a.shape} and {t.shape}"
    )
  return float(np.linalg.norm(a.mean(axis=0) - t.mean(axis=0)))
