"""Tests for mltm_jax.synthcaps: layout, determinism, resume, sources, and that captions
and audio agree (measured on the rendered waveforms, not read back from our metadata)."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from mltm_jax import synthcaps as sc
from mltm_jax.data.clotho import read_clotho_split

SR = 16000
SIZES = {"development": 6, "validation": 6, "evaluation": 6}
SPLITS = ("development", "validation", "evaluation")


def _gen(out: Path, seed: int = 0, sizes=SIZES, workers: int = 1) -> dict:
  return sc.generate_synthcaps(
    out, sizes, seed=seed, sample_rate=SR, progress=False, workers=workers
  )


def _files(root: Path) -> dict[str, bytes]:
  return {
    str(p.relative_to(root)): p.read_bytes()
    for p in sorted(root.rglob("*"))
    if p.is_file() and p.suffix in (".wav", ".csv", ".jsonl")
  }


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("synthcaps") / "seed0"
  _gen(out)
  return out


@pytest.fixture(scope="module")
def sf2() -> bytes:
  return sc.soundfont_path().read_bytes()


# ---------------------------------------------------------------- declared vocabulary


def test_sources_and_attribute_kinds_declared():
  assert len(sc.SOURCES) >= 36 and len(set(sc.SOURCES)) == len(sc.SOURCES)
  assert len(sc.ATTRIBUTE_KINDS) >= 4
  assert set(sc.RELATIONS) == {"sequential", "overlap"}
  specs = sc.SOURCE_SPECS
  assert {s.program for s in specs if not s.drum and s.program >= 120} == set(range(120, 128))
  assert sum(s.drum for s in specs) >= 8
  assert sum(s.kind == "melodic" for s in specs) >= 16
  for s in specs:
    assert s.kind in ("melodic", "hits", "continuous")
    assert s.nouns and s.verbs


def _canonical(src: sc.Source) -> dict:
  kw = {"loudness": "loud"}
  if src.kind == "melodic":
    kw.update(
      register="middle" if "middle" in src.registers else src.registers[0],
      tempo="slow",
      duration="short",
    )
  elif src.kind == "hits":
    kw.update(count="twice")
  else:
    kw.update(duration="short")
  return sc.single_event_plan(src.name, SR, **kw)


def test_sources_render_distinct_audio(sf2):
  """Each source renders non-silent audio, no two identical, and their average log-mel spectra
  (over active frames) differ clearly."""
  feats, waves = {}, {}
  for src in sc.SOURCE_SPECS:
    y = sc.render_clip(_canonical(src), SR, sf2)
    assert np.max(np.abs(y)) > 0.5, src.name
    m = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=1024, hop_length=160, n_mels=64)
    e = m.sum(0)
    lm = np.log(m[:, e > 1e-3 * e.max()] + 1e-8).mean(1)
    feats[src.name], waves[src.name] = lm - lm.mean(), y
  dmin = min(
    (np.sqrt(np.mean((feats[a] - feats[b]) ** 2)), a, b)
    for a, b in itertools.combinations(feats, 2)
  )
  assert dmin[0] > 0.5, dmin
  for a, b in itertools.combinations(waves, 2):
    assert waves[a].shape != waves[b].shape or not np.array_equal(waves[a], waves[b]), (a, b)


# ---------------------------------------------------------------- layout


def test_layout(ds):
  marker = json.loads((ds / "SYNTHCAPS_DONE.json").read_text())
  assert marker == {"sizes": SIZES, "seed": 0, "sample_rate": SR, "version": sc.VERSION}
  for split in SPLITS:
    with open(ds / f"clotho_captions_{split}.csv", newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
    assert rows[0] == ["file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5"]
    assert len(rows) == 1 + SIZES[split]
    meta = [
      json.loads(line)
      for line in (ds / f"synthcaps_metadata_{split}.jsonl").read_text().splitlines()
    ]
    assert [m["file_name"] for m in meta] == [r[0] for r in rows[1:]]
    for row, m in zip(rows[1:], meta):
      caps = row[1:]
      assert len(caps) == 5 and len(set(caps)) == 5 and all(c.strip() for c in caps)
      for c in caps:
        assert c[0].isupper() and c.endswith(".") and "  " not in c and 3 <= len(c.split()) <= 60
      path = ds / split / row[0]
      info = sf.info(str(path))
      assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
      assert 5.0 <= info.duration <= 10.0
      y, _ = sf.read(path, dtype="float32")
      peak = np.max(np.abs(y))
      assert 0.01 < peak <= 0.9  # not silent, never clipping (-1 dBFS max)
      assert abs(info.duration - m["duration"]) < 1e-3
      assert 1 <= len(m["sources"]) <= 3 and set(m["sources"]) <= set(sc.SOURCES)
      for ev in m["events"]:
        assert set(("source", "register", "tempo", "count", "loudness", "duration")) <= set(ev)
    assert sc.source_labels(ds / f"synthcaps_metadata_{split}.jsonl") == [
      m["sources"] for m in meta
    ]
    items, skipped = read_clotho_split(ds, split)
    assert skipped == [] and len(items) == SIZES[split]
    assert all(len(it.captions) == 5 for it in items)


def test_levels_and_timing_measured_on_audio(ds):
  """Peak is -1 dBFS when a loud event exists, lower when all are quiet; silence before the
  first event's start."""
  for split in SPLITS:
    for line in (ds / f"synthcaps_metadata_{split}.jsonl").read_text().splitlines():
      m = json.loads(line)
      y, _ = sf.read(ds / split / m["file_name"], dtype="float32")
      peak_db = 20 * np.log10(np.max(np.abs(y)))
      if any(ev["loudness"] == "loud" for ev in m["events"]):
        assert abs(peak_db - -1.0) < 0.2
      else:
        assert -22.0 < peak_db < -14.0
      first = min(ev["start"] for ev in m["events"])
      pre = y[: max(0, int((first - 0.02) * SR))]
      if pre.size:
        assert np.max(np.abs(pre)) < 1e-3


# ---------------------------------------------------------------- determinism and resume


def test_same_seed_identical_other_seed_differs(ds, tmp_path):
  again = tmp_path / "again"
  _gen(again)
  a, b = _files(ds), _files(again)
  assert len(a) == 3 * 2 + sum(SIZES.values())
  assert a == b
  other = tmp_path / "seed1"
  _gen(other, seed=1)
  c = _files(other)
  assert c.keys() == a.keys()
  assert c["clotho_captions_development.csv"] != a["clotho_captions_development.csv"]
  wavs = [k for k in a if k.endswith(".wav")]
  assert sum(a[k] == c[k] for k in wavs) == 0


def test_clip_depends_only_on_seed_split_index():
  p1 = sc.plan_clip(sc.clip_rng(3, "validation", 17), SR)
  _ = sc.plan_clip(sc.clip_rng(3, "validation", 16), SR)
  p2 = sc.plan_clip(sc.clip_rng(3, "validation", 17), SR)
  assert p1 == p2
  p3 = sc.plan_clip(sc.clip_rng(3, "evaluation", 17), SR)
  assert p3 != p1


def test_resume_rerenders_only_missing(ds, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(ds, copy)
  (copy / "validation" / "validation_00003.wav").unlink()
  (copy / "development" / "development_00001.wav").write_bytes(b"truncated")
  (copy / "SYNTHCAPS_DONE.json").unlink()
  summary = _gen(copy)
  assert summary["rendered"] == {"development": 1, "validation": 1, "evaluation": 0}
  assert _files(copy) == _files(ds)
  assert (copy / "SYNTHCAPS_DONE.json").read_text() == (ds / "SYNTHCAPS_DONE.json").read_text()


def test_other_params_do_not_reuse_files(ds, tmp_path):
  """Files left by a run with another seed are re-rendered, not trusted."""
  copy = tmp_path / "copy"
  shutil.copytree(ds, copy)
  summary = _gen(copy, seed=5, sizes={"development": 2})
  assert summary["rendered"] == {"development": 2}
  fresh = tmp_path / "fresh"
  _gen(fresh, seed=5, sizes={"development": 2})
  for name in ("development/development_00000.wav", "clotho_captions_development.csv"):
    assert (copy / name).read_bytes() == (fresh / name).read_bytes()


@pytest.mark.slow
def test_ensure_generates_only_when_needed(tmp_path, monkeypatch):
  out = tmp_path / "e"
  sizes = {"development": 2, "validation": 1, "evaluation": 1}
  assert sc.ensure_synthcaps(out, sizes, seed=0, sample_rate=SR, progress=False, workers=1) == out
  calls = []
  real = sc.generate_synthcaps
  spy = lambda *a, **k: calls.append(a) or real(*a, **k)
  monkeypatch.setattr(sc.writer, "generate_synthcaps", spy)  # what ensure_synthcaps calls
  sc.ensure_synthcaps(out, sizes, seed=0, sample_rate=SR, progress=False, workers=1)
  assert calls == []
  sc.ensure_synthcaps(
    out, {**sizes, "validation": 2}, seed=0, sample_rate=SR, progress=False, workers=1
  )
  assert len(calls) == 1
  with open(out / "clotho_captions_validation.csv") as f:
    assert len(list(csv.reader(f))) == 3


def test_parallel_workers_give_identical_files(ds, tmp_path):
  par = tmp_path / "par"
  sizes = {"development": 3, "evaluation": 2}
  _gen(par, sizes=sizes, workers=2)
  ser = tmp_path / "ser"
  _gen(ser, sizes=sizes, workers=1)
  assert _files(par) == _files(ser)
  assert (par / "development" / "development_00002.wav").read_bytes() == (
    ds / "development" / "development_00002.wav"
  ).read_bytes()


# ---------------------------------------------------------------- attributes are really rendered


def _onsets(y: np.ndarray, thresh_db: float = -12.0) -> int:
  hop = SR // 100
  env = np.sqrt(np.convolve(y**2, np.ones(hop) / hop, "same"))[::hop]
  db = 20 * np.log10(env / env.max() + 1e-12)
  above = db > thresh_db
  return int(above[0]) + int(np.sum(above[1:] & ~above[:-1]))


@pytest.mark.parametrize("source", ["snare drum", "cowbell", "wood block", "hand clap"])
@pytest.mark.parametrize("count,expected", [("once", 1), ("twice", 2), ("three times", 3)])
def test_hit_counts_audible(sf2, source, count, expected):
  y = sc.render_clip(sc.single_event_plan(source, SR, count=count), SR, sf2)
  assert _onsets(y) == expected


def test_repeatedly_means_many_hits(sf2):
  y = sc.render_clip(sc.single_event_plan("snare drum", SR, count="repeatedly"), SR, sf2)
  assert _onsets(y) >= 5


@pytest.mark.parametrize("source", ["organ", "piano", "marimba"])
def test_register_orders_pitch(sf2, source):
  f0 = {}
  for reg in ("low", "middle", "high"):
    plan = sc.single_event_plan(source, SR, register=reg, tempo="slow", duration="long")
    y = sc.render_clip(plan, SR, sf2)
    ev = plan["events"][0]
    seg = y[int(ev["start"] * SR) : int(ev["end"] * SR)]
    f0[reg] = np.median(librosa.yin(seg, fmin=60, fmax=2500, sr=SR, frame_length=2048))
  assert f0["low"] < f0["middle"] < f0["high"], f0
  assert librosa.hz_to_midi(f0["high"]) - librosa.hz_to_midi(f0["low"]) > 12


def _onset_count(y: np.ndarray, hop: int = 512) -> int:
  """librosa.onset.onset_detect's count (its default peak picking, written out in numpy:
  librosa's numba kernel for it crashed a CI worker, a segfault inside numba's gufunc call)."""
  x = librosa.onset.onset_strength(y=y, sr=SR, hop_length=hop)
  x = x - x.min()
  x = x / (x.max() + np.finfo(x.dtype).tiny)
  pre_max, post_max = int(0.03 * SR // hop), int(0.00 * SR // hop + 1)
  pre_avg, post_avg = int(0.10 * SR // hop), int(0.10 * SR // hop + 1)
  wait, delta = int(0.03 * SR // hop), 0.07
  count, n = 0, 0
  first = x[0] >= x[: min(post_max, len(x))].max()
  if first and x[0] >= x[: min(post_avg, len(x))].mean() + delta:
    count, n = 1, wait + 1
  else:
    n = 1
  while n < len(x):
    peak = x[n] == x[max(0, n - pre_max) : min(n + post_max, len(x))].max()
    peak = peak and x[n] >= x[max(0, n - pre_avg) : min(n + post_avg, len(x))].mean() + delta
    if peak:
      count += 1
      n += wait + 1
    else:
      n += 1
  return count


def test_tempo_and_duration_audible(sf2):
  fast = sc.render_clip(sc.single_event_plan("marimba", SR, tempo="fast", duration="long"), SR, sf2)
  slow = sc.render_clip(sc.single_event_plan("marimba", SR, tempo="slow", duration="long"), SR, sf2)
  onset_rate = {}
  for name, y in (("fast", fast), ("slow", slow)):
    onset_rate[name] = _onset_count(y)
  assert onset_rate["fast"] > 2 * onset_rate["slow"], onset_rate

  def active_seconds(y):
    hop = SR // 100
    env = np.sqrt(np.convolve(y**2, np.ones(hop) / hop, "same"))[::hop]
    return np.sum(env > env.max() * 10 ** (-30 / 20)) / 100

  short = sc.render_clip(sc.single_event_plan("organ", SR, duration="short"), SR, sf2)
  long = sc.render_clip(sc.single_event_plan("organ", SR, duration="long"), SR, sf2)
  assert active_seconds(long) > active_seconds(short) + 1.0


def test_loud_and_quiet_events_in_one_clip(sf2):
  a = sc.single_event_plan("piano", SR, loudness="loud", start=0.5)
  b = sc.single_event_plan("snare drum", SR, loudness="quiet", count="once", start=4.0)
  ev_a, ev_b = a["events"][0], b["events"][0]
  plan = {
    "duration": 6.0,
    "num_samples": 6 * SR,
    "events": [ev_a, ev_b],
    "relations": ["sequential"],
    "sources": ["piano", "snare drum"],
  }
  y = sc.render_clip(plan, SR, sf2)
  pa = np.max(np.abs(y[int(0.5 * SR) : int(3.9 * SR)]))
  pb = np.max(np.abs(y[int(4.0 * SR) :]))
  assert 20 * np.log10(np.max(np.abs(y))) == pytest.approx(-1.0, abs=0.1)
  assert 13.0 < 20 * np.log10(pa / pb) < 21.0


# ---------------------------------------------------------------- captions agree with the plan

_CONTRA = {
  (
    "loudness",
    "loud",
  ): r"\b(quiet|quietly|soft|softly|faint|faintly|gentle|gently|light|lightly|low volume)\b",
  (
    "loudness",
    "quiet",
  ): r"\b(loud|loudly|forceful|forcefully|powerful|powerfully|strong|booming|hard|high volume)\b",
  (
    "register",
    "low",
  ): r"\b(high|high-pitched|upper|mid-range|medium|mid|middle|mid-pitched)\b(?! volume)",
  ("register", "middle"): r"\b(deep|high-pitched|upper|low-pitched)\b|\b(low|high)\b(?! volume)",
  (
    "register",
    "high",
  ): r"\b(low|low-pitched|deep|mid-range|medium|mid|middle|mid-pitched)\b(?! volume)",
  ("tempo", "slow"): r"\b(fast|quick|quickly|rapid|rapidly|lively)\b",
  ("tempo", "fast"): r"\b(slow|slowly|slow-paced|leisurely)\b",
  ("duration", "short"): r"\b(long|lengthy|extended|sustained|prolonged|while|several seconds)\b",
  ("duration", "long"): r"\b(short|brief|briefly|moment)\b",
  (
    "count",
    "once",
  ): r"\b(twice|two|three|thrice|repeated|repeatedly|over and over|many|several|series|"
  r"string of)\b",
  (
    "count",
    "twice",
  ): r"\b(once|single|one|three|thrice|repeated|repeatedly|over and over|many|several|series)\b",
  (
    "count",
    "three times",
  ): r"\b(once|single|one|twice|two|repeated|repeatedly|over and over|many|series)\b",
  ("count", "repeatedly"): r"\b(once|single|one time|twice|two|three|thrice)\b",
}
_OVERLAP_WORDS = (
  r"(?<!for a )\bwhile\b|\b(along with|together|at the same time|accompanied by|as)\b"
  r"|(?<!and )\bover (?!and over)"
)
_SEQUENCE_WORDS = r"\b(then|followed by|after|afterwards|before|first)\b"


def _source_words(src: sc.Source) -> list[str]:
  words = (
    [n for n, _ in src.nouns]
    + [w for pair in src.hit_nouns for w in pair]
    + [n for n, _ in src.sound_nouns]
  )
  return [w.lower() for w in words] + [
    a.split("{")[0].strip().lower() for a in src.agents if "{" not in a
  ]


def test_captions_consistent_with_plan():
  n_single = n_multi = 0
  for i in range(400):
    rng = sc.clip_rng(11, "development", i)
    plan = sc.plan_clip(rng, SR)
    caps = sc.make_captions(rng, plan)
    assert len(set(caps)) == 5
    for cap in caps:
      low = cap.lower()
      for ev in plan["events"]:  # every source is named
        words = _source_words(sc.SOURCE_BY_NAME[ev["source"]])
        assert any(w in low for w in words), (cap, ev["source"])
      if len(plan["events"]) == 1:
        n_single += 1
        ev = plan["events"][0]
        for (attr, value), pattern in _CONTRA.items():
          if ev[attr] == value:
            assert not re.search(pattern, low), (cap, attr, value)
      elif len(plan["events"]) == 2:
        n_multi += 1
        if plan["relations"] == ["sequential"]:
          assert re.search(_SEQUENCE_WORDS, low) and not re.search(_OVERLAP_WORDS, low), cap
        else:
          assert re.search(_OVERLAP_WORDS, low) and not re.search(_SEQUENCE_WORDS, low), cap
  assert n_single > 100 and n_multi > 100


def test_captions_are_varied():
  caps = []
  for i in range(300):
    rng = sc.clip_rng(4, "development", i)
    caps += sc.make_captions(rng, sc.plan_clip(rng, SR))
  starts = {}
  for c in caps:
    key = " ".join(c.split()[:2])
    starts[key] = starts.get(key, 0) + 1
  assert max(starts.values()) / len(caps) < 0.12
  vocab = {w.strip(".,").lower() for c in caps for w in c.split()}
  assert len(vocab) > 250
  lengths = [len(c.split()) for c in caps]
  assert 8 <= np.mean(lengths) <= 22


@pytest.mark.slow
def test_captions_independent_of_hash_seed():
  """Plans and captions must not depend on Python's per-process string hashing."""
  import os
  import subprocess
  import sys

  code = (
    "import json; from mltm_jax import synthcaps as sc\n"
    "out = []\n"
    "for i in range(60):\n"
    "    r = sc.clip_rng(0, 'development', i); p = sc.plan_clip(r, 16000)\n"
    "    out.append([p, sc.make_captions(r, p)])\n"
    "print(json.dumps(out))\n"
  )
  results = []
  for hs in ("1", "2"):
    env = {**os.environ, "PYTHONHASHSEED": hs}
    res = subprocess.run(
      [sys.executable, "-c", code],
      capture_output=True,
      text=True,
      env=env,
      cwd=Path(__file__).resolve().parents[1],
      check=True,
    )
    results.append(res.stdout)
  assert results[0] == results[1]


@pytest.mark.slow
def test_default_rate_32k(tmp_path):
  out = tmp_path / "r32"
  sc.generate_synthcaps(
    out, {"evaluation": 2}, seed=0, sample_rate=32000, progress=False, workers=1
  )
  meta = [
    json.loads(x) for x in (out / "synthcaps_metadata_evaluation.jsonl").read_text().splitlines()
  ]
  for m in meta:
    info = sf.info(str(out / "evaluation" / m["file_name"]))
    assert info.samplerate == 32000 and info.frames == int(round(m["duration"] * 32000))
  # same plan and captions as at 16 kHz: only the audio rate differs
  ref = tmp_path / "r16"
  sc.generate_synthcaps(ref, {"evaluation": 2}, seed=0, sample_rate=SR, progress=False, workers=1)
  name = "clotho_captions_evaluation.csv"
  assert (out / name).read_bytes() == (ref / name).read_bytes()
