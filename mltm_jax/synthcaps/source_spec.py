"""The Source record: one sound source of SynthCaps, the MIDI that renders it and the words
that describe it. The table of all sources is :mod:`mltm_jax.synthcaps.sources`; the event
planner (:mod:`.events`) reads its kind, registers and timing fields, the caption grammar
(:mod:`.captions`) its words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Register names and their absolute MIDI pitch windows (gaps between them keep labels apart).
L, M, H = "low", "middle", "high"
REGISTER_WINDOWS = {L: (40, 52), M: (55, 67), H: (72, 86)}

Noun = tuple[str, str]  # (text, number) with number in {"sg", "pl", "mass"}
Verb = tuple[str, str]  # (3rd person singular, plural)


@dataclass(frozen=True)
class Source:
  """One sound source and the words that describe it.

  kind: "melodic" (notes: register, tempo, loudness, duration), "hits" (count, loudness,
    register when ``registers`` is set) or "continuous" (one sustained sound: loudness,
    duration).
  registers: melodic -> allowed register names (pitch windows from REGISTER_WINDOWS);
    hits/continuous -> {register: key}; empty -> fixed ``pitch`` (intrinsic register).
  nouns / verbs: subject noun phrases and intransitive verbs ("a violin plays").
  agents: clauses with a person as subject; ``{a}``/``{the}`` take the noun with an
    indefinite/definite article.
  hit_nouns: (singular, plural) names of one hit ("snare hit", "snare hits").
  sound_nouns: noun phrases naming the sound itself ("applause", "ocean waves").
  participles: post-modifiers for noun phrases ("a violin played quickly").
  program / drum: General-MIDI program (0-indexed); drum -> the channel-10 kit, whose key
    comes from ``registers`` or ``pitch``.
  counts: the hit counts the planner may draw (hits only).
  note_len, ioi_count, ioi_rep: seconds: a hit's length (at most 0.7 of the gap), the gap
    between hits for once/twice/three times, and for "repeatedly".
  tail: seconds rendered after the last note off (the decay).
  heads / head_participles: melodic head nouns ("melody", "notes") and their participles.
  """

  name: str
  kind: str
  program: int
  drum: bool
  nouns: tuple[Noun, ...]
  verbs: tuple[Verb, ...]
  agents: tuple[str, ...] = ()
  registers: Any = ()
  pitch: int = 60
  low: bool = False  # intrinsically low (allows "booming")
  hit_nouns: tuple[tuple[str, str], ...] = ()
  sound_nouns: tuple[Noun, ...] = ()
  participles: tuple[str, ...] = ()
  counts: tuple[str, ...] = ("once", "twice", "three times", "repeatedly")
  adj_subject: bool = True  # loudness/register adjectives may qualify the subject noun
  note_len: float = 0.1
  ioi_count: tuple[float, float] = (0.3, 0.55)
  ioi_rep: tuple[float, float] = (0.14, 0.26)
  tail: float = 0.5
  heads: tuple[Noun, ...] = (("melody", "sg"), ("tune", "sg"), ("notes", "pl"), ("music", "mass"))
  head_participles: tuple[str, ...] = ("played", "being played")  # "a piano melody played slowly"
