"""Run an experiment grid and write its report.

  python -m launch.experiments --suite=claims --out=DIR [--scale=small|full|smoke]
      [--seeds=N] [--cells=name1,name2] [--prune_checkpoints] [--report_only] [--list]
  python -m launch.experiments --suite=tuning --out=DIR [--scale=...] [--seeds=N] ...

--suite=tuning runs the tuning protocol (WORKSPACE.md "Tuning protocol"): every configuration
of every method (first seed), then the configuration each method selects on validation with
the other seeds, then the noise methods' selections on noisy pairs.

Each (cell, seed) is a run directory DIR/cells/<cell>__seed<seed>/; finished ones are
skipped and an interrupted one resumes from its checkpoint, so rerunning the same command
continues the grid. DIR/REPORT.md and DIR/*.png are written at the end (or alone with
--report_only). See WORKSPACE.md, "Claims grid".
"""

from __future__ import annotations

import datetime
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from absl import app, flags

from launch.flags import fail
from launch.runtime import init_runtime

REPO = Path(__file__).resolve().parents[1]
XLA_CACHE = "xla_cache"

_SUITE = flags.DEFINE_enum(
  "suite",
  "claims",
  ["claims", "tuning"],
  "Experiment grid: claims (docs/method.md section 8, default hyperparameters) or tuning "
  "(every method tuned on validation with the same budget).",
)
_OUT = flags.DEFINE_string("out", None, "Grid directory: cells/, REPORT.md, plots.")
_SCALE = flags.DEFINE_enum(
  "scale",
  "small",
  ["smoke", "small", "small_long", "full"],
  "smoke: CI (tiny data, a few steps); small: CPU preview (< 20 min); small_long: the small "
  "scale's tuning suite at twice the steps (--suite=tuning only); full: the demo config.",
)
_SEEDS = flags.DEFINE_integer(
  "seeds", None, "Number of training seeds (1997, 1998, ...); default 1 (smoke, small), 3 (full)."
)
_CELLS = flags.DEFINE_list("cells", [], "Run only these cells (names as --list prints them).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Override the scale's SynthCaps directory.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only (re)write the report from DIR.")
_PRUNE = flags.DEFINE_bool(
  "prune_checkpoints", False, "Delete the checkpoints of finished runs (keeps metrics, configs)."
)
_LIST = flags.DEFINE_bool("list", False, "Print the grid's cells and exit.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars inside each run.")


def git_commit() -> str:
  """HEAD's hash, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
  try:
    head = subprocess.run(
      ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no"],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("-dirty" if dirty else "")


def enable_compilation_cache(path: Path) -> None:
  """JAX's persistent compilation cache under DIR: runs of one grid share their programs
  (evaluation, embedding, initialisation; the train step of the noise cells), and a resumed
  grid recompiles nothing. An explicit JAX_COMPILATION_CACHE_DIR wins."""
  import jax

  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  jax.config.update("jax_compilation_cache_dir", str(path.resolve()))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _check_data_dirs(runs) -> None:
  """Raises ForeignDirectoryError (one line) before any work when a run would render SynthCaps
  into a folder holding something else."""
  from mltm_jax.synthcaps import check_synthcaps_dir

  for data_dir in sorted({r.config.data_dir for r in runs if r.config.dataset == "synthcaps"}):
    check_synthcaps_dir(data_dir)


def _now() -> str:
  return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _run_stage(grid_of, out: Path, provenance: dict) -> None:
  """Plans and runs the unfinished runs of ``grid_of()`` (built inside the error handling:
  a bad cell is one line, exit 2); an interruption, or runs that failed (after the others
  ran), exit 1 with how to resume."""
  from tqdm.auto import tqdm

  from mltm_jax.experiments.runner import Interrupted, RunsFailed, plan_runs, run_grid

  try:
    runs = plan_runs(grid_of(), out, progress=_PROGRESS.value)
    _check_data_dirs(runs)
    run_grid(runs, out, log=tqdm.write, prune=_PRUNE.value, provenance=provenance)
  except Interrupted as e:
    print(f"interrupted: {e}", file=sys.stderr)
    sys.exit(1)
  except RunsFailed as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print("interrupted: rerun the same command to resume", file=sys.stderr)
    sys.exit(1)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])


def _tuning(out: Path, command: str, commit: str) -> None:
  """--suite=tuning: stages 1-3 (each resumable), then the report."""
  from tqdm.auto import tqdm

  from mltm_jax.experiments.tuning import select_configs, tuning_grid
  from mltm_jax.experiments.tuning_report import write_tuning_report

  try:
    grid = tuning_grid(_SCALE.value, _SEEDS.value or 3, _DATA_DIR.value)
  except ValueError as e:
    fail(str(e))
  if _LIST.value:
    for _, _, cells in grid.methods:
      for cell in cells:
        print(f"{cell.name:28s} " + " ".join(f"--{k}={v}" for k, v in cell.overrides))
    print(
      f"stage 1: {sum(len(c) for _, _, c in grid.methods)} configurations x seed {grid.seeds[0]}"
    )
    return
  if not _OUT.value:
    fail("--out is required")
  init_runtime()
  enable_compilation_cache(out / XLA_CACHE)
  if not _REPORT_ONLY.value:
    provenance = {"command": command, "commit": commit, "date": _now()}
    stages = (
      ("stage 1 (every configuration)", lambda: grid.stage1()),
      ("stage 2 (selected, other seeds)", lambda: grid.stage2(select_configs(grid, out))),
      ("stage 3 (noisy pairs)", lambda: grid.stage3(select_configs(grid, out))),
      ("stage 4 (text encoder fine-tuned)", lambda: grid.stage4(select_configs(grid, out))),
    )
    for name, stage in stages:
      tqdm.write(name)
      _run_stage(stage, out, provenance)
  elif not (out / "cells").is_dir():
    fail(f"--out={out}: no cells/ directory to report on")
  print(f"report: {write_tuning_report(grid, out, command, commit, _now())}")


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  command = "python -m launch.experiments " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  if _SUITE.value == "tuning":
    if _CELLS.value:
      fail("--cells applies to --suite=claims only")
    return _tuning(Path(_OUT.value or "."), command, git_commit())
  from mltm_jax.experiments.claims import claims_grid, select

  try:
    grid = claims_grid(_SCALE.value, _SEEDS.value, _DATA_DIR.value)
    if _CELLS.value:
      grid = select(grid, _CELLS.value)
  except ValueError as e:
    fail(str(e))
  if _LIST.value:
    for cell in grid.cells:
      overrides = " ".join(f"--{k}={v}" for k, v in cell.overrides)
      print(f"{cell.name:28s} {overrides}")
    print(f"{len(grid.cells)} cells x seeds {', '.join(map(str, grid.seeds))}")
    return
  if not _OUT.value:
    fail("--out is required")
  out = Path(_OUT.value)
  commit = git_commit()
  init_runtime()
  enable_compilation_cache(out / XLA_CACHE)
  from mltm_jax.experiments.report import write_report

  if not _REPORT_ONLY.value:
    _run_stage(lambda: grid, out, {"command": command, "commit": commit, "date": _now()})
  elif not (out / "cells").is_dir():
    fail(f"--out={out}: no cells/ directory to report on")
  print(f"report: {write_report(grid, out, command, commit, _now())}")


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
