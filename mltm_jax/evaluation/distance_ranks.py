"""T2A / A2T ranks by the learned distance, equal to the float64 ranks, at float32 speed.

Ranking by c_M(u, v) = sqrt((u - v)^T M (u - v)) needs every clip-caption distance, an
[N, Nc] matrix whose float64 computation is the whole cost of an evaluation (D^2 work
per item, D per pair). Here:

1. **float32 pass** (one XLA program): squared distances ``d2 = alpha_i + beta_j - 2 G_ij``
   with ``alpha = a^T M a``, ``beta = t^T M t`` (over M's upper block triangle: 0.75 D^2
   per caption), ``G = (a M) t^T``. Entry (i, j) gets an error band
   ``B_ij = c (|a_i| + |t_j|)^2`` (below), bounded per query by the largest norm on the
   gallery side. For each query and each of its relevant items (targets), every other
   gallery item is counted as surely closer (``d2 < d2_target - B_target - B_query``),
   surely farther (``d2 > d2_target + ...``) or uncertain.
2. **float64 refinement** of the uncertain comparisons only: T2A compares
   ``alpha - 2 G`` (beta cancels; D^2 per clip for ``a M``), A2T compares
   ``beta - 2 G`` (alpha cancels; D^2 per caption for ``M t``), from the inputs as
   given. Identical vectors share one computation, so exact duplicates tie exactly
   (pessimistic rule).
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
  scale), with ``kappa`` calibrated on the data in the same program: the float32
  entries of a 32 x 32 sample of clips x captions are recomputed in float64 and
  ``kappa = max(KAPPA_FLOOR, CALIBRATION_MARGIN x max(error / band(kappa = 1)))``, so
  the band is >= 10x the largest float32 error of the sample. Not a proof: the ranks
  equal the float64 ranks unless a rounding error exceeds the band (how far the sample's
  largest error is from the whole matrix's: WORKSPACE.md, Benchmarks);
  tests/test_retrieval.py checks them against brute force on planted near ties.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mltm_jax.evaluation.retrieval import (
  _as_index,
  captioned_clip_table,
  relevant_ranks,
  retrieval_metrics,
)

BOUNDS = ("statistical", "worst_case")
UNIT_ROUNDOFF = 2.0**-24  # float32
KAPPA_FLOOR = 0.05
CALIBRATION_MARGIN = 10.0
CALIBRATION_SAMPLE = 32  # clips x captions recomputed in float64
# Refine comparison by comparison while that costs less than this fraction of the
# float64 matrix.
MAX_REFINE_FRACTION = 0.25
QUAD_FORM_BLOCKS = 2  # blocks of quadratic_forms (the choice: WORKSPACE.md, Benchmarks)
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


def quadratic_forms(x: jax.Array, m: jax.Array, blocks: int = QUAD_FORM_BLOCKS) -> jax.Array:
  """[K, D], symmetric [D, D] -> [K] x_k^T M x_k over M's upper block triangle.

  Block row b contributes x_b . (M_bb x_b + 2 sum_{c > b} M_bc x_c): (blocks + 1) /
  (2 blocks) of the D^2 multiply-adds of ``x M`` per row (smaller blocks make the
  products too thin to run at full speed).
  """
  d = x.shape[1]
  edges = [round(d * b / blocks) for b in range(blocks + 1)]
  total = jnp.zeros(x.shape[:1], x.dtype)
  for lo, hi in itertools.pairwise(edges):
    if hi == lo:
      continue
    w = jnp.concatenate([m[lo:hi, lo:hi], 2.0 * m[lo:hi, hi:]], axis=1)
    total = total + jnp.sum(jnp.dot(x[:, lo:hi], w, precision=_HIGHEST) * x[:, lo:], axis=1)
  return total


@jax.jit
def squared_distance_matrix(audio: jax.Array, text: jax.Array, m: jax.Array) -> jax.Array:
  """[N, D], [Nc, D], symmetric [D, D] -> [N, Nc] (a_i - t_j)^T M (a_i - t_j), unclamped.

  alpha_i + beta_j - 2 (a_i M) . t_j as one matrix product of [-2 a M, alpha, 1] and
  [t, 1, beta]; beta by :func:`quadratic_forms`: N D^2 + 0.75 Nc D^2 + N Nc (D + 2)
  multiply-adds, in the inputs' dtype.
  """
  p = jnp.dot(audio, m, precision=_HIGHEST)
  alpha = jnp.sum(p * audio, axis=1)
  beta = quadratic_forms(text, m)
  left = jnp.concatenate([-2.0 * p, alpha[:, None], jnp.ones_like(alpha)[:, None]], axis=1)
  right = jnp.concatenate([text, jnp.ones_like(beta)[:, None], beta[:, None]], axis=1)
  return jnp.dot(left, right.T, precision=_HIGHEST)


def _below_and_upto(d2, lo, hi):
  """int32 (d2 < lo) + 65536 (d2 <= hi): two counts in one reduction (gallery < 65536).

  One reduction per pass (the callers loop with lax.map over targets): XLA's CPU code
  runs several reductions of one matrix fused together slower than one at a time.
  """
  return (d2 < lo).astype(jnp.int32) + (d2 <= hi).astype(jnp.int32) * 65536


@functools.partial(jax.jit, static_argnames=("bound",))
def _filter(audio, text, m, a_sample, t_sample, rows, cols, *, bound: str):
  """The float32 pass and its calibration (run under x64).

  audio [N, D], text [Nc, D] float32; m [D, D] float64 (as given); a_sample = audio[rows],
  t_sample = text[cols] in float64. Returns a dict: d2 (float32 [N, Nc]), na, nt (row
  norms), sym (sym(M), float64), finite (M, audio and text finite), kappa, coef (the
  band of entry (i, j) is coef (na_i + nt_j)^2).
  """
  d = audio.shape[1]
  u = UNIT_ROUNDOFF
  sym = (m + m.T) / 2
  m32 = sym.astype(jnp.float32)
  d2 = squared_distance_matrix(audio, text, m32)
  na = jnp.linalg.norm(audio, axis=1)
  nt = jnp.linalg.norm(text, axis=1)
  finite = jnp.all(jnp.isfinite(m)) & jnp.all(jnp.isfinite(na)) & jnp.all(jnp.isfinite(nt))
  if bound == "worst_case":
    gamma = (d + 8) * u / (1.0 - (d + 8) * u) + 4 * u
    mu = jnp.max(jnp.sum(jnp.abs(sym), axis=1))  # >= ||M||_2
    kappa = jnp.zeros([], jnp.float64)
    # + the rounding of the inputs to float32: |d2(rounded) - d2| <= 3.01 u mu (|a| + |t|)^2.
    coef = 1.01 * 3.0 * gamma * mu + 3.01 * u * mu
  else:  # mu: a scale only, the calibrated kappa absorbs how far it is from ||M||_2
    mu = jnp.max(jnp.linalg.norm(sym, axis=0))
    p = jnp.dot(a_sample, sym, precision=_HIGHEST)
    q = jnp.dot(t_sample, sym, precision=_HIGHEST)
    exact = (
      jnp.sum(p * a_sample, axis=1)[:, None]
      + jnp.sum(q * t_sample, axis=1)[None, :]
      - 2.0 * jnp.dot(a_sample, q.T, precision=_HIGHEST)
    )
    unit = 3.0 * math.sqrt(d) * u * mu * (na[rows][:, None] + nt[cols][None, :]) ** 2
    error = jnp.abs(d2[rows][:, cols].astype(jnp.float64) - exact)
    kappa = jnp.maximum(KAPPA_FLOOR, CALIBRATION_MARGIN * jnp.max(error / unit))
    coef = kappa * 3.0 * math.sqrt(d) * u * mu
  return {"d2": d2, "na": na, "nt": nt, "sym": sym, "finite": finite, "kappa": kappa, "coef": coef}


# The counts run as two programs of their own: fused into one program with the matrix
# product or with each other, XLA's CPU code for them is slower (WORKSPACE.md, Benchmarks).


@jax.jit
def _count_t2a(d2, na, nt, coef, c2c):
  """T2A: caption j queries the clips; its target is clip c2c[j] (not counted).

  Returns (sure, uncertain) int32 [Nc] and the uncertain interval (lo, hi) [Nc]; the
  band of entry (i, j), coef (na_i + nt_j)^2, is bounded per query by the largest na.
  """
  coef = coef.astype(jnp.float32)
  band = lambda x, y: coef * (x + y) ** 2
  tgt = d2[c2c, jnp.arange(d2.shape[1], dtype=jnp.int32)]
  width = band(na[c2c], nt) + band(jnp.max(na), nt)
  lo, hi = tgt - width, tgt + width
  both = jnp.sum(_below_and_upto(d2, lo[None, :], hi[None, :]), axis=0, dtype=jnp.int32)
  return both & 0xFFFF, (both >> 16) - (both & 0xFFFF) - 1, lo, hi


@jax.jit
def _count_a2t(d2, na, nt, coef, table, valid):
  """A2T: clip i queries the captions; targets table[i, k]; its own captions not counted.

  Returns (sure, uncertain) int32 [N, K] (0 where not valid) and the intervals (lo, hi)
  [N, K]; the band is bounded per query by the largest nt.
  """
  coef = coef.astype(jnp.float32)
  band = lambda x, y: coef * (x + y) ** 2
  t = jnp.take_along_axis(d2, table, axis=1)  # [N, K]
  width = band(na[:, None], nt[table]) + band(na, jnp.max(nt))[:, None]
  lo, hi = t - width, t + width
  both = jax.lax.map(
    lambda lh: jnp.sum(
      _below_and_upto(d2, lh[0][:, None], lh[1][:, None]), axis=1, dtype=jnp.int32
    ),
    (lo.T, hi.T),
  ).T
  below, upto = both & 0xFFFF, both >> 16
  own = valid[:, None, :]  # [N, 1, K'] the clip's own captions, counted above
  below = below - jnp.sum(own & (t[:, None, :] < lo[:, :, None]), axis=-1, dtype=jnp.int32)
  upto = upto - jnp.sum(own & (t[:, None, :] <= hi[:, :, None]), axis=-1, dtype=jnp.int32)
  return jnp.where(valid, below, 0), jnp.where(valid, upto - below, 0), lo, hi


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


class _Float64Products:
  """x M in float64, by an XLA matrix product (not numpy: see WORKSPACE.md, Benchmarks).

  m64: the symmetric metric, float64 on the device (under jax x64).
  """

  def __init__(self, m64: jax.Array):
    self.m = m64

  def __call__(self, x: np.ndarray) -> np.ndarray:
    """float64 [K, D] -> x M [K, D], once per distinct row (duplicates get equal rows)."""
    uniq, inverse = _distinct_rows(np.asarray(x, np.float64))
    k, d = uniq.shape
    if k == 0:
      return np.zeros((0, d))
    rows = 64 * -(-k // 64) if k <= 1024 else 1 << (k - 1).bit_length()  # few shapes
    padded = np.zeros((rows, d))
    padded[:k] = uniq
    with jax.enable_x64(True):
      return np.asarray(_matmul(padded, self.m))[:k][inverse]


def _rowdot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Row-wise dot products [K] of [K, D] arrays, once per distinct pair of rows."""
  if x.shape[0] == 0:
    return np.zeros(0)
  uniq, inverse = _distinct_rows(np.concatenate([x, y], axis=1))
  d = x.shape[1]
  return np.einsum("kd,kd->k", uniq[:, :d], uniq[:, d:])[inverse]


def _device32(x: np.ndarray) -> jax.Array:
  """float32 copy on the device (CPU: handed over without a second copy when aligned)."""
  x = np.ascontiguousarray(x, np.float32)
  try:
    return jax.dlpack.from_dlpack(x)
  except (TypeError, ValueError, RuntimeError):
    return jnp.asarray(x)


def _fallback(audio, text, m64, c2c, table, valid, counts, kappa) -> DistanceRanks:
  t2a, a2t = _float64_ranks(
    np.asarray(audio, np.float64), np.asarray(text, np.float64), m64, c2c, table, valid
  )
  return DistanceRanks(t2a, a2t, counts, 0, True, kappa)


def _float64_ranks(audio64, text64, m64, c2c, table, valid):
  """Fallback: the whole float64 [N, Nc] matrix, then the vectorised numpy ranks."""
  p = audio64 @ m64
  alpha = np.einsum("id,id->i", p, audio64)
  beta = np.einsum("jd,jd->j", text64 @ m64, text64)
  d2 = alpha[:, None] + beta[None, :] - 2.0 * (p @ text64.T)
  t2a = relevant_ranks(-d2.T, c2c[:, None], np.ones((c2c.size, 1), bool))[:, 0]
  return t2a, relevant_ranks(-d2, table, valid)


def _sample_index(size: int, count: int) -> np.ndarray:
  return np.unique(np.linspace(0, size - 1, min(count, size)).round().astype(np.int64))


def distance_ranks(
  audio,
  text,
  caption_to_clip,
  metric_matrix,
  *,
  bound: str = "statistical",
  max_refine_fraction: float = MAX_REFINE_FRACTION,
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

  Returns:
    :class:`DistanceRanks`.
  """
  if bound not in BOUNDS:
    raise ValueError(f"distance_ranks: bound must be one of {BOUNDS}, got {bound!r}")
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
  if max(n, nc) >= 1 << 16 or max_refine_fraction <= 0:  # (counts packed in 16 bits)
    if not np.isfinite(m_in).all():
      raise ValueError("distance_ranks: metric_matrix has NaN or inf")
    m64 = np.asarray(m_in, np.float64)
    return _fallback(audio, text, (m64 + m64.T) / 2, c2c, table, valid, counts, 0.0)

  rows, cols = _sample_index(n, CALIBRATION_SAMPLE), _sample_index(nc, CALIBRATION_SAMPLE)
  with jax.enable_x64(True):
    out = _filter(
      _device32(audio),
      _device32(text),
      jnp.asarray(m_in, jnp.float64),
      a64(rows),
      t64(cols),
      jnp.asarray(rows, jnp.int32),
      jnp.asarray(cols, jnp.int32),
      bound=bound,
    )
    t2a_out = _count_t2a(out["d2"], out["na"], out["nt"], out["coef"], jnp.asarray(c2c, jnp.int32))
    a2t_out = _count_a2t(
      out["d2"],
      out["na"],
      out["nt"],
      out["coef"],
      jnp.asarray(table, jnp.int32),
      jnp.asarray(valid),
    )
  if not bool(out["finite"]):
    raise ValueError(
      "distance_ranks: audio, text or metric_matrix has NaN or inf (or values beyond float32)"
    )
  kappa = float(out["kappa"])
  m64 = out["sym"]
  t2a_sure, t2a_unsure, t2a_lo, t2a_hi = (np.asarray(x) for x in t2a_out)
  a2t_sure, a2t_unsure, a2t_lo, a2t_hi = (np.asarray(x) for x in a2t_out)
  d2 = out["d2"]
  full_cost = d * d * (n + nc) + d * n * nc
  if 2 * d * (int(t2a_unsure.sum()) + int(a2t_unsure.sum())) > max_refine_fraction * full_cost:
    return _fallback(audio, text, np.asarray(m64), c2c, table, valid, counts, kappa)

  # The uncertain comparisons (read from the float32 matrix, queries with any only).
  d2 = np.asarray(d2)
  times_m = _Float64Products(m64)
  cols = np.flatnonzero(t2a_unsure)
  sub = d2[:, cols]
  ti, pos = np.nonzero(
    (sub >= t2a_lo[cols]) & (sub <= t2a_hi[cols]) & (np.arange(n)[:, None] != c2c[cols])
  )
  tj = cols[pos]  # T2A: (clip ti, caption tj) against (c2c[tj], tj)
  rows, ks = np.nonzero(a2t_unsure)  # (clip, target) pairs with uncertain captions
  sub = d2[rows]
  r, aj = np.nonzero(
    (sub >= a2t_lo[rows, ks][:, None])
    & (sub <= a2t_hi[rows, ks][:, None])
    & (c2c[None, :] != rows[:, None])
  )
  aq, ak = rows[r], ks[r]  # A2T: (clip aq, caption aj) against (aq, table[aq, ak])
  at = table[aq, ak]
  clips = np.unique(np.concatenate([ti, c2c[tj]]))
  caps = np.unique(np.concatenate([aj, at]))
  refine_cost = d * d * (clips.size + caps.size) + 2 * d * (ti.size + aq.size)
  if refine_cost > max_refine_fraction * full_cost:
    return _fallback(audio, text, np.asarray(m64), c2c, table, valid, counts, kappa)

  t2a = 1 + t2a_sure.astype(np.int64)  # the caption's own clip counts itself
  a2t_count = a2t_sure.astype(np.int64)
  if ti.size:  # alpha_i - 2 a_i M t_j <= alpha_g - 2 a_g M t_j ?
    a_c = a64(clips)
    p = times_m(a_c)
    alpha = np.einsum("kd,kd->k", p, a_c)
    slot = np.searchsorted(clips, np.concatenate([ti, c2c[tj]]))
    score = alpha[slot] - 2.0 * _rowdot(p[slot], t64(np.concatenate([tj, tj])))
    np.add.at(t2a, tj, (score[: ti.size] <= score[ti.size :]).astype(np.int64))
  if aq.size:  # beta_j - 2 a_i M t_j <= beta_r - 2 a_i M t_r ?
    t_c = t64(caps)
    qm = times_m(t_c)
    beta = np.einsum("kd,kd->k", qm, t_c)
    slot = np.searchsorted(caps, np.concatenate([aj, at]))
    score = beta[slot] - 2.0 * _rowdot(a64(np.concatenate([aq, aq])), qm[slot])
    np.add.at(a2t_count, (aq, ak), (score[: aq.size] <= score[aq.size :]).astype(np.int64))
  # Sorted counts + h are the ranks of a clip's captions, best first (padding last).
  a2t_count = np.sort(np.where(valid, a2t_count, np.iinfo(np.int64).max // 2), axis=1)
  h = np.arange(1, table.shape[1] + 1)[None, :]
  a2t = np.where(np.arange(table.shape[1])[None, :] < counts[:, None], a2t_count + h, nc + 1)
  return DistanceRanks(t2a, a2t, counts, int(ti.size + aq.size), False, kappa)


def distance_metrics(audio, text, caption_to_clip, metric_matrix, **options) -> dict:
  """{"t2a": metrics, "a2t": metrics} (R@k, medR, meanR, mAP@10) by the distance."""
  r = distance_ranks(audio, text, caption_to_clip, metric_matrix, **options)
  return {"t2a": retrieval_metrics(r.t2a), "a2t": retrieval_metrics(r.a2t, r.counts)}
