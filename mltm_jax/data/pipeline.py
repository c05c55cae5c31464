"""Splits as lazy clip stores and the deterministic batch order.

A split holds its captions and metadata in memory and its audio as a clip store
(mltm_jax.data.clips): waveforms are read per batch, never a whole split at once. Training
batches are a pure function of (seed, step): resuming at step s reproduces the exact data
order, crops and caption choices of an uninterrupted run.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from mltm_jax.data.audio import AudioError, load_audio
from mltm_jax.data.clips import ArrayStore, ClipStore, FileStore, MelCache
from mltm_jax.data.clotho import read_clotho_split


@dataclasses.dataclass
class Split:
  """One split: captions in memory, audio behind a clip store.

  waves: N clips (a ClipStore; ``waves[i]`` is float32 [T_i] at the model rate, read on demand;
    a plain list of arrays is wrapped in an ArrayStore).
  captions: Nc caption strings; caption_to_clip: int32 [Nc].
  clip_captions: per clip, int32 indices into ``captions``.
  skipped: (file_name, reason) of the clips left out.
  mels: the clips' log-mels (MelCache, computed on first use) when --precompute_mel.
  """

  name: str
  file_names: list[str]
  waves: ClipStore
  captions: list[str]
  caption_to_clip: np.ndarray
  clip_captions: list[np.ndarray]
  skipped: list[tuple[str, str]]
  mels: MelCache | None = None

  def __post_init__(self):
    if not isinstance(self.waves, ClipStore):
      self.waves = ArrayStore(self.waves)

  @property
  def num_clips(self) -> int:
    return len(self.waves)


def load_split(
  root: str | Path, split: str, sample_rate: int, *, progress: bool = True, num_workers: int = 4
) -> Split:
  """A Clotho-layout split: its captions, and its audio as a FileStore (decoded per read).

  Every file is decoded once here (parallel, progress bar) to find its length at the model
  rate and the files that cannot serve (skipped with their reason); no waveform is kept.
  """
  items, skipped = read_clotho_split(root, split)
  skipped = list(skipped)
  results: list[Any] = [None] * len(items)

  def measure(i: int):
    try:
      results[i] = int(load_audio(items[i].path, sample_rate).shape[0])
    except AudioError as e:
      results[i] = e

  with futures.ThreadPoolExecutor(num_workers) as pool:
    list(
      tqdm(
        pool.map(measure, range(len(items))),
        total=len(items),
        disable=not progress,
        desc=f"scan {split}",
        unit="clip",
        leave=False,
      )
    )
  file_names, paths, lengths, captions, cap2clip, clip_caps = [], [], [], [], [], []
  for item, res in zip(items, results):
    if isinstance(res, AudioError):
      skipped.append((item.file_name, res.reason))
      continue
    idx = len(paths)
    file_names.append(item.file_name)
    paths.append(item.path)
    lengths.append(res)
    start = len(captions)
    captions.extend(item.captions)
    cap2clip.extend([idx] * len(item.captions))
    clip_caps.append(np.arange(start, len(captions), dtype=np.int32))
  for name, reason in skipped:
    logging.warning("%s/%s: skipped %s (%s)", root, split, name, reason)
  if not paths:
    raise ValueError(f"{root}/{split}: no usable clips ({len(skipped)} skipped)")
  return Split(
    split,
    file_names,
    FileStore(paths, lengths, sample_rate),
    captions,
    np.asarray(cap2clip, np.int32),
    clip_caps,
    skipped,
  )


class LazyRows:
  """A float32 [n, *row_shape] array whose rows are read on demand.

  Row k is ``read(index[k])`` (all zeros where index[k] < 0: padding). Slicing the leading axis
  gives another LazyRows without reading; ``np.asarray`` (or any other indexing) reads the rows
  it needs. Evaluation batches are these, so a process of a multi-process run reads only the
  rows its devices hold (mltm_jax.train.step.from_host_copy).

  Args:
    read: clip indices [m] -> float32 [m, *row_shape].
  """

  def __init__(self, read: Callable[[np.ndarray], np.ndarray], index: np.ndarray, row_shape):
    self.read = read
    self.index = np.asarray(index, np.int64)
    self.row_shape = tuple(row_shape)
    self.dtype = np.dtype(np.float32)

  @property
  def shape(self) -> tuple[int, ...]:
    return (self.index.shape[0],) + self.row_shape

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return self.index.shape[0]

  def padded(self, n: int) -> "LazyRows":
    """The same rows followed by zero rows up to n."""
    pad = np.full(max(0, n - len(self)), -1, np.int64)
    return LazyRows(self.read, np.concatenate([self.index, pad]), self.row_shape)

  def __getitem__(self, key):
    first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
    if not isinstance(first, slice):  # an index or a mask: read everything, then index
      return np.asarray(self)[key]
    rows = LazyRows(self.read, self.index[first], self.row_shape)  # reads nothing yet
    return np.asarray(rows)[(slice(None), *rest)] if rest else rows

  def __array__(self, dtype=None, copy=None):
    out = np.zeros(self.shape, np.float32)
    real = self.index >= 0
    if real.any():
      out[real] = self.read(self.index[real])
    return out if dtype is None else out.astype(dtype)


def eval_audio(split: Split, clip_samples: int, clip_frames: int) -> LazyRows:
  """The split's evaluation inputs, read on demand: each clip from its start, cut or zero-padded
  to the clip length: log-mels [N, clip_frames, n_mels] when the split has a MelCache, else
  waveforms [N, clip_samples]."""
  index = np.arange(split.num_clips)
  if split.mels is not None:
    mels = split.mels
    return LazyRows(lambda c: mels.crops(c, clip_frames), index, (clip_frames, mels.n_mels))
  store = split.waves
  return LazyRows(lambda c: store.crops(c, clip_samples), index, (clip_samples,))


def eval_waves(split: Split, clip_samples: int) -> np.ndarray:
  """[N, clip_samples] float32: every clip cropped from its start / zero-padded (in memory:
  for small splits; evaluation itself reads through ``eval_audio``)."""
  return split.waves.crops(range(split.num_clips), clip_samples)


def attach_mels(
  split: Split,
  mel_fn: Callable[[np.ndarray], np.ndarray],
  clip_samples: int,
  hop_length: int,
  n_mels: int,
  cache_dir: str | Path | None = None,
) -> None:
  """Gives the split a MelCache: each clip's log-mel computed on first use, then read from an
  unlinked file in ``cache_dir`` (see MelCache for the frames and their exactness)."""
  split.mels = MelCache(split.waves, mel_fn, clip_samples, hop_length, n_mels, cache_dir)


def _crop_starts(lengths: list[int], size: int, seed: int, step: int) -> list[int]:
  """Random crop starts of a GLOBAL batch (seeded by step; 0 where a clip is not longer)."""
  rng = np.random.default_rng([seed, step, 1])
  return [int(rng.integers(0, n - size + 1)) if n > size else 0 for n in lengths]


def crop_mel_batch(
  mels: MelCache,
  clips: np.ndarray,
  clip_frames: int,
  seed: int,
  step: int,
  rows: slice = slice(None),
) -> np.ndarray:
  """[R, clip_frames, n_mels]: random frame crops (seeded by step) of the clips' log-mels.

  clips: the GLOBAL batch [B]; rows: the rows to return (a host's share), whose crops are
  those of the whole batch, whatever the number of hosts. Only the returned rows are read."""
  starts = _crop_starts([int(mels.lengths[c]) for c in clips], clip_frames, seed, step)
  sel = list(range(len(clips))[rows])
  return mels.crops([clips[i] for i in sel], clip_frames, [starts[i] for i in sel])


class PairSampler:
  """The global batch at a step: B distinct clips, each with one of its captions.

  An epoch visits every clip once in a seeded random order; each clip comes with
  a seeded random caption (so one clip never appears twice in a batch: the OT
  ground truth is the identity). Pure function of (seed, step); the current epoch's order
  is computed once (vectorised) and kept.
  """

  def __init__(self, clip_captions: list[np.ndarray], batch_size: int, seed: int):
    if batch_size > len(clip_captions):
      raise ValueError(f"--batch_size={batch_size} exceeds the {len(clip_captions)} training clips")
    counts = np.asarray([len(c) for c in clip_captions], np.int64)
    if np.any(counts == 0):
      raise ValueError("every training clip needs at least one caption")
    self._counts = counts
    self._flat = np.concatenate([np.asarray(c, np.int64) for c in clip_captions])
    self._first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    self.num_clips = len(clip_captions)
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = self.num_clips // batch_size
    self._cached: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None
    self._lock = threading.Lock()

  def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    with self._lock:
      if self._cached is not None and self._cached[0] == epoch:
        return self._cached[1]
      rng = np.random.default_rng([self.seed, epoch, 0])
      order = rng.permutation(self.num_clips)
      choice = rng.integers(0, 1 << 30, size=len(order))
      caps = self._flat[self._first[order] + choice % self._counts[order]]
      self._cached = (epoch, (order, caps))
      return order, caps

  def global_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(clip indices [B], caption indices [B]) of training step ``step``."""
    epoch, pos = divmod(step, self.steps_per_epoch)
    order, caps = self._epoch(epoch)
    sl = slice(pos * self.batch_size, (pos + 1) * self.batch_size)
    return order[sl], caps[sl]


def crop_batch(
  waves: ClipStore | Sequence[np.ndarray],
  clips: np.ndarray,
  clip_samples: int,
  seed: int,
  step: int,
  rows: slice = slice(None),
) -> np.ndarray:
  """[R, clip_samples] float32: random crops (seeded by step) / zero-padding.

  clips: the GLOBAL batch [B]; rows: the rows to return (as crop_mel_batch); only their
  windows are read from the store."""
  store = waves if isinstance(waves, ClipStore) else ArrayStore(waves)
  starts = _crop_starts([int(store.lengths[c]) for c in clips], clip_samples, seed, step)
  sel = list(range(len(clips))[rows])
  return store.crops([clips[i] for i in sel], clip_samples, [starts[i] for i in sel])


def host_slice(global_size: int, process_index: int, process_count: int) -> slice:
  """Rows of the global batch this host loads."""
  if global_size % process_count:
    raise ValueError(f"batch size {global_size} is not divisible by {process_count} hosts")
  per = global_size // process_count
  return slice(process_index * per, (process_index + 1) * per)
