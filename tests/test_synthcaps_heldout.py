"""SynthCaps' held-out split: source pairs and wording the other splits never use."""

from __future__ import annotations

import csv
import itertools
import json
import re

import pytest

from mltm_jax import synthcaps as sc
from mltm_jax.config import parse_synthcaps_sizes
from mltm_jax.data.clotho import read_clotho_split
from mltm_jax.synthcaps.captions import _OVERLAP, _SEQUENCE, TEMPLATE_MARKERS

SR = 8000
SEEN_SPLITS = ("development", "validation", "evaluation")
RESERVED = re.compile(
  r"(?<![\w-])("
  + "|".join(re.escape(p) for p in sorted(sc.RESERVED_PHRASES, key=len, reverse=True))
  + r")(?![\w-])",
  re.IGNORECASE,
)
# Relation words of held-out captions (the seen ones are checked in tests/test_synthcaps.py).
HELD_SEQUENCE = r"\b(later|next|subsequently|succeeded by|lastly)\b"
HELD_OVERLAP = r"\b(simultaneously|meanwhile|overlap|joined by|combined with)\b"


def _clips(split: str, n: int, seed: int = 5):
  held = split == sc.HELDOUT_SPLIT
  for i in range(n):
    rng = sc.clip_rng(seed, split, i)
    plan = sc.plan_clip(rng, SR, held_out=held)
    yield plan, sc.make_captions(rng, plan, held_out=held)


@pytest.fixture(scope="module")
def seen():
  """Plans and captions of 900 clips of the three ordinary splits."""
  return [c for split in SEEN_SPLITS for c in _clips(split, 300)]


@pytest.fixture(scope="module")
def held():
  return list(_clips(sc.HELDOUT_SPLIT, 300))


def test_reserved_pairs_are_a_fixed_sixth_spread_over_the_sources():
  names = sorted(sc.SOURCES)
  pairs = list(itertools.combinations(names, 2))
  assert list(sc.RESERVED_PAIRS) == [p for p in pairs if sc.is_reserved_pair(*p)]
  assert 0.12 <= len(sc.RESERVED_PAIRS) / len(pairs) <= 0.22
  assert all(sc.is_reserved_pair(b, a) for a, b in sc.RESERVED_PAIRS)  # unordered
  per_source = {n: sum(n in p for p in sc.RESERVED_PAIRS) for n in names}
  assert min(per_source.values()) >= 1, per_source  # every source appears in held-out clips


def test_no_source_combination_of_the_held_out_split_occurs_elsewhere(seen, held):
  seen_sets = set()
  for plan, _ in seen:
    assert not sc.has_reserved_pair(plan["sources"]), plan["sources"]
    seen_sets.add(frozenset(plan["sources"]))
  counts = {2: 0, 3: 0}
  for plan, _ in held:
    assert sc.has_reserved_pair(plan["sources"]) and len(set(plan["sources"])) == len(
      plan["sources"]
    )
    assert frozenset(plan["sources"]) not in seen_sets
    counts[len(plan["sources"])] += 1
  assert min(counts.values()) > 50, counts  # both 2- and 3-event clips


def test_reserved_wording_only_in_held_out_captions(seen, held):
  for _, caps in seen:
    for c in caps:
      m = RESERVED.search(c)
      assert m is None, (m and m.group(0), c)
  for plan, caps in held:
    assert len(set(caps)) == 5
    for c in caps:
      assert RESERVED.search(c), c
      if len(plan["events"]) == 2:  # the relation is still told, in held-out words
        low = c.lower()
        if plan["relations"] == ["sequential"]:
          assert re.search(HELD_SEQUENCE, low) and not re.search(HELD_OVERLAP, low), c
        else:
          assert re.search(HELD_OVERLAP, low) and not re.search(HELD_SEQUENCE, low), c


def test_every_held_out_template_is_marked_and_no_seen_one_is():
  marker = re.compile("|".join(re.escape(m) for m in TEMPLATE_MARKERS))
  for alt in [*_OVERLAP.values(), *_SEQUENCE.values()]:
    assert not any(marker.search(t) for t in alt.seen), alt.seen
    assert all(marker.search(t) for t in alt.held), alt.held


def test_held_out_clip_depends_only_on_seed_and_index():
  a = list(_clips(sc.HELDOUT_SPLIT, 5, seed=9))
  b = list(_clips(sc.HELDOUT_SPLIT, 5, seed=9))
  c = list(_clips(sc.HELDOUT_SPLIT, 5, seed=10))
  assert a == b and a != c


def test_sizes_flag_takes_an_optional_held_out_size():
  assert parse_synthcaps_sizes("10,2,3") == {"development": 10, "validation": 2, "evaluation": 3}
  assert parse_synthcaps_sizes("10,2,3,0") == {"development": 10, "validation": 2, "evaluation": 3}
  assert parse_synthcaps_sizes("10,2,3,4")["heldout"] == 4
  for bad in ("10,2", "10,2,3,4,5", "0,2,3", "10,2,3,-1", "a,b,c"):
    with pytest.raises(ValueError, match="train,val,test"):
      parse_synthcaps_sizes(bad)


@pytest.mark.slow  # renders
def test_held_out_split_in_the_clotho_layout(tmp_path):
  sizes = {"development": 2, "validation": 1, "evaluation": 1, "heldout": 3}
  sc.generate_synthcaps(tmp_path, sizes, seed=1, sample_rate=SR, progress=False, workers=1)
  with open(tmp_path / "clotho_captions_heldout.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  assert rows[0][0] == "file_name" and len(rows) == 4
  meta = [
    json.loads(line)
    for line in (tmp_path / "synthcaps_metadata_heldout.jsonl").read_text().splitlines()
  ]
  assert [m["file_name"] for m in meta] == [r[0] for r in rows[1:]]
  assert all(sc.has_reserved_pair(m["sources"]) for m in meta)
  items, skipped = read_clotho_split(tmp_path, "heldout")
  assert skipped == [] and [it.file_name for it in items] == [r[0] for r in rows[1:]]
  assert all(it.path.parent == tmp_path / "heldout" for it in items)
  marker = json.loads((tmp_path / sc.MARKER).read_text())
  assert marker["sizes"] == sizes and marker["version"] == sc.VERSION
