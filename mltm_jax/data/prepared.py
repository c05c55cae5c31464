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
  "iter_items",
  "load_prepared_split",
  "read_items",
  "read_summary",
  "shard_paths",
  "split_store",
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


def iter_items(root: str | os.PathLike, split: str):
  """The item records of one split, one at a time (as read_items, without holding them all)."""
  summary = read_summary(root)
  path = items_path(root, split)
  if split not in summary.get("splits", {}) or not path.is_file():
    read_items(root, split)  # raises with the message listing the splits
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        yield json.loads(line)


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


def split_store(root: str | os.PathLike, split: str, items: list[dict], sample_rate: int) -> Any:
  """A ShardStore over ``items`` (records of ``split``): windows read from the shards on
  demand, resampled at read time when the prepared rate is not ``sample_rate``."""
  columns = {k: [it.get(k, 1.0) if k == "scale" else it[k] for it in items] for k in _COLUMNS}
  return _store(root, split, columns, sample_rate)


_COLUMNS = ("shard", "offset", "num_samples", "scale")


def _store(root: str | os.PathLike, split: str, columns: dict, sample_rate: int) -> Any:
  from mltm_jax.data.clips import ShardStore

  root = Path(root)
  have = int(read_summary(root)["sample_rate"])
  if have != sample_rate:
    log.warning(
      "%s: prepared at %d Hz, resampling clips to %d Hz as they are read (re-prepare at the "
      "model rate to avoid the cost)",
      root,
      have,
      sample_rate,
    )
  shard = np.asarray(columns["shard"], np.int64)
  n_files = int(shard.max()) + 1 if shard.size else 0
  files = [shard_paths(root, split, k)[0] for k in range(n_files)]
  missing = [str(files[k]) for k in np.unique(shard) if not files[k].is_file()]
  if missing:
    raise FileNotFoundError(f"{root}/{split}: missing shard file(s): {', '.join(missing[:3])}")
  return ShardStore(
    files,
    shard,
    np.asarray(columns["offset"], np.int64),
    np.asarray(columns["num_samples"], np.int64),
    np.asarray(columns["scale"], np.float32),
    have,
    sample_rate,
  )


def load_prepared_split(
  root: str | os.PathLike, split: str, sample_rate: int, *, progress: bool = True
) -> Any:
  """A prepared split as a pipeline ``Split`` (clips in source order, captions in item order);
  its audio is a ShardStore: nothing is decoded or held in memory here, and the item records
  are read one at a time (only ids, captions and the four shard columns are kept).

  Args:
    root: directory written by launch.prepare.
    split: "train", "val" or "test".
    sample_rate: the model rate; audio prepared at another rate is resampled as it is read
      (librosa, logged once; re-preparing at the model rate avoids the cost).
    progress: unused (kept for the loaders' common signature).

  Raises:
    FileNotFoundError: incomplete dataset, missing split or shard. ValueError: a split whose
      items have no captions (ESC-50) or no items.
  """
  from mltm_jax.data.pipeline import Split

  del progress
  summary = read_summary(root)
  ids: list[str] = []
  captions: list[str] = []
  cap2clip: list[int] = []
  clip_caps: list[np.ndarray] = []
  columns: dict[str, list] = {k: [] for k in _COLUMNS}
  for it in iter_items(root, split):
    if not it.get("captions"):
      continue
    i = len(ids)
    ids.append(it["id"])
    for k in _COLUMNS:
      columns[k].append(it.get(k, 1.0) if k == "scale" else it[k])
    start = len(captions)
    captions.extend(it["captions"])
    cap2clip.extend([i] * len(it["captions"]))
    clip_caps.append(np.arange(start, len(captions), dtype=np.int32))
  if not ids:
    raise ValueError(f"{root}/{split}: no clips with captions")
  n_skipped = int(summary.get("splits", {}).get(split, {}).get("skipped", 0))
  if n_skipped:
    log.info(
      "%s/%s: %d clips were skipped by launch.prepare (see summary.json)", root, split, n_skipped
    )
  return Split(
    split,
    ids,
    _store(root, split, columns, sample_rate),
    captions,
    np.asarray(cap2clip, np.int32),
    clip_caps,
    [],
  )
