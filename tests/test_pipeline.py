"""Splits in memory, bad files counted and skipped, deterministic batch order."""

import csv

import numpy as np
import pytest
import soundfile as sf

from mltm_jax.data.pipeline import PairSampler, crop_batch, eval_waves, host_slice, load_split


@pytest.fixture
def messy_clotho(tmp_path):
  """Clotho layout with one good clip, one corrupt, one missing, one empty caption row."""
  split = tmp_path / "development"
  split.mkdir()
  sr = 8000
  t = np.arange(sr * 2) / sr
  for name in ("good.wav", "good2.wav", "nocaps.wav"):
    sf.write(split / name, 0.3 * np.sin(2 * np.pi * 440 * t), sr)
  (split / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
  with open(tmp_path / "clotho_captions_development.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
    w.writerow(["good.wav", "a tone", "a beep", "", "a sine", "a whistle"])
    w.writerow(["good2.wav", "b", "c", "d", "e", "f"])
    w.writerow(["corrupt.wav", "x", "x", "x", "x", "x"])
    w.writerow(["missing.wav", "y", "y", "y", "y", "y"])
    w.writerow(["nocaps.wav", "", " ", "", "", ""])
  return tmp_path


def test_bad_inputs_are_skipped_with_reasons(messy_clotho):
  split = load_split(messy_clotho, "development", 16000, progress=False)
  assert split.file_names == ["good.wav", "good2.wav"]
  reasons = dict(split.skipped)
  assert set(reasons) == {"corrupt.wav", "missing.wav", "nocaps.wav"}
  assert "corrupt" in reasons["corrupt.wav"] and "missing" in reasons["missing.wav"]
  assert "caption" in reasons["nocaps.wav"]
  # Resampled to the model rate, empty caption cell dropped, indices consistent.
  assert split.waves[0].shape == (32000,)
  assert split.captions[:4] == ["a tone", "a beep", "a sine", "a whistle"]
  assert split.caption_to_clip.tolist() == [0] * 4 + [1] * 5
  assert [c.tolist() for c in split.clip_captions] == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
  w = eval_waves(split, 40000)
  assert w.shape == (2, 40000) and np.all(w[:, 32000:] == 0)


def test_sampler_is_a_pure_function_of_step_and_covers_clips():
  caps = [np.arange(5 * i, 5 * i + 5) for i in range(40)]
  s1, s2 = PairSampler(caps, 8, seed=7), PairSampler(caps, 8, seed=7)
  assert s1.steps_per_epoch == 5
  seen = []
  for step in range(5):
    clips, chosen = s1.global_batch(step)
    c2, ch2 = s2.global_batch(step)
    np.testing.assert_array_equal(clips, c2)
    np.testing.assert_array_equal(chosen, ch2)
    assert len(set(clips.tolist())) == 8  # a clip at most once per batch
    assert all(ch // 5 == c for c, ch in zip(clips, chosen))  # caption belongs to its clip
    seen.extend(clips.tolist())
  assert sorted(seen) == list(range(40))  # an epoch visits every clip once
  assert not np.array_equal(s1.global_batch(0)[0], s1.global_batch(5)[0])  # reshuffled
  assert not np.array_equal(PairSampler(caps, 8, seed=8).global_batch(0)[0], s1.global_batch(0)[0])
  with pytest.raises(ValueError, match="exceeds"):
    PairSampler(caps, 64, seed=0)


def test_crops_are_seeded_and_host_slices_partition():
  waves = [np.arange(100, dtype=np.float32), np.arange(30, dtype=np.float32)]
  a = crop_batch(waves, np.array([0, 1]), 50, seed=1, step=3)
  b = crop_batch(waves, np.array([0, 1]), 50, seed=1, step=3)
  np.testing.assert_array_equal(a, b)
  assert np.all(np.diff(a[0]) == 1)  # a contiguous crop
  np.testing.assert_array_equal(a[1, :30], waves[1])  # short clip zero-padded
  assert np.all(a[1, 30:] == 0)
  rows = [host_slice(8, i, 4) for i in range(4)]
  assert [list(range(8))[r] for r in rows] == [[0, 1], [2, 3], [4, 5], [6, 7]]
  with pytest.raises(ValueError):
    host_slice(6, 0, 4)
