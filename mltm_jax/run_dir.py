"""The run directory a training run writes, and what inference reads back from it.

Layout (``--workdir``)::

  config.json            the resolved Config (every flag); evaluation rebuilds the model from it
  flags.txt              the same as a flagfile
  metrics.jsonl          one JSON object per line (mltm_jax.train.metrics_writer)
  tensorboard/           event files
  checkpoints/latest/N/  orbax, the latest k (resume points)
  checkpoints/best/N/    orbax, the best validation score
  best.json              step, score and validation report of the best checkpoint
  final_metrics.json     test (and SynthCaps held-out) metrics of the best checkpoint
  cache/                 caption features; unlinked log-mel cache files while a run is open
  eval_*.json, zeroshot_*.json   reports of launch.evaluate / launch.zeroshot

Inference restores only ``step``, ``params`` and ``batch_stats`` of a checkpoint (orbax partial
restore), never the optimizer state, so a run keeps loading whatever optimizer trained it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mltm_jax.config import Config

__all__ = ["RunDir"]

CHECKPOINT_KINDS = ("best", "latest")


class RunDir:
  """Paths and files of one run directory."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self.config_file = self.path / "config.json"
    self.flags_file = self.path / "flags.txt"
    self.best_file = self.path / "best.json"
    self.final_file = self.path / "final_metrics.json"
    self.cache = self.path / "cache"
    self.checkpoints = self.path / "checkpoints"

  def __str__(self) -> str:
    return str(self.path)

  # -- config -----------------------------------------------------------------------------------
  def require(self) -> "RunDir":
    """Raises FileNotFoundError (one line) unless this is a run directory of launch.train."""
    if not self.config_file.is_file():
      raise FileNotFoundError(
        f"{self.path}: no config.json (not a run directory written by launch.train)"
      )
    return self

  def config(self, **overrides: Any) -> Config:
    """The run's Config (workdir set to this directory), with ``overrides`` applied."""
    self.require()
    cfg = Config.from_json(self.config_file).replace(workdir=str(self.path))
    return cfg.replace(**overrides) if overrides else cfg

  def write_config(self, cfg: Config) -> None:
    """config.json (resolved flags) and flags.txt (a flagfile to rerun); warns when a resumed
    run's flags changed (other than num_steps and progress)."""
    self.path.mkdir(parents=True, exist_ok=True)
    new = json.loads(cfg.to_json())
    if self.config_file.is_file():
      old = json.loads(self.config_file.read_text())
      changed = sorted(
        k for k in new if old.get(k) != new[k] and k not in ("num_steps", "progress")
      )
      if changed:
        logging.warning("resuming %s with changed flags: %s", self.path, ", ".join(changed))
    self.config_file.write_text(cfg.to_json())
    self.flags_file.write_text("".join(f"--{k}={v}\n" for k, v in new.items()))

  # -- records ----------------------------------------------------------------------------------
  def read_json(self, name: str) -> dict | None:
    path = self.path / name
    return json.loads(path.read_text()) if path.is_file() else None

  def write_json(self, name: str, obj: Any) -> Path:
    path = self.path / name
    path.write_text(json.dumps(obj, indent=2))
    return path

  # -- inference --------------------------------------------------------------------------------
  def checkpoint_steps(self, kind: str) -> list[int]:
    """Steps of the finished checkpoints of ``kind`` ("best" / "latest"), newest first."""
    if kind not in CHECKPOINT_KINDS:
      raise ValueError(f"checkpoint must be 'best' or 'latest', got {kind!r}")
    root = self.checkpoints / kind
    steps = (
      [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
      if (root.is_dir())
      else []
    )
    return sorted(steps, reverse=True)

  def restore_variables(self, target: dict, kind: str = "best") -> Any:
    """The ``step``, ``params`` and ``batch_stats`` of the newest readable checkpoint of
    ``kind`` (a ``model.Variables``), restored into ``target``'s shapes and shardings
    (``Model.abstract_variables()``); the optimizer state is not read. None: no checkpoint.

    An unreadable latest checkpoint is reported and the previous one tried; the best
    checkpoint (there is one) must be readable.
    """
    import orbax.checkpoint as ocp

    from mltm_jax.model import Variables

    steps = self.checkpoint_steps(kind)
    if kind == "best":
      steps = steps[:1]
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    for step in steps:
      path = (self.checkpoints / kind / str(step) / "default").absolute()
      try:
        with ocp.PyTreeCheckpointer() as ckptr:
          got = ckptr.restore(
            path,
            args=ocp.args.PyTreeRestore(
              item=target, restore_args=restore_args, partial_restore=True
            ),
          )
        return Variables(int(got["step"]), got["params"], got["batch_stats"])
      except Exception as e:  # noqa: BLE001 -- any read failure falls back
        if kind == "best":
          raise
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        logging.warning(
          "checkpoint %s unreadable (%s: %s); trying the previous one",
          path.parent,
          type(e).__name__,
          reason[:200],
        )
    return None

  def load(self, cfg: Config | None = None, checkpoint: str = "best") -> tuple[Any, Any]:
    """(Model, Variables) of this run for inference: the model built from ``cfg`` (default:
    the run's own config) and the checkpoint's params and batch stats.

    Raises:
      FileNotFoundError: not a run directory, or no such checkpoint.
    """
    from mltm_jax.model import build_model

    cfg = cfg if cfg is not None else self.config()
    model = build_model(cfg)
    variables = self.restore_variables(model.abstract_variables(), checkpoint)
    if variables is None:
      raise FileNotFoundError(f"{self.path}: no {checkpoint} checkpoint")
    return model, variables
