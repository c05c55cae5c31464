"""Long audio: windows equal manual slicing, pooling is the normalised mean, the chunked
evaluation path equals the cropped one on short clips and is deterministic."""

import numpy as np
import pytest

from mltm_jax.config import Config
from mltm_jax.data.pipeline import Split
from mltm_jax.inference.chunking import (
  hop_samples,
  pool_chunks,
  pool_segments,
  split_windows,
  window_starts,
)

SR = 8000


def manual_slices(wave, window, hop):
  """Reference: windows start at 0, hop, 2 hop, ... and stop once one reaches the end."""
  out, s = [], 0
  while True:
    out.append(wave[s : s + window])
    if s + window >= len(wave):
      return out
    s += hop


@pytest.mark.parametrize("length", [1, 399, 400, 401, 700, 1000, 1001, 2345])
def test_windows_equal_manual_slicing(length):
  wave = np.arange(1, length + 1, dtype=np.float32)
  wins = split_windows(wave, 400, 300)
  ref = manual_slices(wave, 400, 300)
  assert wins.shape == (len(ref), 400) and wins.dtype == np.float32
  assert len(window_starts(length, 400, 300)) == len(ref)
  for w, r in zip(wins, ref):
    np.testing.assert_array_equal(w[: len(r)], r)
    np.testing.assert_array_equal(w[len(r) :], 0.0)
  # Every sample of the wave is covered, and nothing beyond one hop of padding is added.
  assert (len(ref) - 1) * 300 + 400 >= length > (len(ref) - 1) * 300 or len(ref) == 1


def test_pooling_is_normalised_mean():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 7)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_array_equal(pool_chunks(x[:1]), x[0])  # one chunk: unchanged
  mean = x.astype(np.float64).mean(0)
  np.testing.assert_allclose(pool_chunks(x), mean / np.linalg.norm(mean), rtol=1e-6)
  seg = pool_segments(x, [2, 1, 2])
  np.testing.assert_allclose(seg[1], x[2])
  np.testing.assert_allclose(seg[2], pool_chunks(x[3:5]))
  with pytest.raises(ValueError, match="counts sum"):
    pool_segments(x, [2, 2])


def test_config_fields_and_validation():
  assert Config().long_audio == "crop"  # the default keeps the old evaluation
  cfg = Config(sample_rate=SR, clip_seconds=2.0)
  assert hop_samples(cfg) == SR  # 0 = half a clip
  assert hop_samples(cfg.replace(chunk_hop_seconds=0.5)) == SR // 2
  assert any("--long_audio" in p for p in cfg.replace(long_audio="slide").problems())
  assert any("--chunk_hop_seconds" in p for p in cfg.replace(chunk_hop_seconds=3.0).problems())


def tiny_model_config(precompute_mel: bool) -> Config:
  return Config(
    sample_rate=SR,
    clip_seconds=1.0,
    n_fft=256,
    hop_length=128,
    fmax=4000.0,
    cnn_channels="16,16",
    embed_dim=16,
    head_hidden=32,
    eval_batch_size=8,
    precompute_mel=precompute_mel,
    chunk_hop_seconds=0.375,
    progress=False,
  )


def make_split(waves):
  n = len(waves)
  return Split(
    "t",
    [f"{i}.wav" for i in range(n)],
    list(waves),
    ["x"] * n,
    np.arange(n, dtype=np.int32),
    [np.array([i], np.int32) for i in range(n)],
    [],
  )


@pytest.fixture(scope="module", params=[True, False], ids=["mels", "waves"])
def model(request):
  from mltm_jax.model import build_model
  from mltm_jax.train.state import init_state, make_optimizer

  cfg = tiny_model_config(request.param)
  run = build_model(cfg)
  return run, init_state(run, make_optimizer(cfg))


def embed_old_path(run, state, waves):
  """The crop-from-the-start evaluation path (the default --long_audio=crop)."""
  split = make_split(waves)
  run.prepare_audio(split, progress=False)
  text = np.zeros((len(waves), run.encoder.config.hidden_size), np.float32)
  audio, _ = run.embed_split(state, split, text)
  return audio


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_short_clips_equal_the_old_path_and_long_clips_pool_manual_slices(model):
  run, state = model
  rng = np.random.default_rng(1)
  window = run.cfg.clip_samples
  hop = hop_samples(run.cfg)
  short = [0.1 * rng.normal(size=n).astype(np.float32) for n in (window // 3, window - 1, window)]
  long_wave = 0.1 * rng.normal(size=3 * window + 517).astype(np.float32)

  # Short clips: --long_audio=chunk gives the crop path's embeddings.
  chunk_run = _with_chunking(run)
  old = embed_old_path(run, state, short)
  new = embed_old_path(chunk_run, state, short)
  np.testing.assert_allclose(new, old, atol=1e-6)

  # A long clip: its pooled embedding = pool of the old path's embeddings of manual slices.
  slices = manual_slices(long_wave, window, hop)
  assert len(slices) == 1 + -(-(len(long_wave) - window) // hop)
  per_slice = embed_old_path(run, state, slices)
  mean = per_slice.astype(np.float64).mean(0)
  got = run.embed_waves(state, [long_wave])[0]
  np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-6)
  assert abs(np.linalg.norm(got) - 1) < 1e-5


def test_same_wave_same_embedding_whatever_the_batch(model):
  run, state = model
  rng = np.random.default_rng(2)
  a = 0.1 * rng.normal(size=int(2.6 * run.cfg.clip_samples)).astype(np.float32)
  others = [0.1 * rng.normal(size=n).astype(np.float32) for n in (900, 23456, 8000)]
  alone = run.embed_waves(state, [a])
  mixed = run.embed_waves(state, [others[0], a, others[1], a, others[2]])
  np.testing.assert_allclose(mixed[1], alone[0], atol=1e-6)
  np.testing.assert_allclose(mixed[3], alone[0], atol=1e-6)
  again = run.embed_waves(state, [a])
  np.testing.assert_array_equal(again, alone)


def _with_chunking(run):
  import dataclasses

  return dataclasses.replace(run, cfg=run.cfg.replace(long_audio="chunk"))


@pytest.mark.parametrize(
  "file_rate,frames,channels,window,hop",
  [
    (SR, SR * 7 + 5, 1, 2 * SR, SR),  # at the model rate
    (16000, 16000 * 3, 2, 2 * SR, SR),  # resampled, stereo
    (44100, 44100 * 5 + 17, 2, SR // 2, SR // 2),  # resampled, hop = window
    (SR, 100, 1, 2 * SR, SR),  # shorter than a window
    (22050, 1 << 16, 1, SR, 3 * SR // 2),  # exactly one block; hop > window
    (22050, 2 * (1 << 16) + 1, 1, SR, SR // 4),
  ],
)
def test_streamed_windows_equal_whole_file_windows(
  tmp_path, file_rate, frames, channels, window, hop
):
  """inference.streaming.iter_windows reads blocks of 4096 frames and equals split_windows of
  the whole decoded file bit for bit (soxr's streaming resampler = librosa's one-shot)."""
  import soundfile as sf

  from mltm_jax.data.audio import load_audio
  from mltm_jax.inference.streaming import iter_windows

  path = tmp_path / "x.wav"
  rng = np.random.default_rng(frames)
  sf.write(path, 0.3 * rng.normal(size=(frames, channels)), file_rate, subtype="FLOAT")
  ref = split_windows(load_audio(path, SR), window, hop)
  got = np.stack(list(iter_windows(path, SR, window, hop, block_frames=4096)))
  assert got.shape == ref.shape
  np.testing.assert_array_equal(got, ref)
