"""T2A / A2T ranks by the learned distance, equal to the float64 ranks, at float32 speed.

Ranking by c_M(u, v) = sqrt((u - v)^T M (u - v)) needs every clip-caption distance, an
[N, Nc] matrix whose float64 computation is the whole cost of an evaluation (D^2 work
per item, D per pair). Here:

1. **float32 pass** (:mod:`mltm_jax.evaluation.distance_filter`): squared distances
   ``d2 = alpha_i + beta_j - 2 G_ij`` with ``alpha = a^T M a``, ``beta = t^T M t`` (over
   M's upper block triangle: 0.75 D^2 per caption), ``G = (a M) t^T``. Entry (i, j) gets an
   error band ``B_ij = c (|a_i| + |t_j|)^2`` (below), bounded per query by the largest norm
   on the gallery side. For each query and each of its relevant items (targets), every
   other gallery item is counted as surely closer (``d2 < d2_target - B_target -
   B_query``), surely farther (``d2 > d2_target + ...``) or uncertain. A matrix beyond
   ``max_matrix_elements`` entries is never held whole: T2A runs over tiles of caption
   columns [N, W], A2T over tiles of clip rows [R, Nc] (each entry computed twice).
2. **float64 refinement** of the uncertain comparisons only, from the inputs as given, by
   whichever of two forms needs fewer rows multiplied by M (D^2 work each): one row per
   comparison, the difference of the two squared distances (T2A, clips i and g for
   caption j: ``(a_i - a_g)^T M (a_i + a_g - 2 t_j)``; A2T alike with captions), or one row
   per distinct vector (T2A compares ``alpha - 2 G``, beta cancels; A2T ``beta - 2 G``,
   alpha cancels), which is fewer when many comparisons share vectors. Either way exact
   duplicates tie exactly (pessimistic rule).
3. When refining would cost more than ``max_refine_fraction`` of the whole float64
   matrix (a collapsed model: everything ties), the float64 matrix is computed instead
   (``fallback``).

The ranks are the pessimistic ranks of :mod:`mltm_jax.evaluation.retrieval` for the
scores ``-d2`` in float64 (the order of ``-distance`` for a PSD M): T2A rank =
#{clips with d2 <= d2 of the caption's clip}; A2T: the h-th best of a clip's captions
sits at #{other clips' captions with d2 <= its d2} + h.

The band (``bound``):

* ``"worst_case"``: deterministic float32 bounds (|error of a length-n dot product|
  <= gamma_n sum |x_k y_k|, gamma_n = n u / (1 - n u), u = 2^-24, in any summation
  order) with mu = the largest row sum of |M| >= ||M||_2:
  ``c = 1.01 x 3 (gamma_{D+8} + 4u) mu + 3.01 u mu`` (the last term: rounding the
  inputs to float32). A proof, as long as XLA's float32 products run in float32
  arithmetic; but at Clotho size (D = 1024) the band is orders of magnitude wider than
  the real errors, so most comparisons are uncertain and it falls back to the float64
  matrix.
* ``"statistical"`` (default): ``c = kappa 3 sqrt(D) u mu`` (sqrt(D) u: how rounding
  errors of a length-D sum grow, Higham & Mary 2019; mu: M's largest column norm, a
  scale), with ``kappa`` calibrated on the data: the float32 entries of a 32 x 32 sample
  of clips x captions (of the first column tile) are recomputed in float64 and
  ``kappa = max(KAPPA_FLOOR, CALIBRATION_MARGIN x max(error / band(kappa = 1)))``, so
  the band is >= 10x the largest float32 error of the sample. Not a proof: the ranks
  equal the float64 ranks unless a rounding error exceeds the band (how far the sample's
  largest error is from the whole matrix's: WORKSPACE.md, Benchmarks);
  tests/test_retrieval.py checks them against brute force on planted near ties.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mltm_jax.evaluation import distance_filter
from mltm_jax.evaluation.distance_filter import MAX_MATRIX_ELEMENTS
from mltm_jax.evaluation.retrieval import (
  _as_index,
  captioned_clip_table,
  relevant_ranks,
  retrieval_metrics,
)

BOUNDS = ("statistical", "worst_case")
CALIBRATION_SAMPLE = 32  # clips x captions recomputed in float64
# Refine comparison by comparison while that costs less than this fraction of the
# float64 matrix.
MAX_REFINE_FRACTION = 0.25
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class DistanceRanks:
  """Pessimistic 1-based ranks by the float64 squared distance.

  t2a: int64 [Nc], rank of each caption's clip. a2t: int64 [Nclips, Kmax], sorted
  ranks of each clip's captions (padding Nc + 1); counts: int64 [Nclips].
  refined: comparisons decided in float64; fallback: True when the whole matrix was
  computed in float64; kappa: the statistical band's multiplier used (0 for
  worst_case).
  """

  t2a: np.ndarray
  a2t: np.ndarray
  counts: np.ndarray
  refined: int
  fallback: bool
  kappa: float


def _distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(distinct rows [U, D], inverse [K]) of a float array [K, D] (bitwise equality)."""
  x = np.ascontiguousarray(x)
  if x.shape[0] == 0:
    return x, np.zeros(0, np.int64)
  keys = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
  _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
  return x[first], inverse.reshape(-1)


@jax.jit
def _matmul(x: jax.Array, m: jax.Array) -> jax.Array:
  return jnp.dot(x, m, precision=_HIGHEST)


def _times_m(x: np.ndarray, m64: jax.Array) -> np.ndarray:
  """float64 [K, D] @ m64 [D, D] -> [K, D], by an XLA matrix product (not numpy: see
  WORKSPACE.md, Benchmarks). m64: the symmetric metric, float64 on the device (under x64)."""
  k, d = x.shape
  if k == 0:
    return np.zeros((0, d))
  rows = 64 * -(-k // 64) if k <= 1024 else 1 << (k - 1).bit_length()  # few shapes
  padded = np.zeros((rows, d))
  padded[:k] = x
  with jax.enable_x64(True):
    return np.asarray(_matmul(padded, m64))[:k]


class _DistinctRows:
  """The float64 rows picked by some indices, each distinct row once.

  rows_of: idx int [K] -> float64 [K, D]; index: int [K'] (any order, repeats).
  ``rows`` [U, D] holds each distinct row once; ``ids(idx)`` [K] is the row of each index.
  """

  def __init__(self, rows_of, index: np.ndarray):
    self.index = np.unique(index)
    self.rows, self._content = _distinct_rows(rows_of(self.index))

  def ids(self, idx: np.ndarray) -> np.ndarray:
    return self._content[np.searchsorted(self.index, idx)]


def _pair_dots(x: np.ndarray, xi: np.ndarray, y: np.ndarray, yi: np.ndarray) -> np.ndarray:
  """[K] dot products x[xi_k] . y[yi_k] (x [U, D], y [V, D]), once per distinct pair, so
  equal pairs get bitwise equal results."""
  if xi.size == 0:
    return np.zeros(0)
  pairs, inverse = np.unique(xi * y.shape[0] + yi, return_inverse=True)
  return np.einsum("kd,kd->k", x[pairs // y.shape[0]], y[pairs % y.shape[0]])[inverse.ravel()]


def _device32(x: np.ndarray) -> jax.Array:
  """float32 copy on the device (CPU: handed over without a second copy when aligned)."""
  x = np.ascontiguousarray(x, np.float32)
  try:
    return jax.dlpack.from_dlpack(x)
  except (TypeError, ValueError, RuntimeError):
    return jnp.asarray(x)


def _fallback(audio, text, m64, c2c, table, valid, counts, kappa, max_elements) -> DistanceRanks:
  t2a, a2t = _float64_ranks(
    np.asarray(audio, np.float64),
    np.asarray(text, np.float64),
    m64,
    c2c,
    table,
    valid,
    max_elements,
  )
  return DistanceRanks(t2a, a2t, counts, 0, True, kappa)


def _float64_ranks(audio64, text64, m64, c2c, table, valid, max_elements):
  """Fallback: the float64 [N, Nc] squared distances (in tiles of at most ``max_elements``
  when larger), then the vectorised numpy ranks."""
  p = audio64 @ m64
  alpha = np.einsum("id,id->i", p, audio64)
  beta = np.einsum("jd,jd->j", text64 @ m64, text64)
  d2_of = lambda rows, cols: alpha[rows, None] + beta[None, cols] - 2.0 * (p[rows] @ text64[cols].T)
  n, nc = alpha.size, beta.size
  if n * nc <= max_elements:
    d2 = d2_of(slice(None), slice(None))
    t2a = relevant_ranks(-d2.T, c2c[:, None], np.ones((nc, 1), bool))[:, 0]
    return t2a, relevant_ranks(-d2, table, valid)
  t2a = np.empty(nc, np.int64)
  for lo, hi in distance_filter.spans(nc, n, max_elements):
    d2 = d2_of(slice(None), slice(lo, hi))
    t2a[lo:hi] = relevant_ranks(-d2.T, c2c[lo:hi, None], np.ones((hi - lo, 1), bool))[:, 0]
  a2t = np.empty(table.shape, np.int64)
  for lo, hi in distance_filter.spans(n, nc, max_elements):
    a2t[lo:hi] = relevant_ranks(-d2_of(slice(lo, hi), slice(None)), table[lo:hi], valid[lo:hi])
  return t2a, a2t


def _sample_index(size: int, count: int) -> np.ndarray:
  return np.unique(np.linspace(0, size - 1, min(count, size)).round().astype(np.int64))


def _first_ahead(prod, rows, ids, others, other_ids) -> np.ndarray:
  """bool [K]: score of the k-th comparison's first side <= its second's, the 2K ids listing
  the first sides, then the second ones. score = x^T S x - 2 (x S) . y for x = rows[ids]
  (prod = rows S, float64 [U, D]) and y = others[other_ids]."""
  quad = np.einsum("kd,kd->k", prod, rows)
  score = quad[ids] - 2.0 * _pair_dots(prod, ids, others, other_ids)
  half = score.size // 2
  return score[:half] <= score[half:]


def _refine_by_differences(a64, t64, sym, ti, tj, tg, aq, at, aj):
  """The uncertain comparisons in float64, one product row each: bool [K_t], [K_a].

  S = sym (the symmetric part of M, float64 on the device); a64 / t64: index -> float64 rows.
  T2A: clip ti is ahead of caption tj's clip tg when d2(ti, tj) - d2(tg, tj) =
  (a_ti - a_tg)^T S (a_ti + a_tg - 2 t_tj) <= 0. A2T: caption aj is ahead of clip aq's
  caption at when (t_aj - t_at)^T S (t_aj + t_at - 2 a_aq) <= 0. Identical vectors give a
  zero difference exactly: a tie, counted (pessimistic).
  """
  a_i, a_g, t_j = a64(ti), a64(tg), t64(tj)
  c_j, c_t, a_q = t64(aj), t64(at), a64(aq)
  u = np.concatenate([a_i - a_g, c_j - c_t])
  w = np.concatenate([a_i + a_g - 2.0 * t_j, c_j + c_t - 2.0 * a_q])
  ahead = np.einsum("kd,kd->k", _times_m(u, sym), w) <= 0.0
  return ahead[: ti.size], ahead[ti.size :]


def _refine_by_rows(a64, t64, sym, ti, tj, tg, aq, at, aj):
  """The uncertain comparisons in float64, one product row per distinct vector (fewer rows
  than comparisons when they share vectors): bool [K_t], [K_a].

  T2A compares alpha_i - 2 a_i S t_j (beta cancels), A2T beta_j - 2 a_i S t_j (alpha
  cancels); identical vectors share one computation, so exact duplicates tie exactly.
  """
  t_clips, a_caps = np.concatenate([ti, tg]), np.concatenate([aj, at])
  clips_t, caps_a = _DistinctRows(a64, t_clips), _DistinctRows(t64, a_caps)
  p, qm = np.split(_times_m(np.concatenate([clips_t.rows, caps_a.rows]), sym), [len(clips_t.rows)])
  t2a_ahead, a2t_ahead = np.zeros(ti.size, bool), np.zeros(aq.size, bool)
  if ti.size:  # alpha_i - 2 a_i S t_j <= alpha_g - 2 a_g S t_j ?
    caps_u = _DistinctRows(t64, tj)
    cj = caps_u.ids(np.concatenate([tj, tj]))
    t2a_ahead = _first_ahead(p, clips_t.rows, clips_t.ids(t_clips), caps_u.rows, cj)
  if aq.size:  # beta_j - 2 a_i S t_j <= beta_r - 2 a_i S t_r ?
    clips_u = _DistinctRows(a64, aq)
    ci = clips_u.ids(np.concatenate([aq, aq]))
    a2t_ahead = _first_ahead(qm, caps_a.rows, caps_a.ids(a_caps), clips_u.rows, ci)
  return t2a_ahead, a2t_ahead


def distance_ranks(
  audio,
  text,
  caption_to_clip,
  metric_matrix,
  *,
  bound: str = "statistical",
  max_refine_fraction: float = MAX_REFINE_FRACTION,
  max_matrix_elements: int = MAX_MATRIX_ELEMENTS,
) -> DistanceRanks:
  """T2A and A2T ranks by the Mahalanobis distance, equal to the float64 ranks.

  Args:
    audio: float [Nclips, D] clip embeddings. text: float [Nc, D] caption embeddings.
    caption_to_clip: int [Nc], values in [0, Nclips); every clip needs a caption.
    metric_matrix: float [D, D], the metric M; its symmetric part is used ((u - v)^T M
      (u - v) depends on nothing else). PSD for a distance (any M ranks by the form).
    bound: "statistical" or "worst_case" (module docstring).
    max_refine_fraction: compute the whole float64 matrix instead when refining
      would cost more than this fraction of it (0: always).
    max_matrix_elements: distances held at once; a larger [Nclips, Nc] matrix is
      processed in tiles (each computed twice: once per direction).

  Returns:
    :class:`DistanceRanks`.
  """
  if bound not in BOUNDS:
    raise ValueError(f"distance_ranks: bound must be one of {BOUNDS}, got {bound!r}")
  if max_matrix_elements < 1:
    raise ValueError(f"distance_ranks: max_matrix_elements must be >= 1, got {max_matrix_elements}")
  audio, text = np.asarray(audio), np.asarray(text)
  m_in = np.asarray(metric_matrix)
  if audio.ndim != 2 or text.ndim != 2 or audio.shape[1] != text.shape[1]:
    raise ValueError(
      f"distance_ranks: expected audio [N, D] and text [Nc, D], got {audio.shape} and {text.shape}"
    )
  d = audio.shape[1]
  if m_in.shape != (d, d):
    raise ValueError(f"distance_ranks: metric_matrix must be [{d}, {d}], got {m_in.shape}")
  n, nc = audio.shape[0], text.shape[0]
  c2c = _as_index(caption_to_clip, nc, n)
  table, valid, counts = captioned_clip_table(c2c, n, "distance_ranks")
  a64 = lambda idx: np.asarray(audio[idx], np.float64)  # float64 rows, when needed
  t64 = lambda idx: np.asarray(text[idx], np.float64)
  fallback = lambda m64, kappa: _fallback(
    audio, text, m64, c2c, table, valid, counts, kappa, max_matrix_elements
  )
  if max_refine_fraction <= 0:
    if not np.isfinite(m_in).all():
      raise ValueError("distance_ranks: metric_matrix has NaN or inf")
    m64 = np.asarray(m_in, np.float64)
    return fallback((m64 + m64.T) / 2, 0.0)

  with jax.enable_x64(True):
    sym = distance_filter.symmetric_part(jnp.asarray(m_in, jnp.float64))
    prep = distance_filter.prepare(_device32(audio), _device32(text), sym, bound=bound)
    if not bool(prep["finite"]):
      raise ValueError(
        "distance_ranks: audio, text or metric_matrix has NaN or inf (or values beyond float32)"
      )
    tiles = distance_filter.Tiles(prep["left"], prep["right"], max_matrix_elements)
    na, nt = prep["na"], prep["nt"]
    if bound == "worst_case":
      kappa, coef = 0.0, prep["coef"]
    else:  # on a sample of the first column tile (the whole matrix when it fits)
      rows = _sample_index(n, CALIBRATION_SAMPLE)
      cols = _sample_index(tiles.width, CALIBRATION_SAMPLE)
      kappa, coef = distance_filter.calibrate(
        tiles.columns(0),
        jnp.asarray(rows, jnp.int32),
        jnp.asarray(cols, jnp.int32),
        a64(rows),
        t64(cols),
        sym,
        na,
        nt,
        prep["mu"],
      )
      kappa = float(kappa)
  full_cost = d * d * (n + nc) + d * n * nc
  max_unsure = max_refine_fraction * full_cost / (2 * d)
  unsure = 0

  # T2A, by column tiles: counts, then the uncertain comparisons (ti, tj) against (c2c[tj], tj).
  t2a = np.ones(nc, np.int64)  # the caption's own clip counts itself
  width = tiles.width
  padded_width = width * len(tiles.col_spans)
  nt_p = distance_filter.padded(nt, padded_width)
  c2c_p = distance_filter.padded(c2c, padded_width)
  found_t: list[tuple[np.ndarray, np.ndarray]] = []
  for lo, hi in tiles.col_spans:
    d2 = tiles.columns(lo)
    with jax.enable_x64(True):
      out = distance_filter.count_t2a(
        d2,
        na,
        nt_p[lo : lo + width],
        coef,
        jnp.asarray(c2c_p[lo : lo + width], jnp.int32),
        packed=n < distance_filter.PACKED_COUNT_LIMIT,
      )
    sure, u, t_lo, t_hi = (np.asarray(x)[: hi - lo] for x in out)
    t2a[lo:hi] += sure
    unsure += int(u.sum())
    if unsure > max_unsure:  # a collapsed model: everything ties
      return fallback(np.asarray(sym), kappa)
    cols = np.flatnonzero(u)
    if cols.size:
      sub = np.asarray(d2)[:, cols]
      ti, pos = np.nonzero(
        (sub >= t_lo[cols]) & (sub <= t_hi[cols]) & (np.arange(n)[:, None] != c2c[lo + cols])
      )
      found_t.append((ti, lo + cols[pos]))

  # A2T, by row tiles: (clip aq, caption aj) against (aq, table[aq, ak]).
  a2t_count = np.zeros(table.shape, np.int64)
  height = tiles.height
  na_p = distance_filter.padded(na, height * len(tiles.row_spans))
  table_p = distance_filter.padded(table, height * len(tiles.row_spans))
  valid_p = distance_filter.padded(valid, height * len(tiles.row_spans))
  found_a: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
  for lo, hi in tiles.row_spans:
    d2 = tiles.rows(lo)
    with jax.enable_x64(True):
      out = distance_filter.count_a2t(
        d2,
        na_p[lo : lo + height],
        nt,
        coef,
        jnp.asarray(table_p[lo : lo + height], jnp.int32),
        jnp.asarray(valid_p[lo : lo + height]),
        packed=nc < distance_filter.PACKED_COUNT_LIMIT,
      )
    sure, u, a_lo, a_hi = (np.asarray(x)[: hi - lo] for x in out)
    a2t_count[lo:hi] = sure
    unsure += int(u.sum())
    if unsure > max_unsure:
      return fallback(np.asarray(sym), kappa)
    rows, ks = np.nonzero(u)
    if rows.size:
      sub = np.asarray(d2)[rows]
      r, aj = np.nonzero(
        (sub >= a_lo[rows, ks][:, None])
        & (sub <= a_hi[rows, ks][:, None])
        & (c2c[None, :] != (lo + rows)[:, None])
      )
      found_a.append((lo + rows[r], ks[r], aj))

  empty = np.zeros(0, np.int64)
  ti, tj = (np.concatenate(x) for x in zip(*found_t)) if found_t else (empty, empty)
  aq, ak, aj = (np.concatenate(x) for x in zip(*found_a)) if found_a else (empty,) * 3
  at = table[aq, ak]
  comparisons = ti.size + aq.size
  t_clips, a_caps = np.concatenate([ti, c2c[tj]]), np.concatenate([aj, at])
  distinct = np.unique(t_clips).size + np.unique(a_caps).size
  if d * d * min(comparisons, distinct) + 2 * d * comparisons > max_refine_fraction * full_cost:
    return fallback(np.asarray(sym), kappa)
  if comparisons <= distinct:  # one product row per comparison
    t2a_ahead, a2t_ahead = _refine_by_differences(a64, t64, sym, ti, tj, c2c[tj], aq, at, aj)
  else:  # one product row per distinct vector
    t2a_ahead, a2t_ahead = _refine_by_rows(a64, t64, sym, ti, tj, c2c[tj], aq, at, aj)
  np.add.at(t2a, tj, t2a_ahead.astype(np.int64))
  np.add.at(a2t_count, (aq, ak), a2t_ahead.astype(np.int64))
  # Sorted counts + h are the ranks of a clip's captions, best first (padding last).
  a2t_count = np.sort(np.where(valid, a2t_count, np.iinfo(np.int64).max // 2), axis=1)
  h = np.arange(1, table.shape[1] + 1)[None, :]
  a2t = np.where(np.arange(table.shape[1])[None, :] < counts[:, None], a2t_count + h, nc + 1)
  return DistanceRanks(t2a, a2t, counts, int(ti.size + aq.size), False, kappa)


def distance_metrics(audio, text, caption_to_clip, metric_matrix, **options) -> dict:
  """{"t2a": metrics, "a2t": metrics} (R@k, medR, meanR, mAP@10) by the distance."""
  r = distance_ranks(audio, text, caption_to_clip, metric_matrix, **options)
  return {"t2a": retrieval_metrics(r.t2a), "a2t": retrieval_metrics(r.a2t, r.counts)}
