"""SIGTERM at any moment of a run: exit 0 with the checkpoint of the step reached (before the
first step: with nothing written), and the resumed run ends exactly where the uninterrupted
one does. (tests/test_resume.py: SIGKILL, then SIGTERM mid-training, then resume.)"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_runs import (
  REPO,
  Shared,
  checkpoint_steps,
  max_abs_diff,
  restore_state,
  run_train,
  tiny_flags,
  tiny_run,
  train_cmd,
  train_records,
)

pytestmark = pytest.mark.slow  # runs launch.train / python subprocesses

T = 20  # steps of every run here (tiny_flags: validation + checkpoint every 10)


def _records(workdir: Path, kind: str) -> list[dict]:
  try:
    return train_records(workdir, kind)
  except (FileNotFoundError, json.JSONDecodeError):  # not there yet / a line being written
    return []


# When to send SIGTERM: the first moment the run's directory shows the condition.
MOMENTS = {
  # train_and_evaluate wrote config.json: data, caption features, model, compile to come.
  "start-up": lambda wd: (wd / "config.json").is_file(),
  # The checkpoint managers exist: restore, input threads, the first step's compile next.
  "first-step": lambda wd: (wd / "checkpoints").is_dir(),
  # Step 10's validation is written: its best and latest checkpoints are being saved.
  "checkpoint": lambda wd: bool(_records(wd, "val")),
  # The last step is done: its validation and checkpoint, then the final test evaluation.
  "end": lambda wd: any(r["step"] == T for r in _records(wd, "train")),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  return Shared(tmp_path_factory)


@pytest.fixture(scope="module")
def uninterrupted(tiny_synthcaps, shared, tmp_path_factory) -> Path:
  """tests.cli_runs.tiny_run: T steps, uninterrupted."""
  return tiny_run(tmp_path_factory, shared, tiny_synthcaps)


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigterm_at_any_moment_exits_0_and_resumes_exactly(
  moment, tiny_synthcaps, shared, uninterrupted, tmp_path
):
  b = tmp_path / "b"
  shared.seed(b)
  proc = subprocess.Popen(
    train_cmd(*tiny_flags(tiny_synthcaps, b, num_steps=T)),
    cwd=REPO,
    env=shared.env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    t0 = time.time()
    while not MOMENTS[moment](b):
      assert proc.poll() is None, f"run ended before {moment}: {proc.communicate()[1][-3000:]}"
      assert time.time() - t0 < 300, f"no {moment} within 300 s"
      time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.communicate()
  assert proc.returncode == 0, f"{moment}: return code {proc.returncode}\n{err[-3000:]}"
  assert "Fatal Python error" not in err and "Traceback" not in err, err[-3000:]

  saved = re.search(r"SIGTERM: checkpoint saved at step (\d+); exiting", err)
  before = "SIGTERM before step 1: nothing new to save; exiting" in err
  finished = (b / "final_metrics.json").is_file()
  assert saved or before or finished, err[-3000:]
  if saved:
    stopped = int(saved.group(1))
    assert max(checkpoint_steps(b)) == stopped
    assert max(r["step"] for r in _records(b, "train")) == stopped
    assert not finished
  if before:  # nothing written but the run's config and caches
    assert checkpoint_steps(b) == [] and _records(b, "train") == [] and not finished
    assert not saved
  # Where each moment has to land (the SIGTERM is handled at the next Python instruction).
  if moment == "start-up":
    assert before, err[-3000:]
  elif moment == "first-step":
    assert before or int(saved.group(1)) == 1, err[-3000:]
  elif moment == "checkpoint":
    assert saved and int(saved.group(1)) >= 10, err[-3000:]
  else:  # end: stopped after the last step, or already in the final test evaluation
    assert finished or int(saved.group(1)) == T, err[-3000:]

  # Resumed (or rerun) to T: the state and test metrics of the uninterrupted run.
  seen = len(_records(b, "train"))
  run_train(shared, tiny_flags(tiny_synthcaps, b, num_steps=T), b)
  after = _records(b, "train")[seen:]
  if saved and int(saved.group(1)) < T:
    assert after[0]["step"] == int(saved.group(1)) + 1
  sa, sb = restore_state(uninterrupted, T), restore_state(b, T)
  assert int(sa["step"]) == int(sb["step"]) == T
  assert max_abs_diff(sa, sb) <= 1e-6  # params, optimizer, batch stats, rng, skipped
  fa = json.loads((uninterrupted / "final_metrics.json").read_text())
  fb = json.loads((b / "final_metrics.json").read_text())
  assert fa["best_step"] == fb["best_step"]
  for d in ("t2a", "a2t"):
    assert fa[d] == fb[d]


_HANDLER_CHECK = """
import os, signal, sys
from mltm_jax.train.preemption import Preemption
p = Preemption.install()
assert Preemption.install() is p and signal.getsignal(signal.SIGTERM) == p._handle
signal.signal(signal.SIGTERM, signal.SIG_DFL)  # someone else took SIGTERM: install() again
assert Preemption.install() is p and signal.getsignal(signal.SIGTERM) == p._handle
flags = int(open("/proc/self/status").read().split("SigCgt:")[1].split()[0], 16)
assert flags >> (signal.SIGTERM - 1) & 1  # caught, not default
assert not p.requested
os.kill(os.getpid(), signal.SIGTERM)
assert p.requested and p.stop(5, 10)  # flag only: the process is still here
print("ok")
"""


def test_sigterm_handler_sets_the_flag_and_nothing_else():
  res = subprocess.run(
    [sys.executable, "-c", _HANDLER_CHECK],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)},
  )
  assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


_DAEMON_AT_EXIT = """
import threading, time
import jax, numpy as np
from mltm_jax.train.preemption import quiesce
x = np.ones((1024, 1024), np.float32)
stop_at = time.time() + 1.0
def work():  # inside jaxlib's C++ code, GIL released, most of the time
  while time.time() < stop_at:
    jax.device_put(x).block_until_ready()
threading.Thread(target=work, daemon=True).start()
time.sleep(0.2)
assert quiesce(timeout=60) == []
"""


def test_quiesce_waits_for_a_daemon_thread_inside_jax_before_exit():
  # Without quiesce() the interpreter finalizes while the thread is in jaxlib, and the
  # thread's pthread_exit through a noexcept C++ frame aborts it (SIGABRT, -6).
  res = subprocess.run(
    [sys.executable, "-c", _DAEMON_AT_EXIT],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)},
  )
  assert res.returncode == 0, res.stderr[-2000:]
