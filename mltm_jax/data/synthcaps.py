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

Output under ``out_dir``::

    clotho_captions_{split}.csv        file_name,caption_1,...,caption_5
    {split}/{split}_{i:05d}.wav        mono PCM_16 at sample_rate
    synthcaps_metadata_{split}.jsonl   one JSON object per clip (events, attributes, sources)
    SYNTHCAPS_DONE.json                written last: sizes, seed, sample_rate, version
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
  "VERSION",
  "SPLITS",
  "DEFAULT_SIZES",
  "SOURCES",
  "SOURCE_SPECS",
  "ATTRIBUTE_KINDS",
  "RELATIONS",
  "Source",
  "soundfont_path",
  "clip_rng",
  "plan_clip",
  "single_event_plan",
  "make_captions",
  "render_clip",
  "generate_synthcaps",
  "ensure_synthcaps",
  "ForeignDirectoryError",
  "check_synthcaps_dir",
  "source_labels",
]

VERSION = "1.0"
SPLITS = ("development", "validation", "evaluation")
DEFAULT_SIZES = {"development": 3000, "validation": 400, "evaluation": 400}
RENDER_SR = 48000  # midirenderer's output rate
N_CAPTIONS = 5
MARKER = "SYNTHCAPS_DONE.json"
PARAMS = "SYNTHCAPS_PARAMS.json"  # parameters of the files currently on disk (in-progress runs)

ATTRIBUTE_KINDS = ("register", "tempo", "count", "loudness", "duration")
RELATIONS = ("sequential", "overlap")

# Absolute MIDI pitch windows of the three registers (gaps between them keep labels apart).
REGISTER_WINDOWS = {"low": (40, 52), "middle": (55, 67), "high": (72, 86)}
PENTATONIC = (0, 2, 4, 7, 9)

LOUD_PEAK_DBFS = -1.0  # clip peak when it holds a loud event
QUIET_REL_DB = (-20.0, -14.0)  # level of a quiet event relative to a loud one

MIN_CLIP_S, MAX_CLIP_S = 5.0, 10.0
FADE_S = 0.05


_VOWEL_EXCEPTIONS = ("one", "uni", "use", "eu", "ukulele")


def _indef(phrase: str) -> str:
  """``phrase`` with "a" or "an"."""
  w = phrase.lower()
  an = w[:1] in "aeiou" and not w.startswith(_VOWEL_EXCEPTIONS)
  return ("an " if an else "a ") + phrase


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------

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


_PLAY: tuple[Verb, ...] = (("plays", "play"), ("is played", "are played"), ("sounds", "sound"))
_PLUCK: tuple[Verb, ...] = _PLAY + (("is plucked", "are plucked"),)
_HIT: tuple[Verb, ...] = (("is hit", "are hit"), ("is struck", "are struck"))
_HIT_AGENTS = (
  "someone hits {the}",
  "a drummer strikes {the}",
  "a person hits {a}",
  "someone plays {a}",
)
_HIT_PART = ("hit", "struck", "being hit")


def _melodic(
  name,
  program,
  registers,
  nouns,
  player=None,
  verbs=_PLAY,
  tail=0.4,
  agents=None,
  heads=None,
  participles=("played", "being played"),
  head_participles=("played", "being played"),
):
  nouns = tuple((n, "sg") if isinstance(n, str) else n for n in nouns)
  if agents is None:
    agents = ["someone plays {the}", "a person plays {a}", "a musician plays {a}"]
    if player:
      agents.append(f"{_indef(player)} plays")
  kw = {} if heads is None else {"heads": heads}
  return Source(
    name,
    "melodic",
    program,
    False,
    nouns,
    tuple(verbs),
    tuple(agents),
    registers=tuple(registers),
    tail=tail,
    participles=tuple(participles),
    head_participles=tuple(head_participles),
    **kw,
  )


def _drum(
  name,
  key_or_registers,
  nouns,
  hit_nouns=None,
  verbs=_HIT,
  agents=_HIT_AGENTS,
  low=False,
  participles=_HIT_PART,
  **kw,
):
  nouns = tuple((n, "sg") if isinstance(n, str) else n for n in nouns)
  if hit_nouns is None:
    first = nouns[0][0]
    hit_nouns = ((f"{first} hit", f"{first} hits"),)
  regs = key_or_registers if isinstance(key_or_registers, dict) else {}
  pitch = key_or_registers if isinstance(key_or_registers, int) else 60
  return Source(
    name,
    "hits",
    0,
    True,
    nouns,
    tuple(verbs),
    tuple(agents),
    registers=tuple(sorted(regs.items())),
    pitch=pitch,
    low=low,
    hit_nouns=tuple(hit_nouns),
    participles=tuple(participles),
    **kw,
  )


L, M, H = "low", "middle", "high"
_STRUCK_TAIL = 1.0

SOURCE_SPECS: tuple[Source, ...] = (
  # ---- GM melodic instruments (program numbers 0-indexed) ----
  _melodic(
    "piano",
    0,
    (L, M, H),
    ["piano", "grand piano", ("piano keys", "pl")],
    "pianist",
    tail=_STRUCK_TAIL,
  ),
  _melodic(
    "electric piano", 4, (L, M, H), ["electric piano", "electric keyboard"], tail=_STRUCK_TAIL
  ),
  _melodic("harpsichord", 6, (M, H), ["harpsichord"], tail=_STRUCK_TAIL),
  _melodic("glockenspiel", 9, (H,), ["glockenspiel"], tail=_STRUCK_TAIL),
  _melodic(
    "music box",
    10,
    (H,),
    ["music box"],
    verbs=(("plays", "play"), ("chimes", "chime")),
    agents=(),
    tail=_STRUCK_TAIL,
  ),
  _melodic("vibraphone", 11, (M, H), ["vibraphone", ("vibes", "pl")], tail=_STRUCK_TAIL),
  _melodic("marimba", 12, (L, M, H), ["marimba"], tail=_STRUCK_TAIL),
  _melodic("xylophone", 13, (M, H), ["xylophone"], tail=_STRUCK_TAIL),
  _melodic("organ", 19, (L, M, H), ["organ", "church organ", "pipe organ"], "organist"),
  _melodic("accordion", 21, (L, M, H), ["accordion"], "accordionist"),
  _melodic("harmonica", 22, (M, H), ["harmonica", "mouth organ"]),
  _melodic(
    "acoustic guitar",
    25,
    (L, M, H),
    ["acoustic guitar", "guitar"],
    "guitarist",
    verbs=_PLUCK,
    tail=_STRUCK_TAIL,
  ),
  _melodic(
    "electric guitar",
    27,
    (L, M, H),
    ["electric guitar", "clean electric guitar"],
    verbs=_PLUCK,
    tail=_STRUCK_TAIL,
  ),
  _melodic("distorted guitar", 30, (L, M), ["distorted guitar", "distorted electric guitar"]),
  _melodic(
    "bass guitar",
    33,
    (L,),
    ["bass guitar", "electric bass", "bass"],
    "bassist",
    verbs=_PLUCK,
    tail=_STRUCK_TAIL,
  ),
  _melodic("violin", 40, (M, H), ["violin", "fiddle"], "violinist"),
  _melodic("cello", 42, (L, M), ["cello"], "cellist"),
  _melodic("harp", 46, (L, M, H), ["harp"], "harpist", verbs=_PLUCK, tail=_STRUCK_TAIL),
  _melodic(
    "choir",
    52,
    (L, M, H),
    ["choir", "chorus", "group of singers", ("voices", "pl")],
    verbs=(("sings", "sing"),),
    agents=("people sing", "a group of people sing", "several singers sing"),
    heads=(("melody", "sg"), ("tune", "sg"), ("notes", "pl"), ("song", "sg")),
    participles=("singing",),
    head_participles=("sung", "being sung"),
  ),
  _melodic("trumpet", 56, (M, H), ["trumpet"], "trumpeter"),
  _melodic("trombone", 57, (L, M), ["trombone"]),
  _melodic("tuba", 58, (L,), ["tuba"]),
  _melodic("french horn", 60, (L, M), ["french horn", "horn"]),
  _melodic("saxophone", 65, (M, H), ["saxophone", "sax", "alto saxophone"], "saxophonist"),
  _melodic("oboe", 68, (M, H), ["oboe"]),
  _melodic("bassoon", 70, (L, M), ["bassoon"]),
  _melodic("clarinet", 71, (M, H), ["clarinet"], "clarinetist"),
  _melodic("flute", 73, (M, H), ["flute"], "flutist"),
  _melodic("pan flute", 75, (M, H), ["pan flute", ("pan pipes", "pl")]),
  _melodic(
    "synth lead",
    80,
    (M, H),
    ["synth lead", "synthesizer lead", "square-wave synthesizer"],
    agents=("someone plays {a}", "a person plays a melody on {a}"),
  ),
  _melodic(
    "synth pad",
    89,
    (L, M, H),
    ["synth pad", "synthesizer pad", "warm synth pad"],
    agents=("someone plays {a}", "a musician plays {a}"),
  ),
  _melodic("sitar", 104, (M, H), ["sitar"], verbs=_PLUCK, tail=_STRUCK_TAIL),
  _melodic("banjo", 105, (M, H), ["banjo"], verbs=_PLUCK, tail=_STRUCK_TAIL),
  _melodic("bagpipes", 109, (M, H), [("bagpipes", "pl"), "bagpipe"], "bagpiper"),
  _melodic(
    "steel drum", 114, (M, H), ["steel drum", "steelpan", ("steel drums", "pl")], tail=_STRUCK_TAIL
  ),
  # ---- pitched percussion played as hits ----
  Source(
    "bell",
    "hits",
    14,
    False,
    (("bell", "sg"), ("church bell", "sg"), ("chimes", "pl")),
    (("rings", "ring"), ("chimes", "chime"), ("tolls", "toll")),
    ("someone rings {a}", "someone strikes {the}"),
    registers=((H, 74), (L, 50), (M, 62)),
    hit_nouns=(("bell chime", "bell chimes"), ("bell toll", "bell tolls")),
    participles=("ringing", "chiming"),
    note_len=0.8,
    ioi_count=(0.8, 1.2),
    ioi_rep=(0.3, 0.45),
    tail=2.0,
  ),
  Source(
    "timpani",
    "hits",
    47,
    False,
    (("timpani", "sg"), ("kettle drum", "sg"), ("kettledrum", "sg")),
    _HIT,
    _HIT_AGENTS,
    registers=((L, 43), (M, 55)),
    hit_nouns=(("timpani hit", "timpani hits"), ("timpani stroke", "timpani strokes")),
    participles=_HIT_PART,
    note_len=0.5,
    ioi_count=(0.5, 0.8),
    ioi_rep=(0.11, 0.18),
    tail=1.5,
  ),
  # ---- drum kit (channel 10, GM key numbers) ----
  _drum(
    "kick drum",
    36,
    ["kick drum", "bass drum"],
    verbs=_HIT + (("thumps", "thump"),),
    low=True,
    hit_nouns=(("kick drum hit", "kick drum hits"), ("kick drum thump", "kick drum thumps")),
  ),
  _drum("snare drum", 38, ["snare drum", "snare"]),
  _drum(
    "hand clap",
    39,
    [("pair of hands", "sg")],
    verbs=(("claps", "clap"),),
    agents=("someone claps", "a person claps", "someone claps their hands"),
    hit_nouns=(("hand clap", "hand claps"), ("clap", "claps")),
    participles=("clapping",),
    adj_subject=False,
  ),
  _drum(
    "hi-hat",
    42,
    ["hi-hat", "hi-hat cymbal"],
    hit_nouns=(("hi-hat hit", "hi-hat hits"), ("hi-hat tick", "hi-hat ticks")),
  ),
  _drum(
    "crash cymbal",
    49,
    ["crash cymbal"],
    verbs=_HIT + (("crashes", "crash"),),
    hit_nouns=(("cymbal crash", "cymbal crashes"),),
    ioi_count=(0.6, 0.9),
    ioi_rep=(0.25, 0.4),
    tail=2.0,
  ),
  _drum(
    "ride cymbal",
    51,
    ["ride cymbal"],
    verbs=_HIT + (("rings", "ring"),),
    ioi_count=(0.4, 0.6),
    ioi_rep=(0.16, 0.28),
    tail=1.5,
  ),
  _drum("tom drum", {L: 41, M: 47, H: 50}, ["tom drum", "tom-tom", "tom"]),
  _drum(
    "tambourine",
    54,
    ["tambourine"],
    verbs=_HIT + (("jingles", "jingle"), ("is shaken", "are shaken")),
    agents=("someone shakes {a}", "someone hits {the}", "a person shakes {the}"),
    hit_nouns=(("tambourine jingle", "tambourine jingles"), ("tambourine hit", "tambourine hits")),
    participles=("shaken", "jingling", "being shaken"),
  ),
  _drum(
    "cowbell",
    56,
    ["cowbell"],
    verbs=_HIT + (("clanks", "clank"),),
    hit_nouns=(("cowbell hit", "cowbell hits"), ("cowbell clank", "cowbell clanks")),
  ),
  _drum("bongo", {H: 60, L: 61}, ["bongo", "bongo drum", ("bongos", "pl")]),
  _drum("conga", {H: 63, L: 64}, ["conga", "conga drum", ("congas", "pl")]),
  _drum(
    "maracas",
    70,
    [("maracas", "pl"), "shaker"],
    verbs=(("is shaken", "are shaken"), ("rattles", "rattle")),
    agents=("someone shakes {the}", "a person shakes {a}"),
    hit_nouns=(("maraca shake", "maraca shakes"), ("rattle", "rattles")),
    participles=("shaken", "rattling"),
  ),
  _drum(
    "claves",
    75,
    [("claves", "pl"), "pair of claves"],
    verbs=(("clicks", "click"), ("is struck", "are struck")),
    agents=("someone clicks {the}", "someone strikes {the}", "a musician clicks {a}"),
    hit_nouns=(("clave click", "clave clicks"), ("click of claves", "clicks of claves")),
    participles=("clicking", "struck", "being struck"),
  ),
  _drum(
    "wood block",
    {H: 76, L: 77},
    ["wood block", "woodblock"],
    verbs=_HIT + (("knocks", "knock"),),
    hit_nouns=(("wood block knock", "wood block knocks"), ("wood block hit", "wood block hits")),
  ),
  _drum(
    "triangle",
    81,
    ["triangle"],
    verbs=_HIT + (("rings", "ring"), ("dings", "ding")),
    agents=("someone strikes {a}", "someone hits {the}", "a musician rings {a}"),
    hit_nouns=(("triangle ding", "triangle dings"), ("triangle hit", "triangle hits")),
    ioi_count=(0.5, 0.8),
    ioi_rep=(0.16, 0.26),
    tail=1.5,
  ),
  _drum(
    "timbales",
    {H: 65, L: 66},
    [("timbales", "pl"), "timbale"],
    hit_nouns=(("timbale hit", "timbale hits"),),
  ),
  _drum(
    "whistle",
    72,
    ["whistle"],
    verbs=(("blows", "blow"), ("shrills", "shrill")),
    agents=("someone blows {a}", "a referee blows {a}", "a person blows {the}"),
    hit_nouns=(("whistle blow", "whistle blows"), ("blast of a whistle", "blasts of a whistle")),
    participles=("blowing", "being blown"),
    note_len=0.4,
    ioi_count=(0.6, 0.9),
    ioi_rep=(0.3, 0.45),
    tail=0.3,
  ),
  # ---- GM sound effects (programs 120-127) ----
  Source(
    "guitar fret noise",
    "hits",
    120,
    False,
    (("guitar string", "sg"), ("guitar strings", "pl")),
    (("squeaks", "squeak"), ("screeches", "screech")),
    ("someone slides a finger along {the}", "fingers squeak on {the}"),
    hit_nouns=(("guitar string squeak", "guitar string squeaks"), ("fret squeak", "fret squeaks")),
    participles=("squeaking",),
    note_len=0.3,
    ioi_count=(0.5, 0.8),
    ioi_rep=(0.3, 0.45),
  ),
  Source(
    "breathing",
    "hits",
    121,
    False,
    (("person", "sg"),),
    (("breathes out", "breathe out"), ("exhales", "exhale")),
    ("someone breathes out", "a person exhales", "someone exhales"),
    hit_nouns=(("breath", "breaths"), ("exhalation", "exhalations")),
    participles=("breathing out", "exhaling"),
    counts=("once", "twice", "three times"),
    note_len=0.6,
    ioi_count=(0.9, 1.2),
    tail=0.3,
    adj_subject=False,
  ),
  Source(
    "ocean waves",
    "continuous",
    122,
    False,
    (("ocean waves", "pl"), ("waves", "pl"), ("surf", "mass")),
    (("crashes", "crash"), ("washes ashore", "wash ashore"), ("rolls in", "roll in")),
    sound_nouns=(
      ("ocean waves", "pl"),
      ("crashing waves", "pl"),
      ("sound of the sea", "def"),
      ("surf", "mass"),
    ),
    participles=("crashing", "washing ashore"),
    tail=1.0,
  ),
  Source(
    "bird",
    "hits",
    123,
    False,
    (("bird", "sg"), ("small bird", "sg"), ("songbird", "sg")),
    (("chirps", "chirp"), ("tweets", "tweet"), ("calls", "call")),
    registers=((M, 67), (H, 79)),
    hit_nouns=(("bird chirp", "bird chirps"), ("tweet", "tweets"), ("chirp", "chirps")),
    participles=("chirping", "tweeting"),
    note_len=0.35,
    ioi_count=(0.45, 0.7),
    ioi_rep=(0.25, 0.4),
    tail=0.3,
  ),
  Source(
    "telephone",
    "hits",
    124,
    False,
    (("telephone", "sg"), ("phone", "sg"), ("landline phone", "sg")),
    (("rings", "ring"),),
    (),
    registers=((M, 60), (H, 72)),
    hit_nouns=(("telephone ring", "telephone rings"), ("phone ring", "phone rings")),
    participles=("ringing",),
    note_len=0.8,
    ioi_count=(1.1, 1.4),
    ioi_rep=(0.45, 0.6),
    tail=0.3,
  ),
  Source(
    "helicopter",
    "continuous",
    125,
    False,
    (("helicopter", "sg"), ("chopper", "sg")),
    (("hovers", "hover"), ("whirs", "whir"), ("drones", "drone")),
    sound_nouns=(
      ("helicopter noise", "mass"),
      ("whir of a helicopter", "def"),
      ("helicopter blades", "pl"),
    ),
    participles=("hovering", "whirring"),
    tail=1.0,
  ),
  Source(
    "applause",
    "continuous",
    126,
    False,
    (("audience", "sg"), ("crowd", "sg"), ("people", "pl")),
    (("applauds", "applaud"), ("claps", "clap")),
    sound_nouns=(("applause", "mass"), ("clapping", "mass"), ("round of applause", "sg")),
    participles=("applauding", "clapping"),
    tail=0.6,
    adj_subject=False,
  ),
  Source(
    "gunshot",
    "hits",
    127,
    False,
    (("gun", "sg"), ("firearm", "sg")),
    (("fires", "fire"), ("goes off", "go off"), ("is fired", "are fired")),
    ("someone fires {a}", "someone shoots {a}", "a person fires {a}"),
    hit_nouns=(("gunshot", "gunshots"), ("shot", "shots")),
    participles=("firing", "being fired"),
    note_len=0.2,
    ioi_count=(0.5, 0.9),
    ioi_rep=(0.1, 0.18),
    tail=1.5,
  ),
)

SOURCES: list[str] = [s.name for s in SOURCE_SPECS]
_BY_NAME = {s.name: s for s in SOURCE_SPECS}


def soundfont_path() -> Path:
  """The General-MIDI SoundFont shipped inside pretty_midi."""
  import pretty_midi

  p = Path(os.path.dirname(pretty_midi.__file__)) / "TimGM6mb.sf2"
  if not p.is_file():
    raise FileNotFoundError(
      f"SoundFont not found: {p} (pretty_midi installation lacks TimGM6mb.sf2)"
    )
  return p


# --------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------

_LOUD_ADJ = ("loud", "forceful", "powerful", "strong")  # for notes, melodies, hits, sounds
_QUIET_ADJ = ("quiet", "soft", "faint", "gentle")
_LOUD_ADJ_SUBJ = ("loud",)  # for the sound source itself ("a loud piano")
_QUIET_ADJ_SUBJ = ("quiet", "soft", "faint")
_LOUD_ADV = ("loudly", "forcefully", "powerfully", "at high volume")
_QUIET_ADV = ("quietly", "softly", "gently", "faintly", "at low volume")
_REG_ADJ = {
  L: ("low", "low-pitched", "deep"),
  M: ("mid-range", "medium-pitched", "mid-pitched"),
  H: ("high", "high-pitched"),
}
_REG_ADV = {
  L: ("in a low register", "at a low pitch", "in the low range"),
  M: ("in a middle register", "at a medium pitch", "in the mid range"),
  H: ("in a high register", "at a high pitch", "in the upper range"),
}
_TEMPO_ADJ = {
  "slow": ("slow", "slow-paced", "leisurely"),
  "fast": ("fast", "quick", "rapid", "lively"),
}
_TEMPO_ADV = {
  "slow": ("slowly", "at a slow pace", "at a slow tempo"),
  "fast": ("quickly", "rapidly", "at a fast pace", "at a fast tempo"),
}
_DUR_ADJ = {"short": ("short", "brief"), "long": ("long", "lengthy", "extended")}
_DUR_ADJ_CONT = {"short": ("short", "brief"), "long": ("long", "sustained", "prolonged")}
_DUR_ADV = {
  "short": ("briefly", "for a moment", "for a short time"),
  "long": ("for a long time", "for a while", "for several seconds"),
}
_COUNT_ADV = {
  "once": ("once", "a single time", "one time"),
  "twice": ("twice", "two times"),
  "three times": ("three times", "thrice"),
  "repeatedly": (
    "repeatedly",
    "over and over",
    "again and again",
    "many times",
    "several times in a row",
  ),
}
_COUNT_DET = {
  "once": ("a single", "one"),
  "twice": ("two",),
  "three times": ("three",),
  "repeatedly": ("repeated", "a series of", "a rapid series of", "many", "a string of"),
}


def _choice(rng: np.random.Generator, options: Sequence[Any]) -> Any:
  return options[int(rng.integers(len(options)))]


def _np(rng, text: str, number: str, adjs: Sequence[str] = (), definite: bool = False) -> str:
  """Noun phrase with article: number in {"sg", "pl", "mass", "def"}."""
  words = _join_adjs(rng, adjs)
  body = f"{words} {text}" if words else text
  if number == "def" or definite:
    return "the " + body
  if number == "sg":
    return _indef(body)
  return body


def _join_adjs(rng, adjs: Sequence[str]) -> str:
  adjs = list(adjs)
  if len(adjs) <= 1:
    return "".join(adjs)
  if len(adjs) == 2:
    return _choice(rng, (f"{adjs[0]}, {adjs[1]}", f"{adjs[0]} and {adjs[1]}"))
  return ", ".join(adjs[:-1]) + " and " + adjs[-1]


def _join_advs(rng, advs: Sequence[str], first: str | None = None) -> str:
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


# --------------------------------------------------------------------------------------
# Clip plan
# --------------------------------------------------------------------------------------


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
  loud = _choice(rng, ("quiet", "loud"))
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
    reg = _choice(rng, src.registers)
    tempo = _choice(rng, ("slow", "fast"))
    dur = _choice(rng, ("short", "long"))
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
    count = _choice(rng, src.counts)
    regs = dict(src.registers)
    reg = _choice(rng, sorted(regs)) if regs else None
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
    dur = _choice(rng, ("short", "long"))
    total = _uniform(rng, (1.5, 2.5) if dur == "short" else (3.5, 5.0))
    notes.append((0.0, total, src.pitch, _vel(rng, loud)))
    ev.update(duration=dur)
  ev["notes"] = [[round(a, 3), round(b, 3), int(p), int(v)] for a, b, p, v in notes]
  ev["level_db"] = 0.0 if loud == "loud" else round(_uniform(rng, QUIET_REL_DB), 2)
  return ev


def _event_extent(ev: dict) -> float:
  """Seconds from the event start to the end of its main energy (last note off + short tail)."""
  src = _BY_NAME[ev["source"]]
  return ev["notes"][-1][1] + min(src.tail, 0.5)


def plan_clip(rng: np.random.Generator, sample_rate: int) -> dict:
  """Draw one clip: duration, events (with absolute note times) and relations.

  Returns a JSON-serialisable dict with keys duration (s), num_samples, events, relations,
  sources. Each event carries start/end (s), its attributes and ``notes``
  ([onset, offset, pitch, velocity] relative to the event start).
  """
  for attempt in range(200):
    n_events = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3])) if attempt < 100 else 1
    idx = rng.choice(len(SOURCE_SPECS), size=n_events, replace=False)
    events = [_plan_event(rng, SOURCE_SPECS[int(i)]) for i in idx]
    relations: list[str] = []
    t = 0.0
    starts = [0.0]
    for k in range(1, n_events):
      prev = events[k - 1]
      rel = _choice(rng, RELATIONS)
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
  else:  # pragma: no cover - 1-event clips always fit
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
  if source not in _BY_NAME:
    raise ValueError(f"unknown source {source!r}; see SOURCES")
  src = _BY_NAME[source]
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


# --------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------


def _loud_adj(rng, ev, src, subject: bool = False) -> str:
  if subject:
    return _choice(rng, _LOUD_ADJ_SUBJ if ev["loudness"] == "loud" else _QUIET_ADJ_SUBJ)
  if ev["loudness"] == "loud":
    low = src.low or ev["register"] == L
    return _choice(rng, _LOUD_ADJ + (("booming",) if low else ()))
  return _choice(rng, _QUIET_ADJ + (("light",) if src.kind == "hits" else ()))


def _loud_adv(rng, ev, src) -> str:
  if ev["loudness"] == "loud":
    return _choice(rng, _LOUD_ADV + (("hard",) if src.kind == "hits" and src.drum else ()))
  return _choice(rng, _QUIET_ADV + (("lightly",) if src.kind == "hits" and src.drum else ()))


def _mentionable(ev) -> list[str]:
  return [
    a for a in ("loudness", "register", "tempo", "count", "duration") if ev.get(a) is not None
  ]


class _Phrases:
  """Clause and noun-phrase realisations of one event for one caption."""

  def __init__(self, rng, ev: dict, mention: Iterable[str]):
    # a sorted tuple: iterating a set of str would depend on the per-process hash seed
    self.rng, self.ev, self.mention = rng, ev, tuple(sorted(mention))
    self.src = _BY_NAME[ev["source"]]

  # adverbials for the attributes in ``attrs`` (count first for hits)
  def _advs(self, attrs: Iterable[str]) -> str:
    rng, ev, src = self.rng, self.ev, self.src
    advs, first = [], None
    for a in attrs:
      if a == "loudness":
        advs.append(_loud_adv(rng, ev, src))
      elif a == "register":
        advs.append(_choice(rng, _REG_ADV[ev["register"]]))
      elif a == "tempo":
        advs.append(_choice(rng, _TEMPO_ADV[ev["tempo"]]))
      elif a == "duration":
        advs.append(_choice(rng, _DUR_ADV[ev["duration"]]))
      elif a == "count":
        first = _choice(rng, _COUNT_ADV[ev["count"]])
    return _join_advs(rng, advs, first)

  def _subject(self, adj_attrs: Sequence[str]) -> tuple[str, str]:
    """(noun phrase, number) naming the source, with adjectives for ``adj_attrs``."""
    rng, ev, src = self.rng, self.ev, self.src
    text, number = _choice(rng, src.nouns)
    adjs = []
    for a in adj_attrs:
      if a == "loudness":
        adjs.append(_loud_adj(rng, ev, src, subject=True))
      elif a == "register":
        adjs.append(_choice(rng, _REG_ADJ[ev["register"]]))
      elif a == "duration":
        adjs.append(_choice(rng, _DUR_ADJ_CONT[ev["duration"]]))
    return _np(rng, text, number, adjs), number

  def _split(self, adjectival: Sequence[str], max_adj: int = 1) -> tuple[list[str], list[str]]:
    """Split mentioned attributes into (adjectives, adverbials)."""
    rng = self.rng
    cand = [a for a in self.mention if a in adjectival]
    cand = [cand[i] for i in rng.permutation(len(cand))]
    n = int(rng.integers(0, min(max_adj, len(cand)) + 1)) if cand else 0
    adj = cand[:n]
    adv = [a for a in sorted(self.mention) if a not in adj]
    return adj, adv

  def clause(self) -> str:
    rng, ev, src = self.rng, self.ev, self.src
    forms = ["subject"]
    if src.agents:
      forms.append("agent")
    if src.kind == "melodic":
      forms.append("object")
    form = _choice(rng, forms)
    if form == "subject":
      adjectival = ("loudness", "register") if src.kind == "hits" else ("loudness",)
      adj, adv = self._split(adjectival if src.adj_subject else ())
      subj, number = self._subject(adj)
      verb = _choice(rng, src.verbs)[0 if number in ("sg", "mass", "def") else 1]
      return " ".join(x for x in (subj, verb, self._advs(adv)) if x)
    if form == "agent":
      text, number = _choice(rng, src.nouns)
      reg_adj = []
      adv = sorted(self.mention)
      if src.kind == "hits" and "register" in self.mention and rng.random() < 0.5:
        reg_adj = [_choice(rng, _REG_ADJ[ev["register"]])]
        adv = [a for a in adv if a != "register"]
      a = _np(rng, text, number, reg_adj)
      the = _np(rng, text, number, reg_adj, definite=True)
      agent = _choice(rng, src.agents).format(a=a, the=the)
      return " ".join(x for x in (agent, self._advs(adv)) if x)
    # melodic "plays <adjs> notes" forms
    adj, adv = self._split(("loudness", "register", "tempo", "duration"), max_adj=2)
    obj = self._head(adj, with_source=False)
    text, number = _choice(rng, src.nouns)
    if src.agents and src.name != "choir" and rng.random() < 0.5:
      who = _choice(rng, ("someone", "a person", "a musician"))
      core = f"{who} plays {obj} on {_np(rng, text, number, definite=True)}"
    else:
      verb = ("sings", "sing") if src.name == "choir" else ("plays", "play")
      core = f"{_np(rng, text, number)} {verb[0 if number != 'pl' else 1]} {obj}"
    return " ".join(x for x in (core, self._advs(adv)) if x)

  def _head(self, adj_attrs: Sequence[str], with_source: bool) -> str:
    """Melodic: "<adjs> [source] melody|notes|music" with an article where needed."""
    rng, ev, src = self.rng, self.ev, self.src
    head, number = _choice(rng, src.heads)
    adjs = []
    for a in adj_attrs:
      if a == "loudness":
        adjs.append(_loud_adj(rng, ev, src))
      elif a == "register":
        adjs.append(_choice(rng, _REG_ADJ[ev["register"]]))
      elif a == "tempo":
        adjs.append(_choice(rng, _TEMPO_ADJ[ev["tempo"]]))
      elif a == "duration":
        adjs.append(_choice(rng, _DUR_ADJ[ev["duration"]]))
    if with_source:
      noun = _choice(rng, [n for n, num in src.nouns if num == "sg"] or [src.name])
      head = f"{noun} {head}"
    return _np(rng, head, number, adjs)

  def noun_phrase(self) -> tuple[str, bool]:
    """(noun phrase, plural) describing the event."""
    rng, ev, src = self.rng, self.ev, self.src
    forms = ["participle"]
    if src.kind == "melodic":
      forms += ["head", "head"]
    elif src.kind == "hits":
      forms += ["hits", "hits"]
    elif src.sound_nouns:
      forms += ["sound", "sound"]
    form = _choice(rng, forms)
    if form == "head":
      adj, adv = self._split(("loudness", "register", "tempo", "duration"), max_adj=2)
      np_ = self._head(adj, with_source=True)
      plural = not np_.startswith(("a ", "an ")) and np_.endswith("notes")
      if adv:
        np_ += " " + _choice(rng, src.head_participles) + " " + self._advs(adv)
      return np_, plural
    if form == "hits":
      count = ev["count"]
      sg, pl = _choice(rng, src.hit_nouns)
      adjs = []
      mention = set(self.mention) | {"count"}
      for a in ("loudness", "register"):
        if a in mention:
          adjs.append(
            _loud_adj(rng, ev, src) if a == "loudness" else _choice(rng, _REG_ADJ[ev["register"]])
          )
          mention.discard(a)
      det = _choice(rng, _COUNT_DET[count])
      noun = sg if count == "once" else pl
      body = " ".join([det] + ([_join_adjs(rng, adjs)] if adjs else []) + [noun])
      plural = count != "once" and not det.startswith("a ")
      rest = [a for a in sorted(mention) if a != "count"]
      if rest:
        body += " " + self._advs(rest)  # e.g. "... in a high register"
      return body, plural
    if form == "sound":
      text, number = _choice(rng, src.sound_nouns)
      adjs = [
        _loud_adj(rng, ev, src) if a == "loudness" else _choice(rng, _DUR_ADJ_CONT[ev["duration"]])
        for a in sorted(self.mention)
      ]
      return _np(rng, text, number, adjs), number == "pl"
    # participle: "a violin played quickly", "a bell ringing twice"
    adjectival = ("loudness",) + (("register",) if src.kind == "hits" else ())
    adj, adv = self._split(adjectival if src.adj_subject else ())
    subj, number = self._subject(adj)
    parts = src.participles
    if not adv:  # a bare past participle ("a cello played") does not stand alone
      parts = tuple(p for p in parts if p.endswith("ing") or p.startswith("being"))
    part = _choice(rng, parts) if parts else ""
    body = " ".join(x for x in (subj, part, self._advs(adv)) if x)
    if rng.random() < 0.3:
      return "the sound of " + body, False
    return body, number == "pl"


def _is(plural: bool) -> str:
  return "are" if plural else "is"


def _finish(text: str) -> str:
  text = " ".join(text.replace(" ,", ",").split()).replace("for a while while", "for a while as")
  return text[:1].upper() + text[1:] + "."


def _caption(rng, plan: dict) -> str:
  events = plan["events"]
  n = len(events)
  # how many attributes each event's description states
  k_probs = {1: (0.0, 0.2, 0.45, 0.35), 2: (0.15, 0.55, 0.3, 0.0), 3: (0.35, 0.55, 0.1, 0.0)}[n]
  phrases = []
  for ev in events:
    attrs = _mentionable(ev)
    k = min(int(rng.choice(4, p=k_probs)), len(attrs))
    mention = {attrs[int(i)] for i in rng.permutation(len(attrs))[:k]}
    phrases.append(_Phrases(rng, ev, mention))

  # groups of events linked by overlap
  groups: list[list[_Phrases]] = [[phrases[0]]]
  for k, rel in enumerate(plan["relations"]):
    if rel == "overlap":
      groups[-1].append(phrases[k + 1])
    else:
      groups.append([phrases[k + 1]])

  def g_clause(g: list[_Phrases]) -> str:
    if len(g) == 1:
      return g[0].clause()
    if len(g) == 2:
      a, b = g
      form = int(rng.integers(8))
      if form == 0:
        return f"{a.clause()} while {b.clause()}"
      if form == 1:
        return f"{b.clause()} while {a.clause()}"
      if form == 2:
        return f"while {a.clause()}, {b.clause()}"
      if form == 3:
        return f"{a.clause()} along with {b.noun_phrase()[0]}"
      if form == 4:
        return f"{a.clause()}, accompanied by {b.noun_phrase()[0]}"
      if form == 5:
        return f"{a.clause()} over {b.noun_phrase()[0]}"
      if form == 6:
        return f"{a.clause()} as {b.clause()}"
      return f"{a.noun_phrase()[0]} and {b.noun_phrase()[0]} can be heard at the same time"
    a, b, c = g
    form = int(rng.integers(4))
    if form == 0:
      return f"{a.clause()} while {b.noun_phrase()[0]} and {c.noun_phrase()[0]} can be heard"
    if form == 1:
      return f"{a.clause()} along with {b.noun_phrase()[0]} and {c.noun_phrase()[0]}"
    if form == 2:
      return (
        f"{a.noun_phrase()[0]}, {b.noun_phrase()[0]} and {c.noun_phrase()[0]} can be heard together"
      )
    return f"{a.clause()} while {b.clause()}, along with {c.noun_phrase()[0]}"

  def g_np(g: list[_Phrases]) -> tuple[str, bool]:
    if len(g) == 1:
      return g[0].noun_phrase()
    nps = [p.noun_phrase() for p in g]
    if len(g) == 2:
      form = int(rng.integers(3))
      if form == 0:
        return f"{nps[0][0]} along with {nps[1][0]}", nps[0][1]
      if form == 1:
        return f"{nps[0][0]} together with {nps[1][0]}", nps[0][1]
      return f"{nps[0][0]} and {nps[1][0]} at the same time", True
    return f"{nps[0][0]} along with {nps[1][0]} and {nps[2][0]}", nps[0][1]

  if len(groups) == 1:
    g = groups[0]
    if len(g) > 1:
      return _finish(g_clause(g))
    form = int(rng.integers(10))
    if form < 6:
      return _finish(g_clause(g))
    np_, plural = g_np(g)
    if form == 6:
      return _finish(f"{np_} can be heard")
    if form == 7:
      return _finish(f"{np_} {_is(plural)} heard")
    if form == 8:
      return _finish(f"there {_is(plural)} {np_}")
    return _finish(f"{np_} {_is(plural)} audible")
  if len(groups) == 2:
    g1, g2 = groups
    simple = len(g1) == 1 and len(g2) == 1
    forms = list(range(8)) + ([8, 9, 10] if simple else [])
    form = _choice(rng, forms)
    if form == 0:
      return _finish(f"{g_clause(g1)}, then {g_clause(g2)}")
    if form == 1:
      return _finish(f"{g_clause(g1)}, and then {g_clause(g2)}")
    if form == 2:
      return _finish(f"{g_clause(g1)}, followed by {g_np(g2)[0]}")
    if form == 3:
      return _finish(f"first {g_clause(g1)}, then {g_clause(g2)}")
    if form == 4:
      np1, pl1 = g_np(g1)
      return _finish(f"{np1} {_is(pl1)} followed by {g_np(g2)[0]}")
    if form == 5:
      return _finish(f"{g_clause(g1)}, and afterwards {g_clause(g2)}")
    if form == 6:
      return _finish(f"{g_clause(g1)}, and after that {g_clause(g2)}")
    if form == 7:
      return _finish(f"{g_clause(g1)} and then {g_np(g2)[0]} can be heard")
    if form == 8:
      return _finish(f"after {g_clause(g1)}, {g_clause(g2)}")
    if form == 9:
      return _finish(f"{g_clause(g2)} after {g_clause(g1)}")
    return _finish(f"{g_clause(g1)} before {g_clause(g2)}")
  g1, g2, g3 = groups
  form = int(rng.integers(6))
  if form == 0:
    return _finish(f"{g_clause(g1)}, then {g_clause(g2)}, and finally {g_clause(g3)}")
  if form == 1:
    return _finish(f"first {g_clause(g1)}, then {g_clause(g2)}, and then {g_clause(g3)}")
  if form == 2:
    return _finish(f"{g_clause(g1)}, followed by {g_np(g2)[0]} and then {g_np(g3)[0]}")
  if form == 3:
    return _finish(f"{g_clause(g1)}, then {g_clause(g2)}, followed by {g_np(g3)[0]}")
  if form == 4:
    return _finish(f"after {g_clause(g1)}, {g_clause(g2)}, and then {g_clause(g3)}")
  return _finish(f"{g_clause(g1)} before {g_clause(g2)}, and then {g_clause(g3)}")


def make_captions(rng: np.random.Generator, plan: dict, n: int = N_CAPTIONS) -> list[str]:
  """``n`` distinct captions for ``plan`` (drawn from ``rng``)."""
  caps: list[str] = []
  for _ in range(500):
    c = _caption(rng, plan)
    if c not in caps:
      caps.append(c)
      if len(caps) == n:
        return caps
  raise RuntimeError(f"could not write {n} distinct captions for sources {plan['sources']}")


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _event_midi(ev: dict, render_len: float) -> bytes:
  """Standard MIDI file bytes of one event (times relative to the event start)."""
  import pretty_midi

  pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
  inst = pretty_midi.Instrument(program=int(ev["program"]), is_drum=bool(ev["is_drum"]))
  for on, off, pitch, vel in ev["notes"]:
    inst.notes.append(
      pretty_midi.Note(velocity=int(vel), pitch=int(pitch), start=float(on), end=float(off))
    )
  # A controller event at render_len makes the file (and so the rendering) that long.
  inst.control_changes.append(
    pretty_midi.ControlChange(number=7, value=100, time=float(render_len))
  )
  pm.instruments.append(inst)
  buf = io.BytesIO()
  pm.write(buf)
  return buf.getvalue()


def _render_event(ev: dict, sf2: bytes) -> np.ndarray:
  """Mono float32 [n] at RENDER_SR, peak-normalised to 10**(level_db/20), faded out at the end."""
  import midirenderer
  import soundfile as sf

  src = _BY_NAME[ev["source"]]
  render_len = ev["notes"][-1][1] + src.tail
  wav = midirenderer.render_wave_from(sf2, _event_midi(ev, render_len))
  pcm, sr = sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)  # the renderer writes PCM_16
  if sr != RENDER_SR:
    raise RuntimeError(f"midirenderer returned {sr} Hz, expected {RENDER_SR}")
  pcm = pcm[: int(round(render_len * RENDER_SR))]
  # downmix: mean over channels, in float32 (int16 full scale -> 1.0)
  x = pcm[:, 0].astype(np.float32)
  for c in range(1, pcm.shape[1]):
    x += pcm[:, c]
  x *= np.float32(1.0 / (32768.0 * pcm.shape[1]))
  fade = min(int(FADE_S * RENDER_SR), x.shape[0])
  x[x.shape[0] - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
  peak = float(np.max(np.abs(x))) if x.size else 0.0
  if peak < 1e-5:
    raise RuntimeError(f"source {ev['source']!r} rendered silence (notes {ev['notes'][:2]}...)")
  return (x * np.float32(10.0 ** (ev["level_db"] / 20.0) / peak)).astype(np.float32)


def render_clip(plan: dict, sample_rate: int, sf2: bytes) -> np.ndarray:
  """Render a planned clip: float32 [plan['num_samples']] at ``sample_rate``.

  Events are rendered one by one at 48 kHz, each peak-normalised to its relative level
  (0 dB loud, -20..-14 dB quiet), mixed, resampled with soxr HQ (what
  ``librosa.resample(res_type='soxr_hq')`` calls) and scaled so the clip peak is
  -1 dBFS plus the level of its loudest event: -1 dBFS with a loud event, about
  -15..-21 dBFS when all are quiet. Never clips.
  """
  import soxr

  n48 = int(round(plan["duration"] * RENDER_SR))
  mix = np.zeros(n48, dtype=np.float32)
  for ev in plan["events"]:
    x = _render_event(ev, sf2)
    o = int(round(ev["start"] * RENDER_SR))
    m = min(x.shape[0], n48 - o)
    if m <= 0:
      continue
    if m < x.shape[0]:  # cut at the clip end: fade out
      x = x[:m].copy()
      f = min(int(FADE_S * RENDER_SR), m)
      x[m - f :] *= np.linspace(1.0, 0.0, f, dtype=np.float32)
    mix[o : o + m] += x
  y = mix if sample_rate == RENDER_SR else soxr.resample(mix, RENDER_SR, sample_rate, quality="HQ")
  n = plan["num_samples"]
  y = np.asarray(y[:n], dtype=np.float32)
  if y.shape[0] < n:
    y = np.concatenate([y, np.zeros(n - y.shape[0], np.float32)])
  peak = float(np.max(np.abs(y)))
  target = 10.0 ** ((LOUD_PEAK_DBFS + max(ev["level_db"] for ev in plan["events"])) / 20.0)
  return (y * np.float32(target / peak)).astype(np.float32)


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


def _file_name(split: str, index: int) -> str:
  return f"{split}_{index:05d}.wav"


def _wav_ok(path: Path, sample_rate: int, num_samples: int) -> bool:
  import soundfile as sf

  try:
    info = sf.info(str(path))
  except Exception:  # noqa: BLE001 - any unreadable file is simply re-rendered
    return False
  return (
    info.samplerate == sample_rate
    and info.channels == 1
    and info.frames == num_samples
    and info.subtype == "PCM_16"
  )


def _clip_job(args: tuple) -> tuple[int, dict, list[str], bool]:
  """Plan (always) and render (unless a valid file exists) clip ``index``."""
  import soundfile as sf

  seed, split, index, sample_rate, audio_dir, trust_existing = args
  rng = clip_rng(seed, split, index)
  plan = plan_clip(rng, sample_rate)
  captions = make_captions(rng, plan)
  path = Path(audio_dir) / _file_name(split, index)
  if trust_existing and _wav_ok(path, sample_rate, plan["num_samples"]):
    return index, plan, captions, False
  y = render_clip(plan, sample_rate, _soundfont_bytes())
  tmp = path.with_name(path.name + ".tmp")
  sf.write(str(tmp), y, sample_rate, subtype="PCM_16", format="WAV")
  os.replace(tmp, path)
  return index, plan, captions, True


@lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
  """The SoundFont file's bytes, read once per process."""
  return soundfont_path().read_bytes()


def _metadata_record(file_name: str, plan: dict) -> dict:
  events = []
  for ev in plan["events"]:
    e = {
      k: ev[k]
      for k in (
        "source",
        "kind",
        "register",
        "tempo",
        "count",
        "loudness",
        "duration",
        "relation_to_previous",
        "start",
        "end",
        "level_db",
        "program",
        "is_drum",
      )
    }
    e["notes"] = ev["notes"]
    events.append(e)
  return {
    "file_name": file_name,
    "duration": plan["duration"],
    "num_samples": plan["num_samples"],
    "sources": plan["sources"],
    "relations": plan["relations"],
    "events": events,
  }


def _write_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    f.write(text)
  os.replace(tmp, path)


def _params(seed: int, sample_rate: int) -> dict:
  return {"version": VERSION, "seed": int(seed), "sample_rate": int(sample_rate)}


def generate_synthcaps(
  out_dir: str | os.PathLike,
  sizes: dict[str, int] | None = None,
  seed: int = 0,
  sample_rate: int = 32000,
  progress: bool = True,
  workers: int | None = None,
) -> dict:
  """Generate SynthCaps in the Clotho v2.1 layout under ``out_dir``.

  Args:
    out_dir: output folder (created).
    sizes: clips per split, keys among development/validation/evaluation
      (default 3000/400/400).
    seed: dataset seed; clip i of split s depends only on (seed, s, i).
    sample_rate: WAV sample rate in Hz.
    progress: show a tqdm bar per split.
    workers: processes rendering in parallel (default: min(cpu count, 8); 1 renders in
      this process). The output is byte-identical for any value. Workers are started
      with "spawn", so a calling script must guard its entry point with
      ``if __name__ == "__main__":`` (absl's ``app.run`` idiom does).

  Resumable: WAVs already on disk from a run with the same seed, sample rate and version
  (recorded in SYNTHCAPS_PARAMS.json) are kept if their header matches; CSV and JSONL of a
  split are written atomically when the split is done; SYNTHCAPS_DONE.json is written last.

  Returns:
    summary dict: out_dir, sizes, seed, sample_rate, version, num_sources, rendered and
    reused counts per split, seconds.
  """
  from tqdm.auto import tqdm

  sizes = {k: int(v) for k, v in (DEFAULT_SIZES if sizes is None else sizes).items()}
  for split, n in sizes.items():
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r} in sizes; expected keys among {', '.join(SPLITS)}")
    if int(n) < 0:
      raise ValueError(f"sizes[{split!r}] must be >= 0, got {n}")
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be positive, got {sample_rate}")
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  marker = out / MARKER
  if marker.exists():
    marker.unlink()
  params = _params(seed, sample_rate)
  params_path = out / PARAMS
  trust = False
  if params_path.is_file():
    try:
      trust = json.loads(params_path.read_text()) == params
    except (OSError, ValueError):
      trust = False
  _write_atomic(params_path, json.dumps(params, sort_keys=True) + "\n")

  soundfont_path()  # fail early, with a clear message, if the SoundFont is missing
  if workers is None:
    workers = min(os.cpu_count() or 1, 8)
  pool = None
  if workers > 1:
    import multiprocessing as mp

    pool = ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn"))
  rendered: dict[str, int] = {}
  reused: dict[str, int] = {}
  try:
    for split in SPLITS:
      if split not in sizes:
        continue
      n = int(sizes[split])
      audio_dir = out / split
      audio_dir.mkdir(exist_ok=True)
      jobs = [(seed, split, i, sample_rate, str(audio_dir), trust) for i in range(n)]
      results: list[Any] = [None] * n
      it = map(_clip_job, jobs) if pool is None else pool.map(_clip_job, jobs, chunksize=16)
      n_new = 0
      for index, plan, captions, new in tqdm(
        it, total=n, desc=f"SynthCaps {split}", disable=not progress
      ):
        results[index] = (plan, captions)
        n_new += int(new)
      rendered[split], reused[split] = n_new, n - n_new
      buf = io.StringIO()
      w = csv.writer(buf)
      w.writerow(["file_name"] + [f"caption_{k + 1}" for k in range(N_CAPTIONS)])
      meta_lines = []
      for i, (plan, captions) in enumerate(results):
        fn = _file_name(split, i)
        w.writerow([fn] + captions)
        meta_lines.append(json.dumps(_metadata_record(fn, plan), ensure_ascii=False))
      _write_atomic(out / f"clotho_captions_{split}.csv", buf.getvalue())
      _write_atomic(
        out / f"synthcaps_metadata_{split}.jsonl", "".join(m + "\n" for m in meta_lines)
      )
  finally:
    if pool is not None:
      pool.shutdown()
  summary = {
    "out_dir": str(out),
    "sizes": sizes,
    "seed": int(seed),
    "sample_rate": int(sample_rate),
    "version": VERSION,
    "num_sources": len(SOURCES),
    "rendered": rendered,
    "reused": reused,
    "seconds": round(time.perf_counter() - t0, 2),
  }
  _write_atomic(marker, json.dumps({"sizes": sizes, **params}, sort_keys=True) + "\n")
  return summary


class ForeignDirectoryError(ValueError):
  """SynthCaps would be rendered into a folder that holds something else (one-line message)."""


# Files that mark a folder as a SynthCaps rendering: the finished marker, or the parameters
# file generate_synthcaps writes (atomically, through its .tmp) before anything else, so an
# interrupted rendering is still recognised and resumed.
_OWN_FILES = (MARKER, PARAMS, PARAMS + ".tmp")


def check_synthcaps_dir(out_dir: str | os.PathLike) -> None:
  """Raises ForeignDirectoryError unless SynthCaps may be rendered into ``out_dir``: it does
  not exist, is an empty folder, or holds a SynthCaps rendering (finished or interrupted).
  Reads only; writes nothing."""
  out = Path(out_dir)
  if not out.exists() and not out.is_symlink():
    return
  if not out.is_dir():
    raise ForeignDirectoryError(
      f"refusing to render SynthCaps into {out}: it exists and is not a folder"
    )
  if any((out / name).exists() for name in _OWN_FILES):
    return
  if next(out.iterdir(), None) is not None:
    raise ForeignDirectoryError(
      f"refusing to render SynthCaps into {out}: the folder is not empty and holds no "
      f"SynthCaps (no {MARKER}); give a new or empty folder, or the --dataset it holds"
    )


def ensure_synthcaps(
  out_dir: str | os.PathLike,
  sizes: dict[str, int] | None = None,
  seed: int = 0,
  sample_rate: int = 32000,
  progress: bool = True,
  workers: int | None = None,
) -> Path:
  """Return ``Path(out_dir)``, generating SynthCaps first unless SYNTHCAPS_DONE.json matches
  (sizes, seed, sample_rate, version).

  Raises:
    ForeignDirectoryError (a ValueError): ``out_dir`` is not empty and holds no SynthCaps
      (see check_synthcaps_dir); nothing is written then.
  """
  out = Path(out_dir)
  check_synthcaps_dir(out)
  sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
  want = {"sizes": {k: int(v) for k, v in sizes.items()}, **_params(seed, sample_rate)}
  marker = out / MARKER
  if marker.is_file():
    try:
      have = json.loads(marker.read_text())
    except (OSError, ValueError):
      have = None
    if have == want:
      return out
  generate_synthcaps(
    out, sizes, seed=seed, sample_rate=sample_rate, progress=progress, workers=workers
  )
  return out


def source_labels(metadata_jsonl_path: str | os.PathLike) -> list[list[str]]:
  """Per clip (file order), the list of its source names (labels for zero-shot evaluation)."""
  labels = []
  with open(metadata_jsonl_path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        labels.append(list(json.loads(line)["sources"]))
  return labels
