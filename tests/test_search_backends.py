"""Search backends: exact JAX top-k equals numpy brute force (1 and 8 devices, any chunking,
bounded blocks); faiss flat equals it too; IVF and HNSW recall on a clustered set."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mltm_jax.search import AnnParams, ExactIndex, FaissIndex, make_index

REPO = Path(__file__).resolve().parents[1]


def brute_force(gallery, queries, k):
  """numpy float64 reference: (distances [Q, k], ids [Q, k]), ties broken by id."""
  g = gallery.astype(np.float64)
  q = queries.astype(np.float64)
  d = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
  ids = np.argsort(d, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(d, ids, axis=1), ids


def data(n, q, d, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(q, d)).astype(np.float32)


CASES = [  # (N, Q, D, k, budget bytes): many chunks, ragged last chunk, k = N, one query
  (1000, 37, 24, 10, 1 << 15),
  (4099, 300, 16, 7, 1 << 16),
  (50, 3, 8, 50, 1 << 20),
  (5, 1, 4, 1, 1 << 12),
  (300, 5, 8, 20, 1 << 13),  # chunks of 8 rows (1 on 8 devices) < k
]


@pytest.mark.parametrize("n,q,d,k,budget", CASES)
def test_exact_equals_numpy_brute_force(n, q, d, k, budget):
  gallery, queries = data(n, q, d)
  index = ExactIndex(gallery, budget_bytes=budget)
  dist, ids = index.search(queries, k)
  ref_d, ref_i = brute_force(gallery, queries, k)
  np.testing.assert_array_equal(ids, ref_i)
  np.testing.assert_allclose(dist, ref_d, rtol=1e-5, atol=1e-5)
  assert index.block_bytes(q) <= budget
  # XLA's own accounting of the compiled call's temporaries: the distance block, the gallery
  # chunk being read and top-k buffers, nothing of size queries x N.
  chunk_bytes = index.chunk * d * 4
  assert index.temp_bytes(q, k) <= 1.02 * (index.block_bytes(q) + chunk_bytes) + (64 << 10)


def test_exact_rejects_bad_input():
  gallery, queries = data(10, 2, 4)
  index = ExactIndex(gallery)
  with pytest.raises(ValueError, match="k must be in"):
    index.search(queries, 11)
  with pytest.raises(ValueError, match="dimension"):
    index.search(queries[:, :3], 2)
  with pytest.raises(ValueError, match="budget_bytes"):
    ExactIndex(gallery, budget_bytes=16)


EIGHT_DEVICES = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, ".")
from tests.test_search_backends import CASES, brute_force, data
from mltm_jax.search import ExactIndex
out = {"devices": jax.device_count(), "ok": []}
for n, q, d, k, budget in CASES:
  budget = max(budget, 8 * 4 * 256)
  gallery, queries = data(n, q, d)
  index = ExactIndex(gallery, budget_bytes=budget)
  dist, ids = index.search(queries, k)
  ref_d, ref_i = brute_force(gallery, queries, k)
  shards = {s.device.id: s.data.shape[0] for s in index.gallery.addressable_shards}
  out["ok"].append(bool((ids == ref_i).all()) and bool(np.allclose(dist, ref_d, 1e-5, 1e-5))
                   and index.block_bytes(q) <= budget and len(shards) == 8)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_exact_on_eight_simulated_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  res = subprocess.run(
    [sys.executable, "-c", EIGHT_DEVICES],
    check=False,
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(res.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8
  assert out["ok"] == [True] * len(CASES), out


def test_faiss_flat_equals_brute_force_and_backends_share_the_interface():
  gallery, queries = data(2000, 25, 32, seed=3)
  ref_d, ref_i = brute_force(gallery, queries, 5)
  for backend in ("exact", "flat"):
    index = make_index(gallery, backend)
    dist, ids = index.search(queries, 5)
    assert dist.dtype == np.float32 and ids.dtype == np.int64 and dist.shape == (25, 5)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="unknown search backend"):
    make_index(gallery, "lsh")


def clustered(n=20000, q=200, d=32, clusters=100, seed=0):
  """Gaussian blobs (std 0.1 around unit-norm centres); queries are new points of the blobs."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, d))
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  g = centres[rng.integers(0, clusters, n)] + 0.1 * rng.normal(size=(n, d))
  qs = centres[rng.integers(0, clusters, q)] + 0.1 * rng.normal(size=(q, d))
  return g.astype(np.float32), qs.astype(np.float32)


def recall_at(ids, ref_ids):
  return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, ref_ids)]))


@pytest.mark.slow  # compiles for several seconds on 2 cores
@pytest.mark.parametrize(
  "kind,params",
  [("ivf", AnnParams(nlist=100, nprobe=8)), ("hnsw", AnnParams(hnsw_m=16, ef_search=64))],
)
def test_ann_recall_on_clustered_set(kind, params, tmp_path):
  gallery, queries = clustered()
  _, ref_i = brute_force(gallery, queries, 10)
  index = FaissIndex.build(gallery, kind, params)
  dist, ids = index.search(queries, 10)
  recall = recall_at(ids, ref_i)
  assert recall >= 0.9, recall
  assert np.all(np.diff(dist, axis=1) >= -1e-6)
  # Saved and reloaded, the index answers the same.
  index.save(tmp_path / "x.faiss")
  again = FaissIndex.load(tmp_path / "x.faiss", kind, params)
  np.testing.assert_array_equal(again.search(queries, 10)[1], ids)
  if kind == "ivf":  # fewer probed lists: lower recall (the knob works)
    index.set_search_params(AnnParams(nlist=100, nprobe=1))
    assert recall_at(index.search(queries, 10)[1], ref_i) < recall
