"""What every layout reader of launch.prepare produces: entries, skips and the listing that
collects them (the text/file helpers they share live in mltm_jax.data.metadata and are
re-exported here)."""

from __future__ import annotations

import dataclasses
from typing import Any

from mltm_jax.data.metadata import (
  AUDIO_EXTENSIONS,
  NOTE_EMPTY_CAPTION,
  NOTE_NOT_UTF8,
  clean_captions,
  csv_cell,
  csv_columns,
  decode_metadata,
  fix_field,
  read_csv,
  read_jsonl,
  relative,
  resolve_name,
)

__all__ = [
  "AUDIO_EXTENSIONS",
  "NOTE_EMPTY_CAPTION",
  "NOTE_NOT_UTF8",
  "Entry",
  "Listing",
  "Skip",
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


@dataclasses.dataclass(frozen=True)
class Entry:
  """One clip to prepare.

  split: prepared split name (train / val / test / all). id: unique within the split.
  file: the audio path as the metadata names it (relative to the source). path: the resolved
  file. captions: cleaned, non-empty (may be empty only for label datasets such as ESC-50).
  extra: layout fields copied into the item record. notes: caption-level notes.
  """

  split: str
  id: str
  file: str
  path: str
  captions: tuple[str, ...]
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Skip:
  """A clip left out, with its reason (a short fixed phrase) and an optional detail."""

  split: str
  id: str
  file: str
  reason: str
  detail: str = ""

  def record(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Listing:
  """A layout's clips: entries to decode, skips found while reading the metadata, and
  warnings about the metadata itself (one line each). The readers fill one in place."""

  entries: list[Entry] = dataclasses.field(default_factory=list)
  skipped: list[Skip] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)

  def split_missing(self, file_name: str, split: str) -> None:
    """Warns that ``split`` is left out: its metadata file ``file_name`` was not found."""
    self.warnings.append(f"{file_name} not found: split {split} left out")

  def note_utf8(self, file_name: str, utf8: bool) -> None:
    """Unless ``utf8``, warns that fields of ``file_name`` were decoded as cp1252."""
    if not utf8:
      self.warnings.append(f"{file_name}: not valid UTF-8; such fields decoded as cp1252")
