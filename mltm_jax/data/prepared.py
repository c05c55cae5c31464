"""The prepared format written by ``python -m launch.prepare`` and its reader.

Layout under ``root``::

  prepared.json               written first: format version, dataset, sample_rate, dtype, settings
  {split}/shard-00000.npy     1-D int16 (or float32) array: the shard's clips end to end
  {split}/shard-00000.json    the shard's item records and skips; written after its .npy (atomic
                              rename), so its presence marks the shard done (resume unit)
  {split}.jsonl               every item of the split, in source order (written at the end)
  summary.json                written last: counts, skip reasons, notes (marks completion)

Item record (one JSON object per line of ``{split}.jsonl``)::

  {"id", "file", "split", "captions": [...], "duration" (s), "num_samples", "shard", "offset",
   "scale", "notes": [...], ...layout fields (esc50: fold, target, category, esc10;
   audiocaps: youtube_id, start_time, audiocap_ids; synthcaps: labels)}

A clip's waveform is ``shard_array[offset:offset + num_samples] * scale`` (float32, mono, at
``sample_rate``). Splits are named train / val / test (ESC-50: all).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
  "FORMAT_VERSION",
  "INFO",
  "SUMMARY",
  "item_waves",
  "items_path",
  "load_prepared_split",
  "read_items",
  "read_summary",
  "shard_paths",
]

FORMAT_VERSION = 1
INFO = "prepared.json"
SUMMARY = "summary.json"

log = logging.getLogger(__name__)


def items_path(root: str | os.PathLike, split: str) -> Path:
  return Path(root) / f"{split}.jsonl"


def shard_paths(root: str | os.PathLike, split: str, index: int) -> tuple[Path, Path]:
  """(.npy, .json) of shard ``index`` of ``split``."""
  base = Path(root) / split / f"shard-{index:05d}"
  return base.with_suffix(".npy"), base.with_suffix(".json")


def read_summary(root: str | os.PathLike) -> dict:
  """summary.json of a complete prepared dataset.

  Raises:
    FileNotFoundError: not a prepared dataset, or its preparation did not finish.
  """
  root = Path(root)
  path = root / SUMMARY
  if not path.is_file():
    if (root / INFO).is_file():
      raise FileNotFoundError(
        f"{root}: preparation did not finish (no {SUMMARY}); rerun the same launch.prepare "
        "command to complete it"
      )
    raise FileNotFoundError(f"{root}: not a prepared dataset (no {SUMMARY}; see launch.prepare)")
  return json.loads(path.read_text(encoding="utf-8"))


def read_items(root: str | os.PathLike, split: str) -> list[dict]:
  """Item records of one split (source order).

  Raises:
    FileNotFoundError: incomplete dataset or no such split (the message lists the splits).
  """
  summary = read_summary(root)
  splits = list(summary.get("splits", {}))
  path = items_path(root, split)
  if split not in splits or not path.is_file():
    hint = " (ESC-50 is for launch.zeroshot)" if summary.get("dataset") == "esc50" else ""
    raise FileNotFoundError(
      f"{root}: no prepared split {split!r} (has: {', '.join(splits) or 'none'}){hint}"
    )
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def item_waves(root: str | os.PathLike, split: str, items: list[dict]) -> list[np.ndarray]:
  """float32 [T_i] waveforms of ``items`` (records of ``split``), read through memory maps
  (read-only views of the maps for float32 shards; int16 shards are scaled into RAM)."""
  root = Path(root)
  maps: dict[int, np.ndarray] = {}
  out = []
  for it in items:
    k = int(it["shard"])
    if k not in maps:
      maps[k] = np.load(shard_paths(root, split, k)[0], mmap_mode="r")
    a = maps[k][int(it["offset"]) : int(it["offset"]) + int(it["num_samples"])]
    if a.shape[0] != int(it["num_samples"]):
      raise ValueError(f"{root}/{split}: shard {k} is shorter than its records (corrupt?)")
    scale = float(it.get("scale", 1.0))
    if a.dtype == np.float32 and scale == 1.0:
      out.append(a)  # float32 shards: a view of the memory map, nothing copied into RAM
    else:
      out.append(a.astype(np.float32) * np.float32(scale))
  return out


def load_prepared_split(
  root: str | os.PathLike, split: str, sample_rate: int, *, progress: bool = True
) -> Any:
  """A prepared split as a pipeline ``Split`` (clips in source order, captions in item order).

  Args:
    root: directory written by launch.prepare.
    split: "train", "val" or "test".
    sample_rate: the model rate; audio prepared at another rate is resampled here (librosa,
      logged once; re-preparing at the model rate avoids the cost).

  Raises:
    FileNotFoundError: incomplete dataset or missing split. ValueError: a split whose items
      have no captions (ESC-50) or no items.
  """
  from tqdm.auto import tqdm

  from mltm_jax.data.pipeline import Split

  summary = read_summary(root)
  items = read_items(root, split)
  items = [it for it in items if it.get("captions")]
  if not items:
    raise ValueError(f"{root}/{split}: no clips with captions")
  waves = item_waves(root, split, items)
  have = int(summary["sample_rate"])
  if have != sample_rate:
    import librosa

    log.warning("%s: prepared at %d Hz, resampling to %d Hz", root, have, sample_rate)
    waves = [
      librosa.resample(w, orig_sr=have, target_sr=sample_rate).astype(np.float32)
      for w in tqdm(waves, desc=f"resample {split}", disable=not progress, leave=False)
    ]
  captions: list[str] = []
  cap2clip: list[int] = []
  clip_caps: list[np.ndarray] = []
  for i, it in enumerate(items):
    start = len(captions)
    captions.extend(it["captions"])
    cap2clip.extend([i] * len(it["captions"]))
    clip_caps.append(np.arange(start, len(captions), dtype=np.int32))
  n_skipped = int(summary.get("splits", {}).get(split, {}).get("skipped", 0))
  if n_skipped:
    log.info(
      "%s/%s: %d clips were skipped by launch.prepare (see summary.json)", root, split, n_skipped
    )
  return Split(
    split,
    [it["id"] for it in items],
    waves,
    captions,
    np.asarray(cap2clip, np.int32),
    clip_caps,
    [],
  )
