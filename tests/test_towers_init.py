"""--audio_init: converted PANNs weights start a training run's audio trunk.

Reference: a random PyTorch PANNs Cnn10 (benchmarks/references/torch_panns.py) written as a
PANNs .pth,
converted by the `launch.convert_panns` CLI. The run's initial trunk must hold exactly the
converted tensors, and the tower must embed a log-mel batch as the PyTorch network (plus the
projection head, written in torch from the head's weights) does in eval mode.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from benchmarks.references.torch_panns import panns_state_dict, random_reference
from mltm_jax.config import Config
from mltm_jax.models.panns_convert import convert_state_dict
from mltm_jax.model import build_model, check_audio_init
from mltm_jax.train.state import init_state, make_optimizer
from mltm_jax.train.step import make_train_step
from mltm_jax.sharding import to_global

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]
B, T, M = 4, 51, 64  # a 1 s clip at 8 kHz, hop 160 -> 51 frames


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(reference torch model, orbax dir written by the CLI from its .pth)."""
  tmp = tmp_path_factory.mktemp("panns")
  ref = random_reference("cnn10", seed=11, frames=T, n_mels=M)
  pth = tmp / "Cnn10.pth"
  torch.save({"model": panns_state_dict(ref), "iteration": 0}, pth)
  out = tmp / "cnn10_flax"
  proc = subprocess.run(
    [sys.executable, "-m", "launch.convert_panns", f"--input={pth}", f"--output={out}"],
    check=False,
    cwd=REPO,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  return ref, out


def _config(tmp_path, audio_init, **kw) -> Config:
  return Config(
    audio_encoder="cnn10",
    audio_init=str(audio_init),
    sample_rate=8000,
    clip_seconds=1.0,
    n_fft=512,
    hop_length=160,
    n_mels=M,
    fmax=4000.0,
    embed_dim=32,
    head_hidden=64,
    batch_size=B,
    learning_rate=1e-3,
    workdir=str(tmp_path / "run"),
    progress=False,
  ).replace(**kw)


def _mel(seed):
  return np.random.RandomState(seed).normal(-35.0, 12.0, (B, T, M)).astype(np.float32)


def test_run_starts_from_converted_trunk_and_trains(converted, tmp_path):
  ref, out = converted
  cfg = _config(tmp_path, out)
  assert cfg.problems() == []
  check_audio_init(cfg)  # the early (metadata-only) check passes
  run = build_model(cfg)
  assert run.clip_frames == T
  tx = make_optimizer(cfg)
  state = init_state(run, tx)

  # the initial trunk is exactly the converted checkpoint (fc1 dropped), leaf for leaf
  want_params, want_stats = convert_state_dict(panns_state_dict(ref), "cnn10")
  want_params.pop("fc1")
  got_params, got_stats = jax.device_get((state.params["audio"]["cnn"], state.batch_stats["cnn"]))
  assert jax.tree.structure(got_params) == jax.tree.structure(want_params)
  assert jax.tree.structure(got_stats) == jax.tree.structure(want_stats)
  for a, b in zip(
    jax.tree.leaves((got_params, got_stats)), jax.tree.leaves((want_params, want_stats))
  ):
    np.testing.assert_array_equal(a, b)

  # eval-mode embeddings of a log-mel batch: trunk and whole tower against torch
  mel = _mel(seed=12)
  with torch.no_grad():
    want_emb = ref(torch.from_numpy(mel))[0]
    head = jax.tree.map(lambda a: torch.from_numpy(np.array(a)), state.params["audio"]["head"])
    h = torch.relu(want_emb @ head["fc1"]["kernel"] + head["fc1"]["bias"])
    h = h @ head["fc2"]["kernel"] + head["fc2"]["bias"]
    want_out = (h / h.norm(dim=1, keepdim=True)).numpy()
  variables = {"params": state.params["audio"], "batch_stats": state.batch_stats}
  _, inter = run.audio_tower.apply(variables, mel, train=False, capture_intermediates=True)
  trunk_emb = np.asarray(inter["intermediates"]["cnn"]["__call__"][0])
  assert trunk_emb.shape == (B, 512) and np.std(want_emb.numpy()) > 0.1
  assert float(np.max(np.abs(trunk_emb - want_emb.numpy()))) <= 1e-4
  out_emb = np.asarray(run.embed_audio(state.params, state.batch_stats, mel))  # the eval path
  assert out_emb.shape == (B, cfg.embed_dim)
  assert float(np.max(np.abs(out_emb - want_out))) <= 1e-4

  # a few training steps from the loaded trunk: finite loss, trunk and batch stats move
  before = jax.device_get((state.params["audio"]["cnn"], state.batch_stats["cnn"]))
  step = make_train_step(cfg, run.audio_tower, run.text_tower, tx, run.mesh)
  feats = np.random.RandomState(13).normal(size=(B, run.encoder.config.hidden_size))
  losses = []
  for k in range(3):
    batch = {"audio": _mel(seed=20 + k), "text": feats.astype(np.float32)}
    state, metrics = step(state, to_global(run.mesh, batch))
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)) and int(state.skipped) == 0, losses
  after = jax.device_get((state.params["audio"]["cnn"], state.batch_stats["cnn"]))
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), after, before)
  assert min(jax.tree.leaves(moved[0])) > 0  # every trunk parameter received updates
  assert min(jax.tree.leaves(moved[1])) > 0  # and every batch-norm statistic moved


def test_mismatched_checkpoint_is_refused_naming_arch_or_key(converted, tmp_path):
  _, out = converted
  with pytest.raises(ValueError) as e:
    check_audio_init(_config(tmp_path, out, audio_encoder="cnn14"))
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("--audio_init: ")
  assert "holds PANNs cnn10 weights, but the audio encoder is cnn14" in msg
  # same architecture, other mel bins: bn0 is named with both shapes
  with pytest.raises(ValueError) as e:
    check_audio_init(_config(tmp_path, out, n_mels=40))
  assert "does not fit the cnn10 trunk (mis-shaped [" in str(e.value)
  assert "params/bn0/scale (64,) expected (40,)" in str(e.value)
  assert "batch_stats/bn0/var (64,) expected (40,)" in str(e.value)
  with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
    check_audio_init(_config(tmp_path, tmp_path / "nothing"))
  problems = _config(tmp_path, out, audio_encoder="temporal_cnn").problems()
  assert problems == [
    "--audio_init needs a PANNs --audio_encoder (cnn10, cnn14, resnet38), got 'temporal_cnn'"
  ]


def test_train_cli_refuses_mismatch_in_one_line_before_any_work(converted, tmp_path):
  _, out = converted
  workdir, data = tmp_path / "w", tmp_path / "data"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.train",
      "--audio_encoder=resnet38",
      f"--audio_init={out}",
      f"--data_dir={data}",
      f"--workdir={workdir}",
    ],
    check=False,
    cwd=REPO,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  lines = [line for line in proc.stderr.strip().splitlines() if line]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert "holds PANNs cnn10 weights, but the audio encoder is resnet38" in lines[0]
  assert not workdir.exists() and not data.exists()  # nothing rendered, nothing written
