"""metrics.jsonl + TensorBoard event files of a run (written by process 0 only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax

from mltm_jax.train.tb_events import ScalarEventWriter


class MetricsWriter:
  """Appends one JSON object per call to WORKDIR/metrics.jsonl and mirrors scalars to
  TensorBoard (WORKDIR/tensorboard). A no-op on processes other than 0."""

  def __init__(self, workdir: str | Path):
    self.active = jax.process_index() == 0
    self.path = Path(workdir) / "metrics.jsonl"
    self._tb = None
    if self.active:
      self._tb = ScalarEventWriter(Path(workdir) / "tensorboard")

  def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
    if not self.active:
      return
    flat = _flatten(values)
    record = {"step": int(step), "kind": kind, "time": round(time.time(), 3), **flat}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in flat.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self._tb.scalar(f"{kind}/{k}".replace("@", "_at_"), v, step)
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "/"))
    elif hasattr(v, "item") and getattr(v, "size", 2) == 1:
      out[key] = v.item()
    else:
      out[key] = v
  return out
