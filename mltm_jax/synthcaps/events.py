"""Event planning: the random draw of one SynthCaps clip (no audio, no captions).

A plan is a JSON-serialisable dict::

    duration       clip length in s, two decimals (5-10 from plan_clip)
    num_samples    round(duration * sample_rate)
    events         1-3 events, in time order
    relations      relation of each event to the previous one: "sequential" | "overlap"
    sources        the events' source names

and each event::

    source, kind, program, is_drum   from the Source (mltm_jax.synthcaps.sources)
    register, tempo, count, loudness, duration
                   the attribute values rendered (None where the kind has no such attribute)
    notes          [[onset, offset, pitch, velocity], ...], s relative to the event start
    level_db       0.0 when loud, -20..-14 dB (relative to a loud event) when quiet
    start, end     s in the clip; end = start + the last note off
    relation_to_previous   None for the first event

Clip ``i`` of split ``s`` draws everything from :func:`clip_rng` ``(seed, s, i)``: the plan
first, then its captions (:mod:`mltm_jax.synthcaps.captions`) from the same generator.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from mltm_jax.synthcaps.heldout import RESERVED_PAIRS, has_reserved_pair
from mltm_jax.synthcaps.source_spec import REGISTER_WINDOWS, Source
from mltm_jax.synthcaps.sources import SOURCE_BY_NAME, SOURCE_SPECS
from mltm_jax.synthcaps.words import choice

ATTRIBUTE_KINDS = ("register", "tempo", "count", "loudness", "duration")
RELATIONS = ("sequential", "overlap")

PENTATONIC = (0, 2, 4, 7, 9)  # scale degrees of melodies (semitones above a random root)
QUIET_REL_DB = (-20.0, -14.0)  # level of a quiet event relative to a loud one
MIN_CLIP_S, MAX_CLIP_S = 5.0, 10.0


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The random generator of clip ``index`` of ``split``: depends only on (seed, split, index)."""
  ss = np.random.SeedSequence(
    entropy=int(seed), spawn_key=(zlib.crc32(split.encode("utf-8")), int(index))
  )
  return np.random.default_rng(ss)


def _uniform(rng, lo_hi) -> float:
  lo, hi = lo_hi
  return float(lo + (hi - lo) * rng.random())


def _vel(rng, loudness: str) -> int:
  return int(rng.integers(96, 121)) if loudness == "loud" else int(rng.integers(40, 65))


def _melody_pitches(rng, lo: int, hi: int, n: int) -> list[int]:
  root = int(rng.integers(12))
  scale = [p for p in range(lo, hi + 1) if (p - root) % 12 in PENTATONIC]
  idx = int(rng.integers(len(scale)))
  out = []
  for _ in range(n):
    out.append(scale[idx])
    idx = int(np.clip(idx + int(rng.integers(-2, 3)), 0, len(scale) - 1))
  return out


def _plan_event(rng, src: Source) -> dict:
  """Attributes and notes of one event; note times relative to the event start (s)."""
  loud = choice(rng, ("quiet", "loud"))
  ev: dict[str, Any] = {
    "source": src.name,
    "kind": src.kind,
    "program": src.program,
    "is_drum": src.drum,
    "register": None,
    "tempo": None,
    "count": None,
    "loudness": loud,
    "duration": None,
  }
  notes: list[tuple[float, float, int, int]] = []
  if src.kind == "melodic":
    reg = choice(rng, src.registers)
    tempo = choice(rng, ("slow", "fast"))
    dur = choice(rng, ("short", "long"))
    total = _uniform(rng, (1.2, 2.0) if dur == "short" else (3.0, 4.5))
    ioi = _uniform(rng, (0.5, 0.8) if tempo == "slow" else (0.12, 0.2))
    n = max(2, int(round(total / ioi)))
    lo, hi = REGISTER_WINDOWS[reg]
    legato = _uniform(rng, (0.85, 0.95))
    for k, p in enumerate(_melody_pitches(rng, lo, hi, n)):
      v = int(np.clip(_vel(rng, loud) + rng.integers(-6, 7), 1, 127))
      notes.append((k * ioi, k * ioi + ioi * legato, p, v))
    ev.update(register=reg, tempo=tempo, duration=dur)
  elif src.kind == "hits":
    count = choice(rng, src.counts)
    regs = dict(src.registers)
    reg = choice(rng, sorted(regs)) if regs else None
    key = regs[reg] if reg else src.pitch
    if count == "repeatedly":
      n = int(rng.integers(5, 11))
      ioi = _uniform(rng, src.ioi_rep)
    else:
      n = {"once": 1, "twice": 2, "three times": 3}[count]
      ioi = _uniform(rng, src.ioi_count)
    nl = min(src.note_len, 0.7 * ioi)
    base = _vel(rng, loud)
    for k in range(n):
      v = int(np.clip(base + rng.integers(-5, 6), 1, 127))
      notes.append((k * ioi, k * ioi + nl, key, v))
    ev.update(register=reg, count=count)
  else:  # continuous
    dur = choice(rng, ("short", "long"))
    total = _uniform(rng, (1.5, 2.5) if dur == "short" else (3.5, 5.0))
    notes.append((0.0, total, src.pitch, _vel(rng, loud)))
    ev.update(duration=dur)
  ev["notes"] = [[round(a, 3), round(b, 3), int(p), int(v)] for a, b, p, v in notes]
  ev["level_db"] = 0.0 if loud == "loud" else round(_uniform(rng, QUIET_REL_DB), 2)
  return ev


def _event_extent(ev: dict) -> float:
  """Seconds from the event start to the end of its main energy (last note off + short tail)."""
  src = SOURCE_BY_NAME[ev["source"]]
  return ev["notes"][-1][1] + min(src.tail, 0.5)


_INDEX = {s.name: i for i, s in enumerate(SOURCE_SPECS)}


def _draw_sources(rng, held_out: bool, attempt: int) -> list[int]:
  """Indices into SOURCE_SPECS of a clip's events, in time order.

  Other splits: 1-3 distinct sources (1 after 100 failed attempts to fit 10 s), never a
  reserved pair (:mod:`mltm_jax.synthcaps.heldout`). Held out: a reserved pair in random
  order, plus a third distinct source in a random position for 3-event clips (2 events after
  100 failed attempts).
  """
  if held_out:
    n_events = int(rng.choice([2, 3], p=[0.55, 0.45])) if attempt < 100 else 2
    pair = [_INDEX[name] for name in RESERVED_PAIRS[int(rng.integers(len(RESERVED_PAIRS)))]]
    idx = [pair[k] for k in rng.permutation(2)]
    if n_events == 3:
      rest = [i for i in range(len(SOURCE_SPECS)) if i not in idx]
      idx.insert(int(rng.integers(3)), rest[int(rng.integers(len(rest)))])
    return idx
  n_events = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3])) if attempt < 100 else 1
  for _ in range(1000):
    idx = [int(i) for i in rng.choice(len(SOURCE_SPECS), size=n_events, replace=False)]
    if not has_reserved_pair([SOURCE_SPECS[i].name for i in idx]):
      return idx
  raise RuntimeError("could not draw sources without a reserved pair")  # pragma: no cover


def plan_clip(rng: np.random.Generator, sample_rate: int, held_out: bool = False) -> dict:
  """Draw one clip: duration, events (with absolute note times) and relations.

  Args:
    rng: the clip's generator (:func:`clip_rng`).
    sample_rate: Hz (for ``num_samples``).
    held_out: a clip of the held-out split (sources drawn as :func:`_draw_sources` says).

  Returns a JSON-serialisable dict with keys duration (s), num_samples, events, relations,
  sources. Each event carries start/end (s), its attributes and ``notes``
  ([onset, offset, pitch, velocity] relative to the event start).
  """
  for attempt in range(200):
    idx = _draw_sources(rng, held_out, attempt)
    n_events = len(idx)
    events = [_plan_event(rng, SOURCE_SPECS[i]) for i in idx]
    relations: list[str] = []
    t = 0.0
    starts = [0.0]
    for k in range(1, n_events):
      prev = events[k - 1]
      rel = choice(rng, RELATIONS)
      if rel == "sequential":
        t = starts[-1] + _event_extent(prev) + _uniform(rng, (0.25, 0.8))
      else:
        note_span = prev["notes"][-1][1]
        t = starts[-1] + max(0.1, _uniform(rng, (0.1, 0.6)) * note_span)
      relations.append(rel)
      starts.append(round(t, 3))
    extent = max(s + _event_extent(e) for s, e in zip(starts, events))
    if extent <= MAX_CLIP_S - 0.6:
      break
  else:  # pragma: no cover - 1-event clips always fit; 2 events nearly always
    raise RuntimeError("could not plan a clip that fits in 10 s")
  duration = _uniform(rng, (max(MIN_CLIP_S, extent + 0.5), MAX_CLIP_S))
  duration = float(np.floor(duration * 100) / 100)
  lead = round(_uniform(rng, (0.1, max(0.1, duration - extent - 0.3))), 3)
  for s, ev in zip(starts, events):
    ev["start"] = round(lead + s, 3)
    ev["end"] = round(lead + s + ev["notes"][-1][1], 3)
  for k, ev in enumerate(events):
    ev["relation_to_previous"] = None if k == 0 else relations[k - 1]
  return {
    "duration": duration,
    "num_samples": int(round(duration * sample_rate)),
    "events": events,
    "relations": relations,
    "sources": [ev["source"] for ev in events],
  }


def single_event_plan(
  source: str, sample_rate: int, seed: int = 0, start: float = 0.5, **attributes: str
) -> dict:
  """A clip plan holding one event of ``source`` whose attributes equal ``attributes``
  (e.g. register="low", count="twice", loudness="quiet"); other attributes are random.

  For checks and demos; same dict layout as :func:`plan_clip`.
  """
  if source not in SOURCE_BY_NAME:
    raise ValueError(f"unknown source {source!r}; see SOURCES")
  src = SOURCE_BY_NAME[source]
  rng = np.random.default_rng(seed)
  for _ in range(2000):
    ev = _plan_event(rng, src)
    if all(ev.get(k) == v for k, v in attributes.items()):
      break
  else:
    raise ValueError(f"source {source!r} cannot take attributes {attributes}")
  extent = _event_extent(ev)
  duration = float(max(MIN_CLIP_S, np.ceil((start + extent + 0.5) * 100) / 100))
  ev["start"] = round(start, 3)
  ev["end"] = round(start + ev["notes"][-1][1], 3)
  ev["relation_to_previous"] = None
  return {
    "duration": duration,
    "num_samples": int(round(duration * sample_rate)),
    "events": [ev],
    "relations": [],
    "sources": [source],
  }
