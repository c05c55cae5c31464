"""Checking a checkpoint's tensors against what a model expects, by name and shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

__all__ = ["listed", "shape_mismatch"]


def listed(items: Sequence[str], limit: int = 8) -> str:
  """[a, b, ...] with at most ``limit`` items named, then how many more."""
  more = f", ... {len(items) - limit} more" if len(items) > limit else ""
  return "[" + ", ".join(items[:limit]) + more + "]"


def shape_mismatch(
  got: Mapping[str, tuple],
  want: Mapping[str, tuple],
  *,
  noun: str = "tensors",
  show: Callable[[str], str] = str,
  fmt: Callable[[list[str]], str] = listed,
) -> list[str]:
  """The problems of ``got`` (name -> shape) against ``want``: "missing ...", "unexpected ...",
  "mis-shaped ..." (each naming its tensors; none when names and shapes all match).

  Args:
    show: the name to print for a tensor of ``got`` (e.g. its key in the file).
    fmt: how a list of names is printed.
  """
  word = f" {noun}" if noun else ""
  missing = sorted(set(want) - set(got))
  unexpected = sorted(show(n) for n in set(got) - set(want))
  bad_shape = [
    f"{show(n)} {tuple(got[n])} expected {tuple(want[n])}"
    for n in sorted(set(want) & set(got))
    if tuple(got[n]) != tuple(want[n])
  ]
  problems = []
  if missing:
    problems.append(f"missing{word} {fmt(missing)}")
  if unexpected:
    problems.append(f"unexpected{word} {fmt(unexpected)}")
  if bad_shape:
    problems.append(f"mis-shaped{word} {fmt(bad_shape)}")
  return problems
