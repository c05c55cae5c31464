"""Random access to the clips of a split, without holding the split in memory.

A clip store answers three questions: how many clips, how long each one is at the model rate
(``lengths``, known without decoding anything), and the samples of a window of one clip
(``read``). Training crops, evaluation batches and chunked embedding all read through it, so
host memory holds at most the batches in flight, whatever the size of the dataset.

Stores:
  ArrayStore   waveforms already in memory (the Python API, tests, zero-shot prompts).
  ShardStore   a prepared split (``launch.prepare``): one positioned read (``os.pread``) per
               crop from the int16 / float32 shards; only the window read is converted to
               float32. Plain reads rather than memory maps: the pages of a memory map that a
               process has touched count in its resident set, so a map of a 16 GB split grows
               the process to 16 GB over an epoch; ``pread`` leaves them to the page cache.
  FileStore    a release folder of audio files (Clotho layout, SynthCaps): each read decodes
               the clip's file (resampled to the model rate) and cuts the window.

Every store can record which clips it read (``record_reads``): the multi-process test checks
with it that a process touches only the rows of the batches it feeds.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = [
  "ArrayStore",
  "ClipStore",
  "FileStore",
  "MelCache",
  "ShardStore",
  "aligned_empty",
  "resampled_length",
]

ALIGNMENT = 64


def aligned_empty(shape: Sequence[int], dtype=np.float32) -> np.ndarray:
  """An uninitialised array whose data starts on a 64-byte boundary. JAX's CPU backend takes
  such host arrays without a copy (``device_put`` aliases them), so a batch made in one costs
  nothing to hand to a CPU device; an unaligned one is copied."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  raw = np.empty(nbytes + ALIGNMENT, np.uint8)
  start = (-raw.ctypes.data) % ALIGNMENT
  return raw[start : start + nbytes].view(dtype).reshape(shape)


def resampled_length(n: int, orig_sr: int, target_sr: int) -> int:
  """Length of an n-sample signal resampled by ``librosa.resample`` (ceil(n * ratio))."""
  if orig_sr == target_sr:
    return int(n)
  return int(np.ceil(n * float(target_sr) / float(orig_sr)))


class ClipStore:
  """Base class. Subclasses set ``lengths`` (int64 [N]) and implement ``_read_full`` and/or
  ``_read_window``."""

  lengths: np.ndarray

  def __init__(self) -> None:
    self._reads: list[int] | None = None
    self._lock = threading.Lock()

  # -- what subclasses provide -------------------------------------------------------------
  def _read_window(self, i: int, start: int, size: int) -> np.ndarray:
    """float32 [<= size]: samples [start, start + size) of clip i (default: from the full
    clip)."""
    return self._read_full(i)[start : start + size]

  def _read_full(self, i: int) -> np.ndarray:
    return self._read_window(i, 0, int(self.lengths[i]))

  def _read_into(self, i: int, start: int, size: int, out: np.ndarray) -> None:
    """Writes samples [start, start + size) of clip i into out[:size] (size already clipped to
    the clip's end)."""
    out[:size] = self._read_window(i, start, size)

  # -- public API ------------------------------------------------------------------------------
  def __len__(self) -> int:
    return int(self.lengths.shape[0])

  def _checked_window(self, i: int, start: int, size: int | None) -> tuple[int, int, int]:
    """(clip, start, size) of a read of clip ``i``: IndexError outside [0, len), the read
    recorded (see :meth:`record_reads`), start clipped to [0, length], size to what is left
    from there (default: all of it)."""
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"clip {i} out of range [0, {len(self)})")
    if self._reads is not None:
      with self._lock:
        self._reads.append(i)
    n = int(self.lengths[i])
    start = max(0, min(int(start), n))
    size = n - start if size is None else max(0, min(int(size), n - start))
    return i, start, size

  def read(self, i: int, start: int = 0, size: int | None = None) -> np.ndarray:
    """float32 [min(size, length - start)]: a window of clip ``i`` (the whole clip by default)."""
    return np.asarray(self._read_window(*self._checked_window(i, start, size)), np.float32)

  def __getitem__(self, i: int) -> np.ndarray:
    return self.read(i)

  def __iter__(self) -> Iterator[np.ndarray]:
    return (self.read(i) for i in range(len(self)))

  def crops(
    self, clips: Sequence[int], size: int, starts: Sequence[int] | None = None
  ) -> np.ndarray:
    """[len(clips), size] float32 (64-byte aligned): windows starting at ``starts`` (default
    0), zero-padded."""
    out = aligned_empty((len(clips), size), np.float32)
    for r, c in enumerate(clips):
      c, start, got = self._checked_window(c, 0 if starts is None else starts[r], size)
      self._read_into(c, start, got, out[r])
      out[r, got:] = 0.0
    return out

  def record_reads(self) -> list[int]:
    """Starts recording the clip index of every read; returns the (live) list."""
    self._reads = []
    return self._reads


class ArrayStore(ClipStore):
  """Clips held in memory: a list of float32 [T_i] arrays."""

  def __init__(self, waves: Sequence[np.ndarray]):
    super().__init__()
    self.waves = list(waves)
    self.lengths = np.asarray([len(w) for w in self.waves], np.int64)

  def _read_window(self, i: int, start: int, size: int) -> np.ndarray:
    return self.waves[i][start : start + size]


def _npy_layout(path: Path) -> tuple[int, np.dtype, int]:
  """(data offset in bytes, dtype, number of elements) of a 1-D .npy file."""
  with open(path, "rb") as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
      shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    offset = f.tell()
  if len(shape) != 1:
    raise ValueError(f"{path}: expected a 1-D shard, got shape {shape}")
  return offset, np.dtype(dtype), int(shape[0])


class ShardStore(ClipStore):
  """The clips of a prepared split, read window by window from its shards.

  Args:
    shard_files: the split's shard .npy paths, by shard index.
    shard, offset, num_samples: int64 [N] per clip: its shard, first sample, sample count.
    scale: float32 [N] per clip (int16 shards: sample = int16 * scale).
    source_rate, sample_rate: the prepared rate and the model rate; where they differ, a read
      decodes the whole clip and resamples it (librosa), then cuts the window.
  """

  def __init__(
    self,
    shard_files: Sequence[Path],
    shard: np.ndarray,
    offset: np.ndarray,
    num_samples: np.ndarray,
    scale: np.ndarray,
    source_rate: int,
    sample_rate: int,
  ):
    super().__init__()
    self.shard_files = [Path(p) for p in shard_files]
    self.shard = np.asarray(shard, np.int64)
    self.offset = np.asarray(offset, np.int64)
    self.num_samples = np.asarray(num_samples, np.int64)
    self.scale = np.asarray(scale, np.float32)
    self.source_rate, self.sample_rate = int(source_rate), int(sample_rate)
    self.lengths = np.asarray(
      [resampled_length(n, source_rate, sample_rate) for n in self.num_samples], np.int64
    )
    self._layouts: dict[int, tuple[int, np.dtype, int]] = {}
    self._fds: dict[int, int] = {}
    self._local = threading.local()

  def _fd(self, k: int) -> tuple[int, int, np.dtype, int]:
    with self._lock:
      if k not in self._fds:
        path = self.shard_files[k]
        self._layouts[k] = _npy_layout(path)
        self._fds[k] = os.open(path, os.O_RDONLY)
      return (self._fds[k], *self._layouts[k])

  def _read_source_into(self, i: int, start: int, size: int, out: np.ndarray) -> None:
    """Samples [start, start + size) of clip i at the prepared rate into out[:size]: straight
    from the file (float32 shards) or through one int16 scratch buffer per thread (one
    conversion pass, scale included)."""
    if size == 0:
      return
    k = int(self.shard[i])
    fd, data_offset, dtype, total = self._fd(k)
    first = int(self.offset[i]) + start
    if first + size > total:
      raise ValueError(f"{self.shard_files[k]}: shorter than its records (corrupt?)")
    scale = self.scale[i]
    direct = dtype == np.float32 and scale == 1.0
    if direct:
      dst = out[:size]
    else:
      scratch = getattr(self._local, "buf", None)
      if scratch is None or scratch.dtype != dtype or scratch.shape[0] < size:
        scratch = self._local.buf = np.empty(size, dtype)
      dst = scratch[:size]
    got = os.preadv(fd, [memoryview(dst).cast("B")], data_offset + first * dtype.itemsize)
    if got != size * dtype.itemsize:
      raise ValueError(f"{self.shard_files[k]}: short read (truncated file?)")
    if not direct:
      np.multiply(dst, scale, out=out[:size], casting="unsafe")

  def _read_source(self, i: int, start: int, size: int) -> np.ndarray:
    """float32 [size]: samples [start, start + size) of clip i at the prepared rate."""
    out = np.empty(size, np.float32)
    self._read_source_into(i, start, size, out)
    return out

  def _read_window(self, i: int, start: int, size: int) -> np.ndarray:
    if self.source_rate == self.sample_rate:
      return self._read_source(i, start, size)
    return self._read_full(i)[start : start + size]

  def _read_into(self, i: int, start: int, size: int, out: np.ndarray) -> None:
    if self.source_rate == self.sample_rate:  # no intermediate array
      return self._read_source_into(i, start, size, out)
    return super()._read_into(i, start, size, out)

  def _read_full(self, i: int) -> np.ndarray:
    wave = self._read_source(i, 0, int(self.num_samples[i]))
    if self.source_rate == self.sample_rate:
      return wave
    import librosa

    out = librosa.resample(wave, orig_sr=self.source_rate, target_sr=self.sample_rate)
    return np.ascontiguousarray(out[: int(self.lengths[i])], np.float32)

  def close(self) -> None:
    with self._lock:
      for fd in self._fds.values():
        os.close(fd)
      self._fds.clear()

  def __del__(self):
    try:
      self.close()
    except Exception:  # interpreter shutdown
      pass


class FileStore(ClipStore):
  """Clips as audio files (decoded on every read; resampled to the model rate).

  Args:
    paths: N audio files. lengths: int64 [N], their sample counts at the model rate (from a
      decoding pass that also found the unreadable files).
  """

  def __init__(self, paths: Sequence[Path], lengths: Sequence[int], sample_rate: int):
    super().__init__()
    self.paths = [Path(p) for p in paths]
    self.lengths = np.asarray(lengths, np.int64)
    self.sample_rate = int(sample_rate)

  def _read_full(self, i: int) -> np.ndarray:
    from mltm_jax.data.audio import load_audio

    wave = load_audio(self.paths[i], self.sample_rate)
    if wave.shape[0] != self.lengths[i]:
      raise ValueError(f"{self.paths[i]}: changed on disk since it was listed")
    return wave


class MelCache:
  """Log-mels of a store's clips, computed on first use and kept in an unlinked file.

  Clip i's log-mel is float32 [F_i, n_mels] with F_i = 1 + max(T_i, clip_samples) // hop: the
  clip zero-padded to at least the clip length, as a training crop of the waveform would be.
  Clips are computed in fixed batches of ``batch_size`` rows whose width is the clip's length
  rounded up to whole clip lengths (few compiled shapes; a clip's frames do not depend on the
  batch it was computed in). The file lives in ``cache_dir`` only while the cache is open (it
  is unlinked at creation), so nothing is left behind by a killed run; memory holds one batch.

  Args:
    store: the clips. mel_fn: float32 [batch_size, W] -> [batch_size, 1 + W // hop, n_mels].
  """

  def __init__(
    self,
    store: ClipStore,
    mel_fn,
    clip_samples: int,
    hop_length: int,
    n_mels: int,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
  ):
    import tempfile

    self.store = store
    self.mel_fn = mel_fn
    self.clip_samples, self.hop, self.n_mels = int(clip_samples), int(hop_length), int(n_mels)
    self.batch_size = int(batch_size)
    padded = np.maximum(store.lengths, self.clip_samples)
    self.lengths = 1 + padded // self.hop  # frames per clip
    self._widths = -(-padded // self.clip_samples) * self.clip_samples
    self._row_start = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
    self._row_bytes = 4 * self.n_mels
    if cache_dir is not None:
      Path(cache_dir).mkdir(parents=True, exist_ok=True)
    self._file = tempfile.TemporaryFile(dir=cache_dir, prefix="mels-")
    self._file.truncate(int(self._row_start[-1]) * self._row_bytes)  # sparse until written
    self._fd = self._file.fileno()
    self._done = np.zeros(len(store), bool)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return int(self.lengths.shape[0])

  def ensure(self, clips: Sequence[int]) -> None:
    """Computes the log-mels of the clips not computed yet."""
    with self._lock:
      todo = sorted({int(c) for c in clips if not self._done[int(c)]})
      by_width: dict[int, list[int]] = {}
      for c in todo:
        by_width.setdefault(int(self._widths[c]), []).append(c)
      for width, members in sorted(by_width.items()):
        for s in range(0, len(members), self.batch_size):
          idx = members[s : s + self.batch_size]
          batch = np.zeros((self.batch_size, width), np.float32)
          for r, c in enumerate(idx):
            w = self.store.read(c)
            batch[r, : w.shape[0]] = w
          out = np.asarray(self.mel_fn(batch), np.float32)
          for r, c in enumerate(idx):
            rows = np.ascontiguousarray(out[r, : self.lengths[c]])
            os.pwrite(self._fd, rows.tobytes(), int(self._row_start[c]) * self._row_bytes)
            self._done[c] = True

  def read(self, i: int, start: int = 0, size: int | None = None) -> np.ndarray:
    """float32 [<= size, n_mels]: frames [start, start + size) of clip i."""
    i = int(i)
    self.ensure([i])
    n = int(self.lengths[i])
    start = max(0, min(int(start), n))
    size = n - start if size is None else max(0, min(int(size), n - start))
    out = np.empty((size, self.n_mels), np.float32)
    self._read_rows_into(i, start, out)
    return out

  def _read_rows_into(self, c: int, start: int, out: np.ndarray) -> None:
    """Frames [start, start + len(out)) of computed clip c into ``out`` (one pread)."""
    if len(out):
      at = int(self._row_start[c] + start) * self._row_bytes
      if os.preadv(self._fd, [memoryview(out).cast("B")], at) != out.nbytes:
        raise OSError("log-mel cache: short read")

  def crops(
    self, clips: Sequence[int], size: int, starts: Sequence[int] | None = None
  ) -> np.ndarray:
    """[len(clips), size, n_mels] float32 frame windows (default from frame 0), zero-padded."""
    self.ensure(clips)
    out = aligned_empty((len(clips), size, self.n_mels), np.float32)
    for r, c in enumerate(clips):
      c = int(c)
      n = int(self.lengths[c])
      start = max(0, min(int(0 if starts is None else starts[r]), n))
      got = min(size, n - start)
      self._read_rows_into(c, start, out[r, :got])
      out[r, got:] = 0.0
    return out

  def close(self) -> None:
    self._file.close()
