"""SynthCaps -> entries: rendered first when ``src`` holds no complete SynthCaps, then read as
the Clotho layout it is written in; each item also gets ``labels``, its sound sources (from
``synthcaps_metadata_{split}.jsonl``), which ``launch.zeroshot --synthcaps`` uses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mltm_jax.data.clotho import SPLIT_ROLES
from mltm_jax.data.prepare.clotho import read_clotho
from mltm_jax.data.prepare.common import Listing
from mltm_jax.synthcaps import MARKER, ensure_synthcaps

__all__ = ["read_synthcaps", "split_source_labels"]


def read_synthcaps(
  src: str | Path,
  sizes: dict[str, int],
  seed: int,
  sample_rate: int,
  progress: bool = True,
  workers: int | None = None,
) -> Listing:
  """Entries of the SynthCaps under ``src``; renders it there (sizes, seed, sample_rate) first
  unless ``src`` already holds a finished rendering (SYNTHCAPS_DONE.json), which is used as is."""
  src = Path(src)
  if not (src / MARKER).is_file():
    ensure_synthcaps(
      src, sizes, seed=seed, sample_rate=sample_rate, progress=progress, workers=workers
    )
  listing = read_clotho(src)
  labels: dict[tuple[str, str], list[str]] = {}
  for name, split in SPLIT_ROLES.items():
    meta = src / f"synthcaps_metadata_{name}.jsonl"
    if meta.is_file():
      for line in meta.read_text(encoding="utf-8").splitlines():
        if line.strip():
          rec = json.loads(line)
          labels[(split, rec["file_name"])] = list(rec["sources"])
  listing.entries = [
    dataclasses.replace(e, extra={**e.extra, "labels": labels[(e.split, e.id)]})
    if (e.split, e.id) in labels
    else e
    for e in listing.entries
  ]
  return listing


def split_source_labels(
  dataset: str, data_dir: str | Path, which: str, clip_ids: list[str]
) -> list[list[str]]:
  """SynthCaps source names of the clips ``clip_ids`` of a run's split ``which`` (train / val /
  test), from the rendering's metadata (--dataset=synthcaps) or the prepared items' labels
  (--dataset=prepared, prepared from SynthCaps).

  Raises:
    ValueError: data without SynthCaps labels, or a clip without an entry.
  """
  data_dir = Path(data_dir)
  if dataset == "synthcaps":
    name = {v: k for k, v in SPLIT_ROLES.items()}[which]
    meta = data_dir / f"synthcaps_metadata_{name}.jsonl"
    if not meta.is_file():
      raise ValueError(f"{meta}: not found (is --data_dir a SynthCaps rendering?)")
    by_id = {}
    for line in meta.read_text(encoding="utf-8").splitlines():
      if line.strip():
        rec = json.loads(line)
        by_id[rec["file_name"]] = list(rec["sources"])
  elif dataset == "prepared":
    from mltm_jax.data.prepared import read_items

    by_id = {it["id"]: it["labels"] for it in read_items(data_dir, which) if "labels" in it}
  else:
    raise ValueError(f"--dataset={dataset}: SynthCaps labels need a synthcaps or prepared run")
  missing = [c for c in clip_ids if c not in by_id]
  if missing:
    raise ValueError(
      f"{data_dir}/{which}: {len(missing)} clips without SynthCaps labels (first: {missing[0]}); "
      "not SynthCaps data?"
    )
  return [by_id[c] for c in clip_ids]
