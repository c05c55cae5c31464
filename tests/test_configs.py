"""The paper flagfiles (configs/*_mltm.flags) and epoch-based schedules.

Expected values are written here from docs/method.md (sections 2, 4, 5), not read from the
flagfiles; the flagfiles are parsed by launch/flags.py exactly as launch.train parses them.
The epoch schedule is checked against torch's StepLR stepped once per epoch.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mltm_jax.config import DATASETS, Config
from mltm_jax.train.state import learning_rate_schedule

REPO = Path(__file__).resolve().parents[1]

# docs/method.md section 2 (model), section 4 (eps: the paper's best), section 5 (training).
PAPER = {
  "sample_rate": 32000,
  "n_fft": 1024,
  "hop_length": 320,
  "n_mels": 64,
  "fmin": 50.0,
  "fmax": 14000.0,
  "spec_augment": True,
  "spec_time_width": 64,
  "spec_freq_width": 8,
  "audio_encoder": "resnet38",
  "text_pooling": "cls",
  "freeze_text": False,
  "embed_dim": 1024,
  "head_hidden": 2048,
  "dropout": 0.2,
  "metric": "full",
  "loss": "mltm",
  "eps": 0.05,
  "normalize_cost": True,
  "learning_rate": 5e-5,
  "grad_clip": 2.0,
  "lr_decay_epochs": 20,
  "lr_decay_factor": 0.1,
  "warmup_steps": 0,
  "batch_size": 256,
  "seed": 1997,
  "precision": "float32",
  "plan_eps": 0.03,
  "plan_iterations": 10,
}
PATHS = {
  "audiocaps": {"data_dir": "data/prepared/audiocaps", "clip_seconds": 10.0},
  "clotho": {"data_dir": "data/prepared/clotho", "clip_seconds": 30.0},
}

_PARSE = """
import sys
from absl import flags
from launch.flags import config_from_flags, define_config_flags
define_config_flags()
flags.FLAGS(["train", "--flagfile=" + sys.argv[1]])
print(config_from_flags().to_json())
"""


def _parse(flagfile: str) -> Config:
  """Config of a flagfile via launch/flags.py, in a fresh process (absl flags are global)."""
  proc = subprocess.run(
    [sys.executable, "-c", _PARSE, flagfile],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  return Config(**json.loads(proc.stdout))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["audiocaps", "clotho"])
def test_paper_flagfile_matches_design(name):
  cfg = _parse(f"configs/{name}_mltm.flags")
  problems = cfg.problems()
  if "prepared" not in DATASETS:  # the dataset kind lands with launch.prepare
    problems = [p for p in problems if not p.startswith("--dataset='prepared'")]
  assert problems == []
  got = {k: getattr(cfg, k) for k in PAPER}
  assert got == PAPER
  assert cfg.dataset == "prepared"
  assert (cfg.data_dir, cfg.clip_seconds) == (PATHS[name]["data_dir"], PATHS[name]["clip_seconds"])
  assert cfg.audio_init == "weights/ResNet38_flax"
  assert cfg.text_encoder_dir == "weights/bert-base-uncased"
  assert cfg.num_epochs > cfg.lr_decay_epochs  # the decay happens within the run
  # the frame rate SpecAugment's width assumes: 100 frames/s
  assert cfg.sample_rate / cfg.hop_length == 100


def test_epoch_schedule_matches_torch_steplr():
  """Clotho development (3839 clips x 5 captions), batch 256: 74 steps an epoch."""
  cfg = Config(batch_size=256, learning_rate=5e-5, num_epochs=50, lr_decay_epochs=20)
  run = cfg.with_epochs(3839 * 5)
  assert (run.num_steps, run.lr_decay_steps) == (50 * 74, 20 * 74)
  assert cfg.with_epochs(10).num_steps == 50  # fewer pairs than a batch: one step an epoch
  assert Config(num_steps=7).with_epochs(1000).num_steps == 7  # 0 epochs: steps unchanged

  w = torch.zeros(1, requires_grad=True)
  opt = torch.optim.Adam([w], lr=5e-5)
  sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.1)
  want = []
  for _ in range(50):
    want += [opt.param_groups[0]["lr"]] * 74
    opt.step()  # no gradient: a no-op, keeps StepLR's call order
    sched.step()
  schedule = learning_rate_schedule(run)
  got = np.array([float(schedule(s)) for s in range(run.num_steps)])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert sorted(set(np.round(got / 5e-5, 6))) == [0.01, 0.1, 1.0]


def test_train_loop_counts_epochs_in_pairs(tiny_synthcaps, tmp_path, tmp_path_factory):
  from mltm_jax.train.loop import train_and_evaluate
  from tests.once import shared_text_cache

  shared_text_cache(tmp_path_factory, tmp_path / "run")
  cfg = Config(
    data_dir=str(tiny_synthcaps),
    synthcaps_sizes="192,32,32,32",
    synthcaps_seed=3,
    sample_rate=8000,
    n_fft=512,
    hop_length=320,
    fmax=4000.0,
    cnn_channels="16,16",
    embed_dim=16,
    head_hidden=32,
    batch_size=32,
    num_steps=1000,
    num_epochs=1,
    eval_every=1000,
    log_every=10,
    eval_batch_size=32,
    workdir=str(tmp_path / "run"),
    progress=False,
  )
  train_and_evaluate(cfg)
  rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  # 192 clips x 5 captions = 960 pairs, 30 steps of 32: one epoch, then validation
  assert max(r["step"] for r in rows if r["kind"] == "train") == 30
  assert [r["step"] for r in rows if r["kind"] == "val"] == [30]


def test_workspace_flag_table_lists_every_flag_with_its_default():
  import dataclasses

  text = (REPO / "WORKSPACE.md").read_text()
  table = text[text.index("## Every flag") :]
  table = table[: table.index("\n## ")]
  rows = {}
  for line in table.splitlines():
    if line.startswith("| `--"):
      cells = [c.strip() for c in line.strip("|").split(" | ")]
      rows[cells[0].strip("`").removeprefix("--")] = cells[1].strip("`")
  fields = {f.name: f.default for f in dataclasses.fields(Config)}
  assert set(rows) == set(fields), set(rows) ^ set(fields)
  for name, default in fields.items():
    assert rows[name] == str(default), (name, rows[name], default)


def test_ot_solver_auto_picks_the_solver_each_variant_has():
  from mltm_jax.config import upgrade_saved

  assert Config().ot_solver == "auto" and Config().resolved_ot_solver == "ott"
  assert Config(ot="unbalanced").resolved_ot_solver == "ott"
  partial = Config(ot="partial")  # the pre-#14 command line works unchanged
  assert partial.problems() == [] and partial.resolved_ot_solver == "native"
  assert Config(ot="partial", ot_solver="native").problems() == []
  assert Config(ot_solver="native").resolved_ot_solver == "native"
  bad = Config(ot="partial", ot_solver="ott").problems()
  assert len(bad) == 1 and "--ot=partial" in bad[0] and "ott-jax has none" in bad[0], bad
  assert Config(loss="contrastive", ot="partial", ot_solver="ott").problems() == []  # unused
  # runs saved when partial OT always ran natively whatever ot_solver said
  assert upgrade_saved({"ot": "partial", "ot_solver": "ott"})["ot_solver"] == "native"
  assert upgrade_saved({"ot": "partial", "ot_solver": "auto"})["ot_solver"] == "auto"
  # --ot_differentiation: auto = envelope for balanced OT only; runs saved before it unrolled.
  assert Config().resolved_ot_differentiation == "envelope"
  assert Config(ot_solver="native").resolved_ot_differentiation == "envelope"
  for ot in ("partial", "unbalanced"):
    assert Config(ot=ot).resolved_ot_differentiation == "unroll"
    assert Config(ot=ot, ot_differentiation="unroll").problems() == []
    assert "--ot_differentiation=envelope needs" in " ".join(
      Config(ot=ot, ot_differentiation="envelope").problems()
    )
  assert "envelope needs" in " ".join(
    Config(loss="contrastive", ot_differentiation="envelope").problems()
  )
  assert upgrade_saved({})["ot_differentiation"] == "unroll"
  assert upgrade_saved({"ot_differentiation": "auto"})["ot_differentiation"] == "auto"
  # --ot_momentum: the ott solver's only
  assert Config(ot_momentum=1.3).problems() == []
  assert Config(ot="unbalanced", ot_momentum=1.3).problems() == []
  for bad in (Config(ot_momentum=2.0), Config(ot_momentum=0.9)):
    assert len(bad.problems()) == 1 and "must be in [1, 2)" in bad.problems()[0]
  for other in (
    Config(ot_solver="native", ot_momentum=1.3),
    Config(ot="partial", ot_momentum=1.3),
    Config(loss="contrastive", ot_momentum=1.3),
  ):
    assert len(other.problems()) == 1 and "needs --loss=mltm with the ott" in other.problems()[0]


def test_runs_saved_before_the_metric_rate_keep_their_single_rate_optimizer(tmp_path):
  import jax
  import jax.numpy as jnp

  from mltm_jax.train.state import make_optimizer

  saved = json.loads(Config(metric="diagonal").to_json())
  del saved["metric_learning_rate"]  # a config.json written before the flag existed
  (tmp_path / "config.json").write_text(json.dumps(saved))
  old = Config.from_json(tmp_path / "config.json")
  assert old.metric_learning_rate == 0.0
  own = dict(saved, metric_learning_rate=5e-5)  # one written with the metric's own rate
  (tmp_path / "config.json").write_text(json.dumps(own))
  assert Config.from_json(tmp_path / "config.json").metric_learning_rate == 5e-5
  params = {"metric": {"diag": jnp.ones(4)}, "audio": {"w": jnp.ones(3)}}
  single = jax.tree.structure(make_optimizer(Config(metric_learning_rate=0.0)).init(params))
  assert jax.tree.structure(make_optimizer(old).init(params)) == single
  two = jax.tree.structure(make_optimizer(Config(metric_learning_rate=5e-5)).init(params))
  assert two != single
  # the runner sees the same: an old cell keeps its key under a grid that pins 0
  assert old == Config(metric="diagonal", metric_learning_rate=0.0)
