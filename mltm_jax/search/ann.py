"""faiss-cpu indexes behind the same interface as :class:`~mltm_jax.search.exact.ExactIndex`.

* ``flat``: ``IndexFlatL2``, exact (the reference the benchmarks compare with).
* ``ivf``:  ``IndexIVFFlat``: k-means into ``nlist`` lists (trained on at most
  ``train_size`` gallery rows), a query scans its ``nprobe`` nearest lists.
* ``hnsw``: ``IndexHNSWFlat``: a graph with ``hnsw_m`` links per node, built with
  ``ef_construction``, searched with ``ef_search``.

faiss returns squared L2 distances; ``search`` returns Euclidean ones, as ExactIndex.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

ANN_KINDS = ("flat", "ivf", "hnsw")


@dataclasses.dataclass(frozen=True)
class AnnParams:
  """Build and search parameters of the faiss indexes (ignored where they do not apply)."""

  nlist: int = 0  # ivf lists; 0 = about 4 sqrt(N), at least 1
  nprobe: int = 16  # ivf lists scanned per query
  train_size: int = 65536  # ivf: k-means training rows (a seeded sample of the gallery)
  hnsw_m: int = 32  # hnsw links per node
  ef_construction: int = 80  # hnsw build beam
  ef_search: int = 128  # hnsw search beam
  seed: int = 0

  def problems(self) -> list[str]:
    out = []
    for name in ("nprobe", "train_size", "hnsw_m", "ef_construction", "ef_search"):
      if getattr(self, name) < 1:
        out.append(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.nlist < 0:
      out.append(f"--nlist must be >= 0, got {self.nlist}")
    return out


def default_nlist(n: int) -> int:
  return max(1, min(n // 39, round(4 * np.sqrt(n))))


class FaissIndex:
  """A faiss index over a float32 gallery [N, r]; ``search`` -> (dist [Q, k], ids [Q, k])."""

  def __init__(self, index, kind: str, params: AnnParams):
    self.index = index
    self.kind = kind
    self.params = params
    self.size = int(index.ntotal)
    self.dim = int(index.d)
    self.set_search_params(params)

  @classmethod
  def build(cls, gallery: np.ndarray, kind: str, params: AnnParams | None = None) -> FaissIndex:
    import faiss

    params = params or AnnParams()

    if kind not in ANN_KINDS:
      raise ValueError(f"unknown faiss index kind {kind!r}; expected one of {ANN_KINDS}")
    problems = params.problems()
    if problems:
      raise ValueError(problems[0])
    gallery = np.ascontiguousarray(gallery, np.float32)
    if gallery.ndim != 2 or gallery.shape[0] == 0:
      raise ValueError(f"gallery must be [N >= 1, r], got shape {gallery.shape}")
    n, d = gallery.shape
    if kind == "flat":
      index = faiss.IndexFlatL2(d)
    elif kind == "hnsw":
      index = faiss.IndexHNSWFlat(d, params.hnsw_m)
      index.hnsw.efConstruction = params.ef_construction
    else:
      nlist = min(params.nlist or default_nlist(n), n)
      index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
      index.cp.seed = params.seed
      rows = np.random.default_rng(params.seed).permutation(n)[: max(params.train_size, nlist)]
      index.train(gallery[np.sort(rows)])
    index.add(gallery)
    return cls(index, kind, params)

  def set_search_params(self, params: AnnParams) -> None:
    self.params = params
    if self.kind == "ivf":
      self.index.nprobe = min(params.nprobe, self.index.nlist)
    elif self.kind == "hnsw":
      self.index.hnsw.efSearch = params.ef_search

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances float32 [Q, k] ascending, ids int64 [Q, k]); ids -1 where fewer than k
    rows were reached (approximate kinds)."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
    if queries.shape[1] != self.dim:
      raise ValueError(f"queries have dimension {queries.shape[1]}, the index {self.dim}")
    if not 1 <= k <= self.size:
      raise ValueError(f"k must be in [1, {self.size}], got {k}")
    d2, ids = self.index.search(queries, k)
    return np.sqrt(np.maximum(d2, 0.0)).astype(np.float32), ids.astype(np.int64)

  def warm_up(self, max_queries: int, max_k: int) -> int:
    """Nothing to compile (faiss); the same interface as ExactIndex.warm_up."""
    del max_queries, max_k
    return 0

  def save(self, path: str | Path) -> None:
    import faiss

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(self.index, str(tmp))
    tmp.replace(path)

  @classmethod
  def load(cls, path: str | Path, kind: str, params: AnnParams) -> FaissIndex:
    import faiss

    return cls(faiss.read_index(str(path)), kind, params)
