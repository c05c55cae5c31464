"""Exact k-nearest-neighbour search in JAX, sharded over the mesh's ``data`` axis.

The gallery [N, r] is split by rows over the devices of a 1-D mesh (axis ``data``).
A block of queries is replicated; each device scans its rows in chunks of ``chunk``
rows with one matmul per chunk (||q - g||^2 = ||q||^2 + ||g||^2 - 2 q.g), keeps a
running top-k, and the devices' top-k lists are merged into the global one. The
[queries, chunk] float32 distance block is the largest temporary: ``budget_bytes`` bounds
the sum of the blocks alive on all devices at once (each device's block <=
budget_bytes / n_devices), whatever N and the number of queries. Besides it, XLA holds the
[chunk, r] slice of the gallery being read and [queries, k] top-k buffers
(``ExactIndex.temp_bytes`` reports the compiled program's temporaries).

Compiled programs are keyed by (query block, k bucket): query blocks are powers of two in
[8, 256] and k is rounded up to a power of two (at least 16, at most N) and the result
sliced, so the number of programs stays below 6 x log2(N) whatever k callers ask for;
:meth:`ExactIndex.warm_up` compiles those a bounded caller can reach.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
DEFAULT_BUDGET_BYTES = 256 << 20
MAX_CHUNK = 16384  # gallery rows per matmul (cache-friendly; the budget may lower it)
MAX_QUERY_BLOCK = 256
MIN_K_BUCKET = 16


class ExactIndex:
  """Exact Euclidean top-k over a gallery held on the devices of ``mesh``.

  Args:
    gallery: float32 [N, r] (e.g. embeddings times the metric factor W).
    mesh: a 1-D mesh with axis ``data`` (default: all devices).
    budget_bytes: bound on the float32 [queries, chunk] distance blocks alive at once,
      summed over devices.
    query_block: queries per compiled call (<= 256; fewer queries use a smaller block).
  """

  kind = "exact"

  def __init__(
    self,
    gallery: np.ndarray,
    mesh: Mesh | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    query_block: int = MAX_QUERY_BLOCK,
  ):
    gallery = np.asarray(gallery, np.float32)
    if gallery.ndim != 2 or gallery.shape[0] == 0:
      raise ValueError(f"gallery must be [N >= 1, r], got shape {gallery.shape}")
    self.mesh = mesh if mesh is not None else Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
    n_dev = self.mesh.devices.size
    self.size, self.dim = gallery.shape
    self.query_block = max(1, min(int(query_block), MAX_QUERY_BLOCK))
    per_device = budget_bytes // n_dev
    if per_device < 4 * self.query_block:
      raise ValueError(
        f"budget_bytes={budget_bytes} is below one query block x one row on {n_dev} devices"
      )
    self.rows_per_device = -(-self.size // n_dev)
    self.chunk = int(min(MAX_CHUNK, self.rows_per_device, per_device // (4 * self.query_block)))
    self.budget_bytes = budget_bytes
    sharding = NamedSharding(self.mesh, P(DATA_AXIS, None))
    padded = (n_dev * self.rows_per_device, self.dim)

    def shard(index):  # rows of one device; only the last one is padded (zeros, masked)
      rows = index[0]
      start, stop = rows.start or 0, rows.stop if rows.stop is not None else padded[0]
      part = gallery[start : min(stop, self.size)]
      if part.shape[0] < stop - start:
        part = np.concatenate(
          [part, np.zeros((stop - start - part.shape[0], self.dim), np.float32)]
        )
      return part

    self.gallery = jax.make_array_from_callback(padded, sharding, shard).block_until_ready()
    self._fns: dict[tuple[int, int], object] = {}

  @property
  def nbytes(self) -> int:
    """Device bytes of the stored gallery (padding included)."""
    return int(self.gallery.size * 4)

  def block_bytes(self, num_queries: int) -> int:
    """Bytes of the [query block, chunk] float32 distance blocks alive at once, all devices
    (the query block: the next power of two >= num_queries, at least 8, at most query_block)."""
    qb = min(self.query_block, _bucket(num_queries))
    return 4 * qb * self.chunk * self.mesh.devices.size

  def temp_bytes(self, num_queries: int, k: int) -> int:
    """XLA's temporary bytes of one compiled search call (its memory analysis): the distance
    block, the gallery chunk being read ([chunk, r] per device) and top-k buffers."""
    qb = min(self.query_block, _bucket(num_queries))
    q = jax.ShapeDtypeStruct((qb, self.dim), jnp.float32)
    fn = self._compiled(qb, self.k_bucket(k))
    stats = fn.lower(self.gallery, q).compile().memory_analysis()
    return int(stats.temp_size_in_bytes)

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances float32 [Q, k] ascending, ids int64 [Q, k]) of the k nearest rows."""
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    if queries.shape[1] != self.dim:
      raise ValueError(f"queries have dimension {queries.shape[1]}, the index {self.dim}")
    if not 1 <= k <= self.size:
      raise ValueError(f"k must be in [1, {self.size}], got {k}")
    nq = queries.shape[0]
    qb = min(self.query_block, _bucket(nq))
    fn = self._compiled(qb, self.k_bucket(k))
    dists, ids = [], []
    for start in range(0, nq, qb):
      block = queries[start : start + qb]
      rows = block.shape[0]
      if rows < qb:
        block = np.concatenate([block, np.zeros((qb - rows, self.dim), np.float32)])
      d, i = fn(self.gallery, block)
      dists.append(np.asarray(d)[:rows, :k])
      ids.append(np.asarray(i)[:rows, :k])
    if not dists:
      return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(dists), np.concatenate(ids).astype(np.int64)

  def k_bucket(self, k: int) -> int:
    """The k a search for k results is compiled with: the next power of two >= k, at least
    16, at most N (the first k of its sorted results are the answer)."""
    return min(self.size, max(MIN_K_BUCKET, 1 << max(0, int(k) - 1).bit_length()))

  def warm_up(self, max_queries: int, max_k: int) -> int:
    """Compiles every program a call with <= max_queries queries and k <= max_k can use;
    returns how many there are."""
    top = _bucket(max(1, max_queries))
    blocks = sorted({min(self.query_block, 8 << i) for i in range(6) if 8 << i <= top})
    top_k = self.k_bucket(min(max(1, max_k), self.size))
    ks = [min(self.size, MIN_K_BUCKET)]
    while ks[-1] < top_k:
      ks.append(min(self.size, 2 * ks[-1]))
    for qb in blocks:
      for kb in ks:
        d, _ = self._compiled(qb, kb)(self.gallery, np.zeros((qb, self.dim), np.float32))
        d.block_until_ready()
    return len(blocks) * len(ks)

  def _compiled(self, qb: int, k: int):
    key = (qb, k)
    if key not in self._fns:
      self._fns[key] = _make_search_fn(
        self.mesh, self.size, self.rows_per_device, self.chunk, qb, k
      )
    return self._fns[key]


def _bucket(n: int) -> int:
  """Query block for n queries: the next power of two >= n, at least 8 (few compiled shapes)."""
  return max(8, 1 << max(0, int(n) - 1).bit_length())


def _make_search_fn(mesh: Mesh, size: int, rows: int, chunk: int, qb: int, k: int):
  """jit: (gallery [n_dev * rows, r] sharded, queries [qb, r]) -> (dist [qb, k], ids [qb, k])."""
  k_chunk = min(k, chunk)  # candidates per chunk
  k_local = min(k, rows)  # running top-k per device
  num_chunks = -(-rows // chunk)

  def local_topk(g, q):
    # g: this device's [rows, r]; q: [qb, r]. Returns [qb, k_local] (scores, global ids).
    base = jax.lax.axis_index(DATA_AXIS) * rows

    def body(i, carry):
      best_s, best_i = carry
      nominal = i * chunk
      start = jnp.minimum(nominal, rows - chunk)  # the last chunk may overlap the previous
      gi = jax.lax.dynamic_slice_in_dim(g, start, chunk, axis=0)
      local = start + jnp.arange(chunk)
      valid = (local >= nominal) & (base + local < size)
      gg = jnp.where(valid, jnp.sum(gi * gi, axis=1), jnp.inf)
      s = gg[None, :] - 2.0 * jnp.dot(q, gi.T, precision=jax.lax.Precision.HIGHEST)
      neg, idx = jax.lax.top_k(-s, k_chunk)
      all_neg = jnp.concatenate([best_s, neg], axis=1)
      all_id = jnp.concatenate([best_i, base + start + idx], axis=1)
      top, pos = jax.lax.top_k(all_neg, k_local)
      return top, jnp.take_along_axis(all_id, pos, axis=1)

    init = (jnp.full((qb, k_local), -jnp.inf, jnp.float32), jnp.zeros((qb, k_local), jnp.int32))
    init = jax.lax.pcast(init, (DATA_AXIS,), to="varying")  # per-device carries
    return jax.lax.fori_loop(0, num_chunks, body, init)

  sharded = jax.shard_map(
    local_topk,
    mesh=mesh,
    in_specs=(P(DATA_AXIS, None), P()),
    out_specs=(P(None, DATA_AXIS), P(None, DATA_AXIS)),
  )

  def search(g, q):
    neg, ids = sharded(g, q)  # [qb, n_dev * k_local]
    top, pos = jax.lax.top_k(neg, k)
    ids = jnp.take_along_axis(ids, pos, axis=1)
    qq = jnp.sum(q * q, axis=1, keepdims=True)
    return jnp.sqrt(jnp.maximum(qq - top, 0.0)), ids

  rep = NamedSharding(mesh, P())
  return jax.jit(
    search,
    in_shardings=(NamedSharding(mesh, P(DATA_AXIS, None)), rep),
    out_shardings=(rep, rep),
  )
