"""Benchmarks ``eval`` and ``eval_plan``: full T2A + A2T metrics at Clotho-test size.

Both sides start from the embeddings (audio [N, D], captions [5N, D], caption i
belongs to clip i // 5; float32, as the towers give them) and the metric M (float64),
and end with the two metric dicts (R@1, R@5, R@10, R@50, medR, meanR, mAP@10);
computing the scores is included.

Ours (the library's evaluation, ``mltm_jax.evaluation``): ``eval``:
``distance_metrics`` (float32 distances in XLA, each comparison that float32 cannot
decide recomputed in float64: the ranks of the float64 distances, see
``distance_ranks``), with the BLAS thread limit of a training run. ``eval_plan``: under
``jax.enable_x64``, the float64 cost (``cost_matrix``) -> both directions' log plans
(``sinkhorn_log_plans_both``: 10 kernel-domain Sinkhorn iterations, eps 0.03, cost /
max) -> ``split_metrics`` (ranks in one XLA program).

Reference (the official evaluation's style, written here from its description), float64:
c_M(u, v) = ||(u - v) L|| with M = L L^T (numpy Cholesky); a loop over queries that
computes the query's distances to the gallery (or reads its row of a POT
``ot.sinkhorn(a, b, C / max C, 0.03, numItermax=10)`` plan, one per direction, the
cost matrix built row by row the same way), ``np.argsort``, finds the rank of the
query's relevant item(s) and accumulates R@k, the ranks and mAP@10.

``agree`` requires every metric to be equal (to 1e-9). Embeddings: random unit clips;
caption = unit(clip + NOISE x unit noise), so the metrics are neither 0 nor 100 and the
distances crowd (std 0.1 around 3): many near ties. Ours and the reference are timed
alternately (``time_pair``), so both see the same load; each timed call of ours follows an
untimed one (``settle``): the first call of ours after the reference's ~30 s is about twice as
slow on this machine whatever the code (memory idle for seconds is slow to touch again;
WORKSPACE.md, Benchmarks). Those first calls are reported too (``ours_first_call_s``).
"""

from __future__ import annotations

import statistics
import warnings

import jax
import numpy as np
import ot

from benchmarks.cpu.bench_loss import make_metric
from benchmarks.roofline import Work
from benchmarks.timing import Row, Settings, blas_threads
from mltm_jax.evaluation.distance_ranks import distance_ranks
from mltm_jax.evaluation.evaluate import cost_matrix
from mltm_jax.evaluation.plan_ranking import sinkhorn_log_plans_both
from mltm_jax.evaluation.retrieval import retrieval_metrics, split_metrics
from mltm_jax.ot import KERNEL_MAX_EXPONENT_FLOAT64

CAPTIONS_PER_CLIP = 5
NUM_CLIPS = 1045  # Clotho v2 evaluation split
DIM = 1024
TINY = (40, 32)
NOISE = 10.0
PLAN_EPS = 0.03
PLAN_ITERATIONS = 10
RECALL_KS = (1, 5, 10, 50)
MAP_CUTOFF = 10


def make_embeddings(n: int, d: int, seed: int = 0, captions_per_clip: int = CAPTIONS_PER_CLIP):
  """(audio [n, d], text [c n, d]) float64 unit rows, caption_to_clip int64 [c n], with
  c = ``captions_per_clip``; each caption is its clip's row plus noise."""
  rng = np.random.default_rng(seed)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  audio = unit(rng.normal(size=(n, d)))
  c2c = np.repeat(np.arange(n), captions_per_clip)
  text = unit(audio[c2c] + NOISE * unit(rng.normal(size=(c2c.size, d))))
  return audio, text, c2c


# ----------------------------------------------------------------------------- ours


def ours(audio, text, m, c2c, rank_by: str) -> dict:
  """Our evaluation: {"t2a": metrics, "a2t": metrics, "refined": ..., "fallback": ...}."""
  if rank_by == "distance":
    with blas_threads():
      r = distance_ranks(audio, text, c2c, m)
    return {
      "t2a": retrieval_metrics(r.t2a),
      "a2t": retrieval_metrics(r.a2t, r.counts),
      "refined": r.refined,
      "fallback": r.fallback,
      "kappa": r.kappa,
    }
  audio, text = np.asarray(audio, np.float64), np.asarray(text, np.float64)
  with jax.enable_x64(True):
    cost = cost_matrix(audio, text, {"M": m}, "full")  # [N, 5N] float64
    a2t, t2a_t = sinkhorn_log_plans_both(cost, PLAN_EPS, PLAN_ITERATIONS)
    return split_metrics(a2t, t2a_t, c2c)


# ----------------------------------------------------------------------------- reference


def _distances(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
  """[D], [G, D] (already multiplied by L) -> [G] Mahalanobis distances."""
  return np.sqrt(((gallery - query) ** 2).sum(axis=1))


def _summary(ranks: list[int], aps: list[float]) -> dict:
  r = np.asarray(ranks)
  out = {f"R@{k}": 100.0 * np.count_nonzero(r <= k) / r.size for k in RECALL_KS}
  out["medR"] = float(np.floor(np.median(r)))
  out["meanR"] = float(r.mean())
  out["mAP@10"] = 100.0 * float(np.mean(aps))
  return out


def _t2a_loop(score_row, num_captions: int, c2c: np.ndarray) -> dict:
  """score_row(q) -> [N] scores (higher = better) of caption q against every clip."""
  ranks, aps = [], []
  for q in range(num_captions):
    order = np.argsort(-score_row(q))
    rank = int(np.nonzero(order == c2c[q])[0][0]) + 1
    ranks.append(rank)
    aps.append(1.0 / rank if rank <= MAP_CUTOFF else 0.0)
  return _summary(ranks, aps)


def _a2t_loop(score_row, num_clips: int, c2c: np.ndarray) -> dict:
  """score_row(i) -> [5N] scores of clip i against every caption."""
  ranks, aps = [], []
  for i in range(num_clips):
    relevant = np.nonzero(c2c == i)[0]
    order = np.argsort(-score_row(i))
    positions = np.sort(np.nonzero(np.isin(order, relevant))[0]) + 1  # ranks, best first
    ranks.append(int(positions[0]))
    precision = [h / r for h, r in enumerate(positions, start=1) if r <= MAP_CUTOFF]
    aps.append(sum(precision) / relevant.size)
  return _summary(ranks, aps)


def _pot_plan(cost: np.ndarray) -> np.ndarray:
  nq, ng = cost.shape
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "did not converge": 10 iterations on purpose
    return ot.sinkhorn(
      np.full(nq, 1.0 / nq),
      np.full(ng, 1.0 / ng),
      cost / cost.max(),
      PLAN_EPS,
      numItermax=PLAN_ITERATIONS,
    )


def reference(audio, text, m, c2c, rank_by: str) -> dict:
  """Official-style evaluation: {"t2a": metrics, "a2t": metrics}."""
  audio, text = np.asarray(audio, np.float64), np.asarray(text, np.float64)
  factor = np.linalg.cholesky(m)  # M = L L^T
  audio_l, text_l = audio @ factor, text @ factor
  n, nc = audio.shape[0], text.shape[0]
  if rank_by == "distance":
    t2a = _t2a_loop(lambda q: -_distances(text_l[q], audio_l), nc, c2c)
    a2t = _a2t_loop(lambda i: -_distances(audio_l[i], text_l), n, c2c)
  else:
    cost = np.stack([_distances(audio_l[i], text_l) for i in range(n)])  # [N, 5N]
    plan_t2a = _pot_plan(cost.T)
    plan_a2t = _pot_plan(cost)
    t2a = _t2a_loop(lambda q: plan_t2a[q], nc, c2c)
    a2t = _a2t_loop(lambda i: plan_a2t[i], n, c2c)
  return {"t2a": t2a, "a2t": a2t}


# ----------------------------------------------------------------------------- benchmark


def eval_work(n: int, nc: int, d: int, rank_by: str) -> Work:
  """Work of one evaluation: the distance matrix, ``a M`` (2 N D^2), its products with
  the captions (2 N Nc D) and the captions' norms ``t^T M t`` (Nc D^2, M symmetric), then
  per direction one comparison per matrix entry (N Nc); by plan, also the exp of every
  entry and 10 Sinkhorn iterations of two matrix-vector products per direction (80 N Nc).
  Compulsory bytes: the float64 embeddings and M read."""
  flops = 2.0 * n * d * d + 2.0 * n * nc * d + nc * d * d + 2.0 * n * nc
  if rank_by == "plan":
    # 2 directions x PLAN_ITERATIONS x 2 matrix-vector products of 2 N Nc each, the exps
    flops += 2 * PLAN_ITERATIONS * 2 * (2.0 * n * nc) + 2.0 * n * nc
  return Work(
    flops=flops,
    bytes=8.0 * ((n + nc) * d + d * d),
    dtype="float32" if rank_by == "distance" else "float64",
    model="distance matrix (a M t^T, t^T M t) + comparisons"
    + (" + exp + 10 Sinkhorn iterations per direction (float64)" if rank_by == "plan" else ""),
  )


def _max_diff(a: dict, b: dict) -> float:
  return max(abs(a[d][k] - b[d][k]) for d in ("t2a", "a2t") for k in b[d])


def run(settings: Settings) -> list[Row]:
  n, d = TINY if settings.tiny else (NUM_CLIPS, DIM)
  audio, text, c2c = make_embeddings(n, d)
  # float32, as the towers give them (evaluate.embed_in_batches); both sides read these
  # values, the reference in float64.
  audio, text = audio.astype(np.float32), text.astype(np.float32)
  m = make_metric(d, seed=11).astype(np.float64)
  rows = []
  for name, rank_by in (("eval", "distance"), ("eval_plan", "plan")):
    first: list[float] = []
    ours_t, ours_metrics, ref_t, ref_metrics = settings.time_pair(
      lambda r=rank_by: ours(audio, text, m, c2c, r),
      lambda r=rank_by: reference(audio, text, m, c2c, r),
      settle=first,
    )
    diff = _max_diff(ours_metrics, ref_metrics)
    params = {
      "clips": n,
      "captions": c2c.size,
      "D": d,
      "rank_by": rank_by,
      "dtype": "float32 + float64 refinement" if rank_by == "distance" else "float64",
      "t2a_R@1": round(ours_metrics["t2a"]["R@1"], 3),
      "a2t_R@1": round(ours_metrics["a2t"]["R@1"], 3),
      "max_metric_diff": float(f"{diff:.2g}"),
      "runs": f"{ours_t.runs}/{ref_t.runs}",
      "ours_first_call_s": float(f"{statistics.median(first):.4g}"),
    }
    if rank_by == "distance":
      params.update(
        refined=ours_metrics["refined"],
        fallback=ours_metrics["fallback"],
        kappa=round(ours_metrics["kappa"], 3),
      )
    else:
      kernel = 1.0 / PLAN_EPS <= KERNEL_MAX_EXPONENT_FLOAT64  # cost / max <= 1
      params.update(eps=PLAN_EPS, iterations=PLAN_ITERATIONS, domain="kernel" if kernel else "log")
    work = eval_work(n, c2c.size, d, rank_by)
    rows.append(Row(name, params, ours_t, ref_t, diff <= 1e-9, work=work))
  return rows
