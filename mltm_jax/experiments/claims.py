"""The claims grid (docs/method.md section 8) as data: cells are Config overrides on a scale's base.

Every cell of a scale uses the same data, towers, steps and seeds; only the loss (and its
transport, metric, eps) or the training-pair noise differ. Cells with the same effective
config are one run (the p = 0 noise cells and the eps = 0.05 cell are the loss cells).

  grid = claims_grid("small")          # Grid: cells (unique, run order), report groups
  cfg = cell_config(grid, cell, seed, workdir)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mltm_jax.config import Config

REPO = Path(__file__).resolve().parents[2]
DEMO_FLAGS = REPO / "configs" / "demo.flags"
FIRST_SEED = 1997  # the demo's (and the official code's) seed; seed k is FIRST_SEED + k
# Fields that locate or display a run without changing what it computes.
IGNORED_FIELDS = ("workdir", "progress", "data_dir")

# (key, label, overrides). Baselines score by cosine (identity metric) whatever --metric is.
LOSS_VARIANTS: tuple[tuple[str, str, dict], ...] = (
  ("triplet", "triplet (hardest negative)", {"loss": "triplet"}),
  ("ranking", "bidirectional ranking", {"loss": "ranking"}),
  ("contrastive", "InfoNCE", {"loss": "contrastive"}),
  ("entropic_contrastive", "entropic InfoNCE", {"loss": "entropic_contrastive", "metric": "full"}),
  ("mltm_euclidean", "m-LTM, Euclidean (M = I)", {"loss": "mltm", "metric": "identity"}),
  ("mltm_full", "m-LTM, Mahalanobis full", {"loss": "mltm", "metric": "full", "ot": "balanced"}),
  (
    "mltm_diagonal",
    "m-LTM, Mahalanobis diagonal (official)",
    {"loss": "mltm", "metric": "diagonal"},
  ),
  (
    "mltm_partial",
    "m-LTM, partial OT",
    # ott-jax has no partial OT: the native solver (the one partial OT always ran).
    {"loss": "mltm", "metric": "full", "ot": "partial", "ot_solver": "native"},
  ),
  (
    "mltm_unbalanced",
    "m-LTM, unbalanced OT",
    {"loss": "mltm", "metric": "full", "ot": "unbalanced"},
  ),
)
NOISE_VARIANTS = ("contrastive", "mltm_full", "mltm_partial")
NOISE_P = (0.0, 0.2, 0.4, 0.6)
EPS_VARIANT = "mltm_full"
EPS_VALUES = (0.01, 0.02, 0.05, 0.1, 0.5)
EMBEDDING_VARIANTS = ("contrastive", "mltm_full")  # test embeddings saved (first seed) for PCA

# What the scales below "full" share: 8 kHz audio and small towers.
_SMALL_SCALE = {
  "sample_rate": 8000,
  "n_fft": 512,
  "hop_length": 320,
  "fmax": 4000.0,
  "cnn_channels": "64,128,128",
  "embed_dim": 64,
  "head_hidden": 128,
}
# ... and what each of them sets, one column per Config field.
_SMALL_SCALE_FIELDS = (
  "synthcaps_sizes",
  "synthcaps_seed",
  "batch_size",
  "num_steps",
  "learning_rate",
  "eval_every",
  "log_every",
  "eval_batch_size",
)
_SMALL_SCALES = {
  # CI: the tiny_synthcaps fixture's data (tests/conftest.py), tiny towers, a few steps.
  "smoke": (("192,32,32", 3, 32, 12, 3e-3, 12, 6, 32), {}),
  # A preview of the whole grid on the 2-core CPU (see WORKSPACE.md "Claims grid").
  "small": (
    ("1024,160,160", 0, 64, 300, 2e-3, 100, 25, 160),
    {"lr_decay_steps": 225, "ot_solver": "native"},
  ),
}
SCALES: dict[str, dict[str, Any]] = {
  **{
    scale: {**_SMALL_SCALE, **dict(zip(_SMALL_SCALE_FIELDS, row)), **extra}
    for scale, (row, extra) in _SMALL_SCALES.items()
  },
  # The demo (configs/demo.flags): 3000/400/400 clips at 16 kHz, the demo towers, 1500 steps.
  "full": {},
}
DEFAULT_SEEDS = {"smoke": 1, "small": 1, "full": 3}
DATA_DIRS = {
  "smoke": "data/synthcaps_smoke",
  "small": "data/synthcaps_small",
  "full": "data/synthcaps",  # the demo's rendering
}


def run_name(cell: str, seed: int) -> str:
  """The run directory's name (under DIR/cells) of the cell named ``cell`` at ``seed``."""
  return f"{cell}__seed{seed}"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of the grid per seed; its directory is DIR/cells/<name>__seed<seed>/."""

  name: str
  overrides: tuple[tuple[str, Any], ...]  # (Config field, value) on top of the scale's base
  save_embeddings: bool = False

  def run_name(self, seed: int) -> str:
    return run_name(self.name, seed)


@dataclasses.dataclass(frozen=True)
class Grid:
  """The cells of a scale and how the report groups them (by cell name)."""

  scale: str
  base: dict  # Config field values shared by every cell (data_dir included)
  seeds: tuple[int, ...]
  cells: tuple[Cell, ...]  # unique by effective config, in run order
  losses: tuple[tuple[str, str], ...]  # (label, cell name)
  noise: tuple[tuple[str, tuple[tuple[float, str], ...]], ...]  # (label, ((p, cell name), ...))
  eps: tuple[tuple[float, str], ...]  # (eps, cell name)
  embeddings: tuple[tuple[str, str], ...]  # (label, cell name): PCA plot, first seed

  def cell(self, name: str) -> Cell:
    for c in self.cells:
      if c.name == name:
        return c
    raise KeyError(name)

  def runs(self) -> list[tuple[Cell, int]]:
    """(cell, seed) in run order: every cell of the first seed, then the next seed."""
    return [(c, s) for s in self.seeds for c in self.cells]


def parse_flagfile(path: str | Path) -> dict[str, Any]:
  """Config field values of a flagfile of ``--name=value`` lines (# comments allowed)."""
  types = {f.name: type(f.default) for f in dataclasses.fields(Config)}
  out = {}
  for raw in Path(path).read_text().splitlines():
    line = raw.strip()
    if not line or line.startswith("#"):
      continue
    name, _, value = line.lstrip("-").partition("=")
    if name not in types:
      raise ValueError(f"{path}: unknown flag --{name}")
    kind = types[name]
    if kind is bool:
      out[name] = value.lower() in ("1", "true", "yes")
    else:
      out[name] = kind(value)
  return out


def scale_base(scale: str, data_dir: str | None = None) -> dict[str, Any]:
  """Config field values of a scale (the demo flags for "full")."""
  if scale not in SCALES:
    raise ValueError(f"--scale={scale!r} is not one of {', '.join(SCALES)}")
  base = parse_flagfile(DEMO_FLAGS) if scale == "full" else {}
  base.update(SCALES[scale])
  base.pop("workdir", None)
  base["data_dir"] = data_dir or DATA_DIRS[scale]
  base.setdefault("seed", FIRST_SEED)
  # The committed grids ran with one Adam rate for everything (the default but for 2026-12-06
  # to 12-07); explicit here so their cells keep their keys whatever the default says.
  base.setdefault("metric_learning_rate", 0.0)
  # Likewise they differentiated through the Sinkhorn iterations (before --ot_differentiation).
  base.setdefault("ot_differentiation", "unroll")
  return base


def config_key(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> str:
  """What a run computes: every Config value (defaults filled), without IGNORED_FIELDS.

  Built from plain dicts, so an override of a field this Config lacks still has a key.
  """
  values = {f.name: f.default for f in dataclasses.fields(Config)}
  values.update(base)
  values.update(overrides)
  for name in IGNORED_FIELDS + ("seed",):
    values.pop(name, None)
  return json.dumps(values, sort_keys=True, default=str)


def claims_grid(scale: str, num_seeds: int | None = None, data_dir: str | None = None) -> Grid:
  """The grid of docs/method.md section 8 at one scale: losses, noisy pairs, eps; deduplicated."""
  base = scale_base(scale, data_dir)
  n = DEFAULT_SEEDS[scale] if num_seeds is None else num_seeds
  if n < 1:
    raise ValueError(f"--seeds must be >= 1, got {n}")
  seeds = tuple(FIRST_SEED + k for k in range(n))
  variants = {key: (label, ov) for key, label, ov in LOSS_VARIANTS}
  cells: list[Cell] = []
  by_key: dict[str, str] = {}

  def add(name: str, overrides: dict, embed: bool = False) -> str:
    key = config_key(base, overrides)
    if key in by_key:
      return by_key[key]
    by_key[key] = name
    cells.append(Cell(name, tuple(overrides.items()), embed))
    return name

  loss_cells = {key: add(key, ov, key in EMBEDDING_VARIANTS) for key, _, ov in LOSS_VARIANTS}
  losses = tuple((label, loss_cells[key]) for key, label, _ in LOSS_VARIANTS)
  noise = []
  for key in NOISE_VARIANTS:
    label, ov = variants[key]
    row = []
    for p in NOISE_P:
      extra = {"noise_p": p} if p > 0 else {}  # p = 0 is the clean default, not an override
      row.append((p, add(f"{key}__noise{p:g}", {**ov, **extra})))
    noise.append((label, tuple(row)))
  label, ov = variants[EPS_VARIANT]
  eps = tuple((e, add(f"{EPS_VARIANT}__eps{e:g}", {**ov, "eps": e})) for e in EPS_VALUES)
  embeddings = tuple((variants[k][0], loss_cells[k]) for k in EMBEDDING_VARIANTS)
  return Grid(scale, base, seeds, tuple(cells), losses, tuple(noise), eps, embeddings)


def select(grid: Grid, names: list[str]) -> Grid:
  """The grid restricted to the named cells (report groups unchanged); unknown names raise."""
  known = [c.name for c in grid.cells]
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"--cells: unknown cell(s) {', '.join(unknown)}; known: {', '.join(known)}")
  return dataclasses.replace(grid, cells=tuple(c for c in grid.cells if c.name in names))


def cell_config(grid: Grid, cell: Cell, seed: int, workdir: str | Path, **extra) -> Config:
  """The Config of one run; a ValueError naming the field if this Config lacks an override."""
  fields = {f.name for f in dataclasses.fields(Config)}
  overrides = dict(cell.overrides)
  missing = sorted(k for k in overrides if k not in fields)
  if missing:
    raise ValueError(
      f"cell {cell.name} needs the Config field {', '.join(missing)}, which "
      f"mltm_jax/config.py does not define (yet); run the other cells with --cells"
    )
  return Config(**{**grid.base, **overrides, "seed": seed, "workdir": str(workdir), **extra})
