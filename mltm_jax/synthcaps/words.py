"""English word helpers shared by the source table and the caption grammar.

Every helper that picks among options draws from the caller's ``rng`` in a fixed order, so a
clip's captions depend only on its generator (see :func:`mltm_jax.synthcaps.events.clip_rng`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_VOWEL_EXCEPTIONS = ("one", "uni", "use", "eu", "ukulele")


def indefinite(phrase: str) -> str:
  """``phrase`` with "a" or "an"."""
  w = phrase.lower()
  an = w[:1] in "aeiou" and not w.startswith(_VOWEL_EXCEPTIONS)
  return ("an " if an else "a ") + phrase


def choice(rng: np.random.Generator, options: Sequence[Any]) -> Any:
  """One of ``options``, drawn with a single ``rng.integers`` call."""
  return options[int(rng.integers(len(options)))]


def with_article(
  rng, text: str, number: str, adjs: Sequence[str] = (), definite: bool = False
) -> str:
  """Noun phrase ``text`` with adjectives ``adjs`` (joined by :func:`join_adjs`) and the
  article its number asks for: number in {"sg", "pl", "mass", "def"}; ``definite`` forces
  "the"."""
  words = join_adjs(rng, adjs)
  body = f"{words} {text}" if words else text
  if number == "def" or definite:
    return "the " + body
  if number == "sg":
    return indefinite(body)
  return body


def join_adjs(rng, adjs: Sequence[str]) -> str:
  """Adjectives before one noun: "a", "a, b" or "a and b" (drawn), "a, b and c"."""
  adjs = list(adjs)
  if len(adjs) <= 1:
    return "".join(adjs)
  if len(adjs) == 2:
    return choice(rng, (f"{adjs[0]}, {adjs[1]}", f"{adjs[0]} and {adjs[1]}"))
  return ", ".join(adjs[:-1]) + " and " + adjs[-1]


def join_advs(rng, advs: Sequence[str], first: str | None = None) -> str:
  """Adverbials in random order; single-word adverbs are coordinated with "and"."""
  advs = list(advs)
  order = rng.permutation(len(advs)) if advs else []
  advs = [advs[i] for i in order]
  single = [a for a in advs if " " not in a]
  multi = [a for a in advs if " " in a]
  parts = []
  if single:
    parts.append(
      single[0]
      if len(single) == 1
      else " and ".join(single)
      if len(single) == 2
      else ", ".join(single[:-1]) + " and " + single[-1]
    )
  if first:  # a count: "hard three times", "repeatedly and loudly"
    if first == "repeatedly" and parts:
      parts = [f"repeatedly and {parts[0]}"]
    else:
      parts.append(first)
  parts.extend(multi)
  return " ".join(parts)
