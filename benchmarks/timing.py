"""The shared timer and row type of the benchmarks.

Every benchmark times a zero-argument callable: warm-up calls first (compilation,
caches; not timed), then ``runs`` timed calls, each waited for with
:func:`block` (JAX dispatches asynchronously; torch and numpy on CPU are
synchronous). A call may stop early, after at least ``min_runs`` calls, once the
timed calls have used ``budget_s`` seconds (for references that take minutes per
call); the number of timed calls is reported with every row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds per call over the timed calls."""

  median_s: float
  min_s: float
  max_s: float
  runs: int

  def __str__(self) -> str:
    return f"{fmt_seconds(self.median_s)} [{fmt_seconds(self.min_s)}-{fmt_seconds(self.max_s)}]"


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the table: our timing against the reference's, same inputs."""

  name: str
  params: dict[str, Any]
  ours: Timing
  ref: Timing
  agree: bool
  # Extra JSON fields, and table cells shown instead of the timings (e.g. memory).
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  cells: tuple[str, str] | None = None
  # What one call of ours needs at least (benchmarks.roofline.Work); None: no limit column.
  work: Any = None

  @property
  def ratio(self) -> float:
    """Reference seconds / our seconds (> 1: ours is faster)."""
    return self.ref.median_s / self.ours.median_s

  def to_json(self, limit: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row's JSON; ``limit``: its limit-column fields (benchmarks.roofline.limit_fields),
    or None (``limit_fraction`` null: the row declares no work)."""
    return {
      "name": self.name,
      "params": self.params,
      "ours_s": self.ours.median_s,
      "ref_s": self.ref.median_s,
      "ratio": self.ratio,
      "agree": bool(self.agree),
      **self.extra,
      **(limit or {"limit_fraction": None}),
    }

  def ours_cell(self) -> str:
    return self.cells[0] if self.cells else str(self.ours)

  def ref_cell(self) -> str:
    return self.cells[1] if self.cells else str(self.ref)


def block(out: Any) -> Any:
  """Waits until every array in the pytree ``out`` is computed; returns ``out``."""
  for leaf in jax.tree_util.tree_leaves(out):
    wait = getattr(leaf, "block_until_ready", None)
    if callable(wait):
      wait()
  return out


def time_call(
  fn: Callable[[], Any],
  *,
  runs: int = 10,
  warmup: int = 1,
  budget_s: float | None = None,
  min_runs: int = 3,
) -> tuple[Timing, Any]:
  """Times ``fn()``; returns its :class:`Timing` and the output of the last call.

  Args:
    fn: the work; its result is blocked on before the clock stops.
    runs: timed calls (at most).
    warmup: untimed calls first (at least 1 when the output is needed and runs = 0).
    budget_s: stop after ``min_runs`` timed calls once the timed calls took this
      long in total (None: always ``runs`` calls).
    min_runs: lower bound on the timed calls when ``budget_s`` stops early.
  """
  if runs < 1:
    raise ValueError(f"benchmarks/timing.py: runs must be >= 1, got {runs}")
  out = None
  for _ in range(warmup):
    out = block(fn())
  times: list[float] = []
  for _ in range(runs):
    start = time.perf_counter()
    out = block(fn())
    times.append(time.perf_counter() - start)
    if budget_s is not None and len(times) >= min_runs and sum(times) >= budget_s:
      break
  timing = Timing(
    median_s=statistics.median(times), min_s=min(times), max_s=max(times), runs=len(times)
  )
  return timing, out


def time_interleaved(
  ours: Callable[[], Any],
  ref: Callable[[], Any],
  *,
  runs: int = 10,
  warmup: int = 1,
  budget_s: float | None = None,
  min_runs: int = 3,
  settle: list[float] | None = None,
) -> tuple[Timing, Any, Timing, Any]:
  """Times ``ours()`` and ``ref()`` alternately: (ours timing, ours out, ref timing, ref out).

  Call i of each runs back to back, so both see the same machine load (the
  workplace is shared); the reference stops after ``min_runs`` calls once its
  calls took ``budget_s`` seconds (ours keeps ``runs`` calls).

  ``settle``: a list, to time each call of ours right after an untimed call of ours (whose
  seconds are appended to the list). For a call of ours much shorter than the reference's:
  this machine makes memory that sat unused for seconds slow to touch again (WORKSPACE.md,
  Benchmarks), so the first call after a long reference measures that, not our code.
  """
  if runs < 1:
    raise ValueError(f"benchmarks/timing.py: runs must be >= 1, got {runs}")
  out_o = out_r = None
  for _ in range(warmup):
    out_r = block(ref())
    out_o = block(ours())
  t_o: list[float] = []
  t_r: list[float] = []
  for _ in range(runs):
    if not (budget_s is not None and len(t_r) >= min_runs and sum(t_r) >= budget_s):
      start = time.perf_counter()
      out_r = block(ref())
      t_r.append(time.perf_counter() - start)
    if settle is not None:
      start = time.perf_counter()
      block(ours())
      settle.append(time.perf_counter() - start)
    start = time.perf_counter()
    out_o = block(ours())
    t_o.append(time.perf_counter() - start)
  timing = lambda ts: Timing(
    median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts), runs=len(ts)
  )
  return timing(t_o), out_o, timing(t_r), out_r


@functools.cache
def _blas_controller():
  import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, the one jax's eigh calls)
  from threadpoolctl import ThreadpoolController

  return ThreadpoolController()


def blas_threads(threads: int | None = None):
  """Context manager: the BLAS thread limit of a training run, or ``threads``.

  None: what ``launch.runtime.init_runtime`` sets ($MLTM_BLAS_THREADS, default 1);
  0: no limit. The benchmark process itself does not call ``init_runtime``, so its
  references run with the libraries' defaults (all cores).
  """
  from launch.runtime import BLAS_THREADS_ENV, DEFAULT_BLAS_THREADS

  if threads is None:
    threads = int(os.environ.get(BLAS_THREADS_ENV, DEFAULT_BLAS_THREADS))
  if threads <= 0:
    return contextlib.nullcontext()
  return _blas_controller().limit(limits=threads, user_api="blas")


def fmt_seconds(s: float) -> str:
  """Human-readable duration: 1.23 s, 45.6 ms, 789 us."""
  if s >= 1.0:
    return f"{s:.3g} s"
  if s >= 1e-3:
    return f"{s * 1e3:.3g} ms"
  return f"{s * 1e6:.3g} us"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the runner asks of every benchmark.

  quick: the acceptance shapes only. tiny: toy shapes (tests; seconds).
  runs: timed calls per measurement. ref_budget_s: a reference whose timed calls
  exceed this many seconds stops after 3 calls (the row reports the count).
  """

  quick: bool = False
  tiny: bool = False
  runs: int = 10
  ref_budget_s: float | None = None

  def time_ours(self, fn: Callable[[], Any]) -> tuple[Timing, Any]:
    return time_call(fn, runs=self.runs)

  def time_ref(self, fn: Callable[[], Any]) -> tuple[Timing, Any]:
    return time_call(fn, runs=self.runs, budget_s=self.ref_budget_s)

  def time_pair(
    self, ours: Callable[[], Any], ref: Callable[[], Any], settle: list[float] | None = None
  ) -> tuple[Timing, Any, Timing, Any]:
    """Ours and the reference alternately (:func:`time_interleaved`)."""
    return time_interleaved(ours, ref, runs=self.runs, budget_s=self.ref_budget_s, settle=settle)
