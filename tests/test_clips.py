"""Clip stores, the log-mel cache, lazy evaluation rows and the sampler, against independent
references: np.load of the shards, librosa.resample, librosa's log-mel of each clip, and the
sampler's original per-clip loop."""

import librosa
import numpy as np
import pytest

from mltm_jax.data.clips import ArrayStore, MelCache, ShardStore
from mltm_jax.data.pipeline import LazyRows, PairSampler, crop_batch, crop_mel_batch


def _write_shards(root, waves_per_shard, dtype):
  """Shards of concatenated clips (int16 with a per-clip scale, or float32); the records."""
  records, files = [], []
  for k, waves in enumerate(waves_per_shard):
    parts, offset = [], 0
    for w in waves:
      if dtype == np.int16:
        scale = float(np.max(np.abs(w))) / 32767.0
        parts.append(np.round(w / scale).astype(np.int16))
      else:
        scale = 1.0
        parts.append(w.astype(np.float32))
      records.append({"shard": k, "offset": offset, "num_samples": len(w), "scale": scale})
      offset += len(w)
    path = root / f"shard-{k:05d}.npy"
    np.save(path, np.concatenate(parts))
    files.append(path)
  return files, records


def _store(files, records, source_rate, rate):
  col = lambda key, dt: np.asarray([r[key] for r in records], dt)
  return ShardStore(
    files,
    col("shard", np.int64),
    col("offset", np.int64),
    col("num_samples", np.int64),
    col("scale", np.float32),
    source_rate,
    rate,
  )


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_shard_store_reads_the_records_windows(tmp_path, dtype):
  rng = np.random.default_rng(0)
  shards = [[rng.uniform(-0.5, 0.5, n) for n in (300, 1000, 7)], [rng.uniform(-1, 1, 512)]]
  files, records = _write_shards(tmp_path, shards, dtype)
  store = _store(files, records, 8000, 8000)
  reads = store.record_reads()
  assert list(store.lengths) == [300, 1000, 7, 512]
  for i, r in enumerate(records):
    ref = np.load(files[r["shard"]])[r["offset"] : r["offset"] + r["num_samples"]]
    ref = ref.astype(np.float32) * np.float32(r["scale"])
    np.testing.assert_array_equal(store[i], ref)
    np.testing.assert_array_equal(store.read(i, 5, 100), ref[5:105])  # past the end: shorter
  crops = store.crops([1, 2], 50, [900, 0])
  np.testing.assert_array_equal(crops[0], store[1][900:950])
  np.testing.assert_array_equal(crops[1, :7], store[2])
  assert not crops[1, 7:].any()
  assert reads.count(1) == 4 and reads.count(3) == 2  # 2 in the loop, the crop, its check
  with pytest.raises(IndexError):
    store.read(4)


def test_shard_store_resamples_like_librosa(tmp_path):
  rng = np.random.default_rng(1)
  shards = [[rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (8000, 12345)]]
  files, records = _write_shards(tmp_path, shards, np.float32)
  store = _store(files, records, 8000, 16000)
  for i, w in enumerate(shards[0]):
    ref = librosa.resample(w, orig_sr=8000, target_sr=16000)
    assert store.lengths[i] == len(ref)
    np.testing.assert_allclose(store[i], ref, atol=1e-6)
    np.testing.assert_allclose(store.read(i, 1000, 64), ref[1000:1064], atol=1e-6)


def test_truncated_shard_is_refused(tmp_path):
  files, records = _write_shards(tmp_path, [[np.ones(100) * 0.1]], np.float32)
  records[0]["num_samples"] = 200  # the record promises more than the file holds
  store = _store(files, records, 8000, 8000)
  with pytest.raises(ValueError, match="shorter than its records"):
    store.read(0)


def test_mel_cache_equals_the_log_mel_of_each_padded_clip(tmp_path):
  import jax

  from mltm_jax import frontend

  sr, hop, clip = 8000, 160, 4000
  cfg = frontend.MelConfig(
    sample_rate=sr, n_fft=512, win_length=512, hop_length=hop, n_mels=32, fmin=50, fmax=4000
  )
  mel_fn = jax.jit(lambda w: frontend.log_mel(w, cfg))
  rng = np.random.default_rng(2)
  waves = [rng.uniform(-0.3, 0.3, n).astype(np.float32) for n in (1000, 4000, 9000, 4001)]
  cache = MelCache(ArrayStore(waves), mel_fn, clip, hop, 32, tmp_path, batch_size=4)
  assert list(cache.lengths) == [1 + max(len(w), clip) // hop for w in waves]
  assert list(tmp_path.iterdir()) == []  # the cache file is unlinked
  for i in (2, 0, 3, 1):  # computed on first use, in any order
    w = waves[i]
    width = -(-max(len(w), clip) // clip) * clip
    padded = np.zeros((4, width), np.float32)  # the clip alone in its batch: the reference
    padded[0, : len(w)] = w
    ref = np.asarray(mel_fn(padded))[0, : cache.lengths[i]]
    np.testing.assert_array_equal(cache.read(i), ref)
    np.testing.assert_array_equal(cache.read(i, 3, 10), ref[3:13])
  starts_seen = crop_mel_batch(cache, np.array([2, 0]), 20, seed=1, step=4)
  assert starts_seen.shape == (2, 20, 32)
  cache.close()


def _old_global_batch(clip_captions, batch_size, seed, step):
  """The sampler as first written: the permutation and caption choice clip by clip."""
  steps = len(clip_captions) // batch_size
  epoch, pos = divmod(step, steps)
  rng = np.random.default_rng([seed, epoch, 0])
  order = rng.permutation(len(clip_captions))
  choice = rng.integers(0, 1 << 30, size=len(order))
  caps = np.array([clip_captions[i][k % len(clip_captions[i])] for i, k in zip(order, choice)])
  sl = slice(pos * batch_size, (pos + 1) * batch_size)
  return order[sl], caps[sl]


def test_sampler_equals_the_per_clip_loop():
  rng = np.random.default_rng(3)
  caps, n = [], 0
  for _ in range(53):  # 1-5 captions per clip, shuffled indices (as after --noise_p)
    k = int(rng.integers(1, 6))
    caps.append(np.arange(n, n + k)[::-1].astype(np.int32))
    n += k
  sampler = PairSampler(caps, 8, seed=5)
  for step in (0, 1, 5, 6, 7, 13, 40):
    a, b = sampler.global_batch(step), _old_global_batch(caps, 8, 5, step)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_crop_batch_reads_only_the_requested_rows():
  waves = [np.arange(n, dtype=np.float32) for n in (100, 200, 300, 400)]
  store = ArrayStore(waves)
  reads = store.record_reads()
  clips = np.array([3, 1, 0, 2])
  full = crop_batch(store, clips, 150, seed=0, step=2)
  reads.clear()
  half = crop_batch(store, clips, 150, seed=0, step=2, rows=slice(2, 4))
  assert sorted(reads) == [0, 2]
  np.testing.assert_array_equal(half, full[2:])


def test_lazy_rows_read_only_what_is_indexed():
  asked = []

  def read(idx):
    asked.append(list(idx))
    return np.stack([np.full(3, i, np.float32) for i in idx])

  rows = LazyRows(read, np.arange(10), (3,))
  view = rows[4:8].padded(6)
  assert view.shape == (6, 3) and asked == []
  got = view[(slice(1, 3), slice(None))]
  assert [list(map(int, a)) for a in asked] == [[5, 6]]
  np.testing.assert_array_equal(got, [[5, 5, 5], [6, 6, 6]])
  dense = np.asarray(view)
  np.testing.assert_array_equal(dense[:, 0], [4, 5, 6, 7, 0, 0])
