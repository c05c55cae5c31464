"""Tests for mltm_jax.frontend: log-mel against librosa (float64), SpecAugment stripes."""

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from mltm_jax import frontend
from mltm_jax.frontend import MelConfig, log_mel, spec_augment

PANNS = MelConfig()  # 32 kHz, n_fft 1024, hop 320, 64 mels, 50 Hz - 14 kHz
DEMO16K = MelConfig(
  sample_rate=16000, n_fft=512, win_length=512, hop_length=320, n_mels=64, fmin=50.0, fmax=8000.0
)


def _librosa_log_mel(y: np.ndarray, cfg: MelConfig, top_db=None) -> np.ndarray:
  """Reference: librosa in float64, [frames, n_mels]."""
  mel = librosa.feature.melspectrogram(
    y=y.astype(np.float64),
    sr=cfg.sample_rate,
    n_fft=cfg.n_fft,
    hop_length=cfg.hop_length,
    win_length=cfg.win_length,
    window="hann",
    center=True,
    pad_mode="reflect",
    power=2.0,
    n_mels=cfg.n_mels,
    fmin=cfg.fmin,
    fmax=cfg.fmax,
  )
  return librosa.power_to_db(mel, ref=cfg.ref, amin=cfg.amin, top_db=top_db).T


def _signals(sr: int) -> dict:
  rs = np.random.RandomState(0)
  n = sr // 2 + 137  # not a multiple of the hop
  t = np.arange(n) / sr
  quiet = 1e-5 * rs.randn(n)
  quiet[n // 3 : 2 * n // 3] = 0.0  # exact digital silence inside, hits amin
  return {
    "noise": rs.uniform(-1, 1, n),
    "sine": 0.5 * np.sin(2 * np.pi * 441.3 * t),
    "near_silence": quiet,
  }


@pytest.mark.parametrize("cfg", [PANNS, DEMO16K], ids=["panns32k", "demo16k"])
def test_log_mel_matches_librosa(cfg):
  sigs = _signals(cfg.sample_rate)
  x = np.stack(list(sigs.values())).astype(np.float32)
  out = np.asarray(jax.jit(functools.partial(log_mel, cfg=cfg))(jnp.asarray(x)))
  assert out.dtype == np.float32
  assert out.shape == (3, cfg.num_frames(x.shape[1]), cfg.n_mels)
  for i, (name, _) in enumerate(sigs.items()):
    ref = _librosa_log_mel(x[i], cfg)
    assert out[i].shape == ref.shape, name
    err = np.abs(out[i] - ref)
    if name == "sine":
      # float32 STFT: bins far below the frame's peak sit at float32 rounding
      # level (measured ~4e-3 dB at 80-100 dB below the peak, <= 0.05 dB at
      # 140 dB below). Within 60 dB of the frame peak: <= 1e-3 dB.
      depth = ref.max(axis=1, keepdims=True) - ref
      assert err[depth <= 60].max() <= 1e-3, (name, err[depth <= 60].max())
      assert err.max() <= 0.1, (name, err.max())
    else:
      assert err.max() <= 1e-3, (name, err.max())
  # near-silence really reaches the amin floor (-100 dB) somewhere
  assert out[2].min() == pytest.approx(-100.0, abs=1e-4)


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_top_db_matches_librosa_per_example():
  cfg = MelConfig(
    sample_rate=16000, n_fft=512, win_length=512, hop_length=320, fmax=8000.0, top_db=80.0
  )
  sigs = _signals(16000)
  x = np.stack([sigs["sine"], 0.01 * sigs["noise"]]).astype(np.float32)
  out = np.asarray(log_mel(jnp.asarray(x), cfg))
  for i in range(2):
    ref = _librosa_log_mel(x[i], cfg, top_db=80.0)
    np.testing.assert_allclose(out[i], ref, atol=2e-3)


def test_win_length_shorter_than_n_fft():
  cfg = MelConfig(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, fmax=8000.0)
  x = np.random.RandomState(1).uniform(-1, 1, (1, 4000)).astype(np.float32)
  out = np.asarray(log_mel(jnp.asarray(x), cfg))[0]
  np.testing.assert_allclose(out, _librosa_log_mel(x[0], cfg), atol=1e-3)


@pytest.mark.parametrize(
  "length,n_fft,hop",
  [(1000, 512, 320), (1000, 320, 320), (1000, 100, 320), (2048, 1024, 256), (999, 7, 3)],
)
def test_frames_brute_force(length, n_fft, hop):
  x = np.random.RandomState(2).randn(2, length).astype(np.float32)
  got = np.asarray(frontend._frames(jnp.asarray(x), n_fft, hop))
  n_frames = 1 + (length - n_fft) // hop
  want = np.stack([x[:, i * hop : i * hop + n_fft] for i in range(n_frames)], axis=1)
  np.testing.assert_array_equal(got, want)


def test_mel_filterbank_shape_and_slaney_area():
  fb = frontend.mel_filterbank(PANNS)
  assert fb.shape == (PANNS.n_fft // 2 + 1, PANNS.n_mels) and fb.dtype == np.float32
  # Slaney norm: each triangle has area 1 over Hz (height 2 / bandwidth), so the
  # filter sums times the bin spacing are ~1 (away from the low edge's coarse bins).
  area = fb.sum(axis=0) * PANNS.sample_rate / PANNS.n_fft
  np.testing.assert_allclose(area[20:], 1.0, rtol=0.05)
  # nothing above fmax or below fmin
  freqs = np.arange(fb.shape[0]) * PANNS.sample_rate / PANNS.n_fft
  assert not fb[freqs > PANNS.fmax].any() and not fb[freqs < PANNS.fmin].any()


def test_too_short_clip_raises():
  with pytest.raises(ValueError, match="too short"):
    log_mel(jnp.zeros((1, 100)), PANNS)


def test_bad_config_raises():
  with pytest.raises(ValueError, match="win_length"):
    MelConfig(n_fft=512, win_length=1024)


# ----------------------------------------------------------------------------- SpecAugment


def _masks(out: np.ndarray):
  """Masked-entry map and whole-frame / whole-bin masks of a strictly non-zero input."""
  zero = out == 0
  return zero, zero.all(axis=2), zero.all(axis=1)  # [B,F,M], [B,F], [B,M]


def _runs(mask_1d: np.ndarray) -> int:
  m = np.concatenate([[False], mask_1d, [False]]).astype(np.int8)
  return int((np.diff(m) == 1).sum())


def test_spec_augment_whole_stripes_and_widths():
  b, f, m = 64, 200, 64
  mel = jnp.asarray(1.0 + np.random.RandomState(0).rand(b, f, m).astype(np.float32))
  out = np.asarray(jax.jit(spec_augment)(jax.random.key(0), mel))
  assert out.shape == mel.shape and out.dtype == np.float32
  zero, t_mask, f_mask = _masks(out)
  # every zero lies in a fully masked frame or a fully masked mel bin
  np.testing.assert_array_equal(zero, t_mask[:, :, None] | f_mask[:, None, :])
  # unmasked entries are untouched
  np.testing.assert_array_equal(out[~zero], np.asarray(mel)[~zero])
  assert (t_mask.sum(1) <= 2 * (64 - 1)).all()
  assert (f_mask.sum(1) <= 2 * (8 - 1)).all()
  for i in range(b):  # two stripes -> at most two contiguous runs
    assert _runs(t_mask[i]) <= 2 and _runs(f_mask[i]) <= 2
  assert t_mask.any() and f_mask.any()


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_spec_augment_single_stripe_distribution_matches_torchlibrosa():
  # torchlibrosa DropStripes: width ~ randint(0, W), start ~ randint(0, total - width).
  b, f, w = 4000, 30, 10
  mel = jnp.ones((b, f, 4))
  out = np.asarray(spec_augment(jax.random.key(1), mel, time_masks=1, time_width=w, freq_masks=0))
  t_mask = (out == 0).all(axis=2)
  widths = t_mask.sum(1)
  counts = np.bincount(widths, minlength=w + 1)
  assert counts[w:].sum() == 0 and (counts[:w] > 0).all()
  np.testing.assert_allclose(counts[:w] / b, 1.0 / w, atol=0.03)
  # stripe is contiguous, and with start < total - width the last frame is never hit
  assert all(_runs(r) <= 1 for r in t_mask)
  assert not t_mask[:, -1].any()
  assert t_mask[:, 0].any()
  starts = np.array([np.argmax(r) for r, wd in zip(t_mask, widths) if wd > 0])
  assert starts.max() == f - 2  # reached only by width-1 stripes: start <= f - w - 1


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_spec_augment_rng_dependence_and_noop_settings():
  mel = jnp.asarray(1.0 + np.random.RandomState(0).rand(8, 100, 32).astype(np.float32))
  a = np.asarray(spec_augment(jax.random.key(0), mel))
  b = np.asarray(spec_augment(jax.random.key(0), mel))
  c = np.asarray(spec_augment(jax.random.key(1), mel))
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  # examples in a batch get different masks
  assert ((a[0] == 0) != (a[1] == 0)).any()
  off = spec_augment(jax.random.key(0), mel, time_masks=0, freq_masks=0)
  np.testing.assert_array_equal(np.asarray(off), np.asarray(mel))


def test_spec_augment_bf16_and_width_checks():
  mel = jnp.ones((16, 10, 6), jnp.bfloat16)
  out = spec_augment(jax.random.key(3), mel, time_width=10, freq_width=6)
  assert out.dtype == jnp.bfloat16 and out.shape == mel.shape
  zero = np.asarray(out, np.float32) == 0
  assert zero.any() and not zero.all()
  # torchlibrosa's randint(0, total - width) fails when a stripe can be wider than
  # the axis; here that is a clear error at trace time.
  with pytest.raises(ValueError, match="time_width=64 exceeds the 10 frames"):
    spec_augment(jax.random.key(3), mel)
  with pytest.raises(ValueError, match="freq_width=8 exceeds the 6 mel bins"):
    spec_augment(jax.random.key(3), mel, time_width=4)


@pytest.mark.parametrize(
  "cfg",
  [
    PANNS,
    DEMO16K,
    MelConfig(
      sample_rate=8000, n_fft=256, win_length=256, hop_length=256, n_mels=32, fmin=0.0, fmax=4000.0
    ),
    MelConfig(sample_rate=44100, n_fft=2048, win_length=1024, hop_length=512, n_mels=128),
    MelConfig(
      sample_rate=16000,
      n_fft=512,
      win_length=400,
      hop_length=160,
      n_mels=40,
      fmin=300.0,
      fmax=900.0,
    ),
  ],
)
def test_filterbank_and_window_equal_librosa(cfg):
  """Our numpy filterbank and window are librosa's, bit for bit (frontend does not import
  librosa)."""
  want = librosa.filters.mel(
    sr=cfg.sample_rate,
    n_fft=cfg.n_fft,
    n_mels=cfg.n_mels,
    fmin=cfg.fmin,
    fmax=cfg.fmax,
    htk=False,
    norm="slaney",
  ).T
  got = frontend.mel_filterbank(cfg)
  assert got.dtype == np.float32 and got.shape == (cfg.n_fft // 2 + 1, cfg.n_mels)
  np.testing.assert_array_equal(got, want)
  win = librosa.util.pad_center(
    librosa.filters.get_window("hann", cfg.win_length, fftbins=True), size=cfg.n_fft
  )
  np.testing.assert_array_equal(frontend._window(cfg), win.astype(np.float32))
