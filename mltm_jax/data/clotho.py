"""Reader for the Clotho v2.1 release layout (also written by SynthCaps).

Layout under ``root``::

    clotho_captions_{split}.csv   header: file_name,caption_1,...,caption_5
    {split}/{file_name}           audio files

Splits: development, validation, evaluation.
"""

from __future__ import annotations

import csv
import io
import os
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SPLITS", "Item", "captions_csv_path", "read_clotho_split"]

SPLITS = ("development", "validation", "evaluation")


@dataclass(frozen=True)
class Item:
  """One clip: its file name (as in the CSV), resolved audio path and non-empty captions."""

  file_name: str
  path: Path
  captions: tuple[str, ...]


def captions_csv_path(root: str | os.PathLike, split: str) -> Path:
  """Path of the captions CSV of ``split`` under ``root``."""
  return Path(root) / f"clotho_captions_{split}.csv"


def _decode_csv_bytes(raw: bytes, path: Path) -> str:
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    warnings.warn(
      f"{path}: not valid UTF-8 ({e.reason} at byte {e.start}); decoding as latin-1",
      UnicodeWarning,
      stacklevel=3,
    )
    return raw.decode("latin-1")


def _resolve_audio(audio_dir: Path, file_name: str) -> Path | None:
  """The audio file for ``file_name``, trying NFC/NFD spellings of the name; None if absent."""
  candidates = [file_name]
  for form in ("NFC", "NFD"):
    alt = unicodedata.normalize(form, file_name)
    if alt not in candidates:
      candidates.append(alt)
  for name in candidates:
    p = audio_dir / name
    if p.is_file():
      return p
  return None


def read_clotho_split(
  root: str | os.PathLike, split: str
) -> tuple[list[Item], list[tuple[str, str]]]:
  """Read one split of a Clotho-layout dataset.

  Args:
    root: dataset folder holding ``clotho_captions_{split}.csv`` and ``{split}/``.
    split: "development", "validation" or "evaluation".

  Returns:
    (items, skipped): items in CSV order; skipped is a list of (file_name, reason) with
    reason "missing audio", "no captions" or "duplicate row".

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
  text = _decode_csv_bytes(csv_path.read_bytes(), csv_path)
  rows = csv.reader(io.StringIO(text, newline=""))
  header = next(rows, None)
  if header is None:
    raise ValueError(f"{csv_path}: empty CSV (no header row)")
  header = [h.strip() for h in header]
  if "file_name" not in header:
    raise ValueError(f"{csv_path}: header has no 'file_name' column (got {header})")
  name_col = header.index("file_name")
  cap_cols = [i for i, h in enumerate(header) if h.startswith("caption")]
  if not cap_cols:
    raise ValueError(f"{csv_path}: header has no caption_* columns (got {header})")

  audio_dir = root / split
  items: list[Item] = []
  skipped: list[tuple[str, str]] = []
  seen: set[str] = set()
  for row in rows:
    if not row or all(not c.strip() for c in row):
      continue  # blank line
    file_name = row[name_col].strip() if name_col < len(row) else ""
    if not file_name:
      skipped.append(("", "no file name"))
      continue
    if file_name in seen:
      skipped.append((file_name, "duplicate row"))
      continue
    seen.add(file_name)
    captions = tuple(row[i].strip() for i in cap_cols if i < len(row) and row[i].strip())
    if not captions:
      skipped.append((file_name, "no captions"))
      continue
    path = _resolve_audio(audio_dir, file_name)
    if path is None:
      skipped.append((file_name, "missing audio"))
      continue
    items.append(Item(file_name=file_name, path=path, captions=captions))
  return items, skipped
