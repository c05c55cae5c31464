"""Zero-shot classification: metrics against numpy brute force and POT's Sinkhorn plan, the
ESC-50 loader (release layout == prepared form), and launch.zeroshot on the small trained run of
test_train."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mltm_jax.evaluation.zeroshot import per_class_accuracy, zeroshot_metrics, zeroshot_report

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]


def brute_force(scores: np.ndarray, labels: list[list[int]]) -> dict:
  """Per clip: sort the prompts by score (descending), find its labels' positions."""
  acc, r5, r10, ap = [], [], [], []
  for s, lab in zip(scores, labels):
    order = list(np.argsort(-s, kind="stable"))
    ranks = sorted(order.index(c) + 1 for c in set(lab))
    acc.append(ranks[0] == 1)
    r5.append(ranks[0] <= 5)
    r10.append(ranks[0] <= 10)
    ap.append(sum((h + 1) / r for h, r in enumerate(ranks) if r <= 10) / len(set(lab)))
  return {
    k: 100 * float(np.mean(v))
    for k, v in (("accuracy", acc), ("R@5", r5), ("R@10", r10), ("mAP@10", ap))
  }


def test_metrics_match_brute_force():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(60, 14))
  single = [[int(x)] for x in rng.integers(0, 14, 60)]
  multi = [list(rng.choice(14, size=int(rng.integers(1, 4)), replace=False)) for _ in range(60)]
  for labels in (single, multi):
    got = zeroshot_metrics(scores, labels)
    want = brute_force(scores, labels)
    for k, v in want.items():
      assert got[k] == pytest.approx(v, abs=1e-9), k
    acc, clips = per_class_accuracy(scores, labels, 14)
    for c in range(14):  # class c: its clips whose top-|labels| prompts hold c
      members = [i for i, l in enumerate(labels) if c in l]
      hits = [c in np.argsort(-scores[i])[: len(set(labels[i]))] for i in members]
      assert clips[c] == len(members)
      if members:
        assert acc[c] == pytest.approx(100 * np.mean(hits))
      else:
        assert np.isnan(acc[c])
  # Ties count against the clip: constant scores never classify correctly.
  assert zeroshot_metrics(np.zeros((5, 4)), [[1]] * 5)["accuracy"] == 0.0


def test_plan_ranking_per_fold_matches_pot():
  ot = pytest.importorskip("ot")
  rng = np.random.default_rng(1)
  n, c = 40, 6
  labels = [[int(x)] for x in rng.integers(0, c, n)]
  cost = rng.uniform(0.5, 2.0, size=(n, c))
  for i, (lab,) in enumerate(labels):
    cost[i, lab] -= 0.6 * rng.uniform()  # some signal
  folds = np.repeat([1, 2], n // 2)
  names = [f"class_{k}" for k in range(c)]
  rep = zeroshot_report(cost, labels, names, folds, "plan", eps=0.05, num_iterations=10)
  accs = []
  for f in (1, 2):
    idx = np.flatnonzero(folds == f)
    cf = cost[idx] / cost[idx].max()
    plan = ot.sinkhorn(
      np.full(len(idx), 1 / len(idx)),
      np.full(c, 1 / c),
      cf,
      0.05,
      numItermax=10,
      stopThr=0.0,
      warn=False,
    )
    acc = 100 * np.mean([np.argmax(plan[r]) == labels[i][0] for r, i in enumerate(idx)])
    assert rep["folds"][str(f)]["accuracy"] == pytest.approx(acc)
    accs.append(acc)
  assert rep["overall"]["accuracy"] == pytest.approx(np.mean(accs))
  dist = zeroshot_report(cost, labels, names, folds, "distance")
  assert dist["overall"]["accuracy"] == pytest.approx(
    100 * np.mean(np.argmin(cost, 1) == np.array(labels)[:, 0])
  )
  assert dist["chance_accuracy"] == pytest.approx(100 / c)


ESC_CLASSES = (
  "piano",
  "kick_drum",
  "ocean_waves",
  "bird",
  "trumpet",
  "applause",
  "violin",
  "telephone",
)


def fake_esc50(root: Path) -> Path:
  """ESC-50 layout whose 8 categories are SynthCaps sources (underscored like ESC-50's), each
  with 5 freshly rendered single-event clips (not in any SynthCaps split)."""
  from mltm_jax.synthcaps import render_clip, single_event_plan, soundfont_path
  from tests.test_prepare import make_esc50

  sf2 = soundfont_path().read_bytes()
  waves = {
    c: [
      (render_clip(single_event_plan(c.replace("_", " "), 8000, seed=100 + j), 8000, sf2), 8000)
      for j in range(5)
    ]
    for c in ESC_CLASSES
  }
  return make_esc50(root, 5, ESC_CLASSES, waves=waves)


def test_zeroshot_end_to_end(tmp_path_factory, tmp_path):
  from mltm_jax.data.prepare.esc50 import load_esc50
  from tests.test_prepare import run_prepare
  from tests.test_train import LEARN_SIZES, chance_log10_p, learning_run

  esc = fake_esc50(tmp_path / "esc50")
  prepared = tmp_path / "esc50_prepared"
  res = run_prepare(
    "--dataset=esc50", f"--src={esc}", f"--out={prepared}", "--workers=1", "--sample_rate=8000"
  )
  assert res.returncode == 0, res.stderr[-2000:]
  # The release layout and its prepared form load the same clips and labels.
  a = load_esc50(esc, 8000, progress=False)
  b = load_esc50(prepared, 8000, progress=False)
  assert a[0] == b[0] and a[2] == b[2] == dict(enumerate(ESC_CLASSES))
  assert [s.reason for s in a[3]] == ["missing audio", "corrupt"]
  for wa, wb in zip(a[1], b[1]):
    np.testing.assert_allclose(wa, wb, atol=1.0 / 32767)

  _, run, _ = learning_run(tmp_path_factory)  # test_train's 300-step run, trained once
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.zeroshot",
      f"--workdir={run}",
      f"--esc50={prepared}",
      "--synthcaps",
      "--split=train",
      "--progress=false",
    ],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  out = res.stdout
  assert out.count("per-class accuracy:") == 4 and "fold 5" in out and "overall" in out
  esc_rep = json.loads((run / "zeroshot_esc50.json").read_text())
  assert esc_rep["classes"] == [c.replace("_", " ") for c in ESC_CLASSES]
  assert esc_rep["num_clips"] == 40
  for method in ("distance", "plan"):
    r = esc_rep[method]
    assert r["chance_accuracy"] == pytest.approx(12.5)
    # Held-out renders, prompts never seen in training: well above the 12.5% chance.
    assert r["overall"]["accuracy"] >= 2.5 * 12.5, r["overall"]
    folds = [r["folds"][str(f)] for f in range(1, 6)]
    assert all(f["clips"] == 8 for f in folds)
    assert r["overall"]["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in folds]))
    pc = r["per_class"]
    assert {k: v["clips"] for k, v in pc.items()} == {c.replace("_", " "): 5 for c in ESC_CLASSES}
    pooled = np.mean([v["accuracy"] for v in pc.values()])  # equal class sizes
    assert r["overall"]["accuracy"] == pytest.approx(pooled)
  syn = json.loads((run / "zeroshot_synthcaps.json").read_text())
  assert syn["num_clips"] == LEARN_SIZES["development"] and len(syn["classes"]) == 62
  for method in ("distance", "plan"):
    r = syn[method]
    # Every clip's labels are its sources (1-3 of 62). Chance: each clip ranks the classes in a
    # uniformly random order, independently of the others, so its top class is right with
    # probability p_i = (its sources) / 62 and the hits are a sum of independent Bernoulli(p_i).
    # Since log(1 + p (e^l - 1)) is concave in p, that sum's moment generating function is at
    # most that of n Bernoulli(mean p_i) = chance_accuracy: the Chernoff bound of test_train
    # on "ranks" 1 (hit) / 2 (miss) then bounds P(accuracy >= observed) under chance.
    p = r["chance_accuracy"] / 100
    n = r["overall"]["clips"]
    log10_p = chance_log10_p(2 - r["overall"]["accuracy"] / 100, np.array([p, 1 - p]), n)
    # One in a million (this machine, 2026-12-07, 960 clips, chance 3.19 %: accuracy 9.06 %
    # by distance, log10 p <= -15.7; by plan 11.77 %, <= -29.9).
    assert log10_p <= -6, (method, log10_p, r["overall"])
    assert sum(v["clips"] for v in r["per_class"].values()) > LEARN_SIZES["development"]
