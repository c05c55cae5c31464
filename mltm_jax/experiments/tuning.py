"""The tuning protocol (WORKSPACE.md "Tuning protocol") as data: the same budget for every method.

Stage 1 trains every configuration of every method once (the first seed) and selects, per
method, the configuration with the best validation score (R@1 + R@5 + R@10 of both
directions at the best validation step; the test and held-out splits are never looked at).
Stage 2 trains each selected configuration with the other seeds; stage 3 trains the selected
configurations of the noise methods on noisy training pairs; stage 4 trains InfoNCE's and
m-LTM's (M = I, diagonal, full) in the paper's regime, the text encoder fine-tuned. The test and
held-out numbers of the report come from stages 2 and 3 (and the selected stage-1 run, the first
seed).

  grid = tuning_grid("small")
  stage1 = grid.stage1()                      # claims.Grid: every configuration, first seed
  picked = select_configs(grid, out)          # {method: cell name} from the runs on disk
  stage2 = grid.stage2(picked); stage3 = grid.stage3(picked)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mltm_jax.experiments.claims import (
  FIRST_SEED,
  LOSS_VARIANTS,
  NOISE_P,
  NOISE_VARIANTS,
  Cell,
  Grid,
  scale_base,
)

BEST = "best.json"
# Per-scale settings on top of the claims scales: longer runs, validation often enough to see
# the best step, and the held-out split.
TUNING_SCALES: dict[str, dict[str, Any]] = {
  "smoke": {"synthcaps_sizes": "192,32,32,32"},
  "small": {
    "synthcaps_sizes": "1024,160,160,160",
    "num_steps": 600,
    "lr_decay_steps": 450,
    "eval_every": 50,
  },
  "full": {"synthcaps_sizes": "3000,400,400,400", "num_steps": 3000, "lr_decay_steps": 2000},
}
# The claims scale a tuning scale builds on (towers, rate, batch, rendering); default: itself.
CLAIMS_SCALE = {"small_long": "small"}
# The paper's regime (stage 4): the MiniLM text encoder fine-tuned at its own rate beside the
# audio tower trained from scratch, for these methods' selected configurations, every seed.
REGIME_METHODS = ("contrastive", "mltm_euclidean", "mltm_diagonal", "mltm_full")
REGIME: dict[str, dict[str, Any]] = {
  "smoke": {"freeze_text": False, "text_learning_rate": 5e-5},
  # Fine-tuning MiniLM costs seconds per step on the 2-core CPU: half the steps.
  "small": {
    "freeze_text": False,
    "text_learning_rate": 5e-5,
    "num_steps": 300,
    "lr_decay_steps": 225,
  },
  "full": {"freeze_text": False, "text_learning_rate": 5e-5},
}


def twice_as_long(settings: dict[str, Any]) -> dict[str, Any]:
  """``settings`` with num_steps and lr_decay_steps doubled (same data, rates, evaluation)."""
  return {
    **settings,
    "num_steps": 2 * settings["num_steps"],
    "lr_decay_steps": 2 * settings["lr_decay_steps"],
  }


# The small scale run twice as long, same data (amendment of 2026-12-06, WORKSPACE.md "Tuning
# protocol": at 600 steps the best validation step was the last in most runs).
TUNING_SCALES["small_long"] = twice_as_long(TUNING_SCALES["small"])
REGIME["small_long"] = twice_as_long(REGIME["small"])
EPS_GRID = (0.02, 0.03, 0.05)  # m-LTM with a learned metric: x the metric's learning rate
METRIC_LRS = (5e-5, 0.0)  # the official rate for M; 0 = the towers' rate (one Adam)


def tuning_spaces(num_steps: int) -> dict[str, tuple[dict[str, Any], ...]]:
  """Per method (the keys of claims.LOSS_VARIANTS), its configurations: overrides of its own
  hyperparameters only, six each. ``num_steps``: the scale's, for the triplet warm-up."""
  warm = max(1, num_steps // 5)
  learned_metric = tuple(
    {"eps": e, "metric_learning_rate": lr} for e in EPS_GRID for lr in METRIC_LRS
  )
  return {
    "triplet": tuple(
      {"margin": m, "triplet_warmup_steps": w} for m in (0.1, 0.2, 0.3) for w in (0, warm)
    ),
    "ranking": tuple({"margin": m} for m in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)),
    "contrastive": tuple({"temperature": t} for t in (0.02, 0.03, 0.05, 0.07, 0.1, 0.2)),
    "entropic_contrastive": tuple({"eps": e} for e in (0.01, 0.02, 0.03, 0.05, 0.1, 0.2)),
    "mltm_euclidean": tuple({"eps": e} for e in (0.01, 0.02, 0.03, 0.05, 0.1, 0.2)),
    "mltm_full": learned_metric,
    "mltm_diagonal": learned_metric,
    # Partial and unbalanced OT: their own parameter x eps, M at the official rate.
    "mltm_partial": tuple(
      {"eps": e, "mass": s, "metric_learning_rate": METRIC_LRS[0]}
      for e in EPS_GRID
      for s in (0.9, 0.95)
    ),
    "mltm_unbalanced": tuple(
      {"eps": e, "tau": t, "metric_learning_rate": METRIC_LRS[0]}
      for e in EPS_GRID
      for t in (0.9, 0.99)
    ),
  }


@dataclasses.dataclass(frozen=True)
class TuningGrid:
  """Every configuration of every method at one scale, and the seeds."""

  scale: str
  base: dict
  seeds: tuple[int, ...]
  methods: tuple[tuple[str, str, tuple[Cell, ...]], ...]  # (key, label, configuration cells)

  def _grid(self, cells: list[Cell], seeds: tuple[int, ...]) -> Grid:
    losses = tuple((label, cells_[0].name) for _, label, cells_ in self.methods)
    return Grid(self.scale, self.base, seeds, tuple(cells), losses, (), (), ())

  def stage1(self) -> Grid:
    """Every configuration, first seed."""
    cells = [c for _, _, cells in self.methods for c in cells]
    return self._grid(cells, self.seeds[:1])

  def stage2(self, picked: dict[str, str]) -> Grid:
    """The selected configuration of each method, the other seeds."""
    cells = [self.cell(picked[key]) for key, _, _ in self.methods if key in picked]
    return self._grid(cells, self.seeds[1:])

  def noise_cells(self, picked: dict[str, str]) -> list[tuple[str, list[tuple[float, str]]]]:
    """(method key, [(p, cell name), ...]) of the noise stage; p = 0 is the selected cell."""
    out = []
    for key in NOISE_VARIANTS:
      if key not in picked:
        continue
      row = [(0.0, picked[key])]
      row += [(p, f"{picked[key]}__noise{p:g}") for p in NOISE_P if p > 0]
      out.append((key, row))
    return out

  def stage3(self, picked: dict[str, str]) -> Grid:
    """The noise methods' selected configurations at every p > 0, every seed."""
    cells = []
    for _, row in self.noise_cells(picked):
      base = self.cell(row[0][1])
      cells += [Cell(name, base.overrides + (("noise_p", p),)) for p, name in row[1:]]
    return self._grid(cells, self.seeds)

  def stage4(self, picked: dict[str, str]) -> Grid:
    """The paper's regime: REGIME_METHODS' selected configurations with the text encoder
    fine-tuned (REGIME of the scale), every seed."""
    extra = tuple(REGIME[self.scale].items())
    cells = [
      Cell(f"{picked[key]}__regime", self.cell(picked[key]).overrides + extra)
      for key in REGIME_METHODS
      if key in picked
    ]
    return self._grid(cells, self.seeds)

  def cell(self, name: str) -> Cell:
    for _, _, cells in self.methods:
      for c in cells:
        if c.name == name:
          return c
    raise KeyError(name)

  def label(self, key: str) -> str:
    return next(label for k, label, _ in self.methods if k == key)


def tuning_grid(scale: str, num_seeds: int = 3, data_dir: str | None = None) -> TuningGrid:
  """The tuning grid at ``scale`` (smoke, small, small_long or full) with ``num_seeds`` seeds."""
  if scale not in TUNING_SCALES:
    raise ValueError(f"--scale={scale!r} is not one of {', '.join(TUNING_SCALES)}")
  if num_seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {num_seeds}")
  claims_scale = CLAIMS_SCALE.get(scale, scale)
  base = {**scale_base(claims_scale, data_dir), **TUNING_SCALES[scale]}
  if data_dir is None and scale != "full":  # the claims' renderings lack the held-out split
    base["data_dir"] = f"data/synthcaps_tuning_{claims_scale}"
  spaces = tuning_spaces(int(base.get("num_steps", 1500)))
  methods = []
  for key, label, overrides in LOSS_VARIANTS:
    cells = tuple(
      Cell(f"{key}__t{i}", tuple({**overrides, **hp}.items())) for i, hp in enumerate(spaces[key])
    )
    methods.append((key, label, cells))
  seeds = tuple(FIRST_SEED + k for k in range(num_seeds))
  return TuningGrid(scale, base, seeds, tuple(methods))


def validation_of(run_dir: Path) -> dict | None:
  """{"score", "step"} of a finished run's best validation (None if not finished)."""
  best, final = run_dir / BEST, run_dir / "final_metrics.json"
  if not (best.is_file() and final.is_file()):
    return None
  b = json.loads(best.read_text())
  return {"score": float(b["score"]), "step": int(b["step"])}


def validation_score_at(run_dir: Path, step: int) -> float | None:
  """The validation score a run logged at ``step`` (metrics.jsonl; None if it did not)."""
  path = run_dir / "metrics.jsonl"
  if not path.is_file():
    return None
  for line in path.read_text().splitlines():
    row = json.loads(line) if line.strip() else {}
    if row.get("kind") == "val" and row.get("step") == step and "score" in row:
      return float(row["score"])
  return None


def select_configs(grid: TuningGrid, out: Path) -> dict[str, str]:
  """Per method whose stage-1 runs have all finished, the cell with the best validation score
  (ties: the first configuration). Methods with an unfinished configuration are left out."""
  picked = {}
  first = grid.seeds[0]
  for key, _, cells in grid.methods:
    scores = [validation_of(out / "cells" / c.run_name(first)) for c in cells]
    if any(s is None for s in scores):
      continue
    best = max(range(len(cells)), key=lambda i: (scores[i]["score"], -i))
    picked[key] = cells[best].name
  return picked
