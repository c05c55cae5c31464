"""The words that state a rendered attribute (loudness, register, tempo, duration, count).

Every table is an :class:`Alt`, or a dict of them keyed by the attribute's value: ``seen``
phrasings for the development, validation and evaluation splits, ``held`` ones (possibly
none) reserved for the held-out split (:mod:`mltm_jax.synthcaps.heldout`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from mltm_jax.synthcaps.source_spec import H, L, M
from mltm_jax.synthcaps.words import choice


class Alt(NamedTuple):
  """Alternative phrasings of one meaning: ``seen`` by every split, ``held`` only by the
  held-out split (which uses ``held`` alone wherever it is not empty)."""

  seen: tuple[str, ...]
  held: tuple[str, ...] = ()


def pick(rng, options: Alt | Sequence[str], held_out: bool) -> str:
  """One phrasing of ``options`` for a caption of the held-out split or of the others."""
  if isinstance(options, Alt):
    options = options.held if held_out and options.held else options.seen
  return choice(rng, options)


LOUD_ADJ = Alt(("loud", "forceful", "powerful"), ("strong", "intense"))  # notes, hits, sounds
QUIET_ADJ = Alt(("quiet", "soft", "faint"), ("gentle", "muted"))
LOUD_ADJ_SUBJ = Alt(("loud",))  # for the sound source itself ("a loud piano")
QUIET_ADJ_SUBJ = Alt(("quiet", "soft", "faint"))
LOUD_ADV = Alt(("loudly", "forcefully", "powerfully"), ("at high volume", "intensely"))
QUIET_ADV = Alt(("quietly", "softly", "gently", "faintly"), ("at low volume", "in a hushed way"))
REG_ADJ = {
  L: Alt(("low", "low-pitched"), ("deep",)),
  M: Alt(("mid-range", "medium-pitched"), ("mid-pitched",)),
  H: Alt(("high",), ("high-pitched",)),
}
REG_ADV = {
  L: Alt(("in a low register", "at a low pitch"), ("in the low range",)),
  M: Alt(("in a middle register", "at a medium pitch"), ("in the mid range",)),
  H: Alt(("in a high register", "at a high pitch"), ("in the upper range",)),
}
TEMPO_ADJ = {
  "slow": Alt(("slow", "slow-paced"), ("leisurely",)),
  "fast": Alt(("fast", "quick", "rapid"), ("lively",)),
}
TEMPO_ADV = {
  "slow": Alt(("slowly", "at a slow pace"), ("at a slow tempo",)),
  "fast": Alt(("quickly", "rapidly", "at a fast pace"), ("at a fast tempo",)),
}
DUR_ADJ = {"short": Alt(("short",), ("brief",)), "long": Alt(("long", "lengthy"), ("extended",))}
DUR_ADJ_CONT = {
  "short": Alt(("short",), ("brief",)),
  "long": Alt(("long", "sustained"), ("prolonged",)),
}
DUR_ADV = {
  "short": Alt(("briefly", "for a moment"), ("for a short time",)),
  "long": Alt(("for a long time", "for a while"), ("for several seconds",)),
}
COUNT_ADV = {
  "once": Alt(("once", "a single time"), ("one time",)),
  "twice": Alt(("twice",), ("two times",)),
  "three times": Alt(("three times",), ("thrice",)),
  "repeatedly": Alt(
    ("repeatedly", "over and over", "again and again"), ("many times", "several times in a row")
  ),
}
COUNT_DET = {
  "once": Alt(("a single", "one")),
  "twice": Alt(("two",)),
  "three times": Alt(("three",)),
  "repeatedly": Alt(("repeated", "a series of", "many"), ("a rapid series of", "a string of")),
}


def extend(options: Alt, extra: tuple[str, ...]) -> Alt:
  """``options`` with ``extra`` phrasings seen by every split."""
  return Alt(options.seen + extra, options.held + extra if options.held else ())


def all_alts(table) -> list[Alt]:
  """Every Alt in a (nested) table."""
  if isinstance(table, Alt):
    return [table]
  return [alt for value in table.values() for alt in all_alts(value)]
