"""Embed every audio file under a directory into a searchable index.

  python -m launch.embed --workdir=runs/demo --audio_dir=DIR --out=INDEX
      [--checkpoint=best|latest] [--chunk_hop_seconds=S] [--shard_size=256] [--max_seconds=30]

Files of any length are cut into windows of the run's clip length (every
--chunk_hop_seconds, default the run's, 0 = half a clip) and their embeddings pooled; files
longer than --max_seconds are decoded and embedded window by window, never whole (memory
is bounded by the shard size, not by file length). Symlinks are followed only inside
--audio_dir and every real file is indexed once.
Stored: the embeddings times the metric factor W (M = W W^T, so c_M is the Euclidean
distance between stored rows), the file paths and W (see mltm_jax/search/store.py).
Interrupted (Ctrl-C, SIGTERM)? Rerun the same command: it continues where it stopped.
Unreadable files are skipped, one line each, and counted by reason at the end.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

from absl import app, flags

from launch.flags import fail
from launch.runtime import init_runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch.train.")
_AUDIO_DIR = flags.DEFINE_string(
  "audio_dir", None, "Directory of audio files (searched recursively)."
)
_OUT = flags.DEFINE_string("out", None, "Index directory to write (or to continue).")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint.")
_HOP = flags.DEFINE_float(
  "chunk_hop_seconds", None, "Hop between windows of long files (default: the run's)."
)
_SHARD = flags.DEFINE_integer("shard_size", 256, "Files per shard (the unit of resumption).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Windows per batch (default: the run's).")
_WORKERS = flags.DEFINE_integer("num_workers", 4, "Decoding threads.")
_EXT = flags.DEFINE_list(
  "extensions", "wav,flac,ogg,mp3,aiff,aif,au", "Audio file extensions to index."
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_MAX_SECONDS = flags.DEFINE_float(
  "max_seconds",
  30.0,
  "Files longer than this are embedded window by window as they are decoded (never whole).",
)


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  for name, flag in (("workdir", _WORKDIR), ("audio_dir", _AUDIO_DIR), ("out", _OUT)):
    if not flag.value:
      fail(f"--{name} is required")
  workdir, audio_dir, out = Path(_WORKDIR.value), Path(_AUDIO_DIR.value), Path(_OUT.value)
  if not (workdir / "config.json").is_file():
    fail(f"--workdir={workdir}: no config.json (not a run directory written by launch.train)")
  if not audio_dir.is_dir():
    fail(f"--audio_dir={audio_dir}: no such directory")
  if _SHARD.value < 1 or _WORKERS.value < 1 or (_BATCH.value is not None and _BATCH.value < 1):
    fail("--shard_size, --num_workers and --batch_size must be >= 1")
  if _HOP.value is not None and _HOP.value < 0:
    fail(f"--chunk_hop_seconds must be >= 0, got {_HOP.value}")
  if not _MAX_SECONDS.value > 0:
    fail(f"--max_seconds must be > 0, got {_MAX_SECONDS.value:g}")
  init_runtime()
  from mltm_jax.api import Retriever
  from mltm_jax.inference.library import embed_library

  try:
    retriever = Retriever.from_run(workdir, _CHECKPOINT.value, _HOP.value, _BATCH.value)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  signal.signal(signal.SIGTERM, _interrupt)
  start = time.time()
  try:
    summary = embed_library(
      retriever,
      audio_dir,
      out,
      shard_size=_SHARD.value,
      extensions=tuple(_EXT.value),
      num_workers=_WORKERS.value,
      progress=_PROGRESS.value,
      max_seconds=_MAX_SECONDS.value,
    )
  except KeyboardInterrupt:
    print(f"\ninterrupted; rerun the same command to continue {out}", file=sys.stderr)
    sys.exit(130)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items())
  print(
    f"{out}: {summary['embedded']} of {summary['files']} files embedded"
    f" (step {retriever.step}, {time.time() - start:.1f} s"
    + (f", {summary['resumed_files']} done before" if summary["resumed_files"] else "")
    + f"); skipped {summary['skipped']}"
    + (f" ({reasons})" if reasons else "")
  )
  links = summary["links_outside"], summary["links_repeated"]
  if any(links):
    print(
      f"symlinks not followed: {links[0]} pointing outside {audio_dir},"
      f" {links[1]} to files or folders already indexed"
    )
  streamed = summary["streamed"]
  if streamed:
    plural = "s" if streamed != 1 else ""
    print(f"{streamed} file{plural} longer than {_MAX_SECONDS.value:g} s embedded window by window")
  if summary["new_files"]:
    print(
      f"note: {summary['new_files']} files were added to {audio_dir} after this index was"
      " started and are not in it (use a new --out to include them)"
    )


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
