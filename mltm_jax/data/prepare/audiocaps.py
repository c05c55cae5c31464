"""AudioCaps layout -> entries.

Metadata: ``{train,val,test}.csv`` (``val`` may also be ``valid.csv``/``validation.csv``)
under ``src`` or ``src/dataset`` (the AudioCaps repository's folder), header
``audiocap_id,youtube_id,start_time,caption``. Rows with the same (youtube_id, start_time)
in one split are one clip and its captions are grouped in row order (val/test: 5 rows per
clip; train: mostly one, and the few repeated train clips are grouped the same way). Rows are
never grouped across splits. Item id = ``{youtube_id}_{start}`` (start as an integer when it is
one).

Audio: the first file found, searching the folders ``{split}/``, ``audio/{split}/`` (for val
also ``valid/``, ``validation/``), then ``audio/`` and ``src`` itself (flat), for these names,
in this order (st = start_time, en = start_time + 10, both as integers when integral, else as
written in the CSV; st3/en3 with 3 decimals)::

  {yid}_{st}_{en}   Y{yid}_{st}_{en}   {yid}_{st3}_{en3}   Y{yid}_{st3}_{en3}
  {yid}_{st}        Y{yid}_{st}        {yid}               Y{yid}

each with the extensions .wav, .flac, .mp3, .ogg (libsndfile decodes all four). A clip with
no file is skipped as "missing audio". Other skip reasons: "no youtube_id", "bad start_time",
"no captions".
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from mltm_jax.data.prepare.common import (
  AUDIO_EXTENSIONS,
  Entry,
  Listing,
  Skip,
  clean_captions,
  csv_cell,
  csv_columns,
  read_csv,
  relative,
)

__all__ = ["AUDIOCAPS_SPLITS", "candidate_names", "read_audiocaps"]

AUDIOCAPS_SPLITS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
CLIP_SECONDS = 10.0


def _fmt(x: float, literal: str) -> str:
  return str(int(x)) if float(x).is_integer() else literal


def candidate_names(youtube_id: str, start: float, start_literal: str) -> list[str]:
  """File names tried for one clip, in order of preference."""
  st, en = _fmt(start, start_literal), _fmt(start + CLIP_SECONDS, f"{start + CLIP_SECONDS:g}")
  st3, en3 = f"{start:.3f}", f"{start + CLIP_SECONDS:.3f}"
  stems = []
  for suffix in (f"_{st}_{en}", f"_{st3}_{en3}", f"_{st}", ""):
    for prefix in ("", "Y"):
      stem = f"{prefix}{youtube_id}{suffix}"
      if stem not in stems:
        stems.append(stem)
  return [f"{s}.{e}" for s in stems for e in AUDIO_EXTENSIONS]


class _DirIndex:
  """File names of a few folders, listed once (AudioCaps has ~50k clips)."""

  def __init__(self, dirs: list[Path]):
    self.listing = []
    for d in dirs:
      try:
        names = {e.name for e in os.scandir(d) if e.is_file()}
      except OSError:
        continue
      self.listing.append((d, names))

  def find(self, names: list[str]) -> Path | None:
    for name in names:
      for d, have in self.listing:
        if name in have:
          return d / name
    return None


def _csv_path(src: Path, names: tuple[str, ...]) -> Path | None:
  for base in (src, src / "dataset"):
    for n in names:
      if (base / f"{n}.csv").is_file():
        return base / f"{n}.csv"
  return None


def read_audiocaps(src: str | Path) -> Listing:
  """Entries of every AudioCaps split found under ``src``.

  Raises:
    FileNotFoundError: none of train/val/test.csv. ValueError: a CSV lacking youtube_id,
      start_time or caption.
  """
  src = Path(src).absolute()
  out = Listing()
  found = 0
  for split, names in AUDIOCAPS_SPLITS.items():
    csv_path = _csv_path(src, names)
    if csv_path is None:
      out.split_missing(f"{split}.csv", split)
      continue
    found += 1
    header, rows, utf8 = read_csv(csv_path)
    out.note_utf8(csv_path.name, utf8)
    col = csv_columns(csv_path, header, ("youtube_id", "start_time", "caption"))
    groups: dict[tuple[str, float], dict] = {}
    for row in rows:
      yid, st_text = csv_cell(row, col, "youtube_id"), csv_cell(row, col, "start_time")
      if not yid:
        out.skipped.append(Skip(split, "", "", "no youtube_id"))
        continue
      try:
        start = float(st_text)
        if not (math.isfinite(start) and start >= 0):
          raise ValueError
      except ValueError:
        out.skipped.append(Skip(split, yid, "", "bad start_time", st_text))
        continue
      g = groups.setdefault((yid, start), {"literal": st_text, "raw": [], "ids": []})
      g["raw"].append(row[col["caption"]] if col["caption"] < len(row) else "")
      if "audiocap_id" in col:
        g["ids"].append(csv_cell(row, col, "audiocap_id"))
    dirs = []
    for n in names:
      dirs += [src / n, src / "audio" / n]
    index = _DirIndex([d for d in dirs + [src / "audio", src] if d.is_dir()])
    for (yid, start), g in groups.items():
      cid = f"{yid}_{_fmt(start, g['literal'])}"
      captions, notes = clean_captions(g["raw"])
      if not captions:
        out.skipped.append(Skip(split, cid, "", "no captions"))
        continue
      path = index.find(candidate_names(yid, start, g["literal"]))
      if path is None:
        out.skipped.append(Skip(split, cid, "", "missing audio", f"no {yid}* file"))
        continue
      extra = {"youtube_id": yid, "start_time": start, "audiocap_ids": g["ids"]}
      out.entries.append(Entry(split, cid, relative(path, src), str(path), captions, extra, notes))
  if not found:
    raise FileNotFoundError(f"{src}: no AudioCaps train.csv, val.csv or test.csv")
  return out
