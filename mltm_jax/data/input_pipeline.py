"""The training input pipeline: step -> this process's rows of the global batch.

A batch is a pure function of (seed, step) (``TrainBatches.local_batch``): the sampler picks the
GLOBAL batch's clips and captions, the crop starts are drawn for the global batch, and this
process reads only the windows of its own rows (``host_slice``) from the clip store or the
log-mel cache. Nothing else of the split is read, so host memory is bounded by the batches in
flight and each host of a pod touches only its share of the data.

Execution is grain's: ``grain.MapDataset.range(start, stop).map(...)`` turned into an iterator
with a thread pool (``ReadOptions``): batches are made ``num_threads`` at a time, in order, up
to ``prefetch`` ahead of the train step. The step index is the iterator's whole state, so resume
needs no iterator checkpoint (the train state's step is it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax

from mltm_jax.data.pipeline import PairSampler, Split, crop_batch, crop_mel_batch, host_slice

__all__ = ["TrainBatches"]


@dataclasses.dataclass
class TrainBatches:
  """The batches of a training run.

  Attributes:
    split: the training split (waves, or log-mels when ``split.mels`` is set).
    text: caption inputs, a pytree of arrays with leading axis Nc (features [Nc, H] or tokens).
    batch_size: the GLOBAL batch size B.
    seed: the run's seed.
    clip_samples, clip_frames: crop sizes of waveforms and of log-mels.
    process_index, process_count: this process and the number of processes.
  """

  split: Split
  text: Any
  batch_size: int
  seed: int
  clip_samples: int
  clip_frames: int
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    self.sampler = PairSampler(self.split.clip_captions, self.batch_size, self.seed)
    self.rows = host_slice(self.batch_size, self.process_index, self.process_count)

  @property
  def steps_per_epoch(self) -> int:
    return self.sampler.steps_per_epoch

  def local_batch(self, step: int) -> dict:
    """{"audio": [B/P, ...] float32, "text": [B/P, ...]}: this process's rows of step ``step``
    (crops drawn for the whole global batch: the same whatever the number of processes)."""
    clips, caps = self.sampler.global_batch(step)
    text = jax.tree.map(lambda x: x[caps[self.rows]], self.text)
    if self.split.mels is not None:
      audio = crop_mel_batch(self.split.mels, clips, self.clip_frames, self.seed, step, self.rows)
    else:
      audio = crop_batch(self.split.waves, clips, self.clip_samples, self.seed, step, self.rows)
    return {"audio": audio, "text": text}

  def iterate(
    self,
    start: int,
    stop: int,
    put: Callable[[dict], Any] = lambda b: b,
    num_threads: int = 2,
    prefetch: int = 2,
  ) -> "BatchIterator":
    """Batches of steps [start, stop), each passed through ``put`` (e.g. to the devices), made
    by ``num_threads`` threads up to ``prefetch`` steps ahead. Close it (or use ``with``)."""
    import grain

    ds = grain.MapDataset.range(start, stop).map(lambda s: put(self.local_batch(s)))
    options = grain.ReadOptions(num_threads=max(1, num_threads), prefetch_buffer_size=prefetch)
    return BatchIterator(iter(ds.to_iter_dataset(options)))


class BatchIterator:
  """A grain iterator that can be closed: stops the prefetch threads (pending batches are
  dropped, a batch being made finishes and is discarded)."""

  def __init__(self, it: Iterator[Any]):
    self._it = it

  def __iter__(self):
    return self

  def __next__(self):
    return next(self._it)

  def close(self) -> None:
    close = getattr(self._it, "close", None)
    if close is not None:
      close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
