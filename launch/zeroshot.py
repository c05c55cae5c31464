"""Zero-shot sound classification with a trained run (docs/method.md section 6).

  python -m launch.zeroshot --workdir=runs/audiocaps_mltm --esc50=downloads/ESC-50-master \
      [--folds=1,2,3,4,5] [--prompt="This is a sound of {}."] [--rank_by=distance|plan|both]
  python -m launch.zeroshot --workdir=runs/demo --synthcaps [--split=test]
      [--dataset=synthcaps|prepared --data_dir=DIR] [--out=FILE]
  (both --esc50 and --synthcaps in one call share the model set-up)

ESC-50 (the release folder, meta/esc50.csv + audio/, or its launch.prepare output): each clip
ranks the 50 class prompts (underscores become spaces); accuracy (= R@1), R@5, R@10, mAP@10
per fold and overall (mean of the folds), and per-class accuracy. --synthcaps: the run's own
SynthCaps split, each clip's labels being its sound sources (1-3), prompts for the 62 sources.
Writes WORKDIR/zeroshot_esc50.json or zeroshot_synthcaps.json; --synthcaps on other data than
the run's own (--dataset / --data_dir: a SynthCaps rendering, or its launch.prepare output)
writes WORKDIR/zeroshot_<dataset>_<folder name>_synthcaps.json instead (or --out, one task).
The data folders are only read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from absl import app, flags

from launch.flags import fail
from launch.runtime import init_runtime
from mltm_jax.config import DATASETS

log = logging.getLogger(__name__)

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch.train.")
_ESC50 = flags.DEFINE_string("esc50", "", "ESC-50 folder (release layout or prepared).")
_SYNTHCAPS = flags.DEFINE_bool("synthcaps", False, "Zero-shot on the run's SynthCaps split.")
_SPLIT = flags.DEFINE_enum(
  "split", "test", ["train", "val", "test", "heldout"], "--synthcaps: the split."
)
_FOLDS = flags.DEFINE_string("folds", "1,2,3,4,5", "ESC-50 folds to evaluate, comma separated.")
_PROMPT = flags.DEFINE_string("prompt", "This is a sound of {}.", "Class prompt; {} = class.")
_RANK_BY = flags.DEFINE_enum(
  "rank_by", "both", ["distance", "plan", "both"], "Ranking: learned distance, OT plan, or both."
)
_PLAN_EPS = flags.DEFINE_float("plan_eps", 0.05, "eps of rank-by-plan (official script: 0.05).")
_PLAN_ITERS = flags.DEFINE_integer("plan_iterations", 10, "Sinkhorn iterations of rank-by-plan.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint.")
_PER_CLASS = flags.DEFINE_bool("per_class", True, "Print per-class accuracy.")
_PROGRESS = flags.DEFINE_bool("progress", None, "Progress bars (default: the run's --progress).")
_DATASET = flags.DEFINE_enum(
  "dataset", None, list(DATASETS), "--synthcaps: layout of --data_dir, if not the run's own."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "--synthcaps: this folder, not the run's own.")
_OUT = flags.DEFINE_string("out", None, "Report file (one task only; default in WORKDIR).")


def _esc50_data(cfg, folds: list[int]):
  from mltm_jax.data.prepare.esc50 import load_esc50

  records, waves, names, skipped = load_esc50(_ESC50.value, cfg.sample_rate, cfg.progress)
  for s in skipped:
    log.warning("skipped %s (%s)", s.file or s.id, s.reason)
  keep = [i for i, r in enumerate(records) if int(r["fold"]) in folds]
  if not keep:
    fail(f"--esc50={_ESC50.value}: no clips in folds {folds}")
  position = {t: k for k, t in enumerate(names)}
  labels = [[position[int(records[i]["target"])]] for i in keep]
  classes = [n.replace("_", " ") for n in names.values()]
  return (
    [records[i]["id"] for i in keep],
    [waves[i] for i in keep],
    labels,
    [int(records[i]["fold"]) for i in keep],
    classes,
  )


def _synthcaps_data(cfg, other: bool):
  from launch.eval_data import loading_config
  from mltm_jax.data.prepare.synth import split_source_labels
  from mltm_jax.synthcaps import SOURCES
  from mltm_jax.data.splits import load

  split = load(loading_config(cfg, other), _SPLIT.value, cfg.progress)
  names = split_source_labels(cfg.dataset, cfg.data_dir, _SPLIT.value, split.file_names)
  position = {s: k for k, s in enumerate(SOURCES)}
  labels = [[position[s] for s in clip] for clip in names]
  return split.file_names, split.waves, labels, None, list(SOURCES)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    fail("--workdir is required")
  if not _ESC50.value and not _SYNTHCAPS.value:
    fail("give --esc50=DIR and/or --synthcaps")
  if "{}" not in _PROMPT.value:
    fail(f"--prompt must contain {{}} (the class name), got {_PROMPT.value!r}")
  try:
    folds = sorted({int(f) for f in _FOLDS.value.split(",") if f.strip()})
  except ValueError:
    fail(f"--folds must be comma-separated integers, got {_FOLDS.value!r}")
  if _ESC50.value and not Path(_ESC50.value).is_dir():
    fail(f"--esc50={_ESC50.value}: no such folder")
  if (_DATASET.value or _DATA_DIR.value) and not _SYNTHCAPS.value:
    fail("--dataset / --data_dir choose the data of --synthcaps (ESC-50: --esc50=DIR)")
  if _OUT.value and _ESC50.value and _SYNTHCAPS.value:
    fail("--out names one report: give --esc50 or --synthcaps, not both")
  if (
    _OUT.value
    and _ESC50.value
    and Path(_OUT.value).resolve().is_relative_to(Path(_ESC50.value).resolve())
  ):
    fail(f"--out={_OUT.value} lies inside --esc50={_ESC50.value}")
  if not 0.001 <= _PLAN_EPS.value <= 10 or _PLAN_ITERS.value < 1:
    fail("--plan_eps must be in [0.001, 10] and --plan_iterations >= 1")
  workdir = Path(_WORKDIR.value)
  if not (workdir / "config.json").is_file():
    fail(f"--workdir={workdir}: no config.json (not a run directory written by launch.train)")
  init_runtime()
  from launch.eval_data import loading_config, report_path, target_config
  from mltm_jax.synthcaps import ForeignDirectoryError, check_synthcaps_dir
  from mltm_jax.run_dir import RunDir

  run_dir = RunDir(workdir)
  own = run_dir.config()
  if _PROGRESS.value is not None:
    own = own.replace(progress=_PROGRESS.value)
  cfg, other = target_config(own, _DATASET.value, _DATA_DIR.value)
  if _SYNTHCAPS.value and cfg.dataset == "clotho":
    fail("--synthcaps needs SynthCaps labels, --dataset=clotho has none (synthcaps or prepared)")
  if _OUT.value:
    report_path(workdir, _OUT.value, "", cfg, other)  # fails now if inside the data folder
  if _SYNTHCAPS.value and loading_config(cfg, other).dataset == "synthcaps":
    try:  # a folder SynthCaps may not be rendered into fails before the model is built
      check_synthcaps_dir(cfg.data_dir)
    except ForeignDirectoryError as e:
      fail(str(e))
  try:
    model, state = run_dir.load(cfg, _CHECKPOINT.value)  # params and batch stats only
  except FileNotFoundError as e:
    fail(str(e))
  for task in ("esc50", "synthcaps"):
    if (task == "esc50" and _ESC50.value) or (task == "synthcaps" and _SYNTHCAPS.value):
      _zeroshot(task, cfg, model, state, folds, workdir, other and task == "synthcaps")


def _zeroshot(task: str, cfg, model, state, folds: list[int], workdir: Path, other: bool) -> None:
  """Embeds the task's clips and prompts, prints and writes the report(s)."""
  import numpy as np

  from launch.eval_data import report_path
  from mltm_jax import metric as metric_lib
  from mltm_jax.data.pipeline import Split
  from mltm_jax.evaluation.zeroshot import format_zeroshot, zeroshot_report

  try:
    ids, waves, labels, clip_folds, classes = (
      _esc50_data(cfg, folds) if task == "esc50" else _synthcaps_data(cfg, other)
    )
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  prompts = [_PROMPT.value.replace("{}", c) for c in classes]
  # The prompts stand in as the split's captions: embed_split embeds clips and prompts.
  split = Split(task, list(ids), waves, prompts, np.zeros(len(prompts), np.int32), [], [])
  model.prepare_audio(split, cfg.progress)
  text = model.text_inputs(split, workdir / "cache", cfg.progress)
  audio_emb, text_emb = model.embed_split(state, split, text, progress=cfg.progress)
  cost = np.asarray(
    metric_lib.mahalanobis(audio_emb, text_emb, state.params["metric"], cfg.effective_metric)
  )
  out = {
    "task": task,
    "checkpoint_step": int(state.step),
    "prompt": _PROMPT.value,
    "classes": classes,
    "num_clips": len(ids),
  }
  if task == "esc50":
    out["folds"] = folds
  else:
    out["split"] = _SPLIT.value
  methods = ["distance", "plan"] if _RANK_BY.value == "both" else [_RANK_BY.value]
  where = "ESC-50" if task == "esc50" else f"SynthCaps {_SPLIT.value} split"
  for method in methods:
    report = zeroshot_report(
      cost, labels, classes, clip_folds, method, _PLAN_EPS.value, _PLAN_ITERS.value
    )
    out[method] = report
    how = (
      "distance"
      if method == "distance"
      else (f"plan (eps {_PLAN_EPS.value:g}, {_PLAN_ITERS.value} iterations)")
    )
    print()
    print(
      format_zeroshot(
        report, f"{where} zero-shot, step {int(state.step)}, ranked by {how}:", _PER_CLASS.value
      )
    )
  if other:
    out["dataset"], out["data_dir"] = cfg.dataset, str(cfg.data_dir)
  path = report_path(workdir, _OUT.value, f"zeroshot_{task}", cfg, other)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=2))
  print(f"\nwritten {path}")


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
