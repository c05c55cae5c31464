"""Clotho v2.1 release layout -> entries (SynthCaps is written in it too).

Under ``src``: ``clotho_captions_{development,validation,evaluation}.csv`` (header
file_name, caption_1..caption_5) and the audio of each split in ``{split}/`` (the official
archives' folder), ``clotho_audio_{split}/`` or ``audio/{split}/``. A split without its CSV is
left out with a warning; none at all is an error. Prepared splits: development -> train,
validation -> val, evaluation -> test. Item id = file_name.
Skip reasons: "no file name", "duplicate row", "no captions", "missing audio".
"""

from __future__ import annotations

from pathlib import Path

from mltm_jax.data.prepare.common import (
  Entry,
  Listing,
  Skip,
  clean_captions,
  fix_field,
  read_csv,
  relative,
  resolve_name,
)

__all__ = ["CLOTHO_SPLITS", "read_clotho"]

CLOTHO_SPLITS = {"development": "train", "validation": "val", "evaluation": "test"}


def _audio_dirs(src: Path, split: str) -> list[Path]:
  return [
    d for d in (src / split, src / f"clotho_audio_{split}", src / "audio" / split) if d.is_dir()
  ]


def read_clotho(src: str | Path) -> Listing:
  """Entries of every Clotho split found under ``src``.

  Raises:
    FileNotFoundError: no captions CSV at all. ValueError: a CSV without file_name or
      caption columns.
  """
  src = Path(src).absolute()
  entries: list[Entry] = []
  skipped: list[Skip] = []
  warnings: list[str] = []
  found = 0
  for name, split in CLOTHO_SPLITS.items():
    csv_path = src / f"clotho_captions_{name}.csv"
    if not csv_path.is_file():
      warnings.append(f"{csv_path.name} not found: split {name} left out")
      continue
    found += 1
    header, rows, utf8 = read_csv(csv_path)
    if not utf8:
      warnings.append(f"{csv_path.name}: not valid UTF-8; such fields decoded as cp1252")
    if "file_name" not in header:
      raise ValueError(f"{csv_path}: header has no 'file_name' column (got {header})")
    name_col = header.index("file_name")
    cap_cols = [i for i, h in enumerate(header) if h.startswith("caption")]
    if not cap_cols:
      raise ValueError(f"{csv_path}: header has no caption_* columns (got {header})")
    dirs = _audio_dirs(src, name)
    seen: set[str] = set()
    for row in rows:
      file_name = fix_field(row[name_col])[0].strip() if name_col < len(row) else ""
      if not file_name:
        skipped.append(Skip(split, "", "", "no file name"))
        continue
      if file_name in seen:
        skipped.append(Skip(split, file_name, f"{name}/{file_name}", "duplicate row"))
        continue
      seen.add(file_name)
      captions, notes = clean_captions(row[i] if i < len(row) else "" for i in cap_cols)
      if not captions:
        skipped.append(Skip(split, file_name, f"{name}/{file_name}", "no captions"))
        continue
      path = resolve_name(dirs, file_name)
      if path is None:
        skipped.append(Skip(split, file_name, f"{name}/{file_name}", "missing audio"))
        continue
      entries.append(Entry(split, file_name, relative(path, src), str(path), captions, {}, notes))
  if not found:
    raise FileNotFoundError(f"{src}: no clotho_captions_{{development,validation,evaluation}}.csv")
  return Listing(entries, skipped, warnings)
