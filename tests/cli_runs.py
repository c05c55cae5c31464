"""Helpers of the tests that run `python -m launch.train` as subprocesses on tiny SynthCaps.

Every run of a pytest session shares one JAX persistent compilation cache and one copy of the
frozen text-encoder caption features, so only the first run pays for compiling and encoding
(the programs and features are identical; loading them changes no number).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from tests.once import built_once, shared_text_cache

REPO = Path(__file__).resolve().parents[1]


def tiny_flags(root: Path, workdir: Path, **kw) -> list[str]:
  """Flags of a ~1 s/20-step run on the tiny_synthcaps fixture (192/32/32 clips, 8 kHz)."""
  flags = {
    "dataset": "synthcaps",
    "data_dir": str(root),
    "synthcaps_sizes": "192,32,32,32",
    "synthcaps_seed": 3,
    "sample_rate": 8000,
    "clip_seconds": 2.0,
    "n_fft": 256,
    "hop_length": 256,
    "fmax": 4000.0,
    "n_mels": 32,
    "cnn_channels": "16,32",
    "embed_dim": 16,
    "head_hidden": 32,
    "batch_size": 16,
    "num_steps": 20,
    "eval_every": 10,
    "log_every": 1,
    "eval_batch_size": 32,
    "progress": False,
    "workdir": str(workdir),
  }
  flags.update(kw)
  return [f"--{k}={v}" for k, v in flags.items()]


class Shared:
  """What every `launch.train` subprocess of a test run shares: the compilation cache that
  conftest exports to every process, and the caption-feature cache of tests.once."""

  def __init__(self, tmp_path_factory):
    self.tmp_path_factory = tmp_path_factory

  def env(self, **extra) -> dict:
    """The subprocess environment: this process's (with its compilation cache), on the CPU,
    caching every program (a tiny run's programs compile in well under conftest's 0.5 s)."""
    env = dict(os.environ)
    env.update(
      JAX_PLATFORMS="cpu",
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
      PYTHONPATH=str(REPO),
    )
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env

  def seed(self, workdir: Path) -> None:
    """Points workdir/cache at the shared caption-feature cache (tests.once)."""
    shared_text_cache(self.tmp_path_factory, workdir)


def train_cmd(*flags: str) -> list[str]:
  return [sys.executable, "-m", "launch.train", *flags]


def run_train(shared: Shared, flags: list[str], workdir: Path, timeout=300, **env_extra):
  shared.seed(workdir)
  res = subprocess.run(
    train_cmd(*flags),
    cwd=REPO,
    env=shared.env(**env_extra),
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  return res


def tiny_run(tmp_path_factory, shared: Shared, root: Path) -> Path:
  """Run directory of one uninterrupted 20-step `launch.train` run with tiny_flags, trained
  once per test run (tests.once) and shared by the tests that only read it or add their own
  reports to it (test_preemption, test_eval_any_dataset)."""
  return built_once(
    tmp_path_factory, "tiny_run", lambda out: run_train(shared, tiny_flags(root, out), out)
  )


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def train_records(workdir: Path, kind: str = "train") -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["kind"] == kind]


def checkpoint_steps(workdir: Path, which: str = "latest") -> list[int]:
  d = workdir / "checkpoints" / which
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def restore_state(workdir: Path, step: int, which: str = "latest") -> dict:
  """The TrainState saved at ``step`` as a dict of single-device arrays (no model needed;
  works for checkpoints written by any number of processes)."""
  import orbax.checkpoint as ocp
  from jax.sharding import SingleDeviceSharding

  path = (workdir / "checkpoints" / which / str(step) / "default").absolute()
  ckptr = ocp.StandardCheckpointer()
  meta = ckptr.metadata(path)
  meta = getattr(meta, "item_metadata", meta)
  dev = SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), meta)
  return ckptr.restore(path, target)


def max_abs_diff(a, b) -> float:
  diffs = jax.tree.map(
    lambda x, y: (
      float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
      if np.size(x)
      else 0.0
    ),
    a,
    b,
  )
  return max(jax.tree.leaves(diffs))
