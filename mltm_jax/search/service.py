"""Text search over a library with bounded work per request (what launch.serve runs).

* :class:`Searcher`: caption(s) -> the k nearest files; k is clamped to ``max_k`` and every
  shape a request can reach (text batch sizes <= ``max_batch`` at every token width, search
  programs for <= ``max_batch`` queries and k <= ``max_k``) is compiled by ``warm_up``, so no
  client input compiles anything afterwards (counted by a :class:`~mltm_jax.compiles.
  CompileCounter`).
* :class:`SearchQueue`: one worker thread runs the searches; at most ``maxsize`` wait
  (``submit`` raises :class:`QueueFull` beyond), and the worker takes up to ``max_batch``
  waiting queries at once (one embedding batch, one search call).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from mltm_jax.compiles import CompileCounter

DEFAULT_MAX_K = 100
DEFAULT_MAX_BATCH = 8


@dataclasses.dataclass(frozen=True)
class Hit:
  """One result: row ``id`` of the library, its path relative to the audio dir, c_M."""

  id: int
  path: str
  distance: float

  def to_json(self) -> dict:
    return {"id": self.id, "path": self.path, "distance": self.distance}


class Searcher:
  """Captions -> nearest library files, with a bounded set of compiled shapes.

  Args:
    library: a ``store.Library`` (rel_paths, factor W [D, r]).
    retriever: a ``mltm_jax.api.Retriever`` (embed_text, warm_up_text).
    index: the library's search index (``search(queries [Q, r], k)``, ``warm_up``).
    max_k: results per query at most (larger k are clamped).
    max_batch: queries per call at most.
  """

  def __init__(
    self,
    library: Any,
    retriever: Any,
    index: Any,
    max_k: int = DEFAULT_MAX_K,
    max_batch: int = DEFAULT_MAX_BATCH,
  ):
    if max_k < 1 or max_batch < 1:
      raise ValueError(f"max_k and max_batch must be >= 1, got {max_k}, {max_batch}")
    self.library = library
    self.retriever = retriever
    self.index = index
    self.max_k = min(max_k, library.size)
    self.max_batch = max_batch
    self.compiles = CompileCounter()
    self.compiles_at_warm_up: int | None = None

  def clamp_k(self, k: int) -> int:
    return max(1, min(int(k), self.max_k))

  def warm_up(self) -> int:
    """Compiles every shape a call of <= max_batch queries with k <= max_k can use; returns
    the shapes run. Compilations after it: ``compiles_after_warm_up``."""
    shapes = self.retriever.warm_up_text(self.max_batch)
    shapes += self.index.warm_up(self.max_batch, self.max_k)
    self.search(["warm-up"] * self.max_batch, [self.max_k] * self.max_batch)
    self.search(["warm-up"], [1])
    self.compiles_at_warm_up = self.compiles.count
    return shapes

  @property
  def compiles_after_warm_up(self) -> int | None:
    if self.compiles_at_warm_up is None:
      return None
    return self.compiles.count - self.compiles_at_warm_up

  def search(self, texts: list[str], ks: list[int]) -> list[list[Hit]]:
    """The clamp_k(ks[i]) nearest files of each caption, nearest first (len(texts) <=
    max_batch)."""
    if len(texts) != len(ks) or not 1 <= len(texts) <= self.max_batch:
      raise ValueError(f"search takes 1..{self.max_batch} texts with one k each")
    ks = [self.clamp_k(k) for k in ks]
    emb = self.retriever.embed_text(list(texts)) @ self.library.factor
    dist, ids = self.index.search(np.asarray(emb, np.float32), max(ks))
    rel = self.library.rel_paths
    return [
      [Hit(int(i), rel[i], float(d)) for d, i in zip(d_row[:k], i_row[:k]) if i >= 0]
      for d_row, i_row, k in zip(dist, ids, ks)
    ]

  def close(self) -> None:
    self.compiles.close()


class QueueFull(Exception):
  """More searches are waiting than the queue holds."""


class SearchQueue:
  """Runs ``search_fn(texts, ks)`` on one worker thread for queries submitted from any thread.

  Args:
    search_fn: list of texts, list of k -> one result per text (e.g. ``Searcher.search``).
    maxsize: queries waiting at most; ``submit`` raises QueueFull beyond.
    max_batch: queries the worker takes at once.
  """

  def __init__(self, search_fn: Callable, maxsize: int, max_batch: int = DEFAULT_MAX_BATCH):
    if maxsize < 1 or max_batch < 1:
      raise ValueError(f"maxsize and max_batch must be >= 1, got {maxsize}, {max_batch}")
    self.search_fn = search_fn
    self.maxsize = maxsize
    self.max_batch = max_batch
    self._waiting: collections.deque = collections.deque()
    self._cond = threading.Condition()
    self._closed = False
    self.served = 0
    self.rejected = 0
    self.failed = 0
    self._thread = threading.Thread(target=self._run, name="search-worker", daemon=True)
    self._thread.start()

  @property
  def pending(self) -> int:
    """Searches waiting (not cancelled)."""
    with self._cond:
      return sum(not w[2].cancelled() for w in self._waiting)

  def submit(self, text: str, k: int) -> Future:
    """A future of ``search_fn([text], [k])[0]``; raises QueueFull when maxsize wait."""
    fut: Future = Future()
    with self._cond:
      if self._closed:
        raise RuntimeError("the search queue is closed")
      if len(self._waiting) >= self.maxsize:  # requests that gave up free their places
        self._waiting = collections.deque(w for w in self._waiting if not w[2].cancelled())
      if len(self._waiting) >= self.maxsize:
        self.rejected += 1
        raise QueueFull(f"{self.maxsize} searches are waiting")
      self._waiting.append((text, k, fut))
      self._cond.notify()
    return fut

  def _take(self) -> list | None:
    with self._cond:
      while not self._waiting and not self._closed:
        self._cond.wait()
      if self._closed:
        return None
      batch = []
      while self._waiting and len(batch) < self.max_batch:
        item = self._waiting.popleft()
        if item[2].set_running_or_notify_cancel():  # False: cancelled while waiting
          batch.append(item)
      return batch

  def _run(self) -> None:
    while True:
      batch = self._take()
      if batch is None:
        return
      if not batch:
        continue
      try:
        results = self.search_fn([t for t, _, _ in batch], [k for _, k, _ in batch])
      except Exception as e:  # noqa: BLE001 -- handed to the waiting requests
        with self._cond:
          self.failed += len(batch)
        for _, _, fut in batch:
          fut.set_exception(e)
        continue
      with self._cond:
        self.served += len(batch)
      for (_, _, fut), res in zip(batch, results):
        fut.set_result(res)

  def close(self, timeout: float = 30.0) -> None:
    """Stops the worker (waiting queries are cancelled) and joins it."""
    with self._cond:
      self._closed = True
      waiting = list(self._waiting)
      self._waiting.clear()
      self._cond.notify_all()
    for _, _, fut in waiting:
      fut.cancel()
    self._thread.join(timeout)
