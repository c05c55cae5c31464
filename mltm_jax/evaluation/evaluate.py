"""From a model and a split to the retrieval report (T2A, A2T, modality gap)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.evaluation.plan_ranking import score_matrix
from mltm_jax.evaluation.retrieval import a2t_metrics, modality_gap, t2a_metrics


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
  """
  n = jax.tree.leaves(inputs)[0].shape[0]
  bs = -(-min(batch_size, max(n, 1)) // multiple) * multiple
  out = []
  for start in tqdm(range(0, n, bs), desc=desc, disable=not progress, leave=False, unit="batch"):
    chunk = jax.tree.map(lambda x: x[start : start + bs], inputs)
    rows = jax.tree.leaves(chunk)[0].shape[0]
    if rows < bs:
      chunk = jax.tree.map(
        lambda x: np.concatenate([x, np.zeros((bs - rows,) + x.shape[1:], x.dtype)]), chunk
      )
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
    rank_by: "distance" (learned c_M, inductive) or "plan" (entropic OT plan over the
      whole split, eps cfg.plan_eps, cfg.plan_iterations Sinkhorn iterations; transductive).
  Returns:
    {"t2a": {...}, "a2t": {...}, "modality_gap": float, "rank_by": rank_by}.
  """
  cost = np.asarray(metric_lib.mahalanobis(audio, text, metric_params, cfg.effective_metric))
  a2t_scores = score_matrix(cost, rank_by, eps=cfg.plan_eps, num_iterations=cfg.plan_iterations)
  t2a_scores = score_matrix(cost.T, rank_by, eps=cfg.plan_eps, num_iterations=cfg.plan_iterations)
  return {
    "t2a": _floats(t2a_metrics(np.asarray(t2a_scores), caption_to_clip)),
    "a2t": _floats(a2t_metrics(np.asarray(a2t_scores), caption_to_clip)),
    "modality_gap": float(modality_gap(audio, text)),
    "rank_by": rank_by,
  }


def selection_score(report: dict) -> float:
  """Checkpoint selection: R@1 + R@5 + R@10 summed over both directions."""
  return float(sum(report[d][k] for d in ("t2a", "a2t") for k in ("R@1", "R@5", "R@10")))


def _floats(d: dict) -> dict:
  return {k: float(v) for k, v in d.items()}
