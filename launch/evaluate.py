"""Evaluate a trained run on a split.

  python -m launch.evaluate --workdir=runs/demo [--split=test] [--rank_by=distance|plan|both]
      [--checkpoint=best|latest] [--dataset=clotho --data_dir=DIR] [--out=FILE]

Prints a table per ranking score and writes WORKDIR/eval_<split>.json; on other data than the
run's own (--dataset / --data_dir) WORKDIR/eval_<dataset>_<folder name>_<split>.json instead,
or --out. The evaluated folder is only read (SynthCaps is rendered only into a new or empty
folder, and a finished rendering given by --data_dir is read as it is).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from absl import app, flags

from launch.flags import fail
from launch.runtime import init_runtime
from mltm_jax.config import DATASETS

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch.train.")
_SPLIT = flags.DEFINE_enum(
  "split",
  "test",
  ["train", "val", "test", "heldout"],
  "Split to evaluate (heldout: SynthCaps only).",
)
_RANK_BY = flags.DEFINE_enum(
  "rank_by",
  "both",
  ["distance", "plan", "both"],
  "Ranking score: learned distance, OT plan, or both.",
)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint.")
_DATASET = flags.DEFINE_enum(
  "dataset", None, list(DATASETS), "Layout of --data_dir, if not the run's own --dataset."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Evaluate on this folder, not the run's own.")
_OUT = flags.DEFINE_string(
  "out", None, "Report file (default WORKDIR/eval_<split>.json, or with the data's name)."
)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    fail("--workdir is required")
  workdir = Path(_WORKDIR.value)
  if not (workdir / "config.json").is_file():
    fail(f"--workdir={workdir}: no config.json (not a run directory written by launch.train)")
  init_runtime()
  from launch.eval_data import loading_config, report_path, target_config
  from mltm_jax.data.splits import load
  from mltm_jax.evaluation.evaluate import retrieval_report
  from mltm_jax.evaluation.report import format_metrics_table
  from mltm_jax.run_dir import RunDir

  run_dir = RunDir(workdir)
  own = run_dir.config()
  cfg, other = target_config(own, _DATASET.value, _DATA_DIR.value)
  path = report_path(workdir, _OUT.value, f"eval_{_SPLIT.value}", cfg, other)
  try:
    split = load(loading_config(cfg, other), _SPLIT.value, cfg.progress)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  try:
    model, state = run_dir.load(cfg, _CHECKPOINT.value)  # params and batch stats only
  except FileNotFoundError as e:
    fail(f"{e} to evaluate")
  model.prepare_audio(split, cfg.progress, run_dir.cache)
  text = model.text_inputs(split, run_dir.cache, cfg.progress)
  audio_emb, text_emb = model.embed_split(state, split, text, progress=cfg.progress)
  methods = ["distance", "plan"] if _RANK_BY.value == "both" else [_RANK_BY.value]
  out = {
    "split": _SPLIT.value,
    "checkpoint_step": int(state.step),
    "num_clips": split.num_clips,
    "num_captions": len(split.captions),
    "skipped": split.skipped,
  }
  for method in methods:
    report = retrieval_report(
      cfg, audio_emb, text_emb, split.caption_to_clip, state.params["metric"], method
    )
    out[method] = report
    print(f"\n{_SPLIT.value} split, step {int(state.step)}, ranked by {method}:")
    print(format_metrics_table(report))
  if other:
    out["dataset"], out["data_dir"] = cfg.dataset, str(cfg.data_dir)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=2))
  print(f"\nwritten {path}")


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
