"""The SynthCaps source table: every sound source a clip may hold, with the General-MIDI
program or drum-kit key that renders it and the words that describe it (see
:class:`mltm_jax.synthcaps.source_spec.Source`).

SOURCE_SPECS: every source, in a fixed order (the planner draws them by index, so the order
is part of the dataset); SOURCES: their names; SOURCE_BY_NAME: name -> Source.
"""

from __future__ import annotations

from mltm_jax.synthcaps.source_spec import H, L, M, Source, Verb
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
  nouns = tuple((n, "sg") if isinstance(n, str) else n for n in nouns)
  if agents is None:
    agents = ["someone plays {the}", "a person plays {a}", "a musician plays {a}"]
    if player:
      agents.append(f"{indefinite(player)} plays")
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
  """A drum-kit Source (channel 10): one GM key, or {register: key}; a str noun is singular,
  and the default hit noun is "<first noun> hit(s)"."""
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
SOURCE_BY_NAME = {s.name: s for s in SOURCE_SPECS}
