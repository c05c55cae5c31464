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

from mltm_jax.data.clotho import OPTIONAL_SPLITS, SPLIT_ROLES, audio_dirs, read_captions_csv
from mltm_jax.data.prepare.common import Entry, Listing, Skip, relative

__all__ = ["read_clotho"]


def read_clotho(src: str | Path) -> Listing:
  """Entries of every Clotho split found under ``src``.

  Raises:
    FileNotFoundError: no captions CSV at all. ValueError: a CSV without file_name or
      caption columns.
  """
  src = Path(src).absolute()
  out = Listing()
  found = 0
  for name, split in SPLIT_ROLES.items():
    csv_path = src / f"clotho_captions_{name}.csv"
    if not csv_path.is_file():
      if name not in OPTIONAL_SPLITS:
        out.split_missing(csv_path.name, name)
      continue
    found += 1
    rows, utf8 = read_captions_csv(csv_path, audio_dirs(src, name))
    out.note_utf8(csv_path.name, utf8)
    for r in rows:
      where = f"{name}/{r.file_name}" if r.file_name else ""
      if r.skip is not None:
        out.skipped.append(Skip(split, r.file_name, where, r.skip))
        continue
      entry = Entry(split, r.file_name, relative(r.path, src), str(r.path), r.captions, {}, r.notes)
      out.entries.append(entry)
  if not found:
    raise FileNotFoundError(f"{src}: no clotho_captions_{{development,validation,evaluation}}.csv")
  return out
