"""Orbax checkpoints of a run: the latest k, plus the best by validation score.

Layout:  WORKDIR/checkpoints/latest/<step>/   (max_to_keep = k)
         WORKDIR/checkpoints/best/<step>/     (one: highest R@1+R@5+R@10, both directions)
Saves are atomic (orbax writes to a temporary directory and renames). The data
order is a pure function of the step, so the step alone resumes it exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """Latest-k and best checkpoint managers of one run directory."""

  def __init__(self, workdir: str | Path, keep: int):
    root = Path(workdir).absolute() / "checkpoints"
    self.latest = ocp.CheckpointManager(
      root / "latest", options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    )
    self.best = ocp.CheckpointManager(
      root / "best",
      options=ocp.CheckpointManagerOptions(
        max_to_keep=1, best_fn=lambda m: m["score"], best_mode="max", create=True
      ),
    )

  def save_latest(self, step: int, state: Any, force: bool = False) -> None:
    self.latest.save(step, args=ocp.args.StandardSave(state), force=force)

  def save_best(self, step: int, state: Any, score: float) -> None:
    self.best.save(
      step, args=ocp.args.StandardSave(state), metrics={"score": float(score)}, force=True
    )

  def restore_latest(self, target: Any) -> Any | None:
    """Newest readable latest checkpoint restored into ``target``'s structure, or None.

    A checkpoint that cannot be read (truncated, corrupt) is reported and the
    previous one is tried.
    """
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        return self.latest.restore(step, args=ocp.args.StandardRestore(_abstract(target)))
      except Exception as e:  # noqa: BLE001 -- any read failure falls back
        logging.warning(
          "checkpoint %d unreadable (%s); trying the previous one",
          step,
          str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
    return None

  def restore_best(self, target: Any) -> Any | None:
    step = self.best.best_step()
    if step is None:
      return None
    return self.best.restore(step, args=ocp.args.StandardRestore(_abstract(target)))

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
