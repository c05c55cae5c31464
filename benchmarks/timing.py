"""The shared timer and row type of the benchmarks.

Every benchmark times a zero-argument callable: warm-up calls first (compilation,
caches; not timed), then ``runs`` timed calls, each waited for with
:func:`block` (JAX dispatches asynchronously; torch and numpy on CPU are
synchronous). A call may stop early, after at least ``min_runs`` calls, once the
timed calls have used ``budget_s`` seconds (for references that take minutes per
call); the number of timed calls is reported with every row.
"""

from __future__ import annotations

import dataclasses
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

  @property
  def ratio(self) -> float:
    """Reference seconds / our seconds (> 1: ours is faster)."""
    return self.ref.median_s / self.ours.median_s

  def to_json(self) -> dict[str, Any]:
    return {
      "name": self.name,
      "params": self.params,
      "ours_s": self.ours.median_s,
      "ref_s": self.ref.median_s,
      "ratio": self.ratio,
      "agree": bool(self.agree),
    }


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
