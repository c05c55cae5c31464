"""Shared fixtures: a tiny SynthCaps rendering reused by the end-to-end tests."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

# Fixtures that render SynthCaps or train: every test using one is marked slow.
SLOW_FIXTURES = {"tiny_synthcaps", "ds"}


# The longest files, longest first (measured in CI). They are collected first, so that with
# two pytest processes (`-n 2 --dist loadfile`: whole files, handed out in collection order)
# the short files fill the end instead of one long file running alone. pytest-xdist keeps
# this order only with --no-loadscope-reorder (by default it hands out the files with the
# most tests first).
LONGEST_FIRST = (
  "test_paper_configs.py",
  "test_train.py",
  "test_multihost.py",
  "test_experiments.py",
  "test_prepare_train.py",
  "test_preemption.py",
  "test_fuzz.py",
  "test_device_bench.py",
  "test_eval_any_dataset.py",
  "test_api.py",
  "test_resume.py",
  "test_benchmarks.py",
  "test_sharding.py",
  "test_towers_init.py",
  "test_zeroshot.py",
)


def _run_order(item) -> int:
  name = item.path.name
  return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
  """Marks slow (see pyproject.toml) every test that uses a rendering fixture; the rest are
  marked explicitly in their files (subprocess CLIs, training, notebook, browser). Orders
  the files longest first (LONGEST_FIRST; a stable sort keeps each file's own order)."""
  del config
  for item in items:
    if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)
  items.sort(key=_run_order)


@pytest.fixture(scope="session")
def tiny_synthcaps(tmp_path_factory):
  """A small SynthCaps in the Clotho layout (8 kHz): 192 train, 32 val, 32 test, 32 held-out
  clips (tests.cli_runs.tiny_flags: --synthcaps_sizes=192,32,32,32), rendered once per run."""
  from mltm_jax.synthcaps import ensure_synthcaps
  from tests.once import built_once

  def render(root):
    ensure_synthcaps(
      root,
      {"development": 192, "validation": 32, "evaluation": 32, "heldout": 32},
      seed=3,
      sample_rate=8000,
      progress=False,
      workers=1,
    )

  return built_once(tmp_path_factory, "tiny_synthcaps", render)


@pytest.fixture(scope="session", autouse=True)
def _jax_compilation_cache(tmp_path_factory):
  """One persistent compilation cache for the whole run (every pytest process and every
  subprocess a test starts: they inherit the environment set here; tests.cli_runs.Shared
  points the training runs at the same folder): a program an earlier test compiled is loaded
  instead of compiled again. Only programs that took >= 0.5 s to compile are written (the
  small ones are cheaper to compile than to store). An explicit JAX_COMPILATION_CACHE_DIR
  wins."""
  import jax

  from tests.once import shared_dir

  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    yield
    return
  path = shared_dir(tmp_path_factory) / "jax_compile_cache"
  path.mkdir(exist_ok=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  yield
