"""A tiny trained run and its test-split index, built once per pytest run (tests.once: by
whichever pytest process asks first) and shared by tests/test_api.py,
tests/test_search_acceptance.py and tests/test_serve.py.

The run uses 4 s clips on SynthCaps' 5-10 s clips with --long_audio=chunk and a 1.5 s hop,
so every clip is embedded from 2-5 windows and the chunked path is what evaluation uses.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.once import built_once, shared_text_cache

REPO = Path(__file__).resolve().parents[1]
RUN_OVERRIDES = {
  "num_steps": 40,
  "eval_every": 40,
  "clip_seconds": 4.0,
  "long_audio": "chunk",
  "chunk_hop_seconds": 1.5,
}


def search_run(tmp_path_factory, tiny_synthcaps) -> Path:
  """Run directory of a tiny SynthCaps run (40 steps), trained on first use."""
  from mltm_jax.train.loop import train_and_evaluate
  from tests.test_train import tiny_config

  return built_once(
    tmp_path_factory,
    "search_run",
    lambda root: train_and_evaluate(
      tiny_config(tiny_synthcaps, shared_text_cache(tmp_path_factory, root), **RUN_OVERRIDES)
    ),
  )


def _cli(*args: str) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, "-m", *args],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def prepared(tmp_path_factory, tiny_synthcaps) -> dict:
  """{"run", "index", "eval"}: the trained run, an index of its test-split audio written by
  the launch.embed CLI and launch.evaluate's eval_test.json (--rank_by=distance); the two
  CLIs run side by side, once per pytest run."""
  import json

  run = search_run(tmp_path_factory, tiny_synthcaps)
  ev = run / "eval_test.json"

  def build(out: Path) -> None:
    procs = {
      "embed": _cli(
        "launch.embed",
        f"--workdir={run}",
        f"--audio_dir={tiny_synthcaps / 'evaluation'}",
        f"--out={out}",
        "--shard_size=12",
        "--noprogress",
      ),
      "evaluate": _cli("launch.evaluate", f"--workdir={run}", "--split=test", "--rank_by=distance"),
    }
    for name, proc in procs.items():
      stdout, stderr = proc.communicate(timeout=300)
      assert proc.returncode == 0, (name, stderr[-3000:])
      if name == "embed":
        assert "32 of 32 files embedded" in stdout, stdout

  out = built_once(tmp_path_factory, "search_index", build)
  return {"run": run, "index": out, "eval": json.loads(ev.read_text())}


_RETRIEVERS: dict = {}


def retriever(run: Path):
  """api.Retriever of a run, loaded once per session."""
  from mltm_jax.api import Retriever

  if run not in _RETRIEVERS:
    _RETRIEVERS[run] = Retriever.from_run(run)
  return _RETRIEVERS[run]


def split_captions(root: Path) -> tuple[list[str], list[str]]:
  """(file names, captions) of the test split read with the csv module; caption i belongs to
  file i // 5."""
  import csv

  files, caps = [], []
  with open(root / "clotho_captions_evaluation.csv", newline="") as f:
    for row in csv.DictReader(f):
      files.append(row["file_name"])
      caps.extend(row[f"caption_{i}"] for i in range(1, 6))
  return files, caps
