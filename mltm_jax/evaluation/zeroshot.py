"""Zero-shot classification by retrieval (docs/method.md section 6): each clip ranks the class
prompts; accuracy = R@1, also R@5, R@10, mAP@10 (percent).

A clip may hold several labels (SynthCaps: 1-3 sound sources): a hit at k means one of its
labels is within the top k, and mAP@10 averages, over the clip's labels ranked within the
top 10, hits-so-far / rank, divided by its number of labels (as A2T's mAP@10). Ties count
against the clip (pessimistic ranks, mltm_jax.evaluation.retrieval).

Per-class accuracy of class c: over the clips labelled c, the share whose top-|labels| prompts
include c (for single-label data: plain top-1 accuracy of the class's clips).

Ranking scores: -distance (inductive), or the log of an entropic OT plan between the
evaluated clips (rows) and the prompts (columns), cost / max, uniform marginals,
``eps`` and ``num_iterations`` Sinkhorn iterations (the official script: 0.05, 10). With
folds (ESC-50), each fold is ranked on its own (its own plan) and "overall" is the mean over
the folds of each metric (ESC-50's convention; equal to the pooled value for distance
ranking when folds have equal size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mltm_jax.evaluation.plan_ranking import score_matrix
from mltm_jax.evaluation.retrieval import relevant_ranks, retrieval_metrics

__all__ = [
  "DEFAULT_PROMPT",
  "format_zeroshot",
  "label_table",
  "per_class_accuracy",
  "zeroshot_metrics",
  "zeroshot_report",
]

DEFAULT_PROMPT = "This is a sound of {}."
METRICS = ("accuracy", "R@5", "R@10", "mAP@10")


def label_table(labels: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(relevant int64 [N, K], valid bool [N, K], counts int64 [N]) of per-clip label lists.

  Raises:
    ValueError: a clip without labels.
  """
  counts = np.array([len(set(l)) for l in labels], np.int64)
  if counts.size and counts.min() < 1:
    raise ValueError(f"zero-shot: clip {int(np.argmin(counts))} has no label")
  k = int(counts.max()) if counts.size else 1
  rel = np.zeros((len(labels), k), np.int64)
  valid = np.zeros((len(labels), k), bool)
  for i, l in enumerate(labels):
    u = sorted({int(x) for x in l})
    rel[i, : len(u)] = u
    valid[i, : len(u)] = True
  return rel, valid, counts


def zeroshot_metrics(scores: np.ndarray, labels: Sequence[Sequence[int]]) -> dict:
  """{"accuracy", "R@5", "R@10", "mAP@10" (percent), "clips"} of scores [N, C] (higher =
  better) and N label lists (class indices in [0, C))."""
  rel, valid, counts = label_table(labels)
  m = retrieval_metrics(relevant_ranks(np.asarray(scores), rel, valid), counts)
  return {
    "accuracy": m["R@1"],
    "R@5": m["R@5"],
    "R@10": m["R@10"],
    "mAP@10": m["mAP@10"],
    "clips": len(labels),
  }


def per_class_accuracy(
  scores: np.ndarray, labels: Sequence[Sequence[int]], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
  """(accuracy float64 [C] in percent, NaN for classes without clips; clips int64 [C])."""
  s = np.asarray(scores)
  hits = np.zeros(num_classes)
  clips = np.zeros(num_classes, np.int64)
  for i, l in enumerate(labels):
    u = sorted({int(x) for x in l})
    for c in u:
      clips[c] += 1
      hits[c] += np.count_nonzero(s[i] >= s[i, c]) <= len(u)  # pessimistic ties
  with np.errstate(invalid="ignore", divide="ignore"):
    acc = np.where(clips > 0, 100.0 * hits / np.maximum(clips, 1), np.nan)
  return acc, clips


def zeroshot_report(
  cost: np.ndarray,
  labels: Sequence[Sequence[int]],
  class_names: Sequence[str],
  folds: Sequence[int] | None = None,
  rank_by: str = "distance",
  eps: float = 0.05,
  num_iterations: int = 10,
) -> dict:
  """Zero-shot report of a clip x prompt cost matrix.

  Args:
    cost: float [N, C] distances between N clips and C class prompts.
    labels: per clip, its class indices.
    class_names: C names (report keys).
    folds: per clip its fold (ranked separately; "overall" = mean over folds), or None.
    rank_by: "distance" or "plan" (eps, num_iterations: the plan's settings).

  Returns:
    {"rank_by", "folds": {fold: metrics} (when folds), "overall": metrics (+ "clips"),
     "per_class": {name: {"accuracy", "clips"}}, "chance_accuracy"}.
  """
  cost = np.asarray(cost, np.float32)
  n, c = cost.shape
  if len(labels) != n or len(class_names) != c:
    raise ValueError(
      f"zero-shot: {len(labels)} label lists / {len(class_names)} names for cost {cost.shape}"
    )
  groups = np.zeros(n, np.int64) if folds is None else np.asarray(folds, np.int64)
  scores = np.zeros_like(cost)
  by_fold = {}
  for f in sorted(set(groups.tolist())):
    idx = np.flatnonzero(groups == f)
    scores[idx] = np.asarray(
      score_matrix(cost[idx], rank_by, eps=eps, num_iterations=num_iterations)
    )
    by_fold[str(f)] = zeroshot_metrics(scores[idx], [labels[i] for i in idx])
  if folds is None:
    overall = by_fold.pop("0")
  else:
    overall = {k: float(np.mean([m[k] for m in by_fold.values()])) for k in METRICS}
    overall["clips"] = int(n)
  acc, clips = per_class_accuracy(scores, labels, c)
  out = {"rank_by": rank_by, "overall": overall}
  if folds is not None:
    out["folds"] = by_fold
  if rank_by == "plan":
    out["plan"] = {"eps": eps, "iterations": num_iterations}
  out["per_class"] = {
    name: {"accuracy": None if np.isnan(a) else float(a), "clips": int(k)}
    for name, a, k in zip(class_names, acc, clips)
  }
  out["chance_accuracy"] = 100.0 * float(np.mean([len(set(l)) for l in labels])) / c
  return out


def format_zeroshot(report: dict, title: str, per_class: bool = True) -> str:
  """Printed tables: folds (if any) and overall; per-class accuracies, best first."""
  head = f"{'':<10}{'clips':>7}{'acc':>8}{'R@5':>8}{'R@10':>8}{'mAP@10':>8}"
  lines = [title, head]

  def row(name, m):
    return (
      f"{name:<10}{m['clips']:>7}{m['accuracy']:>8.2f}{m['R@5']:>8.2f}{m['R@10']:>8.2f}"
      f"{m['mAP@10']:>8.2f}"
    )

  for f, m in report.get("folds", {}).items():
    lines.append(row(f"fold {f}", m))
  lines.append(row("overall", report["overall"]))
  lines.append(
    f"chance accuracy {report['chance_accuracy']:.2f}"
    + (" (overall = mean of folds)" if "folds" in report else "")
  )
  if per_class:
    lines.append("per-class accuracy:")
    items = [(k, v) for k, v in report["per_class"].items() if v["clips"]]
    items.sort(key=lambda kv: (-kv[1]["accuracy"], kv[0]))
    for name, v in items:
      lines.append(f"  {v['accuracy']:6.1f}  ({v['clips']:>4} clips)  {name}")
  return "\n".join(lines)
