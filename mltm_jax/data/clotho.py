"""Reader for the Clotho v2.1 release layout (also written by SynthCaps).

Layout under ``root``::

    clotho_captions_{split}.csv   header: file_name,caption_1,...,caption_5
    {split}/{file_name}           audio files (also clotho_audio_{split}/, audio/{split}/)

Splits: development, validation, evaluation (and SynthCaps' extra split heldout).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from mltm_jax.data.metadata import clean_captions, fix_field, read_csv, resolve_name

__all__ = [
  "ROLE_SPLITS",
  "SPLITS",
  "OPTIONAL_SPLITS",
  "SPLIT_ROLES",
  "Item",
  "Row",
  "audio_dirs",
  "captions_csv_path",
  "read_captions_csv",
  "read_clotho_split",
]

SPLITS = ("development", "validation", "evaluation", "heldout")
# Clotho's split names <-> the roles every other layout uses (the prepared format's names).
# "heldout" is SynthCaps' extra split (mltm_jax.synthcaps.heldout); Clotho has none.
SPLIT_ROLES = {
  "development": "train",
  "validation": "val",
  "evaluation": "test",
  "heldout": "heldout",
}
OPTIONAL_SPLITS = ("heldout",)  # left out silently where its CSV is absent
ROLE_SPLITS = {role: split for split, role in SPLIT_ROLES.items()}


@dataclass(frozen=True)
class Item:
  """One clip: its file name (as in the CSV), resolved audio path and non-empty captions."""

  file_name: str
  path: Path
  captions: tuple[str, ...]


def captions_csv_path(root: str | os.PathLike, split: str) -> Path:
  """Path of the captions CSV of ``split`` under ``root``."""
  return Path(root) / f"clotho_captions_{split}.csv"


def audio_dirs(root: Path, split: str) -> list[Path]:
  """The existing folders that may hold a split's audio: ``{split}/`` (the official archives'),
  ``clotho_audio_{split}/`` and ``audio/{split}/``."""
  candidates = (root / split, root / f"clotho_audio_{split}", root / "audio" / split)
  return [d for d in candidates if d.is_dir()]


@dataclass(frozen=True)
class Row:
  """One CSV row: the file name, its audio (None if not found), cleaned captions, the notes of
  their cleaning, and why the row is skipped (None if it is not)."""

  file_name: str
  path: Path | None
  captions: tuple[str, ...]
  notes: tuple[str, ...]
  skip: str | None


def read_captions_csv(csv_path: Path, dirs: list[Path]) -> tuple[list[Row], bool]:
  """(rows, is_utf8) of a Clotho captions CSV; audio looked up in ``dirs`` (NFC/NFD names).

  Fields with bytes that are not UTF-8 are re-decoded as cp1252; captions are cleaned (control
  characters and whitespace runs -> one space, empty ones dropped). Skip reasons: "no file
  name", "duplicate row", "no captions", "missing audio".

  Raises:
    ValueError: empty CSV, or a header without ``file_name`` or caption columns.
  """
  header, rows, utf8 = read_csv(csv_path)
  if "file_name" not in header:
    raise ValueError(f"{csv_path}: header has no 'file_name' column (got {header})")
  name_col = header.index("file_name")
  cap_cols = [i for i, h in enumerate(header) if h.startswith("caption")]
  if not cap_cols:
    raise ValueError(f"{csv_path}: header has no caption_* columns (got {header})")
  out: list[Row] = []
  seen: set[str] = set()
  for row in rows:
    file_name = fix_field(row[name_col])[0].strip() if name_col < len(row) else ""
    if not file_name:
      out.append(Row("", None, (), (), "no file name"))
      continue
    if file_name in seen:
      out.append(Row(file_name, None, (), (), "duplicate row"))
      continue
    seen.add(file_name)
    captions, notes = clean_captions(row[i] if i < len(row) else "" for i in cap_cols)
    if not captions:
      out.append(Row(file_name, None, (), notes, "no captions"))
      continue
    path = resolve_name(dirs, file_name)
    out.append(Row(file_name, path, captions, notes, None if path else "missing audio"))
  return out, utf8


def read_clotho_split(
  root: str | os.PathLike, split: str
) -> tuple[list[Item], list[tuple[str, str]]]:
  """Read one split of a Clotho-layout dataset.

  Args:
    root: dataset folder holding ``clotho_captions_{split}.csv`` and the audio (see
      ``audio_dirs``).
    split: "development", "validation" or "evaluation".

  Returns:
    (items, skipped): items in CSV order; skipped is a list of (file_name, reason) with
    reason "missing audio", "no captions", "duplicate row" or "no file name".

  Raises:
    ValueError: unknown split, or a CSV without a ``file_name`` column.
    FileNotFoundError: the captions CSV does not exist.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown Clotho split {split!r}; expected one of {', '.join(SPLITS)}")
  root = Path(root)
  csv_path = captions_csv_path(root, split)
  if not csv_path.is_file():
    raise FileNotFoundError(f"Clotho captions CSV not found: {csv_path}")
  rows, utf8 = read_captions_csv(csv_path, audio_dirs(root, split))
  if not utf8:
    warnings.warn(
      f"{csv_path}: not valid UTF-8; fields with other bytes decoded as cp1252 (latin-1 where "
      "cp1252 has no character)",
      UnicodeWarning,
      stacklevel=2,
    )
  items = [Item(r.file_name, r.path, r.captions) for r in rows if r.skip is None]
  skipped = [(r.file_name, r.skip) for r in rows if r.skip is not None]
  return items, skipped
