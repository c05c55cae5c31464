"""The float32 pass of :func:`mltm_jax.evaluation.distance_ranks.distance_ranks`.

The squared distances as one product of two factors, the error band of each entry (worst
case, or calibrated on a sample against float64) and, per query, the gallery items surely
closer than its target and those too close to call; the whole [N, Nc] matrix at once when it
fits in MAX_MATRIX_ELEMENTS, else in tiles of columns (T2A) and of rows (A2T). The method
and its bands: :mod:`mltm_jax.evaluation.distance_ranks`.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

UNIT_ROUNDOFF = 2.0**-24  # float32
KAPPA_FLOOR = 0.05
CALIBRATION_MARGIN = 10.0
QUAD_FORM_BLOCKS = 2  # blocks of quadratic_forms (the choice: WORKSPACE.md, Benchmarks)
# float32 distances held at once (1 GiB); a larger [N, Nc] matrix is processed in tiles.
MAX_MATRIX_ELEMENTS = 1 << 28
FACTOR_ALIGNMENT = 16  # columns of the product's factors (zero-padded)
PACKED_COUNT_LIMIT = 1 << 16  # two counts share one int32 reduction over fewer items
_HIGHEST = jax.lax.Precision.HIGHEST


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


def distance_factors(audio: jax.Array, text: jax.Array, m: jax.Array):
  """[N, D], [Nc, D], symmetric [D, D] -> (left [N, K], right [Nc, K]) with left @ right.T
  = the squared distances: left = [-2 a M, alpha, 1, 0...], right = [t, 1, beta, 0...],
  alpha = a^T M a, beta = t^T M t by :func:`quadratic_forms` (N D^2 + 0.75 Nc D^2
  multiply-adds, in the inputs' dtype). K = D + 2 rounded up to a multiple of
  FACTOR_ALIGNMENT: the zero columns add exact zeros, and the product runs faster on
  aligned rows (WORKSPACE.md, Benchmarks)."""
  p = jnp.dot(audio, m, precision=_HIGHEST)
  alpha = jnp.sum(p * audio, axis=1)
  beta = quadratic_forms(text, m)
  pad = -(audio.shape[1] + 2) % FACTOR_ALIGNMENT
  zeros = lambda x: jnp.zeros((x.shape[0], pad), x.dtype)
  left = jnp.concatenate([-2.0 * p, alpha[:, None], jnp.ones_like(alpha)[:, None], zeros(p)], 1)
  right = jnp.concatenate([text, jnp.ones_like(beta)[:, None], beta[:, None], zeros(text)], 1)
  return left, right


@jax.jit
def product(left: jax.Array, right: jax.Array) -> jax.Array:
  """[R, K], [C, K] -> [R, C] left @ right.T."""
  return jnp.dot(left, right.T, precision=_HIGHEST)


@jax.jit
def squared_distance_matrix(audio: jax.Array, text: jax.Array, m: jax.Array) -> jax.Array:
  """[N, D], [Nc, D], symmetric [D, D] -> [N, Nc] (a_i - t_j)^T M (a_i - t_j), unclamped:
  the product of :func:`distance_factors` (N Nc K more multiply-adds)."""
  left, right = distance_factors(audio, text, m)
  return jnp.dot(left, right.T, precision=_HIGHEST)


def below_and_upto(d2, lo, hi, axis: int, packed: bool):
  """int32 counts (#(d2 < lo), #(d2 <= hi)) along ``axis``.

  ``packed`` (fewer than PACKED_COUNT_LIMIT items along ``axis``): one reduction of
  (d2 < lo) + 65536 (d2 <= hi). The callers loop with lax.map over targets so that each
  pass runs one reduction: XLA's CPU code runs several reductions of one matrix fused
  together slower than one at a time.
  """
  if packed:
    both = (d2 < lo).astype(jnp.int32) + (d2 <= hi).astype(jnp.int32) * 65536
    both = jnp.sum(both, axis=axis, dtype=jnp.int32)
    return both & 0xFFFF, both >> 16
  below = jnp.sum(d2 < lo, axis=axis, dtype=jnp.int32)
  return below, jnp.sum(d2 <= hi, axis=axis, dtype=jnp.int32)


@jax.jit
def symmetric_part(m: jax.Array) -> jax.Array:
  """[D, D] -> (M + M^T) / 2, in M's dtype: once per evaluation, read by :func:`prepare`,
  :func:`calibrate` and the float64 refinement."""
  return (m + m.T) / 2


@functools.partial(jax.jit, static_argnames=("bound",))
def prepare(audio, text, sym, *, bound: str):
  """The float32 factors and the band's scale (run under x64).

  audio [N, D], text [Nc, D] float32; sym [D, D] float64, symmetric
  (:func:`symmetric_part`). Returns a dict: left, right
  (:func:`distance_factors` of sym in float32), na, nt (float32 row norms), finite (sym,
  audio and text finite, and finite in float32), mu (sym's scale of the band) and, for
  "worst_case", coef (the band of entry (i, j) is coef (na_i + nt_j)^2).
  """
  d = audio.shape[1]
  u = UNIT_ROUNDOFF
  left, right = distance_factors(audio, text, sym.astype(jnp.float32))
  na = jnp.linalg.norm(audio, axis=1)
  nt = jnp.linalg.norm(text, axis=1)
  in_range = jnp.all(jnp.abs(sym) <= jnp.finfo(jnp.float32).max)  # False for NaN too
  finite = in_range & jnp.all(jnp.isfinite(na)) & jnp.all(jnp.isfinite(nt))
  out = {"left": left, "right": right, "na": na, "nt": nt, "finite": finite}
  if bound == "worst_case":
    gamma = (d + 8) * u / (1.0 - (d + 8) * u) + 4 * u
    mu = jnp.max(jnp.sum(jnp.abs(sym), axis=1))  # >= ||M||_2
    # + the rounding of the inputs to float32: |d2(rounded) - d2| <= 3.01 u mu (|a| + |t|)^2.
    out["coef"] = 1.01 * 3.0 * gamma * mu + 3.01 * u * mu
  else:  # mu: a scale only, the calibrated kappa absorbs how far it is from ||M||_2
    out["mu"] = jnp.max(jnp.linalg.norm(sym, axis=1))  # rows = columns: symmetric
  return out


@jax.jit
def calibrate(d2, rows, cols, a_sample, t_sample, sym, na, nt, mu):
  """(kappa, coef) of the statistical band (run under x64): the float32 entries d2[rows][:,
  cols] of a computed tile against the same entries in float64 (a_sample, t_sample: the
  float64 rows; na [N], nt [>= max(cols) + 1]: the row norms of every clip and caption)."""
  na, nt = na[rows], nt[cols]
  d = a_sample.shape[1]
  p = jnp.dot(a_sample, sym, precision=_HIGHEST)
  q = jnp.dot(t_sample, sym, precision=_HIGHEST)
  exact = (
    jnp.sum(p * a_sample, axis=1)[:, None]
    + jnp.sum(q * t_sample, axis=1)[None, :]
    - 2.0 * jnp.dot(a_sample, q.T, precision=_HIGHEST)
  )
  unit = 3.0 * math.sqrt(d) * UNIT_ROUNDOFF * mu * (na[:, None] + nt[None, :]) ** 2
  error = jnp.abs(d2[rows][:, cols].astype(jnp.float64) - exact)
  kappa = jnp.maximum(KAPPA_FLOOR, CALIBRATION_MARGIN * jnp.max(error / unit))
  return kappa, kappa * 3.0 * math.sqrt(d) * UNIT_ROUNDOFF * mu


# The counts run as two programs of their own: fused into one program with the matrix
# product or with each other, XLA's CPU code for them is slower (WORKSPACE.md, Benchmarks).


@functools.partial(jax.jit, static_argnames=("packed",))
def count_t2a(d2, na, nt, coef, c2c, *, packed: bool):
  """T2A: caption j (a column of d2 [N, W]) queries the clips; its target is clip c2c[j]
  (not counted).

  Returns (sure, uncertain) int32 [W] and the uncertain interval (lo, hi) [W]; the band of
  entry (i, j), coef (na_i + nt_j)^2, is bounded per query by the largest na.
  """
  coef = coef.astype(jnp.float32)
  band = lambda x, y: coef * (x + y) ** 2
  tgt = d2[c2c, jnp.arange(d2.shape[1], dtype=jnp.int32)]
  width = band(na[c2c], nt) + band(jnp.max(na), nt)
  lo, hi = tgt - width, tgt + width
  below, upto = below_and_upto(d2, lo[None, :], hi[None, :], 0, packed)
  return below, upto - below - 1, lo, hi


@functools.partial(jax.jit, static_argnames=("packed",))
def count_a2t(d2, na, nt, coef, table, valid, *, packed: bool):
  """A2T: clip i (a row of d2 [R, Nc]) queries the captions; targets table[i, k]; its own
  captions not counted.

  Returns (sure, uncertain) int32 [R, K] (0 where not valid) and the intervals (lo, hi)
  [R, K]; the band is bounded per query by the largest nt.
  """
  coef = coef.astype(jnp.float32)
  band = lambda x, y: coef * (x + y) ** 2
  t = jnp.take_along_axis(d2, table, axis=1)  # [R, K]
  width = band(na[:, None], nt[table]) + band(na, jnp.max(nt))[:, None]
  lo, hi = t - width, t + width
  below, upto = jax.lax.map(
    lambda lh: below_and_upto(d2, lh[0][:, None], lh[1][:, None], 1, packed), (lo.T, hi.T)
  )
  below, upto = below.T, upto.T
  own = valid[:, None, :]  # [R, 1, K'] the clip's own captions, counted above
  below = below - jnp.sum(own & (t[:, None, :] < lo[:, :, None]), axis=-1, dtype=jnp.int32)
  upto = upto - jnp.sum(own & (t[:, None, :] <= hi[:, :, None]), axis=-1, dtype=jnp.int32)
  return jnp.where(valid, below, 0), jnp.where(valid, upto - below, 0), lo, hi


def spans(size: int, other: int, max_elements: int) -> list[tuple[int, int]]:
  """[lo, hi) spans covering ``size`` items, each span x ``other`` <= ``max_elements``
  (spans of one item at least)."""
  step = max(1, max_elements // max(1, other))
  return [(lo, min(size, lo + step)) for lo in range(0, size, step)]


def padded(x, length: int):
  """x (numpy or jax, [K, ...]) with zero rows appended up to ``length``."""
  if x.shape[0] == length:
    return x
  pad = [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
  return jnp.pad(x, pad) if isinstance(x, jax.Array) else np.pad(x, pad)


class Tiles:
  """The float32 squared distances of :func:`prepare`'s factors: the whole [N, Nc] matrix
  once when it has at most ``max_elements`` entries, else column tiles [N, W] (T2A) and row
  tiles [R, Nc] (A2T) of fixed shapes (the last one padded with zero rows)."""

  def __init__(self, left, right, max_elements: int):
    n, nc = left.shape[0], right.shape[0]
    self.left, self.right = left, right
    self.whole = n * nc <= max_elements
    self.col_spans = [(0, nc)] if self.whole else spans(nc, n, max_elements)
    self.row_spans = [(0, n)] if self.whole else spans(n, nc, max_elements)
    self.width = self.col_spans[0][1]
    self.height = self.row_spans[0][1]
    self._matrix = None
    self._first_columns = None  # computed for the calibration, then counted

  def columns(self, lo: int) -> jax.Array:
    """[N, W]: columns lo .. lo + W (past Nc: padding)."""
    if self.whole:
      return self.matrix()
    if lo == 0:
      if self._first_columns is None:
        self._first_columns = product(self.left, padded(self.right[: self.width], self.width))
      return self._first_columns
    return product(self.left, padded(self.right[lo : lo + self.width], self.width))

  def rows(self, lo: int) -> jax.Array:
    """[R, Nc]: rows lo .. lo + R (past N: padding)."""
    if self.whole:
      return self.matrix()
    return product(padded(self.left[lo : lo + self.height], self.height), self.right)

  def matrix(self) -> jax.Array:
    if self._matrix is None:
      self._matrix = product(self.left, self.right)
    return self._matrix
