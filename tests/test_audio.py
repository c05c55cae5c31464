"""Tests for mltm_jax.data.audio: decoding, downmix, resampling, errors, fix_length."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mltm_jax.data.audio import AudioError, fix_length, load_audio


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
  t = np.arange(int(round(sr * seconds))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_freq(x: np.ndarray, sr: int) -> float:
  spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return float(np.fft.rfftfreq(len(x), 1.0 / sr)[np.argmax(spec)])


def test_mono_same_rate_is_exact(tmp_path):
  x = _sine(440.0, 16000, 1.0)
  p = tmp_path / "mono.wav"
  sf.write(p, x, 16000, subtype="FLOAT")
  y = load_audio(p, 16000)
  assert y.dtype == np.float32 and y.shape == (16000,)
  np.testing.assert_array_equal(y, x)


def test_stereo_is_downmixed_by_mean(tmp_path):
  rng = np.random.default_rng(0)
  left = rng.uniform(-0.5, 0.5, 8000).astype(np.float32)
  right = rng.uniform(-0.5, 0.5, 8000).astype(np.float32)
  p = tmp_path / "stereo.wav"
  sf.write(p, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
  y = load_audio(p, 16000)
  assert y.shape == (8000,)
  np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


def test_stereo_pcm16_downmix(tmp_path):
  left = _sine(300.0, 16000, 0.5, 0.4)
  right = -left  # the mean cancels
  p = tmp_path / "stereo16.wav"
  sf.write(p, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
  y = load_audio(p, 16000)
  assert np.max(np.abs(y)) < 1e-4


@pytest.mark.slow  # compiles for several seconds on 2 cores
@pytest.mark.parametrize("file_sr", [48000, 8000, 44100])
def test_resampling_keeps_frequency_and_length(tmp_path, file_sr):
  x = _sine(440.0, file_sr, 2.0, amp=0.5)
  p = tmp_path / f"s{file_sr}.wav"
  sf.write(p, x, file_sr, subtype="PCM_16")
  y = load_audio(p, 16000)
  assert y.dtype == np.float32
  assert abs(len(y) - 32000) <= 1
  assert abs(_peak_freq(y, 16000) - 440.0) < 2.0
  # amplitude preserved away from the edges
  mid = y[2000:-2000]
  assert abs(np.sqrt(np.mean(mid**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_downsampling_removes_content_above_new_nyquist(tmp_path):
  x = _sine(440.0, 48000, 1.0, 0.3) + _sine(12000.0, 48000, 1.0, 0.3)  # 12 kHz > 8 kHz Nyquist
  p = tmp_path / "alias.wav"
  sf.write(p, x, 48000, subtype="FLOAT")
  y = load_audio(p, 16000)
  spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
  freqs = np.fft.rfftfreq(len(y), 1 / 16000)
  main = spec[np.abs(freqs - 440) < 5].max()
  alias = spec[np.abs(freqs - 4000) < 20].max()  # 12 kHz would alias to 4 kHz
  assert alias < 1e-3 * main


def test_max_seconds_truncates(tmp_path):
  p = tmp_path / "long.wav"
  sf.write(p, _sine(220.0, 48000, 3.0), 48000)
  assert load_audio(p, 16000, max_seconds=1.0).shape == (16000,)
  p2 = tmp_path / "long16.wav"
  sf.write(p2, _sine(220.0, 16000, 3.0), 16000)
  assert load_audio(p2, 16000, max_seconds=0.5).shape == (8000,)
  assert load_audio(p2, 16000, max_seconds=10.0).shape == (48000,)


def _reason(path, **kw) -> str:
  with pytest.raises(AudioError) as ei:
    load_audio(path, 16000, **kw)
  assert ei.value.path == str(path)
  assert str(path) in str(ei.value)
  return ei.value.reason


def test_missing_file(tmp_path):
  assert _reason(tmp_path / "nope.wav") == "missing"


def test_corrupt_files(tmp_path):
  junk = tmp_path / "junk.wav"
  junk.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20)
  assert _reason(junk) == "corrupt"
  zero_bytes = tmp_path / "zero_bytes.wav"
  zero_bytes.write_bytes(b"")
  assert _reason(zero_bytes) == "corrupt"
  text = tmp_path / "notes.flac"
  text.write_text("this is not audio")
  assert _reason(text) == "corrupt"


def test_zero_length_wav(tmp_path):
  p = tmp_path / "empty.wav"
  sf.write(p, np.zeros((0, 2), np.float32), 16000)
  assert _reason(p) == "empty"


def test_silent_only_rejected_on_request(tmp_path):
  p = tmp_path / "silent.wav"
  sf.write(p, np.zeros(16000, np.float32), 16000)
  y = load_audio(p, 16000)
  assert y.shape == (16000,) and not np.any(y)
  assert _reason(p, reject_silent=True) == "silent"
  q = tmp_path / "quiet.wav"
  sf.write(q, _sine(440.0, 16000, 1.0, amp=1e-3), 16000, subtype="FLOAT")
  assert load_audio(q, 16000, reject_silent=True).shape == (16000,)


def test_nonfinite_samples(tmp_path):
  x = _sine(440.0, 16000, 0.5)
  x[100] = np.nan
  p = tmp_path / "nan.wav"
  sf.write(p, x, 16000, subtype="FLOAT")
  assert _reason(p) == "nonfinite"


def test_fix_length_pad_and_deterministic_crop():
  w = np.arange(10, dtype=np.float32)
  np.testing.assert_array_equal(fix_length(w, 4, None), [0, 1, 2, 3])
  padded = fix_length(w, 13, None)
  np.testing.assert_array_equal(padded, list(range(10)) + [0, 0, 0])
  assert padded.dtype == np.float32
  np.testing.assert_array_equal(fix_length(w, 10, np.random.default_rng(0)), w)


def test_fix_length_random_crop_is_a_window_and_varies():
  w = np.arange(100, dtype=np.float32)
  starts = set()
  for seed in range(20):
    c = fix_length(w, 30, np.random.default_rng(seed))
    assert c.shape == (30,)
    s = int(c[0])
    np.testing.assert_array_equal(c, w[s : s + 30])
    starts.add(s)
  assert len(starts) > 5
  # same generator state -> same crop
  a = fix_length(w, 30, np.random.default_rng(7))
  b = fix_length(w, 30, np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)


def test_fix_length_rejects_bad_input():
  with pytest.raises(ValueError):
    fix_length(np.zeros(5), 0, None)
  with pytest.raises(ValueError):
    fix_length(np.zeros((2, 5)), 3, None)
