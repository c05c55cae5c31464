"""The SynthCaps source table: every sound source a clip may hold, with the General-MIDI
program or drum-kit key that renders it and the words that describe it (see
:class:`mltm_jax.synthcaps.source_spec.Source`).

SOURCE_SPECS: every source, in a fixed order (the planner draws them by index, so the order
is part of the dataset); SOURCES: their names; SOURCE_BY_NAME: name -> Source.
"""

from __future__ import annotations

from typing import NamedTuple

from mltm_jax.synthcaps.source_spec import H, L, M, Noun, Source, Verb
from mltm_jax.synthcaps.words import indefinite

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


def _nouns(nouns) -> tuple[Noun, ...]:
  """Noun phrases as (text, number) pairs; a str is singular."""
  return tuple((n, "sg") if isinstance(n, str) else n for n in nouns)


def _plurals(names) -> tuple[tuple[str, str], ...]:
  """(singular, plural) pairs; a str takes its plural in -s."""
  return tuple((n, n + "s") if isinstance(n, str) else n for n in names)


class _Hits(NamedTuple):
  """Timing of a sound heard as separate hits, in seconds (the Source fields of these names)."""

  note_len: float
  ioi_count: tuple[float, float]
  ioi_rep: tuple[float, float] = (0.14, 0.26)


def _source(name, kind, program, drum, nouns, verbs, agents, hits=None, **fields) -> Source:
  """The Source of the builders below: nouns through :func:`_nouns`, word lists as tuples,
  ``hits`` (a :class:`_Hits`, or None for the defaults) spread into the timing fields."""
  timing = {} if hits is None else hits._asdict()
  nouns, verbs, agents = _nouns(nouns), tuple(verbs), tuple(agents)
  return Source(name, kind, program, drum, nouns, verbs, agents, **timing, **fields)


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
  """A melodic Source (GM ``program``, allowed ``registers``); a str noun is singular, and the
  default agents name ``player`` when given."""
  if agents is None:
    agents = ["someone plays {the}", "a person plays {a}", "a musician plays {a}"]
    if player:
      agents.append(f"{indefinite(player)} plays")
  kw = {} if heads is None else {"heads": heads}
  return _source(
    name,
    "melodic",
    program,
    False,
    nouns,
    verbs,
    agents,
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
  """A drum-kit Source (channel 10): one GM key, or {register: key}; a str noun is singular,
  a str hit noun takes -s, and the default hit noun is "<first noun> hit(s)". ``hits``: its
  :class:`_Hits` timing (default: the Source defaults)."""
  nouns = _nouns(nouns)
  if hit_nouns is None:
    hit_nouns = [f"{nouns[0][0]} hit"]
  regs = key_or_registers if isinstance(key_or_registers, dict) else {}
  pitch = key_or_registers if isinstance(key_or_registers, int) else 60
  return _source(
    name,
    "hits",
    0,
    True,
    nouns,
    verbs,
    agents,
    registers=tuple(sorted(regs.items())),
    pitch=pitch,
    low=low,
    hit_nouns=_plurals(hit_nouns),
    participles=tuple(participles),
    **kw,
  )


def _effect(
  name, program, nouns, verbs, agents=(), hits=None, hit_nouns=(), sound_nouns=(), **kw
) -> Source:
  """A Source of GM ``program`` outside the drum kit (pitched percussion, sound effects). With
  ``hits`` (a :class:`_Hits`) it is heard as separate hits (kind "hits"), without it as one
  continuous sound (kind "continuous"); a str noun is singular, a str hit noun takes -s."""
  kind = "continuous" if hits is None else "hits"
  words = {"hit_nouns": _plurals(hit_nouns), "sound_nouns": _nouns(sound_nouns)}
  return _source(name, kind, program, False, nouns, verbs, agents, hits, **words, **kw)


_STRUCK_TAIL = 1.0  # the decay of struck and plucked instruments (s)

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
  _effect(
    "bell",
    14,
    ["bell", "church bell", ("chimes", "pl")],
    (("rings", "ring"), ("chimes", "chime"), ("tolls", "toll")),
    ("someone rings {a}", "someone strikes {the}"),
    registers=((H, 74), (L, 50), (M, 62)),
    hits=_Hits(0.8, (0.8, 1.2), (0.3, 0.45)),
    tail=2.0,
    hit_nouns=["bell chime", "bell toll"],
    participles=("ringing", "chiming"),
  ),
  _effect(
    "timpani",
    47,
    ["timpani", "kettle drum", "kettledrum"],
    _HIT,
    _HIT_AGENTS,
    registers=((L, 43), (M, 55)),
    hits=_Hits(0.5, (0.5, 0.8), (0.11, 0.18)),
    tail=1.5,
    hit_nouns=["timpani hit", "timpani stroke"],
    participles=_HIT_PART,
  ),
  # ---- drum kit (channel 10, GM key numbers) ----
  _drum(
    "kick drum",
    36,
    ["kick drum", "bass drum"],
    low=True,
    verbs=_HIT + (("thumps", "thump"),),
    hit_nouns=["kick drum hit", "kick drum thump"],
  ),
  _drum("snare drum", 38, ["snare drum", "snare"]),
  _drum(
    "hand clap",
    39,
    [("pair of hands", "sg")],
    verbs=(("claps", "clap"),),
    agents=("someone claps", "a person claps", "someone claps their hands"),
    hit_nouns=["hand clap", "clap"],
    participles=("clapping",),
    adj_subject=False,
  ),
  _drum("hi-hat", 42, ["hi-hat", "hi-hat cymbal"], hit_nouns=["hi-hat hit", "hi-hat tick"]),
  _drum(
    "crash cymbal",
    49,
    ["crash cymbal"],
    hits=_Hits(0.1, (0.6, 0.9), (0.25, 0.4)),
    tail=2.0,
    verbs=_HIT + (("crashes", "crash"),),
    hit_nouns=[("cymbal crash", "cymbal crashes")],
  ),
  _drum(
    "ride cymbal",
    51,
    ["ride cymbal"],
    hits=_Hits(0.1, (0.4, 0.6), (0.16, 0.28)),
    tail=1.5,
    verbs=_HIT + (("rings", "ring"),),
  ),
  _drum("tom drum", {L: 41, M: 47, H: 50}, ["tom drum", "tom-tom", "tom"]),
  _drum(
    "tambourine",
    54,
    ["tambourine"],
    verbs=_HIT + (("jingles", "jingle"), ("is shaken", "are shaken")),
    agents=("someone shakes {a}", "someone hits {the}", "a person shakes {the}"),
    hit_nouns=["tambourine jingle", "tambourine hit"],
    participles=("shaken", "jingling", "being shaken"),
  ),
  _drum(
    "cowbell",
    56,
    ["cowbell"],
    verbs=_HIT + (("clanks", "clank"),),
    hit_nouns=["cowbell hit", "cowbell clank"],
  ),
  _drum("bongo", {H: 60, L: 61}, ["bongo", "bongo drum", ("bongos", "pl")]),
  _drum("conga", {H: 63, L: 64}, ["conga", "conga drum", ("congas", "pl")]),
  _drum(
    "maracas",
    70,
    [("maracas", "pl"), "shaker"],
    verbs=(("is shaken", "are shaken"), ("rattles", "rattle")),
    agents=("someone shakes {the}", "a person shakes {a}"),
    hit_nouns=["maraca shake", "rattle"],
    participles=("shaken", "rattling"),
  ),
  _drum(
    "claves",
    75,
    [("claves", "pl"), "pair of claves"],
    verbs=(("clicks", "click"), ("is struck", "are struck")),
    agents=("someone clicks {the}", "someone strikes {the}", "a musician clicks {a}"),
    hit_nouns=["clave click", ("click of claves", "clicks of claves")],
    participles=("clicking", "struck", "being struck"),
  ),
  _drum(
    "wood block",
    {H: 76, L: 77},
    ["wood block", "woodblock"],
    verbs=_HIT + (("knocks", "knock"),),
    hit_nouns=["wood block knock", "wood block hit"],
  ),
  _drum(
    "triangle",
    81,
    ["triangle"],
    hits=_Hits(0.1, (0.5, 0.8), (0.16, 0.26)),
    tail=1.5,
    verbs=_HIT + (("rings", "ring"), ("dings", "ding")),
    agents=("someone strikes {a}", "someone hits {the}", "a musician rings {a}"),
    hit_nouns=["triangle ding", "triangle hit"],
  ),
  _drum("timbales", {H: 65, L: 66}, [("timbales", "pl"), "timbale"], hit_nouns=["timbale hit"]),
  _drum(
    "whistle",
    72,
    ["whistle"],
    hits=_Hits(0.4, (0.6, 0.9), (0.3, 0.45)),
    tail=0.3,
    verbs=(("blows", "blow"), ("shrills", "shrill")),
    agents=("someone blows {a}", "a referee blows {a}", "a person blows {the}"),
    hit_nouns=["whistle blow", ("blast of a whistle", "blasts of a whistle")],
    participles=("blowing", "being blown"),
  ),
  # ---- GM sound effects (programs 120-127) ----
  _effect(
    "guitar fret noise",
    120,
    ["guitar string", ("guitar strings", "pl")],
    (("squeaks", "squeak"), ("screeches", "screech")),
    ("someone slides a finger along {the}", "fingers squeak on {the}"),
    hits=_Hits(0.3, (0.5, 0.8), (0.3, 0.45)),
    hit_nouns=["guitar string squeak", "fret squeak"],
    participles=("squeaking",),
  ),
  _effect(
    "breathing",
    121,
    ["person"],
    (("breathes out", "breathe out"), ("exhales", "exhale")),
    ("someone breathes out", "a person exhales", "someone exhales"),
    hits=_Hits(0.6, (0.9, 1.2)),
    tail=0.3,
    counts=("once", "twice", "three times"),
    hit_nouns=["breath", "exhalation"],
    participles=("breathing out", "exhaling"),
    adj_subject=False,
  ),
  _effect(
    "ocean waves",
    122,
    [("ocean waves", "pl"), ("waves", "pl"), ("surf", "mass")],
    (("crashes", "crash"), ("washes ashore", "wash ashore"), ("rolls in", "roll in")),
    tail=1.0,
    sound_nouns=[
      ("ocean waves", "pl"),
      ("crashing waves", "pl"),
      ("sound of the sea", "def"),
      ("surf", "mass"),
    ],
    participles=("crashing", "washing ashore"),
  ),
  _effect(
    "bird",
    123,
    ["bird", "small bird", "songbird"],
    (("chirps", "chirp"), ("tweets", "tweet"), ("calls", "call")),
    registers=((M, 67), (H, 79)),
    hits=_Hits(0.35, (0.45, 0.7), (0.25, 0.4)),
    tail=0.3,
    hit_nouns=["bird chirp", "tweet", "chirp"],
    participles=("chirping", "tweeting"),
  ),
  _effect(
    "telephone",
    124,
    ["telephone", "phone", "landline phone"],
    (("rings", "ring"),),
    registers=((M, 60), (H, 72)),
    hits=_Hits(0.8, (1.1, 1.4), (0.45, 0.6)),
    tail=0.3,
    hit_nouns=["telephone ring", "phone ring"],
    participles=("ringing",),
  ),
  _effect(
    "helicopter",
    125,
    ["helicopter", "chopper"],
    (("hovers", "hover"), ("whirs", "whir"), ("drones", "drone")),
    tail=1.0,
    sound_nouns=[
      ("helicopter noise", "mass"),
      ("whir of a helicopter", "def"),
      ("helicopter blades", "pl"),
    ],
    participles=("hovering", "whirring"),
  ),
  _effect(
    "applause",
    126,
    ["audience", "crowd", ("people", "pl")],
    (("applauds", "applaud"), ("claps", "clap")),
    tail=0.6,
    sound_nouns=[("applause", "mass"), ("clapping", "mass"), "round of applause"],
    participles=("applauding", "clapping"),
    adj_subject=False,
  ),
  _effect(
    "gunshot",
    127,
    ["gun", "firearm"],
    (("fires", "fire"), ("goes off", "go off"), ("is fired", "are fired")),
    ("someone fires {a}", "someone shoots {a}", "a person fires {a}"),
    hits=_Hits(0.2, (0.5, 0.9), (0.1, 0.18)),
    tail=1.5,
    hit_nouns=["gunshot", "shot"],
    participles=("firing", "being fired"),
  ),
)

SOURCES: list[str] = [s.name for s in SOURCE_SPECS]
SOURCE_BY_NAME = {s.name: s for s in SOURCE_SPECS}
