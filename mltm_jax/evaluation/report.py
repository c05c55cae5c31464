"""Plain-text table of retrieval metrics."""

from __future__ import annotations

from collections.abc import Mapping

from mltm_jax.evaluation.retrieval import METRIC_KEYS

DIRECTIONS = ("t2a", "a2t")


def format_metrics_table(metrics: Mapping) -> str:
  """Aligned table: rows t2a / a2t, columns R@1 R@5 R@10 R@50 medR meanR mAP@10.

  Args:
    metrics: {"t2a": {key: float}, "a2t": {key: float}} with the keys of
      :data:`mltm_jax.evaluation.retrieval.METRIC_KEYS` (either direction may be
      absent), plus optional "modality_gap" (float) and "rank_by" (str, e.g.
      "distance" or "plan (eps=0.03, 10 iterations)").

  Returns:
    Multi-line string; recalls and mAP@10 in percent with 2 decimals, medR as an
    integer, meanR with 1 decimal, then "rank_by: ..." and "modality gap: ..." lines.
  """
  rows = [d for d in DIRECTIONS if d in metrics]
  if not rows:
    raise ValueError(
      f"format_metrics_table: metrics needs a 't2a' or 'a2t' entry, got keys {sorted(metrics)}"
    )
  header = ["", *METRIC_KEYS]
  table = [header]
  for d in rows:
    m = metrics[d]
    missing = [k for k in METRIC_KEYS if k not in m]
    if missing:
      raise ValueError(f"format_metrics_table: metrics[{d!r}] lacks {missing}")
    cells = [d]
    for k in METRIC_KEYS:
      v = float(m[k])
      cells.append(f"{v:.0f}" if k == "medR" else f"{v:.1f}" if k == "meanR" else f"{v:.2f}")
    table.append(cells)
  widths = [max(len(r[i]) for r in table) for i in range(len(header))]
  lines = [
    "  ".join(
      c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    ).rstrip()
    for r in table
  ]
  lines.append(f"rank_by: {metrics.get('rank_by', 'unspecified')}")
  if "modality_gap" in metrics:
    lines.append(f"modality gap: {float(metrics['modality_gap']):.4f}")
  return "\n".join(lines)
