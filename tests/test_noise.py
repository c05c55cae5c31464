"""Noisy correspondence (--noise_p): which training pairs are corrupted, how, and that only the
training split is touched. References: the clean split's own index lists, recomputed here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mltm_jax.config import Config
from mltm_jax.data.noise import RECORD, corrupt_pairs
from mltm_jax.data.pipeline import PairSampler, Split
from tests.test_train import tiny_config

REPO = Path(__file__).resolve().parents[1]


def clean_split(num_clips: int = 60) -> Split:
  """Clips with 5 captions, every 4th with 1 (AudioCaps train style); a caption names its clip."""
  captions, c2c, clip_caps = [], [], []
  for c in range(num_clips):
    k = 1 if c % 4 == 3 else 5
    clip_caps.append(np.arange(len(captions), len(captions) + k, dtype=np.int32))
    captions += [f"clip {c} caption {j}" for j in range(k)]
    c2c += [c] * k
  names = [f"c{c:03d}.wav" for c in range(num_clips)]
  waves = [np.zeros(8, np.float32)] * num_clips
  return Split("train", names, waves, captions, np.asarray(c2c, np.int32), clip_caps, [])


@pytest.mark.parametrize("p", [0.2, 0.4, 0.6])
def test_a_seeded_fraction_of_pairs_gets_other_captions(p):
  split = clean_split()
  n = len(split.captions)
  noisy, rec = corrupt_pairs(split, p, seed=11)
  slots_old = [
    (c, k, int(x)) for c, caps in enumerate(split.clip_captions) for k, x in enumerate(caps)
  ]
  slots_new = [
    (c, k, int(x)) for c, caps in enumerate(noisy.clip_captions) for k, x in enumerate(caps)
  ]
  changed = [(a, b) for a, b in zip(slots_old, slots_new) if a != b]
  assert len(changed) == round(p * n) == rec["num_shuffled"]  # every drawn slot changed
  # The captions are shuffled among the drawn slots only: same multiset there, rest untouched.
  assert sorted(a[2] for a, _ in changed) == sorted(b[2] for _, b in changed)
  assert sorted(x for *_, x in slots_new) == list(range(n))  # each caption in exactly one slot
  # caption_to_clip agrees with the new slots; the caption list itself is untouched.
  for c, _, x in slots_new:
    assert noisy.caption_to_clip[x] == c
  assert noisy.captions == split.captions and noisy.file_names == split.file_names
  # The record lists exactly the changed slots, with the caption's true clip.
  assert [(r["clip"], r["slot"], r["caption_index"]) for r in rec["pairs"]] == [
    (split.file_names[b[0]], b[1], b[2]) for _, b in changed
  ]
  for r in rec["pairs"]:
    true_clip = int(r["caption"].split()[1])  # the text names its clip
    assert r["caption_from"] == split.file_names[true_clip]
  mismatched = sum(int(r["caption"].split()[1]) != int(r["clip"][1:4]) for r in rec["pairs"])
  assert rec["num_mismatched"] == mismatched and mismatched >= 0.9 * len(changed)
  # The input split is not modified.
  assert [c.tolist() for c in split.clip_captions] == [
    c.tolist() for c in clean_split().clip_captions
  ]


def test_noise_is_a_function_of_the_seed():
  split = clean_split()
  a = corrupt_pairs(split, 0.4, seed=1)[1]["pairs"]
  b = corrupt_pairs(split, 0.4, seed=1)[1]["pairs"]
  c = corrupt_pairs(split, 0.4, seed=2)[1]["pairs"]
  assert a == b and a != c
  same, rec = corrupt_pairs(split, 0.0, seed=1)
  assert same is split and rec["num_shuffled"] == 0
  with pytest.raises(ValueError):
    corrupt_pairs(split, 1.0, seed=1)


def test_sampler_draws_the_noisy_pairs():
  split = clean_split()
  noisy, _ = corrupt_pairs(split, 0.6, seed=3)
  sampler = PairSampler(noisy.clip_captions, 20, seed=0)
  seen_wrong = 0
  for step in range(sampler.steps_per_epoch * 3):
    clips, caps = sampler.global_batch(step)
    for c, x in zip(clips, caps):
      assert x in noisy.clip_captions[c]
      seen_wrong += split.caption_to_clip[x] != c
  assert seen_wrong > 0


def test_loop_corrupts_train_only_and_records_it(tiny_synthcaps, tmp_path, monkeypatch):
  """The training loop's data stage: train noisy (record written), validation clean."""
  from mltm_jax.train import loop

  loaded = {}
  real_load = loop.load

  def spy_load(cfg, which, progress=True):
    loaded[which] = real_load(cfg, which, progress)
    return loaded[which]

  class Stop(Exception):
    pass

  def stop(cfg):
    raise Stop

  monkeypatch.setattr(loop, "load", spy_load)
  monkeypatch.setattr(loop, "build_model", stop)
  cfg = tiny_config(tiny_synthcaps, tmp_path, noise_p=0.4, seed=5)
  with pytest.raises(Stop):
    loop.train_and_evaluate(cfg)
  rec = json.loads((tmp_path / RECORD).read_text())
  train = loaded["train"]
  assert rec["num_pairs"] == len(train.captions) == 960
  assert rec["num_shuffled"] == 384 and rec["seed"] == 5
  assert rec["pairs"] == corrupt_pairs(train, 0.4, 5)[1]["pairs"]
  assert {r["clip"] for r in rec["pairs"]} <= set(train.file_names)
  val = loaded["val"]  # clean: every caption belongs to its own clip, in file order
  flat = np.concatenate(val.clip_captions)
  np.testing.assert_array_equal(flat, np.arange(len(val.captions)))
  np.testing.assert_array_equal(val.caption_to_clip, np.repeat(np.arange(32), 5))


@pytest.mark.slow
def test_bad_noise_p_is_one_line_exit_2(tmp_path):
  assert any("--noise_p" in p for p in Config(noise_p=1.0).problems())
  assert not any("--noise_p" in p for p in Config(noise_p=0.6).problems())
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.train",
      "--flagfile=configs/demo.flags",
      "--noise_p=-0.1",
      f"--workdir={tmp_path}",
    ],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  lines = [l for l in res.stderr.strip().splitlines() if l]
  assert res.returncode == 2 and len(lines) == 1 and "--noise_p must be in [0, 1)" in lines[0]


def test_compacted_record_is_rebuilt_from_data_p_and_seed(tiny_synthcaps, tmp_path):
  """A committed run keeps counts + digest; launch.noise_record rebuilds the same pairs."""
  from mltm_jax.data.noise import apply_noise, compact_record, pairs_digest
  from mltm_jax.data.splits import load
  from mltm_jax.run_dir import RunDir

  cfg = tiny_config(tiny_synthcaps, tmp_path / "run", noise_p=0.2, seed=11)
  RunDir(cfg.workdir).write_config(cfg)
  apply_noise(cfg, load(cfg, "train", progress=False), cfg.workdir)
  full = json.loads((tmp_path / "run" / RECORD).read_text())
  compact = compact_record(full)
  assert "pairs" not in compact and compact["pairs_sha256"] == pairs_digest(full["pairs"])
  assert {k: compact[k] for k in ("num_pairs", "num_shuffled", "num_mismatched")} == {
    k: full[k] for k in ("num_pairs", "num_shuffled", "num_mismatched")
  }
  (tmp_path / "run" / RECORD).write_text(json.dumps(compact))
  res = subprocess.run(
    [sys.executable, "-m", "launch.noise_record", f"--workdir={tmp_path / 'run'}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 0, res.stderr[-2000:]
  assert "digest matches" in res.stdout
  assert json.loads((tmp_path / "run" / "noisy_pairs.full.json").read_text()) == full
  # A stored digest that does not match (other data) is reported, exit 1.
  (tmp_path / "run" / RECORD).write_text(json.dumps({**compact, "pairs_sha256": "0" * 64}))
  res = subprocess.run(
    [sys.executable, "-m", "launch.noise_record", f"--workdir={tmp_path / 'run'}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 1 and "MISMATCH" in res.stdout
