"""The caption grammar: five distinct English captions per planned clip.

Each caption names every event's source and states a random subset of the attributes that
were actually rendered (register, tempo, count, loudness, duration), with varied templates and
synonyms; events are joined by words of their relation: sequence ("then", "followed by",
"after", ...) or overlap ("while", "along with", "at the same time", ...). The words are
drawn from the clip's own generator after its plan (:mod:`mltm_jax.synthcaps.events`), so
captions depend only on (seed, split, index).

Every table of phrasings (here and in :mod:`mltm_jax.synthcaps.attribute_words`) is an
:class:`Alt`: ``seen`` phrasings for the development, validation and evaluation splits,
``held`` ones (possibly none) reserved for the held-out split
(:mod:`mltm_jax.synthcaps.heldout`), which uses only those wherever there are any.
:data:`RESERVED_PHRASES` lists every reserved phrasing.
"""

from __future__ import annotations

import string
from typing import Iterable, Sequence

import numpy as np

from mltm_jax.synthcaps.attribute_words import (
  Alt,
  COUNT_ADV,
  COUNT_DET,
  DUR_ADJ,
  DUR_ADJ_CONT,
  DUR_ADV,
  LOUD_ADJ,
  LOUD_ADJ_SUBJ,
  LOUD_ADV,
  QUIET_ADJ,
  QUIET_ADJ_SUBJ,
  QUIET_ADV,
  REG_ADJ,
  REG_ADV,
  TEMPO_ADJ,
  TEMPO_ADV,
  all_alts,
  extend,
  pick,
)
from mltm_jax.synthcaps.source_spec import L
from mltm_jax.synthcaps.sources import SOURCE_BY_NAME
from mltm_jax.synthcaps.words import choice, join_adjs, join_advs, with_article

N_CAPTIONS = 5


def _loud_adj(rng, ev, src, held_out: bool, subject: bool = False) -> str:
  if subject:
    return pick(rng, LOUD_ADJ_SUBJ if ev["loudness"] == "loud" else QUIET_ADJ_SUBJ, held_out)
  if ev["loudness"] == "loud":
    low = src.low or ev["register"] == L
    return pick(rng, extend(LOUD_ADJ, ("booming",) if low else ()), held_out)
  return pick(rng, extend(QUIET_ADJ, ("light",) if src.kind == "hits" else ()), held_out)


def _loud_subject_adj(rng, ev, src, held_out: bool) -> str:
  return _loud_adj(rng, ev, src, held_out, subject=True)


def _loud_adv(rng, ev, src, held_out: bool) -> str:
  drum_hits = src.kind == "hits" and src.drum
  if ev["loudness"] == "loud":
    return pick(rng, extend(LOUD_ADV, ("hard",) if drum_hits else ()), held_out)
  return pick(rng, extend(QUIET_ADV, ("lightly",) if drum_hits else ()), held_out)


def _mentionable(ev) -> list[str]:
  return [
    a for a in ("loudness", "register", "tempo", "count", "duration") if ev.get(a) is not None
  ]


class _Phrases:
  """Clause and noun-phrase realisations of one event for one caption."""

  def __init__(self, rng, ev: dict, mention: Iterable[str], held_out: bool):
    # a sorted tuple: iterating a set of str would depend on the per-process hash seed
    self.rng, self.ev, self.mention = rng, ev, tuple(sorted(mention))
    self.held_out = held_out
    self.src = SOURCE_BY_NAME[ev["source"]]

  def _words(self, attrs: Iterable[str], loud, tables: dict) -> list[tuple[str, str]]:
    """(attribute, word) for each attribute of ``attrs``, in order: loudness -> ``loud(rng,
    ev, src, held_out)``, another attribute ``a`` -> a pick among ``tables[a][ev[a]]``;
    attributes with neither are passed over. One draw per word, in the order of ``attrs``."""
    rng, ev, src, held = self.rng, self.ev, self.src, self.held_out
    out = []
    for a in attrs:
      if a == "loudness":
        out.append((a, loud(rng, ev, src, held)))
      elif a in tables:
        out.append((a, pick(rng, tables[a][ev[a]], held)))
    return out

  # adverbials for the attributes in ``attrs`` (count first for hits)
  def _advs(self, attrs: Iterable[str]) -> str:
    tables = {"register": REG_ADV, "tempo": TEMPO_ADV, "duration": DUR_ADV, "count": COUNT_ADV}
    words = self._words(attrs, _loud_adv, tables)
    first = next((w for a, w in words if a == "count"), None)
    return join_advs(self.rng, [w for a, w in words if a != "count"], first)

  def _subject(self, adj_attrs: Sequence[str]) -> tuple[str, str]:
    """(noun phrase, number) naming the source, with adjectives for ``adj_attrs``."""
    text, number = choice(self.rng, self.src.nouns)
    tables = {"register": REG_ADJ, "duration": DUR_ADJ_CONT}
    adjs = [w for _, w in self._words(adj_attrs, _loud_subject_adj, tables)]
    return with_article(self.rng, text, number, adjs), number

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
    form = choice(rng, forms)
    if form == "subject":
      adjectival = ("loudness", "register") if src.kind == "hits" else ("loudness",)
      adj, adv = self._split(adjectival if src.adj_subject else ())
      subj, number = self._subject(adj)
      verb = choice(rng, src.verbs)[0 if number in ("sg", "mass", "def") else 1]
      return " ".join(x for x in (subj, verb, self._advs(adv)) if x)
    if form == "agent":
      text, number = choice(rng, src.nouns)
      reg_adj = []
      adv = sorted(self.mention)
      if src.kind == "hits" and "register" in self.mention and rng.random() < 0.5:
        reg_adj = [pick(rng, REG_ADJ[ev["register"]], self.held_out)]
        adv = [a for a in adv if a != "register"]
      a = with_article(rng, text, number, reg_adj)
      the = with_article(rng, text, number, reg_adj, definite=True)
      agent = choice(rng, src.agents).format(a=a, the=the)
      return " ".join(x for x in (agent, self._advs(adv)) if x)
    # melodic "plays <adjs> notes" forms
    adj, adv = self._split(("loudness", "register", "tempo", "duration"), max_adj=2)
    obj = self._head(adj, with_source=False)
    text, number = choice(rng, src.nouns)
    if src.agents and src.name != "choir" and rng.random() < 0.5:
      who = choice(rng, ("someone", "a person", "a musician"))
      core = f"{who} plays {obj} on {with_article(rng, text, number, definite=True)}"
    else:
      verb = ("sings", "sing") if src.name == "choir" else ("plays", "play")
      core = f"{with_article(rng, text, number)} {verb[0 if number != 'pl' else 1]} {obj}"
    return " ".join(x for x in (core, self._advs(adv)) if x)

  def _head(self, adj_attrs: Sequence[str], with_source: bool) -> str:
    """Melodic: "<adjs> [source] melody|notes|music" with an article where needed."""
    rng, src = self.rng, self.src
    head, number = choice(rng, src.heads)
    tables = {"register": REG_ADJ, "tempo": TEMPO_ADJ, "duration": DUR_ADJ}
    adjs = [w for _, w in self._words(adj_attrs, _loud_adj, tables)]
    if with_source:
      noun = choice(rng, [n for n, num in src.nouns if num == "sg"] or [src.name])
      head = f"{noun} {head}"
    return with_article(rng, head, number, adjs)

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
    form = choice(rng, forms)
    if form == "head":
      adj, adv = self._split(("loudness", "register", "tempo", "duration"), max_adj=2)
      np_ = self._head(adj, with_source=True)
      plural = not np_.startswith(("a ", "an ")) and np_.endswith("notes")
      if adv:
        np_ += " " + choice(rng, src.head_participles) + " " + self._advs(adv)
      return np_, plural
    if form == "hits":
      count = ev["count"]
      sg, pl = choice(rng, src.hit_nouns)
      mention = set(self.mention) | {"count"}
      attrs = [a for a in ("loudness", "register") if a in mention]
      adjs = [w for _, w in self._words(attrs, _loud_adj, {"register": REG_ADJ})]
      mention -= {"loudness", "register"}
      det = pick(rng, COUNT_DET[count], self.held_out)
      noun = sg if count == "once" else pl
      body = " ".join([det] + ([join_adjs(rng, adjs)] if adjs else []) + [noun])
      plural = count != "once" and not det.startswith("a ")
      rest = [a for a in sorted(mention) if a != "count"]
      if rest:
        body += " " + self._advs(rest)  # e.g. "... in a high register"
      return body, plural
    if form == "sound":
      text, number = choice(rng, src.sound_nouns)
      # continuous sources: loudness and duration are all they state
      tables = {"duration": DUR_ADJ_CONT}
      adjs = [w for _, w in self._words(sorted(self.mention), _loud_adj, tables)]
      return with_article(rng, text, number, adjs), number == "pl"
    # participle: "a violin played quickly", "a bell ringing twice"
    adjectival = ("loudness",) + (("register",) if src.kind == "hits" else ())
    adj, adv = self._split(adjectival if src.adj_subject else ())
    subj, number = self._subject(adj)
    parts = src.participles
    if not adv:  # a bare past participle ("a cello played") does not stand alone
      parts = tuple(p for p in parts if p.endswith("ing") or p.startswith("being"))
    part = choice(rng, parts) if parts else ""
    body = " ".join(x for x in (subj, part, self._advs(adv)) if x)
    if rng.random() < 0.3:
      return "the sound of " + body, False
    return body, number == "pl"


def _is(plural: bool) -> str:
  return "are" if plural else "is"


def _finish(text: str) -> str:
  text = " ".join(text.replace(" ,", ",").split()).replace("for a while while", "for a while as")
  return text[:1].upper() + text[1:] + "."


def _fill(template: str, parts: dict, clause, noun_phrase) -> str:
  """``template`` with its fields realised left to right, each when it is reached (the words
  draw from the clip's generator, so their order is part of the dataset): ``{x}`` is
  ``clause(parts[x])``, ``{x:np}`` the text of ``noun_phrase(parts[x])`` (a (text, plural)
  pair, realised once per ``x``) and ``{x:is}`` "is" or "are" agreeing with it."""
  out: list[str] = []
  nps: dict[str, tuple[str, bool]] = {}
  for literal, key, spec, _ in string.Formatter().parse(template):
    out.append(literal)
    if key is None:
      continue
    if spec in ("np", "is"):
      if key not in nps:
        nps[key] = noun_phrase(parts[key])
      text, plural = nps[key]
      out.append(text if spec == "np" else _is(plural))
    else:
      out.append(clause(parts[key]))
  return "".join(out)


# Events that overlap, told in one clause (templates of :func:`_fill`; a, b, c: the events).
_OVERLAP = {
  2: Alt(
    (
      "{a} while {b}",
      "{b} while {a}",
      "while {a}, {b}",
      "{a} along with {b:np}",
      "{a}, accompanied by {b:np}",
      "{a} over {b:np}",
      "{a} as {b}",
      "{a:np} and {b:np} can be heard at the same time",
    ),
    (
      "{a}, and simultaneously {b}",
      "{a}; meanwhile, {b}",
      "{a:np} and {b:np} overlap",
      "{a}, joined by {b:np}",
    ),
  ),
  3: Alt(
    (
      "{a} while {b:np} and {c:np} can be heard",
      "{a} along with {b:np} and {c:np}",
      "{a:np}, {b:np} and {c:np} can be heard together",
      "{a} while {b}, along with {c:np}",
    ),
    (
      "{a}; meanwhile, {b:np} and {c:np} overlap",
      "{a:np}, {b:np} and {c:np} overlap",
      "{a}, joined by {b:np} and {c:np}",
      "{a}, and simultaneously {b}, joined by {c:np}",
    ),
  ),
}
# A caption by number of groups (g1, g2, g3: the groups in time order). One group of one
# event is told as its clause six times in ten (held-out clips always have two or more
# events); the last _TWO_SIMPLE_ONLY seen forms of two groups are used only when each group
# is one event.
_SEQUENCE = {
  1: Alt(
    ("{g1}",) * 6
    + (
      "{g1:np} can be heard",
      "{g1:np} {g1:is} heard",
      "there {g1:is} {g1:np}",
      "{g1:np} {g1:is} audible",
    )
  ),
  2: Alt(
    (
      "{g1}, then {g2}",
      "{g1}, and then {g2}",
      "{g1}, followed by {g2:np}",
      "first {g1}, then {g2}",
      "{g1:np} {g1:is} followed by {g2:np}",
      "{g1}, and afterwards {g2}",
      "{g1}, and after that {g2}",
      "{g1} and then {g2:np} can be heard",
      "after {g1}, {g2}",
      "{g2} after {g1}",
      "{g1} before {g2}",
    ),
    (
      "{g1}; later, {g2}",
      "{g1}, and subsequently {g2}",
      "{g1:np} {g1:is} succeeded by {g2:np}",
      "{g1}; next, {g2}",
      "{g1}, and later on {g2:np} {g2:is} heard",
    ),
  ),
  3: Alt(
    (
      "{g1}, then {g2}, and finally {g3}",
      "first {g1}, then {g2}, and then {g3}",
      "{g1}, followed by {g2:np} and then {g3:np}",
      "{g1}, then {g2}, followed by {g3:np}",
      "after {g1}, {g2}, and then {g3}",
      "{g1} before {g2}, and then {g3}",
    ),
    (
      "{g1}; later, {g2}; lastly, {g3}",
      "{g1}, subsequently {g2}, and lastly {g3}",
      "{g1:np} {g1:is} succeeded by {g2:np} and later by {g3:np}",
      "{g1}; next, {g2}; lastly, {g3}",
    ),
  ),
}
_TWO_SIMPLE_ONLY = 3
# Noun phrases of overlapping events: "{x} ... {y}" (2 events), "{x} ... {y} and {z}" (3).
_TOGETHER = Alt((" along with ", " together with "), (" combined with ",))

# Words that mark a held-out sentence template (none occurs in the other splits' captions).
TEMPLATE_MARKERS = (
  "simultaneously",
  "meanwhile",
  "overlap",
  "joined by",
  "later",
  "subsequently",
  "succeeded by",
  "next",
  "lastly",
  "combined with",
)


def _caption(rng, plan: dict, held_out: bool) -> str:
  """One caption of ``plan``: events linked by overlap form a group; groups are told in time
  order."""
  events = plan["events"]
  n = len(events)
  # how many attributes each event's description states
  k_probs = {1: (0.0, 0.2, 0.45, 0.35), 2: (0.15, 0.55, 0.3, 0.0), 3: (0.35, 0.55, 0.1, 0.0)}[n]
  phrases = []
  for ev in events:
    attrs = _mentionable(ev)
    k = min(int(rng.choice(4, p=k_probs)), len(attrs))
    mention = {attrs[int(i)] for i in rng.permutation(len(attrs))[:k]}
    phrases.append(_Phrases(rng, ev, mention, held_out))

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
    parts = dict(zip("abc", g))
    template = pick(rng, _OVERLAP[len(g)], held_out)
    return _fill(template, parts, _Phrases.clause, _Phrases.noun_phrase)

  def g_np(g: list[_Phrases]) -> tuple[str, bool]:
    if len(g) == 1:
      return g[0].noun_phrase()
    nps = [p.noun_phrase() for p in g]
    if len(g) == 2:
      forms = len(_TOGETHER.held if held_out else _TOGETHER.seen) + 1
      form = int(rng.integers(forms))
      if form == forms - 1:
        at_once = " simultaneously" if held_out else " at the same time"
        return f"{nps[0][0]} and {nps[1][0]}{at_once}", True
      return f"{nps[0][0]}{pick(rng, _TOGETHER, held_out)}{nps[1][0]}", nps[0][1]
    link = _TOGETHER.held[0] if held_out else _TOGETHER.seen[0]
    return f"{nps[0][0]}{link}{nps[1][0]} and {nps[2][0]}", nps[0][1]

  if len(groups) == 1 and len(groups[0]) > 1:
    return _finish(g_clause(groups[0]))
  templates = _SEQUENCE[len(groups)]
  if not held_out and len(groups) == 2 and len(groups[0]) + len(groups[1]) > 2:
    templates = templates.seen[:-_TWO_SIMPLE_ONLY]
  parts = {f"g{k + 1}": g for k, g in enumerate(groups)}
  return _finish(_fill(pick(rng, templates, held_out), parts, g_clause, g_np))


# Every phrasing only held-out captions use: reserved words and template markers.
RESERVED_PHRASES: tuple[str, ...] = tuple(
  sorted(
    {
      phrase
      for table in (
        LOUD_ADJ,
        QUIET_ADJ,
        LOUD_ADV,
        QUIET_ADV,
        REG_ADJ,
        REG_ADV,
        TEMPO_ADJ,
        TEMPO_ADV,
        DUR_ADJ,
        DUR_ADJ_CONT,
        DUR_ADV,
        COUNT_ADV,
        COUNT_DET,
      )
      for alt in all_alts(table)
      for phrase in alt.held
    }
    | set(TEMPLATE_MARKERS)
  )
)


def make_captions(
  rng: np.random.Generator, plan: dict, n: int = N_CAPTIONS, held_out: bool = False
) -> list[str]:
  """``n`` distinct captions for ``plan`` (drawn from ``rng``); ``held_out``: in the wording
  reserved for the held-out split (:data:`RESERVED_PHRASES`)."""
  caps: list[str] = []
  for _ in range(500):
    c = _caption(rng, plan, held_out)
    if c not in caps:
      caps.append(c)
      if len(caps) == n:
        return caps
  raise RuntimeError(f"could not write {n} distinct captions for sources {plan['sources']}")
