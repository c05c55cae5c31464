"""Prepare a dataset from its official release layout for training / zero-shot evaluation.

  python -m launch.prepare --dataset=clotho --src=downloads/clotho --out=data/prepared/clotho \
      [--sample_rate=32000 | --config=configs/clotho_mltm.flags] [--workers=8]
  python -m launch.prepare --dataset=audiocaps --src=downloads/audiocaps \
      --out=data/prepared/audiocaps
  python -m launch.prepare --dataset=esc50 --src=downloads/ESC-50-master --out=data/prepared/esc50
  python -m launch.prepare --dataset=csv --src=my_data/captions.csv --out=data/prepared/mine
  python -m launch.prepare --dataset=synthcaps --src=data/synthcaps --out=data/prepared/synthcaps

Decodes every clip (mono, resampled to --sample_rate) in a process pool, writes the prepared
format (mltm_jax/data/prepared.py) and prints a summary (also OUT/summary.json): clips written,
clips skipped and why. Interrupted? Rerun the same command: finished shards are kept.
Then: python -m launch.train --dataset=prepared --data_dir=OUT ...
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from absl import app, flags

from launch.flags import fail
from mltm_jax.config import parse_synthcaps_sizes

LAYOUTS = ("clotho", "audiocaps", "esc50", "csv", "synthcaps")

_DATASET = flags.DEFINE_enum("dataset", None, list(LAYOUTS), "Layout of --src.")
_SRC = flags.DEFINE_string(
  "src",
  None,
  "Source: the release folder (csv: the metadata file, or a folder of train/val/test "
  "files; synthcaps: its folder, rendered there when absent).",
)
_OUT = flags.DEFINE_string("out", None, "Output folder of the prepared dataset.")
_RATE = flags.DEFINE_integer("sample_rate", 16000, "Output sample rate in Hz.")
_CONFIG = flags.DEFINE_string(
  "config", "", "A training flagfile whose --sample_rate to use (unless --sample_rate is given)."
)
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Decoding processes.")
_SHARD = flags.DEFINE_integer("shard_size", 128, "Clips per shard (the unit of resumption).")
_DTYPE = flags.DEFINE_enum("dtype", "int16", ["int16", "float32"], "Storage of the samples.")
_MAX_S = flags.DEFINE_float(
  "max_seconds", 600.0, "Longer files keep their first N seconds (noted); 0 keeps them whole."
)
_KEEP_SILENT = flags.DEFINE_bool("keep_silent", False, "Keep all-silent clips (else skipped).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
# csv (your own data)
_AUDIO_COL = flags.DEFINE_string("audio_col", "", "csv: audio path column (empty = automatic).")
_CAPTION_COLS = flags.DEFINE_string(
  "caption_cols", "", "csv: caption column(s), comma separated (empty = automatic)."
)
_SPLIT_COL = flags.DEFINE_string("split_col", "split", "csv: split column, if present.")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.1, "csv without split column: val share.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "csv without split column: test share.")
_SPLIT_SEED = flags.DEFINE_integer("split_seed", 0, "csv without split column: seed of the split.")
# synthcaps
_SIZES = flags.DEFINE_string(
  "synthcaps_sizes",
  "3000,400,400,400",
  "synthcaps: clips per split when rendering: train,val,test[,heldout].",
)
_SYN_SEED = flags.DEFINE_integer("synthcaps_seed", 0, "synthcaps: seed when rendering.")

log = logging.getLogger(__name__)


def _rate_from_flagfile(path: str) -> int:
  p = Path(path)
  if not p.is_file():
    fail(f"--config={path}: no such file")
  rate = None
  for line in p.read_text(encoding="utf-8").splitlines():
    m = re.match(r"^\s*--sample_rate=(\d+)\s*$", line)
    if m:
      rate = int(m.group(1))
  if rate is None:
    fail(f"--config={path}: no --sample_rate line")
  return rate


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  for name, flag in (("dataset", _DATASET), ("src", _SRC), ("out", _OUT)):
    if not flag.value:
      fail(f"--{name} is required")
  from mltm_jax.data.prepare import (
    OwnOptions,
    Settings,
    format_summary,
    read_layout,
    write_prepared,
  )

  rate = _RATE.value
  if _CONFIG.value and not flags.FLAGS["sample_rate"].present:
    rate = _rate_from_flagfile(_CONFIG.value)
  settings = Settings(rate, _DTYPE.value, _SHARD.value, _MAX_S.value, _KEEP_SILENT.value)
  problems = settings.problems()
  if _WORKERS.value < 1:
    problems.append(f"--workers must be >= 1, got {_WORKERS.value}")
  if not (
    0 <= _VAL_FRACTION.value
    and 0 <= _TEST_FRACTION.value
    and _VAL_FRACTION.value + _TEST_FRACTION.value < 1
  ):
    problems.append("--val_fraction and --test_fraction must be >= 0 with a sum below 1")
  kw = {}
  if _DATASET.value == "synthcaps":
    try:
      kw = {
        "sizes": parse_synthcaps_sizes(_SIZES.value),
        "seed": _SYN_SEED.value,
        "sample_rate": rate,
        "progress": _PROGRESS.value,
        "workers": _WORKERS.value,
      }
    except ValueError as e:
      problems.append(f"--synthcaps_sizes: {e}")
  if problems:
    fail(problems[0])
  src, out = Path(_SRC.value), Path(_OUT.value)
  if _DATASET.value != "synthcaps" and not src.exists():
    fail(f"--src={src}: no such file or folder")
  if src.absolute() == out.absolute():
    fail("--out must differ from --src")
  own = OwnOptions(
    _AUDIO_COL.value,
    _CAPTION_COLS.value,
    _SPLIT_COL.value,
    _VAL_FRACTION.value,
    _TEST_FRACTION.value,
    _SPLIT_SEED.value,
  )
  try:
    listing = read_layout(_DATASET.value, src, own=own, **kw)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  for w in listing.warnings:
    log.warning("%s", w)
  if not listing.entries:
    log.warning("no usable clips in %s (%d skipped)", src, len(listing.skipped))
  try:
    summary = write_prepared(
      listing,
      out,
      _DATASET.value,
      settings,
      source=str(src.absolute()),
      workers=_WORKERS.value,
      progress=_PROGRESS.value,
    )
  except ValueError as e:
    fail(str(e).splitlines()[0])
  except KeyboardInterrupt:
    print(
      f"\ninterrupted: finished shards are kept in {out}; rerun the same command to resume",
      file=sys.stderr,
    )
    sys.exit(130)
  print(format_summary(summary, out))


if __name__ == "__main__":
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
