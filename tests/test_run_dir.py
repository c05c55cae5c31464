"""The run directory: inference restores params and batch stats only, so a run written under
one optimizer structure loads under another; the config round trip."""

import jax
import numpy as np
import optax
import pytest

from mltm_jax.api import Retriever
from mltm_jax.config import Config
from mltm_jax.model import build_model
from mltm_jax.run_dir import RunDir
from mltm_jax.train.checkpoint import Checkpoints
from mltm_jax.train.state import create_state, init_state, make_optimizer
from tests.test_chunking import tiny_model_config


def _config(workdir) -> Config:
  """test_chunking's tiny model, with a run directory."""
  return tiny_model_config(precompute_mel=True).replace(workdir=str(workdir))


def _per_module_optimizer() -> optax.GradientTransformation:
  """Another optimizer structure: a learning rate per parameter group (multi_transform)."""
  labels = lambda params: {k: ("towers" if k in ("audio", "text") else "rest") for k in params}
  return optax.multi_transform({"towers": optax.adam(1e-4), "rest": optax.sgd(1e-3)}, labels)


def _written_run(tmp_path):
  """A run directory whose best checkpoint holds a per-module optimizer's state and params
  that differ from a fresh initialisation."""
  cfg = _config(tmp_path / "run")
  run_dir = RunDir(cfg.workdir)
  run_dir.write_config(cfg)
  model = build_model(cfg)
  tx = _per_module_optimizer()
  r_init, r_train = jax.random.split(jax.random.PRNGKey(cfg.seed))
  params, stats = model.init_params(r_init)
  params = jax.tree.map(lambda x: np.asarray(x) + 0.25, params)  # "trained"
  state = create_state(cfg, params, stats, tx, r_train).replace(step=np.int32(7))
  ckpts = Checkpoints(cfg.workdir, 2)
  assert ckpts.save_best(7, state, score=1.0)
  ckpts.save_latest(7, state, force=True)
  ckpts.wait()
  ckpts.close()
  return cfg, run_dir, state


def test_inference_loads_a_run_trained_under_another_optimizer(tmp_path):
  cfg, run_dir, saved = _written_run(tmp_path)
  # Restoring the whole train state with today's optimizer fails on the tree structure...
  ckpts = Checkpoints(cfg.workdir, 2)
  with pytest.raises(Exception):
    ckpts.restore_best(init_state(build_model(cfg), make_optimizer(cfg)))
  ckpts.close()
  # ...while inference reads only step, params and batch stats, from either checkpoint.
  for kind in ("best", "latest"):
    model, variables = run_dir.load(checkpoint=kind)
    assert variables.step == 7
    for a, b in zip(jax.tree.leaves(variables.params), jax.tree.leaves(saved.params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(variables.batch_stats) == jax.tree.structure(saved.batch_stats)
  retriever = Retriever.from_run(run_dir.path)
  assert retriever.step == 7
  emb = retriever.embed_text(["a dog barks", "rain"])
  assert emb.shape == (2, 16) and np.all(np.isfinite(emb))


def test_missing_checkpoint_and_not_a_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    RunDir(tmp_path).config()
  cfg = _config(tmp_path / "empty")
  RunDir(cfg.workdir).write_config(cfg)
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    RunDir(cfg.workdir).load()
  with pytest.raises(ValueError, match="'best' or 'latest'"):
    RunDir(cfg.workdir).checkpoint_steps("newest")


def test_config_round_trip_and_flagfile(tmp_path):
  cfg = _config(tmp_path / "r").replace(eps=0.03, loss="contrastive")
  rd = RunDir(cfg.workdir)
  rd.write_config(cfg)
  assert rd.config() == cfg
  flags = dict(line[2:].split("=", 1) for line in rd.flags_file.read_text().splitlines() if line)
  assert flags["eps"] == "0.03" and flags["loss"] == "contrastive"
