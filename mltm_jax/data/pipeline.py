"""Splits in memory and the deterministic batch order.

A split is decoded once (parallel, progress bar; unreadable files are counted
and skipped with their reason). Training batches are a pure function of
(seed, step): resuming at step s reproduces the exact data order, crops and
caption choices of an uninterrupted run.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from mltm_jax.data.audio import AudioError, fix_length, load_audio
from mltm_jax.data.clotho import read_clotho_split


@dataclasses.dataclass
class Split:
  """One split in memory.

  waves: N clips, each float32 [T_i] at the model rate.
  captions: Nc caption strings; caption_to_clip: int32 [Nc].
  clip_captions: per clip, int32 indices into ``captions``.
  skipped: (file_name, reason) of the clips left out.
  """

  name: str
  file_names: list[str]
  waves: list[np.ndarray]
  captions: list[str]
  caption_to_clip: np.ndarray
  clip_captions: list[np.ndarray]
  skipped: list[tuple[str, str]]
  mels: list[np.ndarray] | None = None  # per clip float32 [F_i, n_mels] when precomputed

  @property
  def num_clips(self) -> int:
    return len(self.waves)


def load_split(
  root: str | Path, split: str, sample_rate: int, *, progress: bool = True, num_workers: int = 4
) -> Split:
  """Reads a Clotho-layout split and decodes its audio (resampled to sample_rate)."""
  items, skipped = read_clotho_split(root, split)
  skipped = list(skipped)
  results: list[Any] = [None] * len(items)

  def decode(i: int):
    try:
      results[i] = load_audio(items[i].path, sample_rate)
    except AudioError as e:
      results[i] = e

  with futures.ThreadPoolExecutor(num_workers) as pool:
    list(
      tqdm(
        pool.map(decode, range(len(items))),
        total=len(items),
        disable=not progress,
        desc=f"decode {split}",
        unit="clip",
        leave=False,
      )
    )
  file_names, waves, captions, cap2clip, clip_caps = [], [], [], [], []
  for item, res in zip(items, results):
    if isinstance(res, AudioError):
      skipped.append((item.file_name, res.reason))
      continue
    idx = len(waves)
    file_names.append(item.file_name)
    waves.append(res)
    start = len(captions)
    captions.extend(item.captions)
    cap2clip.extend([idx] * len(item.captions))
    clip_caps.append(np.arange(start, len(captions), dtype=np.int32))
  for name, reason in skipped:
    logging.warning("%s/%s: skipped %s (%s)", root, split, name, reason)
  if not waves:
    raise ValueError(f"{root}/{split}: no usable clips ({len(skipped)} skipped)")
  return Split(
    split, file_names, waves, captions, np.asarray(cap2clip, np.int32), clip_caps, skipped
  )


def eval_waves(split: Split, clip_samples: int) -> np.ndarray:
  """[N, clip_samples] float32: every clip cropped from its start / zero-padded."""
  return np.stack([fix_length(w, clip_samples, None) for w in split.waves]).astype(np.float32)


def attach_mels(
  split: Split,
  mel_fn: Callable[[np.ndarray], np.ndarray],
  clip_samples: int,
  hop_length: int,
  batch_size: int = 32,
  progress: bool = True,
) -> None:
  """Computes every clip's log-mel once: ``split.mels[i]`` float32 [F_i, n_mels].

  Each clip is zero-padded to at least clip_samples (as ``fix_length`` does), so
  F_i >= 1 + clip_samples // hop_length and, for clips no longer than the clip
  length, the frames equal those of the waveform path exactly. Clips are batched
  by padded length (rounded up to whole clip lengths: few compiled shapes);
  ``mel_fn``: float32 [B, T] -> [B, 1 + T // hop_length, n_mels].
  """
  lengths = [max(len(w), clip_samples) for w in split.waves]
  buckets: dict[int, list[int]] = {}
  for i, n in enumerate(lengths):
    buckets.setdefault(-(-n // clip_samples) * clip_samples, []).append(i)
  mels: list[np.ndarray] = [np.empty(0)] * len(split.waves)
  with tqdm(
    total=len(lengths), desc=f"log-mel {split.name}", unit="clip", leave=False, disable=not progress
  ) as bar:
    for width, members in sorted(buckets.items()):
      for start in range(0, len(members), batch_size):
        idx = members[start : start + batch_size]
        batch = np.zeros((batch_size, width), np.float32)
        for r, i in enumerate(idx):
          batch[r, : len(split.waves[i])] = split.waves[i]
        out = np.asarray(mel_fn(batch))
        for r, i in enumerate(idx):
          mels[i] = np.ascontiguousarray(out[r, : 1 + lengths[i] // hop_length])
        bar.update(len(idx))
  split.mels = mels


def eval_mels(split: Split, clip_frames: int) -> np.ndarray:
  """[N, clip_frames, n_mels]: the precomputed log-mels from their first frame."""
  return np.stack([m[:clip_frames] for m in split.mels]).astype(np.float32)


def _crop_starts(lengths: list[int], size: int, seed: int, step: int) -> list[int]:
  """Random crop starts of a GLOBAL batch (seeded by step; 0 where a clip is not longer)."""
  rng = np.random.default_rng([seed, step, 1])
  return [int(rng.integers(0, n - size + 1)) if n > size else 0 for n in lengths]


def crop_mel_batch(
  mels: list[np.ndarray],
  clips: np.ndarray,
  clip_frames: int,
  seed: int,
  step: int,
  rows: slice = slice(None),
) -> np.ndarray:
  """[R, clip_frames, n_mels]: random frame crops (seeded by step) of precomputed log-mels.

  clips: the GLOBAL batch [B]; rows: the rows to return (a host's share), whose crops are
  those of the whole batch, whatever the number of hosts."""
  starts = _crop_starts([len(mels[c]) for c in clips], clip_frames, seed, step)
  sel = range(len(clips))[rows]
  out = np.empty((len(sel), clip_frames, mels[0].shape[1]), np.float32)
  for r, i in enumerate(sel):
    out[r] = mels[clips[i]][starts[i] : starts[i] + clip_frames]
  return out


class PairSampler:
  """The global batch at a step: B distinct clips, each with one of its captions.

  An epoch visits every clip once in a seeded random order; each clip comes with
  a seeded random caption (so one clip never appears twice in a batch: the OT
  ground truth is the identity). Pure function of (seed, step).
  """

  def __init__(self, clip_captions: list[np.ndarray], batch_size: int, seed: int):
    if batch_size > len(clip_captions):
      raise ValueError(f"--batch_size={batch_size} exceeds the {len(clip_captions)} training clips")
    self.clip_captions = clip_captions
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = len(clip_captions) // batch_size

  def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([self.seed, epoch, 0])
    order = rng.permutation(len(self.clip_captions))
    choice = rng.integers(0, 1 << 30, size=len(order))
    caps = np.array(
      [c[k % len(c)] for c, k in zip((self.clip_captions[i] for i in order), choice)], np.int64
    )
    return order, caps

  def global_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(clip indices [B], caption indices [B]) of training step ``step``."""
    epoch, pos = divmod(step, self.steps_per_epoch)
    order, caps = self._epoch(epoch)
    sl = slice(pos * self.batch_size, (pos + 1) * self.batch_size)
    return order[sl], caps[sl]


def crop_batch(
  waves: list[np.ndarray],
  clips: np.ndarray,
  clip_samples: int,
  seed: int,
  step: int,
  rows: slice = slice(None),
) -> np.ndarray:
  """[R, clip_samples] float32: random crops (seeded by step) / zero-padding.

  clips: the GLOBAL batch [B]; rows: the rows to return (as crop_mel_batch)."""
  starts = _crop_starts([len(waves[c]) for c in clips], clip_samples, seed, step)
  sel = range(len(clips))[rows]
  out = np.zeros((len(sel), clip_samples), np.float32)
  for r, i in enumerate(sel):
    w = waves[clips[i]][starts[i] : starts[i] + clip_samples]
    out[r, : len(w)] = w
  return out


def host_slice(global_size: int, process_index: int, process_count: int) -> slice:
  """Rows of the global batch this host loads."""
  if global_size % process_count:
    raise ValueError(f"batch size {global_size} is not divisible by {process_count} hosts")
  per = global_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def prefetch(make: Callable[[int], Any], steps: range, depth: int = 2) -> Iterator[Any]:
  """Yields make(s) for s in steps, computed ``depth`` ahead in a thread."""
  q: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()

  def worker():
    try:
      for s in steps:
        if stop.is_set():
          return
        q.put((s, make(s)))
    except BaseException as e:  # surfaced in the consumer
      q.put((None, e))
    q.put((None, None))

  t = threading.Thread(target=worker, daemon=True)
  t.start()
  try:
    while True:
      s, item = q.get()
      if s is None:
        if isinstance(item, BaseException):
          raise item
        return
      yield item
  finally:
    stop.set()
    while not q.empty():
      q.get_nowait()
