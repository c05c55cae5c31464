"""Text of metadata files (captions CSVs, JSON lines) and the file helpers every reader shares.

Text of metadata files: UTF-8 (a BOM is dropped). A file that is not valid UTF-8 is decoded
with its invalid bytes kept as surrogate escapes, and each field holding such bytes is then
decoded on its own as cp1252 (latin-1 where cp1252 leaves a byte undefined), so one badly
encoded caption does not garble the rest of the file; the caption gets a note.
Captions: control characters become spaces, whitespace runs collapse to one space, ends are
stripped; a caption left empty is dropped (noted); a clip without captions is skipped.

Used by the training-time readers (mltm_jax.data.clotho) and by launch.prepare's layout
readers (mltm_jax.data.prepare).
"""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
  "AUDIO_EXTENSIONS",
  "NOTE_EMPTY_CAPTION",
  "NOTE_NOT_UTF8",
  "clean_captions",
  "csv_cell",
  "csv_columns",
  "decode_metadata",
  "fix_field",
  "read_csv",
  "read_jsonl",
  "relative",
  "resolve_name",
]

NOTE_NOT_UTF8 = "caption not UTF-8 (decoded as cp1252)"
NOTE_EMPTY_CAPTION = "empty caption dropped"
AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg")


def decode_metadata(raw: bytes) -> tuple[str, bool]:
  """(text, is_utf8). Invalid UTF-8 bytes are kept as surrogate escapes (see fix_field)."""
  try:
    return raw.decode("utf-8-sig"), True
  except UnicodeDecodeError:
    text = raw.decode("utf-8", errors="surrogateescape")
    return text.removeprefix("\ufeff"), False


def fix_field(s: str) -> tuple[str, bool]:
  """(text, repaired): a field holding surrogate-escaped bytes is re-decoded as cp1252."""
  if not any("\udc80" <= ch <= "\udcff" for ch in s):
    return s, False
  raw = s.encode("utf-8", errors="surrogateescape")
  try:
    return raw.decode("cp1252"), True
  except UnicodeDecodeError:
    return raw.decode("latin-1"), True


def _clean_text(s: str) -> str:
  s = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in s)
  return " ".join(s.split())


def clean_captions(raw: Iterable[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(captions, notes) from raw caption values (None / non-strings count as empty)."""
  caps: list[str] = []
  notes: list[str] = []
  for value in raw:
    text = value if isinstance(value, str) else ""
    text, repaired = fix_field(text)
    text = _clean_text(text)
    if not text:
      notes.append(NOTE_EMPTY_CAPTION)
      continue
    if repaired:
      notes.append(NOTE_NOT_UTF8)
    caps.append(text)
  return tuple(caps), tuple(notes)


def read_csv(path: Path, delimiter: str | None = None) -> tuple[list[str], list[list[str]], bool]:
  """(header, rows, is_utf8) of a CSV (TSV for .tsv). Blank rows are dropped; header cells
  are stripped. Raises ValueError on an empty file."""
  text, utf8 = decode_metadata(Path(path).read_bytes())
  if delimiter is None:
    delimiter = "\t" if str(path).endswith(".tsv") else ","
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
  header = next(reader, None)
  if header is None:
    raise ValueError(f"{path}: empty file (no header row)")
  rows = [r for r in reader if r and any(c.strip() for c in r)]
  return [fix_field(h)[0].strip() for h in header], rows, utf8


def csv_columns(path: Path, header: list[str], required: Sequence[str]) -> dict[str, int]:
  """Column index by name of a CSV ``header`` (the last of repeated names). Raises
  ValueError naming ``path`` when a ``required`` column is missing."""
  missing = [c for c in required if c not in header]
  if missing:
    raise ValueError(f"{path}: header lacks {', '.join(missing)} (got {header})")
  return {h: i for i, h in enumerate(header)}


def csv_cell(row: list[str], col: dict[str, int], name: str) -> str:
  """Column ``name`` of a CSV row (``col`` from :func:`csv_columns`), repaired by
  :func:`fix_field` and stripped; "" when the header or the row lacks it."""
  i = col.get(name)
  return fix_field(row[i])[0].strip() if i is not None and i < len(row) else ""


def read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], bool]:
  """([(line number, parsed value or the JSONDecodeError)], is_utf8) of a JSON-lines file."""
  import json

  text, utf8 = decode_metadata(Path(path).read_bytes())
  out: list[tuple[int, Any]] = []
  for n, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      out.append((n, json.loads(line)))
    except json.JSONDecodeError as e:
      out.append((n, e))
  return out, utf8


def resolve_name(dirs: Sequence[Path], name: str) -> Path | None:
  """The first existing ``dir / name`` (trying the name's NFC and NFD spellings), or None."""
  names = [name]
  for form in ("NFC", "NFD"):
    alt = unicodedata.normalize(form, name)
    if alt not in names:
      names.append(alt)
  for d in dirs:
    for n in names:
      p = d / n
      if p.is_file():
        return p
  return None


def relative(path: Path, root: Path) -> str:
  """``path`` relative to ``root`` as posix text when below it, else the absolute path."""
  try:
    return Path(os.path.relpath(path, root)).as_posix() if path.is_relative_to(root) else str(path)
  except ValueError:
    return str(path)
