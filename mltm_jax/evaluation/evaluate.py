"""From a model and a split to the retrieval report (T2A, A2T, modality gap)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.evaluation.distance_filter import squared_distance_matrix
from mltm_jax.evaluation.distance_ranks import distance_metrics
from mltm_jax.evaluation.plan_ranking import RANK_BY_CHOICES, sinkhorn_log_plans_both
from mltm_jax.evaluation.retrieval import modality_gap, split_metrics


def embed_in_batches(
  fn: Callable[[Any], jax.Array],
  inputs: Any,
  batch_size: int,
  multiple: int = 1,
  desc: str = "",
  progress: bool = False,
) -> np.ndarray:
  """Applies fn to fixed-size batches of ``inputs`` (leading axis N) -> [N, D] numpy.

  The last batch is padded (so one compiled shape serves every batch) and the
  padding rows are dropped. batch_size is rounded up to a multiple of ``multiple``.
  ``inputs``: arrays, or lazy rows (mltm_jax.data.pipeline.LazyRows: read batch by batch).
  """
  n = jax.tree.leaves(inputs)[0].shape[0]
  bs = -(-min(batch_size, max(n, 1)) // multiple) * multiple

  def pad(x, rows):
    if hasattr(x, "padded"):
      return x.padded(bs)
    return np.concatenate([x, np.zeros((bs - rows,) + x.shape[1:], x.dtype)])

  out = []
  for start in tqdm(range(0, n, bs), desc=desc, disable=not progress, leave=False, unit="batch"):
    chunk = jax.tree.map(lambda x, start=start: x[start : start + bs], inputs)
    rows = jax.tree.leaves(chunk)[0].shape[0]
    if rows < bs:
      chunk = jax.tree.map(lambda x, rows=rows: pad(x, rows), chunk)
    out.append(np.asarray(fn(chunk))[:rows])
  return np.concatenate(out)


def retrieval_report(
  cfg: Config,
  audio: np.ndarray,
  text: np.ndarray,
  caption_to_clip: np.ndarray,
  metric_params: Any,
  rank_by: str,
) -> dict:
  """T2A and A2T metrics of one split.

  Args:
    audio: [N, D] clip embeddings; text: [Nc, D] caption embeddings.
    caption_to_clip: int [Nc].
    rank_by: "distance" (learned c_M, inductive; ranks equal to those of the float64
      distances, see :mod:`mltm_jax.evaluation.distance_ranks`) or "plan" (entropic OT
      plan over the whole split, eps cfg.plan_eps, cfg.plan_iterations Sinkhorn
      iterations; transductive; in the cost's dtype).
  Returns:
    {"t2a": {...}, "a2t": {...}, "modality_gap": float, "rank_by": rank_by}.
  """
  if rank_by == "distance":
    m = metric_matrix64(cfg.effective_metric, metric_params, np.shape(audio)[1])
    metrics = distance_metrics(audio, text, caption_to_clip, m)
  elif rank_by == "plan":
    cost = cost_matrix(audio, text, metric_params, cfg.effective_metric)
    a2t, t2a_t = sinkhorn_log_plans_both(cost, cfg.plan_eps, cfg.plan_iterations)
    metrics = split_metrics(a2t, t2a_t, caption_to_clip)
  else:
    raise ValueError(f"rank_by must be one of {RANK_BY_CHOICES}, got {rank_by!r}")
  return {
    "t2a": _floats(metrics["t2a"]),
    "a2t": _floats(metrics["a2t"]),
    "modality_gap": float(modality_gap(audio, text)),
    "rank_by": rank_by,
  }


def metric_matrix64(kind: str, metric_params: Any, dim: int) -> np.ndarray:
  """Dense float64 M [D, D] of a metric (lowrank: L L^T formed in float64)."""
  if kind == "lowrank":
    w = np.asarray(metric_params["L"], np.float64)
    return w @ w.T
  return np.asarray(metric_lib.metric_matrix(kind, metric_params, dim), np.float64)


def cost_matrix(audio, text, metric_params: Any, kind: str) -> jax.Array:
  """[N, Nc] distances c_M in the inputs' dtype (float64 under jax x64 with float64 inputs).

  Full M: :func:`mltm_jax.evaluation.distance_filter.squared_distance_matrix` (t^T M t
  over M's upper block triangle, 0.84x the multiply-adds); other kinds:
  :func:`mltm_jax.metric.mahalanobis`.
  """
  if kind != "full":
    return metric_lib.mahalanobis(audio, text, metric_params, kind)
  m = jnp.asarray(metric_params["M"])
  d2 = squared_distance_matrix(jnp.asarray(audio), jnp.asarray(text), (m + m.T) / 2)
  return metric_lib.safe_sqrt(jnp.maximum(d2, 0.0))


def selection_score(report: dict) -> float:
  """Checkpoint selection: R@1 + R@5 + R@10 summed over both directions."""
  return float(sum(report[d][k] for d in ("t2a", "a2t") for k in ("R@1", "R@5", "R@10")))


def _floats(d: dict) -> dict:
  return {k: float(v) for k, v in d.items()}
