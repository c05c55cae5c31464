"""Nearest-neighbour search over galleries stored as x W (M = W W^T): one interface,
``index.search(queries [Q, r], k) -> (distances [Q, k], ids [Q, k])``, Euclidean distances
ascending, for every backend:

* ``exact``: JAX, chunked matmul + top-k, sharded over the mesh (:mod:`.exact`);
* ``flat``, ``ivf``, ``hnsw``: faiss-cpu (:mod:`.ann`).
"""

from __future__ import annotations

import numpy as np

from mltm_jax.search.ann import ANN_KINDS, AnnParams, FaissIndex
from mltm_jax.search.exact import DEFAULT_BUDGET_BYTES, ExactIndex

BACKENDS = ("exact",) + ANN_KINDS

__all__ = ["BACKENDS", "AnnParams", "ExactIndex", "FaissIndex", "make_index"]


def make_index(
  gallery: np.ndarray,
  backend: str = "exact",
  params: AnnParams | None = None,
  budget_bytes: int = DEFAULT_BUDGET_BYTES,
  mesh=None,
):
  """A search index over gallery [N, r] by backend name (see module docstring)."""
  if backend == "exact":
    return ExactIndex(gallery, mesh=mesh, budget_bytes=budget_bytes)
  if backend in ANN_KINDS:
    return FaissIndex.build(gallery, backend, params or AnnParams())
  raise ValueError(f"unknown search backend {backend!r}; expected one of {', '.join(BACKENDS)}")
