"""Two processes on 127.0.0.1 (CPU, gloo collectives) train exactly as one process.

`python -m launch.train --coordinator_address=127.0.0.1:PORT --num_processes=2
--process_id=i` runs twice (each process owns one CPU device and loads only its half of every
batch); the reference is one process with two local CPU devices and the same GLOBAL batch, the
same device mesh shape and hence the same reductions. (How the device count itself moves the
numbers is test_sharding.py's subject.)
"""

import json
import subprocess

import numpy as np
import pytest

from tests.cli_runs import (
  REPO,
  Shared,
  checkpoint_steps,
  free_port,
  max_abs_diff,
  restore_state,
  run_train,
  tiny_flags,
  train_cmd,
  train_records,
)

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  return Shared(tmp_path_factory)


def test_two_processes_equal_one_process(tiny_synthcaps, tmp_path, shared):
  one, two = tmp_path / "one", tmp_path / "two"
  run_train(
    shared,
    tiny_flags(tiny_synthcaps, one),
    one,
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
  )

  shared.seed(two)
  port = free_port()
  procs = [
    subprocess.Popen(
      train_cmd(
        *tiny_flags(tiny_synthcaps, two),
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ),
      cwd=REPO,
      env=shared.env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in (1, 0)
  ]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=300))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  (out1, _), (out0, err0) = outs
  assert "Connecting to JAX distributed service on 127.0.0.1" in err0
  assert "Test split" in out0 and "Test split" not in out1  # results printed once

  # Same loss at every one of the 20 steps, written once (process 0 only).
  a, b = train_records(one), train_records(two)
  assert [r["step"] for r in b] == list(range(1, 21)) == [r["step"] for r in a]
  losses_a, losses_b = np.array([r["loss"] for r in a]), np.array([r["loss"] for r in b])
  assert np.all(np.isfinite(losses_b))
  assert np.max(np.abs(losses_a - losses_b)) <= 1e-5, (losses_a, losses_b)
  assert [r["step"] for r in train_records(two, "val")] == [10, 20]

  # Checkpoints written once (orbax, by both processes together) and equal parameters,
  # optimizer state, batch stats, step and rng after 20 steps.
  assert checkpoint_steps(two) == [10, 20]
  sa, sb = restore_state(one, 20), restore_state(two, 20)
  assert int(sb["step"]) == 20 and int(sb["skipped"]) == 0
  assert max_abs_diff(sa, sb) <= 1e-5
  assert max_abs_diff(sa["params"], sb["params"]) <= 1e-5

  # The final test metrics agree too.
  fa = json.loads((one / "final_metrics.json").read_text())
  fb = json.loads((two / "final_metrics.json").read_text())
  for d in ("t2a", "a2t"):
    for k, v in fa[d].items():
      assert fb[d][k] == pytest.approx(v, abs=1e-6), (d, k)


@pytest.mark.slow
def test_each_process_reads_only_the_clips_of_its_rows(tiny_synthcaps, tmp_path, shared):
  """Two processes, waveform inputs (the paper configs' setting): process p's train store reads
  exactly the crops of rows [p B/2, (p+1) B/2) of every global batch; validation and test clips
  are read by one process each (each reads the rows of its devices) and all are read."""
  import sys

  from mltm_jax.data.pipeline import PairSampler, host_slice, load_split

  work = tmp_path / "run"
  shared.seed(work)
  port = free_port()
  flags = tiny_flags(tiny_synthcaps, work, precompute_mel="false", num_steps=12, eval_every=6)
  procs = [
    subprocess.Popen(
      [sys.executable, "-m", "tests.reads_driver", *flags,
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=REPO,
      env=shared.env(MLTM_READS_OUT=str(tmp_path / f"reads{i}.json")),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in (1, 0)
  ]
  try:
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  reads = [json.loads((tmp_path / f"reads{i}.json").read_text()) for i in (0, 1)]

  train = load_split(tiny_synthcaps, "development", 8000, progress=False)
  sampler = PairSampler(train.clip_captions, 16, seed=1997)
  for p in (0, 1):
    rows = host_slice(16, p, 2)
    expected = sorted(int(c) for s in range(12) for c in sampler.global_batch(s)[0][rows])
    assert sorted(reads[p]["train"][0]) == expected
  # 12 steps of 16 = one epoch of the 192 clips: every clip read once, by one process.
  assert not set(reads[0]["train"][0]) & set(reads[1]["train"][0])
  for which, n in (("val", 32), ("test", 32)):
    a = [c for r in reads[0][which] for c in r]
    b = [c for r in reads[1][which] for c in r]
    assert a and b, which
    assert not set(a) & set(b), which  # no clip read by both processes
    assert set(a) | set(b) == set(range(n)), which
