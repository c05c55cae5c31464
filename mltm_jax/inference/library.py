"""Embedding a library of audio files into a resumable index (what launch.embed runs).

Memory is bounded by the shard size, not by file length: files up to ``max_seconds`` are
decoded whole by the worker threads (this shard's and the next one's: at most 2 x shard_size
x max_seconds of audio at the model rate), longer ones are decoded, resampled and embedded
window by window when their turn comes (``inference.streaming``; the same embedding).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mltm_jax.data.audio import AudioError, load_audio
from mltm_jax.inference.chunking import hop_samples
from mltm_jax.inference.streaming import audio_seconds, embed_file_windows
from mltm_jax.search.store import AUDIO_EXTENSIONS, IndexWriter, scan_audio_files

DEFAULT_MAX_SECONDS = 30.0


class _Long:
  """A file longer than max_seconds: embedded window by window when its shard is embedded."""

  def __init__(self, path: Path):
    self.path = path


_LOG = logging.getLogger(__name__)


def index_settings(retriever: Any, audio_dir: str | Path) -> dict:
  """What the stored embeddings depend on (a resumed run must match every value)."""
  cfg = retriever.cfg
  return {
    "workdir": str(Path(retriever.workdir).resolve()),
    "checkpoint": retriever.checkpoint,
    "checkpoint_step": int(retriever.step),
    "audio_dir": str(Path(audio_dir).resolve()),
    "sample_rate": int(cfg.sample_rate),
    "clip_samples": int(cfg.clip_samples),
    "hop_samples": int(hop_samples(cfg)),
    "metric": retriever.metric_kind,
    "stored": "unit audio embedding v times the metric factor W (M = W W^T)",
  }


def embed_library(
  retriever: Any,
  audio_dir: str | Path,
  out: str | Path,
  *,
  shard_size: int = 256,
  extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
  num_workers: int = 4,
  progress: bool = True,
  embed_waves: Callable[[list[np.ndarray]], np.ndarray] | None = None,
  max_seconds: float = DEFAULT_MAX_SECONDS,
) -> dict:
  """Embeds every audio file under audio_dir into the index directory ``out``.

  Files are decoded (``num_workers`` threads; the next shard is decoded while the
  current one is embedded), embedded at any length (chunks pooled), multiplied by the
  metric factor and written shard by shard (``mltm_jax.search.store``). Rerunning with
  the same arguments after an interruption continues with the first missing shard.
  Unreadable files are skipped and logged one line each with their reason. Symlinks are
  followed inside audio_dir only, each real file indexed once (``store.scan_audio_files``).

  Args:
    retriever: a ``mltm_jax.api.Retriever``.
    embed_waves: list of waves -> [n, D] (default ``retriever.embed_waves``).
    max_seconds: files longer than this (by their header) are never decoded whole: they are
      embedded window by window, ``eval_batch_size`` windows at a time.
  Returns:
    {"files", "embedded", "skipped", "reasons": {reason: count}, "resumed_files",
     "new_files" (files added to audio_dir after the index was started: not included),
     "streamed" (files embedded window by window in this call), "links_outside",
     "links_repeated" (symlinks not followed: see ``store.AudioScan``)}.
  """
  audio_dir = Path(audio_dir)
  if not audio_dir.is_dir():
    raise FileNotFoundError(f"--audio_dir={audio_dir}: no such directory")
  if not max_seconds > 0:
    raise ValueError(f"--max_seconds must be > 0, got {max_seconds}")
  embed = embed_waves or retriever.embed_waves
  scan = scan_audio_files(audio_dir, extensions)
  files = scan.files
  writer = IndexWriter(
    out, index_settings(retriever, audio_dir), files, retriever.factor, shard_size
  )
  if not writer.files:
    raise ValueError(f"--audio_dir={audio_dir}: no audio files ({', '.join(extensions)})")
  resumed = writer.files_done()
  pending = writer.pending()
  rate = retriever.sample_rate
  cfg = retriever.cfg
  window, hop, batch = cfg.clip_samples, hop_samples(cfg), cfg.eval_batch_size
  root = audio_dir.resolve()  # the listed paths are relative to it
  streamed = 0

  def decode(row: int):
    path = root / writer.files[row]
    try:
      if audio_seconds(path) > max_seconds:
        return _Long(path)
      return load_audio(path, rate)
    except AudioError as e:
      return e

  pool = futures.ThreadPoolExecutor(max(1, num_workers))
  bar = tqdm(
    total=len(writer.files), initial=resumed, desc="index", unit="file", disable=not progress
  )
  try:
    submit = lambda rows: [pool.submit(decode, r) for r in rows]
    upcoming = submit(pending[0][1]) if pending else []
    for j, (shard, rows) in enumerate(pending):
      current = upcoming
      upcoming = submit(pending[j + 1][1]) if j + 1 < len(pending) else []
      waves, whole_rows, embedded, skipped = [], [], {}, []
      for row, fut in zip(rows, current):
        res = fut.result()
        if isinstance(res, _Long):
          try:
            embedded[row] = embed_file_windows(embed, res.path, rate, window, hop, batch)
            streamed += 1
          except AudioError as e:
            res = e
        if isinstance(res, AudioError):
          skipped.append((row, res.reason))
          _LOG.warning("skipped %s (%s)", writer.files[row], res.reason)
        elif not isinstance(res, _Long):
          whole_rows.append(row)
          waves.append(res)
      if waves:
        embedded.update(zip(whole_rows, np.asarray(embed(waves), np.float32)))
        waves = []
      ok = sorted(embedded)
      emb = np.stack([embedded[r] for r in ok]) if ok else np.zeros((0, retriever.dim), np.float32)
      writer.write_shard(shard, np.asarray(ok, np.int64), retriever.transform(emb), skipped)
      bar.update(len(rows))
  finally:
    bar.close()
    pool.shutdown(wait=False, cancel_futures=True)
  reasons: collections.Counter = collections.Counter()
  for entry in writer.manifest["shards"]:
    with np.load(Path(out) / entry["file"]) as z:
      reasons.update(str(r) for r in z["skipped_reasons"])
  return {
    "files": len(writer.files),
    "embedded": int(writer.manifest["embedded"]),
    "skipped": int(writer.manifest["skipped"]),
    "reasons": dict(sorted(reasons.items())),
    "resumed_files": resumed,
    "new_files": len(writer.new_files),
    "streamed": streamed,
    "links_outside": scan.outside,
    "links_repeated": scan.repeated,
  }
