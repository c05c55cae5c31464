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

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

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
  from mltm_jax.model import build_model
  from mltm_jax.train.checkpoint import Checkpoints
  from mltm_jax.train.state import init_state, make_optimizer

  model = build_model(cfg)
  ck = Checkpoints(workdir, cfg.keep_checkpoints)
  state = ck.restore_latest(init_state(model, make_optimizer(cfg)))
  ck.close()
  return state


def test_tiny_run_beats_chance_and_resumes_exactly(tiny_synthcaps, tmp_path):
  cfg = tiny_config(tiny_synthcaps, tmp_path / "full")
  final = train_and_evaluate(cfg)
  # Chance on 32 test clips x 160 captions: T2A R@10 = 10/32 = 31%; A2T R@10 (best of 5
  # captions within the top 10 of 160) = 1 - C(155,10)/C(160,10) = 28%. Demand 1.5x chance
  # on the two together and 1.25x on each (32 test clips: one clip moves R@10 by 3 points,
  # and XLA's CPU code differs between machines, so the exact numbers do too).
  chance_t2a = 100 * 10 / 32
  chance_a2t = 100 * (1 - math.comb(155, 10) / math.comb(160, 10))
  both = final["t2a"]["R@10"] + final["a2t"]["R@10"]
  assert both >= 1.5 * (chance_t2a + chance_a2t), final
  assert final["t2a"]["R@10"] >= 1.25 * chance_t2a, final
  assert final["a2t"]["R@10"] >= 1.25 * chance_a2t, final
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
    ("--metric_rank=8", "--metric_rank=8 needs --metric=lowrank"),
    ("--num_processes=2", "--num_processes/--process_id need --coordinator_address"),
    (
      "--coordinator_address=127.0.0.1:4567 --num_processes=2 --process_id=2",
      "--process_id must be in [0, --num_processes=2)",
    ),
    (
      "--coordinator_address=127.0.0.1:4567 --num_processes=3 --process_id=0",
      "--batch_size=128 is not divisible by --num_processes=3",
    ),
  ],
)
def test_bad_flag_value_is_one_line_exit_2(flag, needle, tmp_path):
  res = run_cli("--flagfile=configs/demo.flags", f"--workdir={tmp_path}", *flag.split(" "))
  assert res.returncode == 2
  lines = [l for l in res.stderr.strip().splitlines() if l]
  assert len(lines) == 1 and needle in lines[0], res.stderr
  assert not any(tmp_path.iterdir())  # failed before any work


@pytest.mark.parametrize(
  "kw,needle",
  [
    (dict(metric="full", metric_rank=8), "--metric_rank=8 needs --metric=lowrank"),
    (dict(loss="mltm", learn_temperature=True), "--learn_temperature needs --loss=contrastive"),
    (dict(lr_decay_factor=0.0), "--lr_decay_factor must be in (0, 1]"),
    (dict(lr_decay_factor=2.0), "--lr_decay_factor must be in (0, 1]"),
    (dict(plan_eps=0.0), "--plan_eps must be"),
    (dict(max_text_length=600), "--max_text_length must be <= 512"),
    (dict(workdir=" "), "--workdir must not be empty"),
    (dict(clip_seconds=0.01), "fewer than --n_fft=1024"),
    (dict(spec_time_width=0), "--spec_time_width must be in [1, 251]"),
    (dict(spec_time_width=300), "--spec_time_width must be in [1, 251]"),
    (dict(spec_freq_width=65), "--spec_freq_width must be in [1, --n_mels=64]"),
    (dict(batch_size=4000), "exceeds the 3000 SynthCaps training clips"),
  ],
)
def test_invalid_combinations_are_named(kw, needle):
  problems = Config(**kw).problems()
  assert any(needle in p for p in problems), problems
  # Each is fine on its own / in a valid combination.
  assert Config().problems() == []
  assert Config(metric="lowrank", metric_rank=8).problems() == []
  assert Config(loss="contrastive", learn_temperature=True).problems() == []
  assert Config(spec_augment=False, spec_time_width=0).problems() == []
  assert Config(dataset="clotho", batch_size=4000).problems() == []


def test_distributed_flag_problems():
  from launch.runtime import distributed_problems

  assert distributed_problems("", 0, -1, 128) == []
  assert distributed_problems("10.0.0.2:8476", 4, 3, 128) == []
  for args, needle in [
    (("", 2, -1, 128), "need --coordinator_address"),
    (("host", 2, 0, 128), "must be host:port"),
    (("host:99999", 2, 0, 128), "must be host:port"),
    (("host:1234", 0, 0, 128), "--num_processes must be >= 1"),
    (("host:1234", 2, -1, 128), "--process_id must be in [0, --num_processes=2)"),
    (("host:1234", 3, 0, 128), "not divisible by --num_processes=3"),
  ]:
    found = distributed_problems(*args)
    assert len(found) == 1 and needle in found[0], (args, found)


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
