"""SynthCaps: a synthetic audio-captioning dataset in the Clotho v2.1 layout.

Every clip (5-10 s) holds 1-3 sound events rendered from General-MIDI programs, drum-kit
keys and GM sound effects with the TimGM6mb SoundFont that ships inside pretty_midi
(``midirenderer`` synthesises 48 kHz stereo; clips are downmixed, resampled and written as
mono 16-bit WAV). Each event has a source and attributes (pitch register, tempo or number
of hits, loudness, duration); consecutive events are sequential or overlapping. Five
distinct captions per clip are written from varied templates and synonyms, and state only
attributes that were actually rendered.

Clip ``i`` of split ``s`` depends only on (seed, s, i): its random generator is
``np.random.default_rng(SeedSequence(seed, spawn_key=(crc32(s), i)))``. The plan (events,
timings, captions) is drawn first; rendering uses no randomness. The same seed therefore
gives byte-identical WAVs and CSVs, and generation can resume or run in parallel.

Modules, one concern each:

    source_spec   the Source record (kind, MIDI program / key, registers, timing, words)
    sources       the source table: SOURCE_SPECS, SOURCES, SOURCE_BY_NAME
    words         English helpers: articles, noun phrases, coordination
    heldout       the held-out split: reserved source pairs (RESERVED_PAIRS)
    events        event planning per clip: clip_rng, plan_clip, single_event_plan
    captions      the caption grammar: make_captions, RESERVED_PHRASES (held-out wording)
    render        MIDI -> audio through the SoundFont: soundfont_path, render_clip
    writer        the dataset writer (Clotho layout, metadata, markers): generate_synthcaps,
                  ensure_synthcaps, check_synthcaps_dir, ForeignDirectoryError, source_labels
"""

from __future__ import annotations

from mltm_jax.synthcaps.captions import N_CAPTIONS, RESERVED_PHRASES, make_captions
from mltm_jax.synthcaps.events import (
  ATTRIBUTE_KINDS,
  RELATIONS,
  clip_rng,
  plan_clip,
  single_event_plan,
)
from mltm_jax.synthcaps.heldout import (
  HELDOUT_SPLIT,
  RESERVED_PAIRS,
  has_reserved_pair,
  is_reserved_pair,
)
from mltm_jax.synthcaps.render import render_clip, soundfont_path
from mltm_jax.synthcaps.source_spec import Source
from mltm_jax.synthcaps.sources import SOURCE_BY_NAME, SOURCE_SPECS, SOURCES
from mltm_jax.synthcaps.writer import (
  DEFAULT_SIZES,
  MARKER,
  PARAMS,
  SPLITS,
  VERSION,
  ForeignDirectoryError,
  check_synthcaps_dir,
  ensure_synthcaps,
  generate_synthcaps,
  source_labels,
)

__all__ = [
  "VERSION",
  "SPLITS",
  "DEFAULT_SIZES",
  "MARKER",
  "PARAMS",
  "N_CAPTIONS",
  "SOURCES",
  "SOURCE_SPECS",
  "SOURCE_BY_NAME",
  "ATTRIBUTE_KINDS",
  "RELATIONS",
  "Source",
  "soundfont_path",
  "clip_rng",
  "plan_clip",
  "single_event_plan",
  "make_captions",
  "RESERVED_PHRASES",
  "HELDOUT_SPLIT",
  "RESERVED_PAIRS",
  "has_reserved_pair",
  "is_reserved_pair",
  "render_clip",
  "generate_synthcaps",
  "ensure_synthcaps",
  "ForeignDirectoryError",
  "check_synthcaps_dir",
  "source_labels",
]
