"""Orbax checkpoints of a run: the latest k, plus the best by validation score.

Layout:  WORKDIR/checkpoints/latest/<step>/   (max_to_keep = k)
         WORKDIR/checkpoints/best/<step>/     (one: highest R@1+R@5+R@10, both directions)
Saves are atomic (orbax writes to a temporary directory and renames; a run killed while
saving leaves a temporary directory that the next run deletes). A checkpoint holds the whole
TrainState: step, params, batch stats, optimizer state (Adam moments and count, the PSD
projection's counter), the dropout/augmentation key and the NaN-skip counter; the data order,
crops and captions are pure functions of (seed, step), so the step resumes them exactly.
Parameters with a NaN or inf are never written. With several processes every process calls
the same saves and restores (orbax coordinates them; process 0 writes the replicated arrays).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


class Checkpoints:
  """Latest-k and best checkpoint managers of one run directory."""

  def __init__(self, workdir: str | Path, keep: int):
    root = Path(workdir).absolute() / "checkpoints"
    self.latest = ocp.CheckpointManager(
      root / "latest",
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True
      ),
    )
    self.best = ocp.CheckpointManager(
      root / "best",
      options=ocp.CheckpointManagerOptions(
        max_to_keep=1,
        best_fn=lambda m: m["score"],
        best_mode="max",
        create=True,
        cleanup_tmp_directories=True,
      ),
    )

  def save_latest(self, step: int, state: Any, force: bool = False) -> bool:
    """Starts an async save (False, nothing written: step already saved, or non-finite)."""
    if step in self.latest.all_steps() or not _params_finite(state, step):
      return False
    return bool(self.latest.save(step, args=ocp.args.StandardSave(state), force=force))

  def save_best(self, step: int, state: Any, score: float) -> bool:
    """Saves the new best checkpoint and waits until it is on disk."""
    if not _params_finite(state, step):
      return False
    self.best.save(
      step, args=ocp.args.StandardSave(state), metrics={"score": float(score)}, force=True
    )
    self.best.wait_until_finished()
    return True

  def best_so_far(self) -> tuple[int, float] | None:
    """(step, score) of the best checkpoint on disk, or None."""
    step = self.best.best_step()
    if step is None:
      return None
    return step, float(self.best.metrics(step)["score"])

  def restore_latest(self, target: Any) -> Any | None:
    """Newest readable latest checkpoint restored into ``target``'s structure, or None.

    A checkpoint that cannot be read (truncated, corrupt) is reported and the
    previous one is tried.
    """
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        return self.latest.restore(step, args=ocp.args.StandardRestore(_abstract(target)))
      except Exception as e:  # noqa: BLE001 -- any read failure falls back
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        logging.warning(
          "checkpoint %s unreadable (%s: %s); trying the previous one",
          self.latest.directory / str(step),
          type(e).__name__,
          reason[:200],
        )
    return None

  def restore_best(self, target: Any) -> Any | None:
    """The best checkpoint restored into ``target``'s structure (None if there is none);
    ``target`` itself, not read back, when it is the state of the best step (a TrainState
    whose step is the best one: what the run has in hand after its last validation)."""
    step = self.best.best_step()
    if step is None:
      return None
    if hasattr(target, "step") and int(target.step) == step:
      return target
    return self.best.restore(step, args=ocp.args.StandardRestore(_abstract(target)))

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _params_finite(state: Any, step: int) -> bool:
  """Whether every float leaf of state.params is finite (else logs an error)."""
  params = getattr(state, "params", state)
  leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
  if all(bool(jnp.all(jnp.isfinite(x))) for x in leaves):
    return True
  logging.error("step %d: parameters hold NaN/inf; checkpoint not written", step)
  return False


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
