"""PANNs Cnn10 / Cnn14 / ResNet38 and their checkpoint converter.

Reference: the three architectures written in PyTorch from the PANNs description (Kong et al.
2020) in benchmarks/references/torch_panns.py, with PANNs' module names so that their state
dicts look like the released checkpoints. Random weights and batch-norm statistics go through the
converter into our Flax models, which must reproduce the PyTorch outputs.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as tnn

from benchmarks.references.torch_panns import RefPanns, panns_state_dict, random_reference
from mltm_jax.models.panns import PANNS_MODELS
from mltm_jax.models.panns_convert import (
  convert_state_dict,
  detect_arch,
  load_panns_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
B, T, M = 2, 70, 64  # odd frame count: the pools floor 35 -> 17 on the way down

# ---------------------------------------------------------------- PyTorch reference


def _reference(arch, seed=0, **kw):
  return random_reference(arch, seed=seed, frames=T, n_mels=M, **kw)


def _mel(seed=1):
  return np.random.RandomState(seed).normal(-35.0, 12.0, (B, T, M)).astype(np.float32)


_panns_state_dict = panns_state_dict


def _abstract_init(arch, **kw):
  model = PANNS_MODELS[arch](**kw)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return jax.eval_shape(lambda: model.init(rngs, jnp.zeros((B, T, M)), train=False))


def _shapes(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


# ---------------------------------------------------------------- tests


# Cnn10 in the contributor's check; the deeper trunks (same converter, more blocks) are slow.
_DEEP = dict(marks=pytest.mark.slow)


@pytest.mark.parametrize(
  "arch", ["cnn10", pytest.param("cnn14", **_DEEP), pytest.param("resnet38", **_DEEP)]
)
def test_converted_checkpoint_matches_pytorch_eval(arch):
  ref = _reference(arch)
  params, stats = convert_state_dict(_panns_state_dict(ref))
  # the converted tree is exactly our model's variables (nothing extra, nothing missing)
  abstract = _abstract_init(arch)
  assert _shapes(params) == _shapes(abstract["params"])
  assert _shapes(stats) == _shapes(abstract["batch_stats"])

  mel = _mel()
  with torch.no_grad():
    want_emb, want_fc1 = (t.numpy() for t in ref(torch.from_numpy(mel)))
  model = PANNS_MODELS[arch]()
  emb, fc1 = jax.jit(lambda v, x: model.apply(v, x, train=False, return_fc1=True))(
    {"params": params, "batch_stats": stats}, jnp.asarray(mel)
  )
  width = 512 if arch == "cnn10" else 2048
  assert emb.shape == (B, width) and emb.dtype == jnp.float32
  assert np.std(want_emb) > 0.1  # a non-degenerate comparison
  err = float(np.max(np.abs(np.asarray(emb) - want_emb)))
  assert err <= 1e-4, f"{arch}: max |embedding - torch| = {err:.2e}"
  np.testing.assert_allclose(np.asarray(fc1), want_fc1, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["cnn10", pytest.param("resnet38", **_DEEP)])
def test_train_mode_uses_batch_stats_and_updates_running_stats(arch):
  ref = _reference(arch, seed=2, p_drop=0.0, p_block=0.0, p_fc=0.0)
  params, stats = convert_state_dict(_panns_state_dict(ref))
  # elements per channel seen by each BN: torch's running_var uses the unbiased variance,
  # flax the biased one; the hook lets us restate torch's update in flax's convention
  counts = {}
  for name, mod in ref.named_modules():
    if isinstance(mod, tnn.BatchNorm2d):
      mod.register_forward_pre_hook(
        lambda m, inp, name=name: counts.__setitem__(name, inp[0].numel() // inp[0].shape[1])
      )
  old = {k: v.clone() for k, v in ref.state_dict().items() if k.endswith("running_var")}
  mel = _mel(seed=3)
  ref.train()
  with torch.no_grad():
    want_emb, _ = ref(torch.from_numpy(mel))
  sd = _panns_state_dict(ref)
  for name, n in counts.items():
    key = f"{name}.running_var"
    sd[key] = 0.9 * old[key] + (sd[key] - 0.9 * old[key]) * (n - 1) / n
  _, want_stats = convert_state_dict(sd)

  kw = {"block_dropout": 0.0} if arch == "resnet38" else {}
  model = PANNS_MODELS[arch](dropout=0.0, fc1_dropout=0.0, spec_augment=False, **kw)
  train_apply = jax.jit(
    lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
    )
  )
  emb, upd = train_apply({"params": params, "batch_stats": stats}, jnp.asarray(mel))
  np.testing.assert_allclose(np.asarray(emb), want_emb.numpy(), rtol=1e-4, atol=1e-4)
  got, want = jax.tree.leaves(upd["batch_stats"]), jax.tree.leaves(want_stats)
  assert len(got) == len(want) == len(counts) * 2
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4)
  # and the update really moved the statistics
  moved = jax.tree.map(
    lambda a, b: float(np.max(np.abs(np.asarray(a) - b))), upd, {"batch_stats": stats}
  )
  assert min(jax.tree.leaves(moved)) > 1e-4


def _run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "launch.convert_panns", *args],
    check=False,
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.slow
def test_cli_round_trip_cnn10(tmp_path):
  ref = _reference("cnn10", seed=4)
  pth = tmp_path / "Cnn10.pth"
  torch.save({"model": _panns_state_dict(ref), "iteration": 0}, pth)
  out = tmp_path / "cnn10"
  proc = _run_cli(f"--input={pth}", f"--output={out}")
  assert proc.returncode == 0, proc.stderr
  assert "cnn10" in proc.stdout

  params, stats = load_panns_checkpoint(out)
  want_params, want_stats = convert_state_dict(_panns_state_dict(ref))
  assert _shapes(params) == _shapes(want_params) and _shapes(stats) == _shapes(want_stats)
  for a, b in zip(jax.tree.leaves((params, stats)), jax.tree.leaves((want_params, want_stats))):
    np.testing.assert_array_equal(a, b)

  mel = _mel(seed=5)
  with torch.no_grad():
    want_emb = ref(torch.from_numpy(mel))[0].numpy()
  # a retrieval tower drops fc1: the loaded trunk alone gives the same embedding
  trunk, _ = load_panns_checkpoint(out, include_fc1=False)
  assert "fc1" not in trunk
  emb = PANNS_MODELS["cnn10"](include_fc1=False).apply(
    {"params": trunk, "batch_stats": stats}, jnp.asarray(mel), train=False
  )
  assert float(np.max(np.abs(np.asarray(emb) - want_emb))) <= 1e-4

  # an existing --output is refused without --overwrite
  proc = _run_cli(f"--input={pth}", f"--output={out}")
  assert proc.returncode == 2 and "--overwrite" in proc.stderr


@pytest.mark.slow
def test_cli_refuses_mis_shaped_tensor_in_one_line(tmp_path):
  sd = _panns_state_dict(RefPanns("cnn10"))
  sd["conv_block2.conv1.weight"] = torch.zeros(128, 64, 3, 5)
  pth = tmp_path / "bad.pth"
  torch.save({"model": sd}, pth)
  out = tmp_path / "never"
  proc = _run_cli(f"--input={pth}", f"--output={out}")
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "Traceback" not in proc.stderr
  assert "conv_block2.conv1.weight (128, 64, 3, 5) expected (128, 64, 3, 3)" in lines[0]
  assert not out.exists()


def test_missing_and_unexpected_tensors_are_named():
  sd = _panns_state_dict(RefPanns("cnn10"))
  del sd["conv_block3.bn2.running_var"]
  sd["conv_block9.conv1.weight"] = torch.zeros(1)
  with pytest.raises(ValueError) as e:
    convert_state_dict(sd, source="x.pth")
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("x.pth: ")
  assert "missing tensors [conv_block3.bn2.running_var]" in msg
  assert "unexpected tensors [conv_block9.conv1.weight]" in msg
  # a bn0 for another number of mel bins is a shape error, not a silent resize
  sd = _panns_state_dict(RefPanns("cnn10"))
  sd["bn0.weight"] = torch.ones(40)
  with pytest.raises(ValueError, match=r"bn0\.weight \(40,\) expected \(64,\)"):
    convert_state_dict(sd)


def test_detect_arch_and_dataparallel_prefix():
  assert detect_arch(["bn0.weight", "conv_block6.conv1.weight"]) == "cnn14"
  assert detect_arch(["module.resnet.layer1.0.conv1.weight"]) == "resnet38"
  with pytest.raises(ValueError, match="cannot tell the PANNs architecture"):
    detect_arch(["bn0.weight"])
  sd = _panns_state_dict(RefPanns("cnn10"))
  assert detect_arch(sd) == "cnn10"
  params, _ = convert_state_dict({"module." + k: v for k, v in sd.items()})
  assert params["conv_block4"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
  # explicit arch that does not fit names the mismatch
  with pytest.raises(ValueError, match="not a PANNs resnet38 checkpoint"):
    convert_state_dict(sd, "resnet38")


def test_audio_tower_uses_panns_trunk_without_fc1():
  from mltm_jax.config import Config
  from mltm_jax.models.two_tower import build_towers

  cfg = Config(audio_encoder="resnet38", sample_rate=32000, fmax=14000.0, hop_length=320)
  audio, _ = build_towers(cfg, None)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  v = jax.eval_shape(lambda: audio.init(rngs, jnp.zeros((B, T, M)), train=False))
  trunk = _abstract_init("resnet38", include_fc1=False)
  assert _shapes(v["params"]["cnn"]) == _shapes(trunk["params"])
  assert v["params"]["head"]  # the projection head takes the 2048-d embedding
