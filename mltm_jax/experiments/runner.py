"""Runs the cells of a grid in-process: one run directory per (cell, seed), resumable.

DIR/cells/<cell>__seed<seed>/ is an ordinary run directory (launch.train's workdir):
a run is finished when its final_metrics.json exists (plus embeddings.npz for the cells the
report projects); anything else is (re)started with train_and_evaluate, which resumes from
the newest checkpoint. All runs share DIR/text_cache (frozen caption features).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mltm_jax.config import Config, upgrade_saved
from mltm_jax.experiments.claims import IGNORED_FIELDS, Cell, Grid, cell_config

FINAL = "final_metrics.json"
EMBEDDINGS = "embeddings.npz"
CELL_INFO = "cell.json"
TEXT_CACHE = "text_cache"
# Kept out of git when DIR is committed (results/claims*): only metrics, configs, embeddings.
GITIGNORE = "text_cache/\nxla_cache/\ncells/*/checkpoints/\ncells/*/cache\ncells/*/tensorboard/\n"


class Interrupted(RuntimeError):
  """A run stopped on SIGTERM after saving its checkpoint; rerun to resume."""


class RunsFailed(RuntimeError):
  """Runs of a grid raised; the others ran. Rerunning the command retries the failed ones
  (each resumes from its latest readable checkpoint)."""


@dataclasses.dataclass
class RunInfo:
  """One (cell, seed) of a grid and where it lives."""

  cell: Cell
  seed: int
  workdir: Path
  config: Config
  save_embeddings: bool

  @property
  def name(self) -> str:
    return self.cell.run_name(self.seed)

  def finished(self) -> bool:
    return (self.workdir / FINAL).is_file() and (
      not self.save_embeddings or (self.workdir / EMBEDDINGS).is_file()
    )


def plan_runs(grid: Grid, out: Path, progress: bool = True) -> list[RunInfo]:
  """Every (cell, seed) of the grid with its Config, validated before any work.

  Raises:
    ValueError: one line naming the cell and the problem (missing Config field, bad value,
      or a run directory that holds a run of another config).
  """
  runs = []
  for cell, seed in grid.runs():
    workdir = out / "cells" / cell.run_name(seed)
    cfg = cell_config(grid, cell, seed, workdir, progress=progress)
    problems = cfg.problems()
    if problems:
      raise ValueError(f"cell {cell.run_name(seed)}: {problems[0]}")
    _check_same_config(workdir, cfg)
    runs.append(RunInfo(cell, seed, workdir, cfg, cell.save_embeddings and seed == grid.seeds[0]))
  return runs


def _check_same_config(workdir: Path, cfg: Config) -> None:
  path = workdir / "config.json"
  if not path.is_file():
    return
  old = upgrade_saved(json.loads(path.read_text()))
  new = json.loads(cfg.to_json())
  changed = sorted(k for k in new if k not in IGNORED_FIELDS and old.get(k, new[k]) != new[k])
  if changed:
    raise ValueError(
      f"{workdir} holds a run of another config ({', '.join(changed)} differ); "
      "use another --out or delete that directory"
    )


def run_grid(
  runs: list[RunInfo],
  out: Path,
  log: Callable[[str], None],
  prune: bool = False,
  provenance: dict | None = None,
) -> list[dict]:
  """Runs the unfinished runs in order; one progress line per run via ``log``.

  Args:
    runs: from :func:`plan_runs`.
    out: the grid directory DIR.
    log: receives the progress lines ("[i/N] name ...").
    prune: delete the checkpoints (and cache link) of finished runs.
    provenance: written into each new run's cell.json (command, commit, date).
  Returns:
    Per run {"name", "status": "skipped"|"ran", "seconds", "t2a_r1", "a2t_r1"}.
  Raises:
    Interrupted: a run stopped on SIGTERM (its checkpoint is saved).
    RunsFailed: after every other run was tried, naming the runs that raised (each
      failure is logged when it happens; one bad run does not stop the grid).
  """
  out.mkdir(parents=True, exist_ok=True)
  (out / ".gitignore").write_text(GITIGNORE)
  (out / TEXT_CACHE).mkdir(exist_ok=True)
  t0 = time.time()
  results, failed = [], []
  for i, run in enumerate(runs, 1):
    head = f"[{i}/{len(runs)}] {run.name}"
    if run.finished():
      final = json.loads((run.workdir / FINAL).read_text())
      log(f"{head}: finished before, skipped; {_r1(final)}")
      results.append(_result(run, "skipped", 0.0, final))
    else:
      log(f"{head}: running (elapsed {_hms(time.time() - t0)})")
      t = time.time()
      try:
        final = train_one(run, provenance or {})
      except Interrupted:
        raise
      except Exception as e:  # noqa: BLE001 (any failure of one run; reported, not lost)
        failed.append(run.name)
        reason = (str(e).strip().splitlines() or [""])[0]
        log(f"{head}: FAILED after {_hms(time.time() - t)}: {type(e).__name__}: {reason}")
        continue
      seconds = time.time() - t
      log(f"{head}: done in {_hms(seconds)} (elapsed {_hms(time.time() - t0)}); {_r1(final)}")
      results.append(_result(run, "ran", seconds, final))
    if prune:
      prune_run(run.workdir)
  if failed:
    raise RunsFailed(
      f"{len(failed)} of {len(runs)} runs failed ({', '.join(failed)}); the others are done;"
      " rerun the same command to retry them"
    )
  return results


def train_one(run: RunInfo, provenance: dict) -> dict:
  """Trains/resumes one run, saves its test embeddings if asked, writes cell.json."""
  import jax

  from mltm_jax.train.loop import train_and_evaluate

  run.workdir.mkdir(parents=True, exist_ok=True)
  cache = run.workdir / "cache"
  if not cache.exists() and not cache.is_symlink():
    cache.symlink_to(Path("..") / ".." / TEXT_CACHE, target_is_directory=True)
  t, cpu = time.time(), time.process_time()
  if (run.workdir / FINAL).is_file():  # trained; only its embeddings are missing
    final = json.loads((run.workdir / FINAL).read_text())
  else:
    final = train_and_evaluate(run.config)
  if not final:
    raise Interrupted(f"{run.name}: stopped by SIGTERM, checkpoint saved; rerun to resume")
  if run.save_embeddings:
    save_test_embeddings(run.config, run.workdir)
  info = {
    "cell": run.cell.name,
    "seed": run.seed,
    "overrides": dict(run.cell.overrides),
    "seconds": round(time.time() - t, 1),
    "cpu_seconds": round(time.process_time() - cpu, 1),  # all threads of this process
    **provenance,
  }
  (run.workdir / CELL_INFO).write_text(json.dumps(info, indent=2, default=str))
  jax.clear_caches()
  gc.collect()
  return final


def save_test_embeddings(cfg: Config, workdir: Path) -> Path:
  """WORKDIR/embeddings.npz: audio [N, D], text [Nc, D], caption_to_clip [Nc], step.

  The test embeddings of the best checkpoint (the one final_metrics.json evaluates),
  computed with the library's eval-mode embed functions.
  """
  from mltm_jax.data.splits import load
  from mltm_jax.run_dir import RunDir

  run_dir = RunDir(workdir)
  try:
    model, state = run_dir.load(cfg, "best")  # params and batch stats only
  except FileNotFoundError as e:
    raise RuntimeError(f"{e} to embed the test split with") from None
  test = load(cfg, "test", progress=False)
  model.prepare_audio(test, False, run_dir.cache)
  text = model.text_inputs(test, run_dir.cache, progress=False)
  audio, text_emb = model.embed_split(state, test, text)
  tmp = workdir / "embeddings.tmp.npz"
  np.savez(
    tmp,
    audio=audio.astype(np.float32),
    text=text_emb.astype(np.float32),
    caption_to_clip=np.asarray(test.caption_to_clip),
    step=int(state.step),
  )
  path = workdir / EMBEDDINGS
  tmp.replace(path)
  return path


def prune_run(workdir: Path) -> None:
  """Deletes a finished run's checkpoints and cache link and compacts its noisy-pairs record
  to counts + digest (metrics, config, embeddings stay)."""
  from mltm_jax.data.noise import RECORD, compact_record

  if not (workdir / FINAL).is_file():
    return
  shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
  record = workdir / RECORD
  if record.is_file():
    compact = compact_record(json.loads(record.read_text(encoding="utf-8")))
    record.write_text(json.dumps(compact, indent=1, ensure_ascii=False), encoding="utf-8")
  cache = workdir / "cache"
  if cache.is_symlink():
    cache.unlink()


def _result(run: RunInfo, status: str, seconds: float, final: dict) -> dict:
  return {
    "name": run.name,
    "status": status,
    "seconds": round(seconds, 1),
    "t2a_r1": final["t2a"]["R@1"],
    "a2t_r1": final["a2t"]["R@1"],
  }


def _r1(final: dict) -> str:
  plan = final.get("by_plan", final if final.get("rank_by") == "plan" else None)
  dist = final if final.get("rank_by") == "distance" else final.get("by_distance")
  parts = [f"test R@1 t2a {dist['t2a']['R@1']:.1f} a2t {dist['a2t']['R@1']:.1f} (by distance)"]
  if plan:
    parts.append(f"{plan['t2a']['R@1']:.1f} / {plan['a2t']['R@1']:.1f} (by plan)")
  return ", ".join(parts)


def _hms(seconds: float) -> str:
  s = round(seconds)
  return (
    f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
  )
