"""The Python API on a tiny trained run: its embeddings give launch.evaluate's metrics
(numpy ranking), its distance is c_M, and paths, arrays and batch sizes agree."""

import numpy as np
import pytest
import soundfile as sf

from mltm_jax.data.audio import AudioError
from tests.search_fixtures import prepared, retriever, split_captions

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, tiny_synthcaps):
  ready = prepared(tmp_path_factory, tiny_synthcaps)
  return {**ready, "r": retriever(ready["run"]), "root": tiny_synthcaps}


def numpy_metrics(dist: np.ndarray, owner: np.ndarray) -> dict:
  """Reference R@k / medR from a float64 [clips, captions] distance matrix (argsort)."""
  n_clips, n_caps = dist.shape
  t2a = np.array([1 + np.sum(dist[:, c] < dist[owner[c], c]) for c in range(n_caps)])
  a2t = []
  for i in range(n_clips):
    order = np.argsort(dist[i], kind="stable")
    a2t.append(1 + int(np.flatnonzero(owner[order] == i)[0]))
  out = {}
  for name, ranks in (("t2a", t2a), ("a2t", np.array(a2t))):
    out[name] = {f"R@{k}": 100.0 * np.mean(ranks <= k) for k in (1, 5, 10)}
    out[name]["medR"] = float(np.floor(np.median(ranks)))
  return out


def test_embeddings_reproduce_launch_evaluate(ctx):
  r, root = ctx["r"], ctx["root"]
  files, captions = split_captions(root)
  audio = r.embed_audio([root / "evaluation" / f for f in files])
  text = r.embed_text(captions)
  assert audio.shape == (32, r.dim) and text.shape == (160, r.dim)
  np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
  m = np.asarray(r.metric_params["M"], np.float64)
  diff = audio[:, None, :].astype(np.float64) - text[None, :, :]
  dist = np.sqrt(np.maximum(np.einsum("ncd,de,nce->nc", diff, m, diff), 0.0))
  ours = numpy_metrics(dist, np.repeat(np.arange(32), 5))
  ev = ctx["eval"]["distance"]
  for d in ("t2a", "a2t"):
    for k in ("R@1", "R@5", "R@10", "medR"):
      assert ours[d][k] == pytest.approx(ev[d][k], abs=1e-9), (d, k, ours, ev)
  # Better than chance (T2A R@10 = 31%), so the run is a real, trained one.
  assert ev["t2a"]["R@10"] > 40.0
  # distance() is c_M.
  np.testing.assert_allclose(r.distance(audio[:5], text[:7]), dist[:5, :7], rtol=1e-4, atol=1e-5)
  # The factor: Euclidean distances of transformed rows are c_M.
  ta, tt = r.transform(audio[:5]), r.transform(text[:7])
  eucl = np.linalg.norm(ta[:, None].astype(np.float64) - tt[None], axis=-1)
  np.testing.assert_allclose(eucl, dist[:5, :7], rtol=1e-4, atol=1e-5)


def test_paths_arrays_and_batches_agree(ctx, tmp_path):
  import librosa

  r, root = ctx["r"], ctx["root"]
  path = root / "evaluation" / "evaluation_00003.wav"
  from_path = r.embed_audio(path)
  wave, sr = sf.read(path, dtype="float32")
  np.testing.assert_allclose(r.embed_audio([wave], sample_rate=sr), from_path, atol=1e-6)
  # The same file at another rate and in stereo: resampled and downmixed on load.
  up = librosa.resample(wave, orig_sr=sr, target_sr=16000)
  sf.write(tmp_path / "x.wav", np.stack([up, up], axis=1), 16000, subtype="FLOAT")
  np.testing.assert_allclose(
    r.embed_audio([tmp_path / "x.wav"]), r.embed_audio([up], sample_rate=16000), atol=1e-6
  )
  both = r.embed_audio([path, wave])
  np.testing.assert_allclose(both[0], from_path[0], atol=1e-6)
  np.testing.assert_allclose(both[1], from_path[0], atol=1e-6)
  caps = ["a dog barks", "a piano plays softly", "rain"]
  np.testing.assert_allclose(r.embed_text(caps)[1], r.embed_text(caps[1])[0], atol=1e-5)
  with pytest.raises(AudioError, match="missing"):
    r.embed_audio([tmp_path / "nope.wav"])
  with pytest.raises(ValueError, match="1-D"):
    r.embed_audio([np.zeros((0,), np.float32)])


def test_readme_example_runs(ctx, monkeypatch, capsys):
  """The README's Python API block, with the tiny run and two test files."""
  import re
  from pathlib import Path

  from mltm_jax import api

  readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
  code = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.DOTALL).group(1)
  files = [ctx["root"] / "evaluation" / f"evaluation_0000{i}.wav" for i in (1, 2)]
  code = code.replace('"dog.wav"', repr(str(files[0]))).replace('"rain.flac"', repr(str(files[1])))
  loaded = ctx["r"]
  monkeypatch.setattr(
    api.Retriever,
    "from_run",
    classmethod(lambda cls, w, *a, **k: loaded if w == "runs/demo" else None),
  )
  scope: dict = {}
  exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 -- the README is ours
  assert scope["audio"].shape == (2, loaded.dim) and scope["text"].shape == (2, loaded.dim)
  np.testing.assert_allclose(scope["audio"], loaded.embed_audio(files), atol=1e-6)
  assert "[[" in capsys.readouterr().out


def test_embed_text_compiles_nothing_after_warm_up(ctx):
  """After warm_up_text(8), captions of any length in calls of 1 to 8 compile nothing, and a
  caption's embedding does not depend on the batch it runs in (1, 8 or 32 rows)."""
  from mltm_jax.compiles import CompileCounter

  r, rng = ctx["r"], np.random.default_rng(3)
  words = "a dog barks twice while rain falls on a tin roof and wind howls".split()
  r.warm_up_text(8)
  with CompileCounter() as counter:
    for n in range(1, 9):
      caps = [" ".join(rng.choice(words, int(rng.integers(1, 60)))) for _ in range(n)]
      assert r.embed_text(caps).shape == (n, r.dim)
  assert counter.count == 0, counter.names
  caps = ["rain"] + [f"a dog barks {i} times" for i in range(20)]
  np.testing.assert_allclose(r.embed_text(caps)[1], r.embed_text(caps[1])[0], atol=1e-5)
