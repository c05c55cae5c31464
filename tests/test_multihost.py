"""Two processes on 127.0.0.1 (CPU, gloo collectives) train exactly as one process, and each
reads only the clips of its own rows.

`python -m launch.train --coordinator_address=127.0.0.1:PORT --num_processes=2
--process_id=i` runs twice (each process owns one CPU device and loads only its half of every
batch; tests.reads_driver wraps launch.train to record the clips each process reads); the
reference is one process with two local CPU devices and the same GLOBAL batch, the same device
mesh shape and hence the same reductions. Both runs take waveform inputs (the paper configs'
setting: log-mels computed inside the step) for 12 steps of 16 = one epoch of the 192 clips.
(How the device count itself moves the numbers is test_sharding.py's subject.)
"""

import json
import subprocess
import sys

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
  train_records,
)

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  return Shared(tmp_path_factory)


STEPS, EVAL_EVERY = 12, 6


@pytest.fixture(scope="module")
def runs(tiny_synthcaps, tmp_path_factory, shared):
  """{"one", "two": run dirs, "outs": [(stdout, stderr) of process 1, of process 0],
  "reads": [reads of process 0, of process 1]} of the same run in one and in two processes."""
  base = tmp_path_factory.mktemp("multihost")
  one, two = base / "one", base / "two"

  def flags(workdir):
    return tiny_flags(
      tiny_synthcaps, workdir, precompute_mel="false", num_steps=STEPS, eval_every=EVAL_EVERY
    )

  run_train(shared, flags(one), one, XLA_FLAGS="--xla_force_host_platform_device_count=2")

  shared.seed(two)
  port = free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "tests.reads_driver",
        *flags(two),
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ],
      cwd=REPO,
      env=shared.env(MLTM_READS_OUT=str(base / f"reads{i}.json")),
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
  reads = [json.loads((base / f"reads{i}.json").read_text()) for i in (0, 1)]
  return {"one": one, "two": two, "outs": outs, "reads": reads}


def test_two_processes_equal_one_process(runs):
  one, two = runs["one"], runs["two"]
  (out1, _), (out0, err0) = runs["outs"]
  assert "Connecting to JAX distributed service on 127.0.0.1" in err0
  assert "Test split" in out0 and "Test split" not in out1  # results printed once

  # Same loss at every one of the steps, written once (process 0 only).
  a, b = train_records(one), train_records(two)
  assert [r["step"] for r in b] == list(range(1, STEPS + 1)) == [r["step"] for r in a]
  losses_a, losses_b = np.array([r["loss"] for r in a]), np.array([r["loss"] for r in b])
  assert np.all(np.isfinite(losses_b))
  assert np.max(np.abs(losses_a - losses_b)) <= 1e-5, (losses_a, losses_b)
  assert [r["step"] for r in train_records(two, "val")] == [EVAL_EVERY, STEPS]

  # Checkpoints written once (orbax, by both processes together) and equal parameters,
  # optimizer state, batch stats, step and rng at the end.
  assert checkpoint_steps(two) == [EVAL_EVERY, STEPS]
  sa, sb = restore_state(one, STEPS), restore_state(two, STEPS)
  assert int(sb["step"]) == STEPS and int(sb["skipped"]) == 0
  assert max_abs_diff(sa, sb) <= 1e-5
  assert max_abs_diff(sa["params"], sb["params"]) <= 1e-5

  # The final test metrics agree too.
  fa = json.loads((one / "final_metrics.json").read_text())
  fb = json.loads((two / "final_metrics.json").read_text())
  for d in ("t2a", "a2t"):
    for k, v in fa[d].items():
      assert fb[d][k] == pytest.approx(v, abs=1e-6), (d, k)


def test_each_process_reads_only_the_clips_of_its_rows(tiny_synthcaps, runs):
  """Process p's train store reads exactly the crops of rows [p B/2, (p+1) B/2) of every
  global batch; validation and test clips are read by one process each (each reads the rows
  of its devices) and all are read."""
  from mltm_jax.data.pipeline import PairSampler, host_slice, load_split

  reads = runs["reads"]
  train = load_split(tiny_synthcaps, "development", 8000, progress=False)
  sampler = PairSampler(train.clip_captions, 16, seed=1997)
  for p in (0, 1):
    rows = host_slice(16, p, 2)
    expected = sorted(int(c) for s in range(STEPS) for c in sampler.global_batch(s)[0][rows])
    assert sorted(reads[p]["train"][0]) == expected
  # 12 steps of 16 = one epoch of the 192 clips: every clip read once, by one process.
  assert not set(reads[0]["train"][0]) & set(reads[1]["train"][0])
  for which, n in (("val", 32), ("test", 32)):
    a = [c for r in reads[0][which] for c in r]
    b = [c for r in reads[1][which] for c in r]
    assert a and b, which
    assert not set(a) & set(b), which  # no clip read by both processes
    assert set(a) | set(b) == set(range(n)), which
