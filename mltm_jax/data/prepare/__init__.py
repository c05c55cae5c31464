"""launch.prepare's library: layout readers (official releases -> entries) and the writer of
the prepared format (mltm_jax/data/prepared.py)."""

from __future__ import annotations

from pathlib import Path

from mltm_jax.data.prepare.common import Entry, Listing, Skip
from mltm_jax.data.prepare.own import OwnOptions
from mltm_jax.data.prepare.writer import Settings, format_summary, write_prepared

__all__ = [
  "LAYOUTS",
  "Entry",
  "Listing",
  "OwnOptions",
  "Settings",
  "Skip",
  "format_summary",
  "read_layout",
  "write_prepared",
]

LAYOUTS = ("clotho", "audiocaps", "esc50", "csv", "synthcaps")


def read_layout(dataset: str, src: str | Path, **kw) -> Listing:
  """Entries of ``src`` in the layout ``dataset`` (one of LAYOUTS).

  Keyword options: csv -> ``own=OwnOptions``; synthcaps -> ``sizes``, ``seed``,
  ``sample_rate``, ``progress``, ``workers`` (rendering when ``src`` holds none).
  """
  if dataset == "clotho":
    from mltm_jax.data.prepare.clotho import read_clotho

    return read_clotho(src)
  if dataset == "audiocaps":
    from mltm_jax.data.prepare.audiocaps import read_audiocaps

    return read_audiocaps(src)
  if dataset == "esc50":
    from mltm_jax.data.prepare.esc50 import read_esc50

    return read_esc50(src)
  if dataset == "csv":
    from mltm_jax.data.prepare.own import read_own

    return read_own(src, kw.get("own", OwnOptions()))
  if dataset == "synthcaps":
    from mltm_jax.data.prepare.synth import read_synthcaps

    return read_synthcaps(
      src, kw["sizes"], kw["seed"], kw["sample_rate"], kw.get("progress", True), kw.get("workers")
    )
  raise ValueError(f"unknown dataset layout {dataset!r}; expected one of {', '.join(LAYOUTS)}")
