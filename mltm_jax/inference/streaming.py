"""Long audio files, window by window: decoded and resampled block by block, never whole.

:func:`iter_windows` yields exactly the windows ``chunking.split_windows`` cuts from
``data.audio.load_audio(path, rate)`` (same downmix; soxr's streaming resampler gives the
samples of librosa's one-shot soxr_hq resampling), holding one block of the file and one
window at a time. :func:`embed_file_windows` embeds them batch by batch and pools them as
``chunking.pool_chunks`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from mltm_jax.data.audio import AudioError
from mltm_jax.inference.chunking import pool_chunks, window_starts

BLOCK_FRAMES = 1 << 16  # file frames decoded at once


def audio_seconds(path: str | Path) -> float:
  """Duration of an audio file from its header (nothing decoded); raises AudioError
  ("missing", "corrupt")."""
  path = Path(path)
  if not path.is_file():
    raise AudioError(path, "missing")
  try:
    info = sf.info(str(path))
  except (sf.SoundFileError, RuntimeError) as e:
    raise AudioError(path, "corrupt", str(e).splitlines()[0] if str(e) else "") from e
  return float(info.frames) / float(info.samplerate) if info.samplerate else 0.0


def iter_windows(
  path: str | Path, sample_rate: int, window: int, hop: int, block_frames: int = BLOCK_FRAMES
) -> Iterator[np.ndarray]:
  """float32 [window] windows of a file at ``sample_rate`` (mono), in order: those of
  ``split_windows(load_audio(path, sample_rate), window, hop)``, the last zero-padded.

  Raises AudioError ("missing", "corrupt", "empty", "nonfinite"), possibly after some windows
  were yielded (a bad block late in the file).
  """
  import soxr

  path = Path(path)
  if not path.is_file():
    raise AudioError(path, "missing")
  try:
    f = sf.SoundFile(str(path))
  except (sf.SoundFileError, RuntimeError) as e:
    raise AudioError(path, "corrupt", str(e).splitlines()[0] if str(e) else "") from e
  with f:
    file_sr = int(f.samplerate)
    resampler = (
      soxr.ResampleStream(file_sr, sample_rate, 1, dtype="float32", quality="HQ")
      if file_sr != sample_rate
      else None
    )
    buf = np.zeros(0, np.float32)
    buf_start = next_start = total = 0  # samples at the model rate
    last = False
    while not last:
      try:
        data = f.read(frames=block_frames, dtype="float32", always_2d=True)
      except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(path, "corrupt", str(e).splitlines()[0] if str(e) else "") from e
      last = data.shape[0] < block_frames
      if data.shape[1] == 0:
        raise AudioError(path, "empty")
      mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
      if not np.all(np.isfinite(mono)):
        raise AudioError(path, "nonfinite")
      if resampler is not None:
        mono = resampler.resample_chunk(mono, last=last)
      buf = np.concatenate([buf, np.asarray(mono, np.float32)])
      total += len(mono)
      while next_start + window <= buf_start + len(buf):  # every complete window
        off = next_start - buf_start
        yield buf[off : off + window].copy()
        next_start += hop
      drop = min(next_start - buf_start, len(buf))
      buf, buf_start = buf[drop:], buf_start + drop
  if total == 0:
    raise AudioError(path, "empty")
  for s in window_starts(total, window, hop):  # the last, zero-padded window(s)
    if s >= next_start:
      out = np.zeros(window, np.float32)
      piece = buf[s - buf_start : s - buf_start + window]
      out[: len(piece)] = piece
      yield out


def embed_file_windows(
  embed_waves: Callable[[list[np.ndarray]], np.ndarray],
  path: str | Path,
  sample_rate: int,
  window: int,
  hop: int,
  batch_size: int,
) -> np.ndarray:
  """[D] pooled embedding of a file of any length, ``batch_size`` windows at a time.

  ``embed_waves``: list of waves -> [n, D] (a wave of exactly one window gives that window's
  embedding, so the windows are passed as waves). Raises AudioError as :func:`iter_windows`.
  """
  chunks, batch = [], []
  for w in iter_windows(path, sample_rate, window, hop):
    batch.append(w)
    if len(batch) == batch_size:
      chunks.append(np.asarray(embed_waves(batch), np.float32))
      batch = []
  if batch:
    chunks.append(np.asarray(embed_waves(batch), np.float32))
  return pool_chunks(np.concatenate(chunks))
