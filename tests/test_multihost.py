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
