"""A run directory with random weights (no training) and a synthetic index of a few thousand
files, for the server tests that need a real model but not a trained one.

The run: frozen MiniLM-L6 (the bundled checkpoint), a small 1-D CNN audio tower, D = 64, full
metric, 8 kHz, 2 s clips; its 'best' checkpoint at step 0 holds the initial params. The index
has ``n`` rows of random unit embeddings times the run's W; the first ``n_audio`` files are
real WAV files of a few seconds (for /audio), the others do not exist on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 8000


def random_run(root: Path) -> Path:
  """Writes config.json and checkpoints/best/0 of a randomly initialised model, and its metric
  factor W next to the run (``factor_path(root)``); returns root."""
  import jax
  import orbax.checkpoint as ocp

  from mltm_jax import metric as metric_lib
  from mltm_jax.config import Config
  from mltm_jax.model import build_model
  from mltm_jax.run_dir import RunDir

  if (root / "checkpoints" / "best" / "0").is_dir():
    return root
  cfg = Config(
    sample_rate=SR,
    clip_seconds=2.0,
    n_fft=256,
    hop_length=160,
    fmax=4000.0,
    audio_encoder="temporal_cnn",
    cnn_channels="16,16,16",
    embed_dim=64,
    head_hidden=64,
    metric="full",
    eval_batch_size=32,
    progress=False,
    workdir=str(root),
  )
  model = build_model(cfg)
  params, stats = model.init_params(jax.random.PRNGKey(0))
  RunDir(root).write_config(cfg)
  state = {"step": np.int32(0), "params": params, "batch_stats": stats}
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save((root / "checkpoints" / "best" / "0" / "default").absolute(), state)
  factor = metric_lib.metric_factor("full", jax.tree.map(np.asarray, params["metric"]), 64)
  np.save(factor_path(root), np.asarray(factor, np.float32))
  return root


def factor_path(run: Path) -> Path:
  return run.parent / (run.name + "_factor.npy")


def synthetic_index(run: Path, out: Path, n: int, n_audio: int = 4, seed: int = 0) -> Path:
  """An index directory of ``n`` files for the run at ``run`` (see the module docstring)."""
  import json

  from mltm_jax.config import Config
  from mltm_jax.run_dir import RunDir
  from mltm_jax.search.store import IndexWriter

  if (out / "manifest.json").is_file():
    return out
  cfg = Config.from_json(RunDir(run).config_file)
  audio = out.parent / (out.name + "_audio")
  audio.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  files = [f"clip_{i:05d}.wav" for i in range(n)]
  for name in files[:n_audio]:
    sf.write(audio / name, 0.1 * rng.normal(size=3 * SR).astype(np.float32), SR)
  factor = np.load(factor_path(run))
  settings = {
    "workdir": str(run.resolve()),
    "checkpoint": "best",
    "checkpoint_step": 0,
    "audio_dir": str(audio.resolve()),
    "sample_rate": SR,
    "clip_samples": cfg.clip_samples,
    "hop_samples": cfg.clip_samples // 2,
    "metric": "full",
    "stored": "random unit vectors times W (a test index)",
  }
  emb = rng.normal(size=(n, cfg.embed_dim)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  shard = 1024
  writer = IndexWriter(out, settings, files, factor, shard)
  for s, rows in writer.pending():
    writer.write_shard(s, np.asarray(rows), emb[rows] @ factor, [])
  assert json.loads((out / "manifest.json").read_text())["complete"]
  return out
