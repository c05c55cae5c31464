"""The library index: every file embedded once (chunked), unreadable files skipped with
reasons, an interrupted build resumes where it stopped and equals an uninterrupted one."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mltm_jax.config import Config
from mltm_jax.inference.chunking import hop_samples, pool_chunks, split_windows
from mltm_jax.inference.library import embed_library
from mltm_jax.search.store import Library, list_audio_files, scan_audio_files

SR = 8000


class FeatureModel:
  """Stands in for api.Retriever: a fixed random projection of simple window statistics,
  chunked and pooled with the library's own functions (the model is not under test here)."""

  def __init__(self, workdir: Path, dim: int = 6):
    self.cfg = Config(sample_rate=SR, clip_seconds=0.5, chunk_hop_seconds=0.25, embed_dim=dim)
    self.workdir = workdir
    self.step, self.checkpoint, self.metric_kind = 7, "best", "full"
    self.dim, self.sample_rate = dim, SR
    rng = np.random.default_rng(0)
    self.proj = rng.normal(size=(4, dim))
    a = rng.normal(size=(dim, dim))
    self.factor = np.linalg.cholesky(a @ a.T + np.eye(dim)).astype(np.float32)
    self.calls = 0
    self.fail_on_call = None
    self.longest = 0  # samples of the longest wave embed_waves was given

  def window_embedding(self, w):
    feats = np.array([w.mean(), w.std(), np.abs(w).max(), (w[1:] * w[:-1]).mean()])
    e = np.tanh(feats @ self.proj)
    return e / np.linalg.norm(e)

  def embed_waves(self, waves):
    self.calls += 1
    self.longest = max([self.longest] + [len(w) for w in waves])
    if self.fail_on_call == self.calls:
      raise KeyboardInterrupt  # an interruption in the middle of the build
    win, hop = self.cfg.clip_samples, hop_samples(self.cfg)
    return np.stack(
      [
        pool_chunks(np.stack([self.window_embedding(x) for x in split_windows(w, win, hop)]))
        for w in waves
      ]
    ).astype(np.float32)

  def transform(self, x):
    return np.asarray(x, np.float32) @ self.factor


@pytest.fixture
def library_dir(tmp_path):
  root = tmp_path / "audio"
  (root / "sub").mkdir(parents=True)
  rng = np.random.default_rng(1)
  lengths = {}
  for i in range(11):
    name = f"sub/{i:02d}.wav" if i % 3 == 0 else f"{i:02d}.flac"
    n = int(rng.integers(SR // 10, 3 * SR))  # 0.1 s .. 3 s: 1 to 11 windows
    sf.write(root / name, 0.3 * rng.normal(size=n), SR if i % 2 else 16000)
    lengths[name] = n
  (root / "broken.wav").write_bytes(b"RIFF....WAVEfmt nothing")
  sf.write(root / "empty.wav", np.zeros(0), SR)
  (root / "notes.txt").write_text("not audio")
  return root


def expected(model, root, rel):
  from mltm_jax.data.audio import load_audio

  return model.transform(model.embed_waves([load_audio(root / rel, SR)]))[0]


def test_build_skips_bad_files_and_resumes_exactly(library_dir, tmp_path):
  files = list_audio_files(library_dir)
  assert "notes.txt" not in files and "sub/00.wav" in files and len(files) == 13

  model = FeatureModel(tmp_path)
  model.fail_on_call = 3  # shards of 4 files: two shards written, then interrupted
  out = tmp_path / "index"
  with pytest.raises(KeyboardInterrupt):
    embed_library(model, library_dir, out, shard_size=4, progress=False)
  manifest = json.loads((out / "manifest.json").read_text())
  assert [e["shard"] for e in manifest["shards"]] == [0, 1] and not manifest["complete"]
  with pytest.raises(ValueError, match="incomplete"):
    Library.load(out)

  model.fail_on_call, model.calls = None, 0
  summary = embed_library(model, library_dir, out, shard_size=99, progress=False)
  assert model.calls == 2  # only the two missing shards (the stored shard size is kept)
  assert summary["resumed_files"] == 8 and summary["files"] == 13
  assert summary["embedded"] == 11 and summary["skipped"] == 2
  assert summary["reasons"] == {"corrupt": 1, "empty": 1}

  whole = tmp_path / "whole"
  embed_library(FeatureModel(tmp_path), library_dir, whole, shard_size=4, progress=False)
  a, b = Library.load(out), Library.load(whole)
  assert a.rel_paths == b.rel_paths and len(a.rel_paths) == 11
  np.testing.assert_array_equal(a.emb, b.emb)
  assert sorted(a.skipped) == [("broken.wav", "corrupt"), ("empty.wav", "empty")]
  # Rows are v W for the file's own pooled embedding (resampled when stored at 16 kHz).
  for rel, row in zip(a.rel_paths, a.emb):
    np.testing.assert_allclose(row, expected(model, library_dir, rel), rtol=1e-5, atol=1e-6)
  assert a.paths[0] == str(library_dir.resolve() / a.rel_paths[0])
  np.testing.assert_array_equal(a.factor, model.factor)

  # The gallery searched by a text-like query: distances are c_M with M = W W^T.
  rng = np.random.default_rng(5)
  query = rng.normal(size=6)
  dist, ids = a.index("exact").search((query @ a.factor)[None], 3)
  m = model.factor.astype(np.float64) @ model.factor.T
  vs = np.stack([model.embed_waves([_load(library_dir, r)])[0] for r in a.rel_paths])
  ref = np.sqrt(np.einsum("nd,de,ne->n", query - vs, m, query - vs))
  np.testing.assert_array_equal(ids[0], np.argsort(ref)[:3])
  np.testing.assert_allclose(dist[0], np.sort(ref)[:3], rtol=1e-4)

  # Resuming with different settings is refused with one line.
  other = FeatureModel(tmp_path)
  other.step = 8
  with pytest.raises(ValueError, match="checkpoint_step=7"):
    embed_library(other, library_dir, out, progress=False)


def test_ann_index_is_built_once_and_cached(library_dir, tmp_path):
  out = tmp_path / "index"
  embed_library(FeatureModel(tmp_path), library_dir, out, shard_size=5, progress=False)
  lib = Library.load(out)
  from mltm_jax.search import AnnParams

  params = AnnParams(nlist=2, nprobe=2, train_size=11)
  first = lib.index("ivf", params)
  cached = list((out / "ann").glob("ivf_*.faiss"))
  assert len(cached) == 1
  second = lib.index("ivf", params)
  q = lib.emb[:3]
  np.testing.assert_array_equal(first.search(q, 4)[1], second.search(q, 4)[1])
  np.testing.assert_array_equal(first.search(q, 1)[1][:, 0], [0, 1, 2])  # nprobe = nlist: exact


def _load(root, rel):
  from mltm_jax.data.audio import load_audio

  return load_audio(root / rel, SR)


def test_symlinks_inside_root_only_each_file_once(tmp_path):
  root, outside = tmp_path / "audio", tmp_path / "elsewhere"
  (root / "sub" / "deep").mkdir(parents=True)
  outside.mkdir()
  for rel in ("a.wav", "sub/b.flac", "sub/deep/c.wav"):
    sf.write(root / rel, np.zeros(800), SR)
  sf.write(outside / "secret.wav", np.zeros(800), SR)
  (root / "loop_up").symlink_to(root)  # a link to the root: a loop
  (root / "sub" / "deep" / "loop_parent").symlink_to(root / "sub")  # another loop
  (root / "same_sub").symlink_to(root / "sub")  # the same folder twice
  (root / "dup.wav").symlink_to(root / "a.wav")  # the same file twice
  (root / "out_dir").symlink_to(outside)  # outside the root: not followed
  (root / "out.wav").symlink_to(outside / "secret.wav")
  (root / "dangling.wav").symlink_to(root / "nothing.wav")
  scan = scan_audio_files(root)
  assert scan.files == ["a.wav", "sub/b.flac", "sub/deep/c.wav"]
  assert scan.outside == 2 and scan.repeated == 4
  # The audio dir itself may be reached through a link.
  (tmp_path / "alias").symlink_to(root)
  assert list_audio_files(tmp_path / "alias") == scan.files


def test_long_files_are_embedded_window_by_window(tmp_path):
  root = tmp_path / "audio"
  root.mkdir()
  rng = np.random.default_rng(2)
  sf.write(root / "long_at_rate.wav", 0.3 * rng.normal(size=4 * SR), SR)  # 15 windows
  sf.write(root / "long_16k.flac", 0.3 * rng.normal(size=(3 * 16000, 2)), 16000)
  sf.write(root / "short.wav", 0.3 * rng.normal(size=SR // 2), SR)
  bad = 0.3 * rng.normal(size=4 * SR).astype(np.float32)
  bad[3 * SR] = np.nan  # late in the file: found after some windows were embedded
  sf.write(root / "nan_late.wav", bad, SR, subtype="FLOAT")
  model = FeatureModel(tmp_path)
  out = tmp_path / "streamed"
  summary = embed_library(model, root, out, shard_size=2, progress=False, max_seconds=1.0)
  assert summary["streamed"] == 2 and summary["reasons"] == {"nonfinite": 1}
  assert model.longest == model.cfg.clip_samples  # never a whole long file
  whole = tmp_path / "whole"
  embed_library(FeatureModel(tmp_path), root, whole, progress=False, max_seconds=60.0)
  a, b = Library.load(out), Library.load(whole)
  assert a.rel_paths == b.rel_paths == ["long_16k.flac", "long_at_rate.wav", "short.wav"]
  np.testing.assert_allclose(a.emb, b.emb, rtol=1e-6, atol=1e-6)
  for rel, row in zip(a.rel_paths, a.emb):
    np.testing.assert_allclose(row, expected(model, root, rel), rtol=1e-5, atol=1e-6)
