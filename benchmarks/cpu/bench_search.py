"""Benchmark ``search``: top-10 search over a 1M-item gallery (D = 1024, float32, 4 GB).

Gallery and queries: independent random unit vectors (Gaussian rows normalised), the
worst case for approximate search (no cluster structure: the 10 nearest neighbours of a
random query are barely nearer than the rest). With ``--search_structured`` a second ANN row,
``search_ann_clustered``, uses a clustered gallery of the same size (reported separately).

Rows:

* ``search_exact``: ours = ``mltm_jax.search.ExactIndex`` (JAX, chunked matmul + top-k, one
  device here) vs faiss ``IndexFlatL2`` on the same CPU, same 256 queries, k = 10.
  ``agree``: the same ids for every query and distances within 1e-4. QPS = queries / median s.
* ``search_ann``: ours = faiss ``IndexIVFFlat`` (``--search_nlist`` lists, k-means on 64k
  gallery rows) over 1000 other queries; ref = our exact search of the same queries, which
  is also the ground truth. recall_at_10 = |ANN top-10 & exact top-10| / 10 averaged over
  the queries. nprobe is swept over powers of two (2 timed calls each) until the recall
  reaches 0.95 or the IVF gets slower than exact search; ``sweep`` lists every point as
  nprobe:recall:qps. The row is timed at the first point reaching recall 0.95, else at the
  best recall among points >= 10x exact QPS, else at the last point. ratio = exact s / ANN s
  (the speed-up there); ``agree`` = recall >= 0.95. Extra JSON fields: recall_at_10, qps,
  exact_qps, speedup, nprobe, recall_at_10x_speed, speedup_at_recall_0.95.

Memory: ``index_mb`` = bytes held by each index (ours: the device gallery; faiss: its
vectors + lists); ``rss_gb`` = the process resident set size after each index was built
(ours/faiss; the numpy gallery the indexes are built from included), ``peak_rss_gb`` its
peak so far. Indexes are built one after the other and freed.
"""

from __future__ import annotations

import gc
import sys
import time

import numpy as np
from absl import flags

from benchmarks.roofline import Work
from benchmarks.timing import Row, Settings, time_call
from mltm_jax.search import AnnParams, ExactIndex, FaissIndex

flags.DEFINE_integer("search_n", 1_000_000, "search benchmark: gallery size.")
flags.DEFINE_integer("search_nlist", 1024, "search benchmark: IVF lists.")
flags.DEFINE_bool("search_structured", False, "search benchmark: also a clustered gallery row.")
FLAGS = flags.FLAGS

DIM, K = 1024, 10
EXACT_QUERIES, ANN_QUERIES = 256, 1000
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 10.0
TINY = {"n": 20000, "dim": 64, "exact_q": 64, "ann_q": 200, "nlist": 64}


def unit_rows(n: int, d: int, seed: int, block: int = 65536) -> np.ndarray:
  """float32 [n, d] random unit vectors, generated in blocks (no float64 temporary)."""
  rng = np.random.default_rng(seed)
  out = np.empty((n, d), np.float32)
  for s in range(0, n, block):
    x = rng.standard_normal((min(block, n - s), d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out[s : s + len(x)] = x
  return out


def clustered_rows(n: int, d: int, seed: int, clusters: int, spread: float = 0.5):
  """float32 [n, d] unit vectors around `clusters` random unit centres (noise std
  spread / sqrt(d) per coordinate), plus a generator of queries from the same clusters."""
  rng = np.random.default_rng(seed)
  centres = unit_rows(clusters, d, seed + 1)
  out = np.empty((n, d), np.float32)
  for s in range(0, n, 65536):
    m = min(65536, n - s)
    x = centres[rng.integers(0, clusters, m)]
    x += (spread / np.sqrt(d)) * rng.standard_normal((m, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out[s : s + m] = x

  def queries(q: int, qseed: int) -> np.ndarray:
    r = np.random.default_rng(qseed)
    x = centres[r.integers(0, clusters, q)]
    x = x + (spread / np.sqrt(d)) * r.standard_normal((q, d), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

  return out, queries


def peak_rss_gb() -> float:
  """The process's peak resident set size so far (ru_maxrss)."""
  import resource

  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 2**20
  return float("nan")


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
  return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, truth)]))


def faiss_bytes(index: FaissIndex) -> int:
  """Bytes of the stored vectors (+ ids and centroids for IVF), computed, not serialised."""
  vectors = index.size * index.dim * 4
  if index.kind == "ivf":
    return vectors + index.size * 8 + index.index.nlist * index.dim * 4
  return vectors


def ann_row(
  name: str,
  gallery: np.ndarray,
  queries: np.ndarray,
  truth: np.ndarray,
  exact_timing,
  nlist: int,
  settings: Settings,
  extra_params: dict,
) -> Row:
  """IVF over the gallery, nprobe swept; the row at the first nprobe reaching the target."""
  t0 = time.perf_counter()
  ivf = FaissIndex.build(gallery, "ivf", AnnParams(nlist=nlist, nprobe=1))
  build_s = time.perf_counter() - t0
  rss = rss_gb()
  size_mb = faiss_bytes(ivf) / 2**20
  nq = len(queries)
  exact_qps = nq / exact_timing.median_s
  sweep = []  # (nprobe, recall, qps)
  nprobe = 1
  while nprobe <= nlist:
    ivf.set_search_params(AnnParams(nlist=nlist, nprobe=nprobe))
    timing, (_, ids) = time_call(lambda: ivf.search(queries, K), runs=2, warmup=0)
    sweep.append((nprobe, recall_at_k(ids, truth), nq / timing.median_s))
    print(
      f"  [{name}] nprobe {nprobe}: recall@10 {sweep[-1][1]:.4f}, {sweep[-1][2]:.1f} qps"
      f" (exact {exact_qps:.1f})",
      file=sys.stderr,
      flush=True,
    )
    if sweep[-1][1] >= TARGET_RECALL or sweep[-1][2] < exact_qps:
      break  # target reached, or slower than exact search: going further cannot help
    nprobe *= 2
  at_target = [p for p in sweep if p[1] >= TARGET_RECALL]
  fast = [p for p in sweep if p[2] >= TARGET_SPEEDUP * exact_qps]
  # The row: the first point reaching the recall target, else the best recall at 10x speed,
  # else the last point swept.
  chosen = at_target[0] if at_target else fast[-1] if fast else sweep[-1]
  ivf.set_search_params(AnnParams(nlist=nlist, nprobe=chosen[0]))
  timing, (_, ids) = settings.time_ours(lambda: ivf.search(queries, K))
  chosen = (chosen[0], recall_at_k(ids, truth))
  qps = nq / timing.median_s
  params = {
    "N": len(gallery),
    "D": gallery.shape[1],
    "queries": nq,
    "k": K,
    "index": f"IVFFlat nlist={nlist}",
    "nprobe": chosen[0],
    "recall@10": round(chosen[1], 4),
    "qps": round(qps, 1),
    "exact_qps": round(exact_qps, 1),
    "build_s": round(build_s, 1),
    "index_mb": round(size_mb),
    "rss_gb": round(rss, 2),
    "sweep": " ".join(f"{p}:{r:.3f}:{q:.0f}" for p, r, q in sweep),
    **extra_params,
    "runs": f"{timing.runs}/{exact_timing.runs}",
  }
  ivf = None  # free the index before the next one is built
  gc.collect()
  n, dim = gallery.shape
  scanned = n * min(chosen[0], nlist) / nlist  # rows of the probed lists, on average
  work = Work(
    flops=2.0 * nq * (nlist + scanned) * dim,
    bytes=4.0 * (n + nq) * dim,
    model="per query: the nlist centroids and the nprobe/nlist share of the gallery"
    " (2 D per row); bytes: the gallery and the queries read once",
  )
  return Row(
    name,
    params,
    timing,
    exact_timing,
    chosen[1] >= TARGET_RECALL,
    work=work,
    extra={
      "recall_at_10": chosen[1],
      "qps": qps,
      "exact_qps": exact_qps,
      "speedup": exact_timing.median_s / timing.median_s,
      "nprobe": chosen[0],
      "recall_at_10x_speed": max((p[1] for p in fast), default=None),
      "speedup_at_recall_0.95": at_target[0][2] / exact_qps if at_target else None,
    },
  )


def run(settings: Settings) -> list[Row]:
  if settings.tiny:
    n, dim, exact_q, ann_q, nlist = (TINY[k] for k in ("n", "dim", "exact_q", "ann_q", "nlist"))
  else:
    n, dim, exact_q, ann_q, nlist = (
      FLAGS.search_n,
      DIM,
      EXACT_QUERIES,
      ANN_QUERIES,
      FLAGS.search_nlist,
    )
  rows = []
  rss0 = rss_gb()
  gallery = unit_rows(n, dim, seed=0)
  gallery_gb = gallery.nbytes / 2**30
  queries = unit_rows(exact_q, dim, seed=1)
  ann_queries = unit_rows(ann_q, dim, seed=2)

  # ---- exact: ours (JAX) vs faiss IndexFlatL2
  ours = ExactIndex(gallery)
  rss_ours = rss_gb()
  ours_t, (ours_d, ours_i) = settings.time_ours(lambda: ours.search(queries, K))
  truth_t, (_, truth) = time_call(lambda: ours.search(ann_queries, K), runs=min(3, settings.runs))
  ours_mb, block_mb = ours.nbytes / 2**20, ours.block_bytes(exact_q) / 2**20
  chunk, budget_mb = ours.chunk, ours.budget_bytes / 2**20
  ours = None
  gc.collect()
  flat = FaissIndex.build(gallery, "flat")
  rss_flat = rss_gb()
  flat_mb = faiss_bytes(flat) / 2**20
  ref_t, (ref_d, ref_i) = settings.time_ref(lambda: flat.search(queries, K))
  flat = None
  gc.collect()
  same_ids = float(np.mean(ours_i == ref_i))
  max_diff = float(np.max(np.abs(ours_d - ref_d)))
  rows.append(
    Row(
      "search_exact",
      {
        "N": n,
        "D": dim,
        "queries": exact_q,
        "k": K,
        "chunk": chunk,
        "budget_mb": round(budget_mb),
        "block_mb": round(block_mb, 1),
        "ours_qps": round(exact_q / ours_t.median_s, 1),
        "faiss_qps": round(exact_q / ref_t.median_s, 1),
        "same_ids": round(same_ids, 5),
        "max_dist_diff": float(f"{max_diff:.2g}"),
        "index_mb": f"{ours_mb:.0f}/{flat_mb:.0f}",
        "rss_gb": f"{rss_ours:.2f}/{rss_flat:.2f} (start {rss0:.2f}, gallery {gallery_gb:.2f})",
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "runs": f"{ours_t.runs}/{ref_t.runs}",
      },
      ours_t,
      ref_t,
      same_ids == 1.0 and max_diff <= 1e-4,
      extra={"qps": exact_q / ours_t.median_s, "faiss_qps": exact_q / ref_t.median_s},
      work=Work(
        flops=2.0 * exact_q * n * dim,
        bytes=4.0 * (n + exact_q) * dim,
        model="query x gallery products (2 Q N D); bytes: the gallery and queries read once",
      ),
    )
  )

  # ---- approximate: faiss IVF vs our exact search (ground truth and reference time)
  rows.append(
    ann_row(
      "search_ann",
      gallery,
      ann_queries,
      truth,
      truth_t,
      nlist,
      settings,
      {"gallery": "random unit vectors"},
    )
  )
  gallery = None
  gc.collect()
  if FLAGS.search_structured or settings.tiny:
    clusters = max(16, n // 1000)
    gallery, make_queries = clustered_rows(n, dim, seed=3, clusters=clusters)
    cq = make_queries(ann_q, 4)
    ours = ExactIndex(gallery)
    truth_t, (_, truth) = time_call(lambda: ours.search(cq, K), runs=min(3, settings.runs))
    ours = None
    gc.collect()
    rows.append(
      ann_row(
        "search_ann_clustered",
        gallery,
        cq,
        truth,
        truth_t,
        nlist,
        settings,
        {"gallery": f"{clusters} clusters, noise 0.5/sqrt(D) per coordinate"},
      )
    )
  return rows
