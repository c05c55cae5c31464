"""End to end: a tiny run beats chance, resumes exactly, and the CLI fails cleanly."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mltm_jax.config import Config
from mltm_jax.train.loop import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]


def tiny_config(root: Path, workdir: Path, **kw) -> Config:
  base = dict(
    dataset="synthcaps",
    data_dir=str(root),
    synthcaps_sizes="192,32,32",
    synthcaps_seed=3,
    sample_rate=8000,
    clip_seconds=10.0,
    n_fft=512,
    hop_length=320,
    fmax=4000.0,
    cnn_channels="64,128,128",
    embed_dim=64,
    head_hidden=128,
    batch_size=32,
    num_steps=300,
    learning_rate=3e-3,
    eval_every=150,
    log_every=10,
    eval_batch_size=32,
    workdir=str(workdir),
    progress=False,
  )
  base.update(kw)
  return Config(**base)


def latest_params(workdir: Path, cfg: Config):
  from mltm_jax.train.checkpoint import Checkpoints
  from mltm_jax.train.setup import build_run

  run = build_run(cfg)
  ck = Checkpoints(workdir, cfg.keep_checkpoints)
  state = ck.restore_latest(run.init_state())
  ck.close()
  return state


def test_tiny_run_beats_chance_and_resumes_exactly(tiny_synthcaps, tmp_path):
  cfg = tiny_config(tiny_synthcaps, tmp_path / "full")
  final = train_and_evaluate(cfg)
  # Chance on 32 test clips x 160 captions: T2A R@10 = 10/32 = 31%; A2T R@10 (best of 5
  # captions within the top 10 of 160) = 1 - C(155,10)/C(160,10) = 28%. Demand 1.5x chance.
  chance_t2a = 100 * 10 / 32
  chance_a2t = 100 * (1 - math.comb(155, 10) / math.comb(160, 10))
  assert final["t2a"]["R@10"] >= 1.5 * chance_t2a, final
  assert final["a2t"]["R@10"] >= 1.5 * chance_a2t, final
  assert final["t2a"]["medR"] < 16 and final["skipped_steps"] == 0, final
  assert final["rank_by"] == "distance" and "by_plan" in final
  written = json.loads((tmp_path / "full" / "final_metrics.json").read_text())
  assert set(written["t2a"]) == {"R@1", "R@5", "R@10", "R@50", "medR", "meanR", "mAP@10"}
  assert (tmp_path / "full" / "config.json").is_file()
  assert list((tmp_path / "full" / "tensorboard").iterdir())
  steps = [
    json.loads(l)["step"] for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
  ]
  assert 300 in steps

  # Interrupted at step 150, then resumed to 300 with the same workdir.
  half = tiny_config(tiny_synthcaps, tmp_path / "resumed", num_steps=150)
  train_and_evaluate(half)
  resumed_cfg = half.replace(num_steps=300)
  train_and_evaluate(resumed_cfg)
  a = latest_params(tmp_path / "full", cfg)
  b = latest_params(tmp_path / "resumed", resumed_cfg)
  assert int(a.step) == int(b.step) == 300
  diff = jax.tree.map(
    lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))),
    (a.params, a.batch_stats),
    (b.params, b.batch_stats),
  )
  assert max(jax.tree.leaves(diff)) <= 1e-5

  # launch.evaluate on the finished run reproduces the final test metrics of its best
  # checkpoint (both rankings) from the run directory alone.
  res = subprocess.run(
    [sys.executable, "-m", "launch.evaluate", f"--workdir={tmp_path / 'full'}", "--split=test"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 0, res.stderr[-2000:]
  ev = json.loads((tmp_path / "full" / "eval_test.json").read_text())
  for d in ("t2a", "a2t"):
    for k in ("R@1", "R@10", "mAP@10"):
      assert ev["distance"][d][k] == pytest.approx(final[d][k], abs=1e-6)
      assert ev["plan"][d][k] == pytest.approx(final["by_plan"][d][k], abs=1e-6)
  assert "ranked by plan" in res.stdout


def run_cli(*args, timeout=120):
  return subprocess.run(
    [sys.executable, "-m", "launch.train", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


@pytest.mark.parametrize(
  "flag,needle",
  [
    ("--loss=cosine", "--loss='cosine' is not one of"),
    ("--eps=-1", "--eps must be in"),
    ("--batch_size=1", "--batch_size must be >= 2"),
    ("--cnn_channels=16,x", "--cnn_channels must be"),
  ],
)
def test_bad_flag_value_is_one_line_exit_2(flag, needle, tmp_path):
  res = run_cli("--flagfile=configs/demo.flags", f"--workdir={tmp_path}", flag)
  assert res.returncode == 2
  lines = [l for l in res.stderr.strip().splitlines() if l]
  assert len(lines) == 1 and needle in lines[0], res.stderr


def test_unknown_flag_fails_cleanly(tmp_path):
  res = run_cli("--flagfile=configs/demo.flags", "--no_such_flag=3")
  assert res.returncode != 0
  assert "no_such_flag" in res.stderr and "Traceback" not in res.stderr


def test_missing_dataset_dir_is_one_line(tmp_path):
  res = run_cli(
    "--dataset=clotho", f"--data_dir={tmp_path / 'nope'}", f"--workdir={tmp_path / 'w'}"
  )
  assert res.returncode == 2
  assert "nope" in res.stderr and "Traceback" not in res.stderr
