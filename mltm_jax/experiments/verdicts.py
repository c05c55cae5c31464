"""The claims report's verdict rules: signs of differences, per-seed agreement, chance R@10,
and how many differences the seeds resolve (Welch's t-test)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["chance_r10", "resolved"]

SIGNIFICANCE = 0.05  # two-sided


def _verdict(diffs: list[float]) -> str:
  if not diffs:
    return "not measured"
  if all(d > 0 for d in diffs):
    return "holds"
  if all(d <= 0 for d in diffs):
    return "does not hold"
  return "mixed"


def _agreeing(diffs: list[float]) -> str:
  return f"{sum(d > 0 for d in diffs)}/{len(diffs)}" if diffs else "—"


def resolved(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> str:
  """ "k/n": how many of the n (a, b) samples (per-seed R@1 of two methods) differ in a's favour
  at two-sided p < SIGNIFICANCE by Welch's t-test (unequal variances); a pair with fewer than
  two values on a side, or no spread at all, is never resolved. "—" for no pairs."""
  if not pairs:
    return "—"
  count = 0
  for a, b in pairs:
    if min(len(a), len(b)) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
      continue
    with warnings.catch_warnings():  # one side without spread: scipy warns, the test stands
      warnings.simplefilter("ignore", RuntimeWarning)
      t, p = stats.ttest_ind(a, b, equal_var=False)
    count += bool(t > 0 and p < SIGNIFICANCE)
  return f"{count}/{len(pairs)}"


def chance_r10(n_clips: int, captions_per_clip: int = 5) -> dict[str, float]:
  """Expected R@10 (%) of a random ranking of a split of n_clips clips with
  captions_per_clip captions each: T2A 10 / N; A2T 1 - P(none of the clip's captions is among
  the first 10 of the N * k)."""
  n_caps = n_clips * captions_per_clip
  miss = 1.0
  for j in range(min(10, n_caps)):
    miss *= max(0.0, 1.0 - captions_per_clip / (n_caps - j))
  return {"t2a": 100.0 * min(1.0, 10.0 / n_clips), "a2t": 100.0 * (1.0 - miss)}
