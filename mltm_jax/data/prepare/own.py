"""Your own data: a CSV/TSV or JSON-lines file of (audio path, captions) -> entries.

``src`` is either one metadata file (``.csv``, ``.tsv``, ``.jsonl``) or a folder holding
``train``, ``val`` and/or ``test`` files with one of those extensions (the file name is the
split). Audio paths are relative to the metadata file's folder (absolute paths work too).

Columns (CSV header or JSON keys), found automatically unless given:
  audio    the first of: audio, audio_path, path, file, file_name, filename, wav
  captions CSV: caption, caption_1, caption_2, ... (or captions / text); JSON: "captions"
           (a list or a string), else "caption" / "text"
  split    "split" when present (one file): train / val / test; also accepted:
           training, development, dev -> train; valid, validation -> val; eval,
           evaluation, testing -> test. Without a split column every clip is assigned by a
           seeded permutation: test_fraction, val_fraction of the clips, the rest train.
Rows naming the same audio file in one split are one clip (captions grouped in row order).
Item id = the audio path as written. Other scalar columns are kept in the item's "meta".
Skip reasons: "no audio path", "bad JSON line", "unknown split", "no captions",
"missing audio", "duplicate clip across splits" (a file already used by an earlier split).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from mltm_jax.data.prepare.common import (
  Entry,
  Listing,
  Skip,
  clean_captions,
  fix_field,
  read_csv,
  read_jsonl,
  relative,
)

__all__ = ["SPLIT_ALIASES", "OwnOptions", "read_own"]

AUDIO_COLUMNS = ("audio", "audio_path", "path", "file", "file_name", "filename", "wav")
SPLIT_ALIASES = {
  "train": "train",
  "training": "train",
  "development": "train",
  "dev": "train",
  "val": "val",
  "valid": "val",
  "validation": "val",
  "test": "test",
  "testing": "test",
  "eval": "test",
  "evaluation": "test",
}
METADATA_EXTENSIONS = (".csv", ".tsv", ".jsonl")
_CAPTION_RE = re.compile(r"^caption[_ ]?(\d+)$")


@dataclasses.dataclass(frozen=True)
class OwnOptions:
  """audio_col / caption_cols ("" = automatic), split_col, fractions and seed of the split."""

  audio_col: str = ""
  caption_cols: str = ""
  split_col: str = "split"
  val_fraction: float = 0.1
  test_fraction: float = 0.1
  split_seed: int = 0


def _caption_columns(keys: list[str], given: str) -> list[str]:
  if given:
    cols = [c.strip() for c in given.split(",") if c.strip()]
    missing = [c for c in cols if c not in keys]
    if missing:
      raise ValueError(f"caption column(s) {', '.join(missing)} not found (have {keys})")
    return cols
  numbered = sorted(
    ((int(m.group(1)), k) for k in keys if (m := _CAPTION_RE.match(k.lower()))), key=lambda t: t[0]
  )
  cols = [k for k in keys if k.lower() in ("caption", "captions")] + [k for _, k in numbered]
  if not cols:
    cols = [k for k in keys if k.lower() == "text"]
  if not cols:
    raise ValueError(f"no caption column (caption, caption_1.., captions, text) in {keys}")
  return cols


def _audio_column(keys: list[str], given: str) -> str:
  if given:
    if given not in keys:
      raise ValueError(f"audio column {given!r} not found (have {keys})")
    return given
  for k in keys:
    if k.lower() in AUDIO_COLUMNS:
      return k
  raise ValueError(f"no audio path column ({', '.join(AUDIO_COLUMNS)}) in {keys}")


def _rows(path: Path, out: Listing) -> list[dict[str, Any]]:
  """Rows of one metadata file as dicts (``_line`` = line/row number); bad lines and warnings
  go to ``out``."""
  if path.suffix == ".jsonl":
    parsed, utf8 = read_jsonl(path)
    rows = []
    for n, value in parsed:
      if isinstance(value, dict):
        rows.append({**value, "_line": n})
      else:
        out.skipped.append(Skip("", f"{path.name}:{n}", "", "bad JSON line", str(value)[:80]))
  else:
    header, raw, utf8 = read_csv(path)
    rows = [
      {**{h: (r[i] if i < len(r) else "") for i, h in enumerate(header)}, "_line": n + 2}
      for n, r in enumerate(raw)
    ]
  out.note_utf8(path.name, utf8)
  return rows


def _raw_captions(row: dict, cols: list[str]) -> list[Any]:
  out: list[Any] = []
  for c in cols:
    v = row.get(c)
    out.extend(v if isinstance(v, list) else [v])
  return out


def read_own(src: str | Path, options: OwnOptions = OwnOptions()) -> Listing:
  """Entries of your own CSV/JSONL data (see the module docstring).

  Raises:
    FileNotFoundError: no metadata file. ValueError: columns not found.
  """
  src = Path(src).absolute()
  out = Listing()
  warnings, skipped = out.warnings, out.skipped
  if src.is_file():
    files = [(src, None)]
  elif src.is_dir():
    files = [
      (src / f"{name}{ext}", name)
      for name in ("train", "val", "test")
      for ext in METADATA_EXTENSIONS
      if (src / f"{name}{ext}").is_file()
    ]
    if not files:
      raise FileNotFoundError(f"{src}: no train/val/test .csv, .tsv or .jsonl file")
  else:
    raise FileNotFoundError(f"{src}: no such file or folder")

  groups: dict[tuple[str, str], dict] = {}  # (split, resolved path) -> clip
  order: list[tuple[str, str]] = []
  unassigned: list[tuple[str, str]] = []
  for path, file_split in files:
    rows = _rows(path, out)
    if not rows:
      warnings.append(f"{path.name}: no rows")
      continue
    keys: list[str] = []
    for r in rows:
      keys += [k for k in r if k != "_line" and k not in keys]
    audio_col = _audio_column(keys, options.audio_col)
    cap_cols = _caption_columns(keys, options.caption_cols)
    split_col = options.split_col if file_split is None and options.split_col in keys else None
    base = path.parent
    for row in rows:
      where = f"{path.name}:{row['_line']}"
      name = row.get(audio_col)
      name = fix_field(name)[0].strip() if isinstance(name, str) else ""
      if not name:
        skipped.append(Skip(file_split or "", where, "", "no audio path"))
        continue
      split = file_split
      if split_col is not None:
        value = str(row.get(split_col, "")).strip().lower()
        split = SPLIT_ALIASES.get(value)
        if split is None:
          skipped.append(Skip("", name, name, "unknown split", value))
          continue
      key = (split or "", str((base / name).absolute()))
      if key not in groups:
        meta = {
          k: v
          for k, v in row.items()
          if k not in (audio_col, split_col, "_line", *cap_cols)
          and isinstance(v, (str, int, float, bool))
        }
        groups[key] = {"name": name, "raw": [], "meta": meta}
        (order if split else unassigned).append(key)
      groups[key]["raw"].extend(_raw_captions(row, cap_cols))

  # Clips with captions and audio; then the seeded split of those without one (a permutation:
  # test_fraction of them first, then val_fraction, the rest train).
  usable: dict[tuple[str, str], tuple] = {}
  for key in order + unassigned:
    g = groups[key]
    captions, notes = clean_captions(g["raw"])
    if not captions:
      skipped.append(Skip(key[0], g["name"], g["name"], "no captions"))
    elif not Path(key[1]).is_file():
      skipped.append(Skip(key[0], g["name"], g["name"], "missing audio"))
    else:
      usable[key] = (captions, notes)
  todo = [k for k in unassigned if k in usable]
  if todo:
    n = len(todo)
    perm = np.random.default_rng(options.split_seed).permutation(n)
    n_test = round(options.test_fraction * n)
    n_val = round(options.val_fraction * n)
    role = np.empty(n, object)
    role[perm[:n_test]] = "test"
    role[perm[n_test : n_test + n_val]] = "val"
    role[perm[n_test + n_val :]] = "train"
    for key, r in zip(todo, role):
      new = (str(r), key[1])
      groups[new] = groups[key]
      usable[new] = usable.pop(key)

  used: dict[str, str] = {}
  base = src if src.is_dir() else src.parent
  for split in ("train", "val", "test"):
    for key in [k for k in usable if k[0] == split]:
      g = groups[key]
      name, captions, notes = g["name"], *usable[key]
      if key[1] in used:
        skipped.append(Skip(split, name, name, "duplicate clip across splits", used[key[1]]))
        continue
      used[key[1]] = split
      extra = {"meta": g["meta"]} if g["meta"] else {}
      out.entries.append(
        Entry(split, name, relative(Path(key[1]), base), key[1], captions, extra, notes)
      )
  return out
