"""Exact resume after SIGKILL and SIGTERM, and the checkpoint fallbacks.

The end-to-end test runs `python -m launch.train` on tiny SynthCaps four times:
  B1  killed with SIGKILL after its first checkpoints, between two checkpoints;
  B2  restarted on the same workdir (resumes from the newest checkpoint), then sent SIGTERM:
      it must save a checkpoint at the step it reached and exit 0;
  A   an uninterrupted run of T steps in a fresh workdir;
  B3  restarted again with T steps: resumes from B2's checkpoint and finishes.
B must end with A's state (params, optimizer, batch stats, rng, step, NaN-skip counter).
B1/B2 run with a huge --num_steps (the schedule does not depend on it: constant learning rate)
so they cannot finish before they are interrupted; T is chosen after the interruptions.
"""

import json
import logging
import signal
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mltm_jax.train.checkpoint import Checkpoints
from tests.cli_runs import (
  REPO,
  Shared,
  checkpoint_steps,
  max_abs_diff,
  restore_state,
  run_train,
  tiny_flags,
  train_cmd,
  train_records,
)

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

EVAL_EVERY = 10
FOREVER = 100000


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  return Shared(tmp_path_factory)


def _records(workdir: Path) -> list[dict]:
  try:
    return train_records(workdir)
  except (FileNotFoundError, json.JSONDecodeError):  # a line being written
    return []


def _start(shared: Shared, root: Path, workdir: Path) -> subprocess.Popen:
  shared.seed(workdir)
  flags = tiny_flags(root, workdir, num_steps=FOREVER, eval_every=EVAL_EVERY, keep_checkpoints=2)
  return subprocess.Popen(
    train_cmd(*flags),
    cwd=REPO,
    env=shared.env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _wait_for(proc: subprocess.Popen, cond, timeout: float = 240.0) -> None:
  t0 = time.time()
  while not cond():
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.communicate()[1][-3000:]}")
    if time.time() - t0 > timeout:
      proc.kill()
      raise AssertionError("timed out waiting for the run")
    time.sleep(0.005)


def test_sigkill_then_sigterm_then_resume_equals_uninterrupted(tiny_synthcaps, tmp_path, shared):
  b = tmp_path / "b"

  # B1: SIGKILL after at least one checkpoint, strictly between two checkpoints.
  proc = _start(shared, tiny_synthcaps, b)
  try:
    _wait_for(proc, lambda: checkpoint_steps(b) != [])
    while True:
      proc.send_signal(signal.SIGSTOP)  # freeze it, then look at what is on disk
      done = max([r["step"] for r in _records(b)], default=0)
      kept = checkpoint_steps(b)
      if done > max(kept):
        break
      proc.send_signal(signal.SIGCONT)
      time.sleep(0.01)
    proc.kill()
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  killed_at, resume_from = done, max(kept)
  assert resume_from % EVAL_EVERY == 0 and resume_from < killed_at

  # B2: resumes from the newest checkpoint; SIGTERM -> checkpoint at the current step, exit 0.
  seen = len(_records(b))
  proc = _start(shared, tiny_synthcaps, b)
  try:
    _wait_for(proc, lambda: len(_records(b)) > seen + 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, err[-3000:]
  assert "Traceback" not in err
  after = _records(b)[seen:]
  assert after[0]["step"] == resume_from + 1  # continued from the newest checkpoint
  stopped = after[-1]["step"]
  assert f"SIGTERM: checkpoint saved at step {stopped}" in err
  assert max(checkpoint_steps(b)) == stopped
  assert not (b / "final_metrics.json").exists()

  # A: uninterrupted, T steps. B3: resumes from the SIGTERM checkpoint to T.
  total = (stopped // EVAL_EVERY + 2) * EVAL_EVERY
  a = tmp_path / "a"
  run_train(shared, tiny_flags(tiny_synthcaps, a, num_steps=total), a)
  seen = len(_records(b))
  run_train(shared, tiny_flags(tiny_synthcaps, b, num_steps=total), b)
  assert _records(b)[seen]["step"] == stopped + 1

  sa, sb = restore_state(a, total), restore_state(b, total)
  assert int(sa["step"]) == int(sb["step"]) == total
  assert max_abs_diff(sa["params"], sb["params"]) <= 1e-6
  assert max_abs_diff(sa, sb) <= 1e-6  # optimizer state, batch stats, rng, skipped too
  fa = json.loads((a / "final_metrics.json").read_text())
  fb = json.loads((b / "final_metrics.json").read_text())
  assert fa["best_step"] == fb["best_step"]
  for d in ("t2a", "a2t"):
    assert fa[d] == fb[d]
  # The loss of every step after the kill and after the SIGTERM equals the uninterrupted one.
  loss_a = {r["step"]: r["loss"] for r in _records(a)}
  for r in _records(b):
    if r["step"] <= total:
      assert r["loss"] == pytest.approx(loss_a[r["step"]], abs=1e-6), r["step"]


# ---------------------------------------------------------------- checkpoint module alone


def _state(k: float) -> dict:
  return {
    "params": {"w": jnp.full((64, 32), float(k)), "b": jnp.arange(5.0) + k},
    "step": jnp.int32(k),
  }


def _corrupt(step_dir: Path, how: str) -> None:
  files = [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
  assert files
  rng = np.random.default_rng(0)
  for f in files:
    n = f.stat().st_size
    if how == "truncated":
      with open(f, "r+b") as fh:
        fh.truncate(n // 2)
    elif how == "garbage":
      with open(f, "r+b") as fh:
        fh.seek(n // 4)
        fh.write(rng.bytes(n // 2))
    else:  # missing
      f.unlink()


@pytest.mark.parametrize("how", ["truncated", "garbage", "missing"])
# Reading a garbled file leaves an "Event loop is closed" error in an orbax thread (harmless).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, caplog, how):
  ck = Checkpoints(tmp_path, keep=3)
  for s in (1, 2, 3):
    assert ck.save_latest(s, _state(s))
  ck.wait()
  ck.close()
  _corrupt(tmp_path / "checkpoints" / "latest" / "3", how)
  ck = Checkpoints(tmp_path, keep=3)
  with caplog.at_level(logging.WARNING):
    got = ck.restore_latest(_state(0))
  assert int(got["step"]) == 2 and float(got["params"]["w"][0, 0]) == 2.0
  warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
  assert len(warned) == 1 and "latest/3" in warned[0] and "trying the previous one" in warned[0]
  assert len(warned[0]) < 400  # one readable line, not tensorstore's whole spec
  # Every checkpoint unreadable: a fresh start (None), one warning each.
  _corrupt(tmp_path / "checkpoints" / "latest" / "2", how)
  _corrupt(tmp_path / "checkpoints" / "latest" / "1", how)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert ck.restore_latest(_state(0)) is None
  assert sum("unreadable" in r.getMessage() for r in caplog.records) == 3
  ck.close()


def test_non_finite_params_are_never_saved_and_steps_are_not_saved_twice(tmp_path, caplog):
  ck = Checkpoints(tmp_path, keep=2)
  assert ck.save_latest(1, _state(1))
  assert not ck.save_latest(1, _state(5), force=True)  # same step again (SIGTERM after eval)
  bad = jax.tree.map(lambda x: x, _state(2))
  bad["params"]["w"] = bad["params"]["w"].at[3, 4].set(jnp.nan)
  with caplog.at_level(logging.ERROR):
    assert not ck.save_latest(2, bad)
    assert not ck.save_best(2, bad, score=1.0)
  assert any("NaN/inf" in r.getMessage() for r in caplog.records)
  ck.wait()
  assert ck.latest.all_steps() == [1] and ck.best_so_far() is None
  assert float(ck.restore_latest(_state(0))["params"]["w"][0, 0]) == 1.0
  ck.close()


def test_best_record_follows_the_best_checkpoint_on_disk(tmp_path):
  from mltm_jax.train.loop import _resumed_best

  ck = Checkpoints(tmp_path, keep=2)
  path = tmp_path / "best.json"
  assert _resumed_best(ck, path, write=True) == {"score": -1.0}
  ck.save_best(10, _state(10), score=7.5)
  path.write_text(json.dumps({"score": 7.5, "step": 10, "report": {"x": 1}}))
  assert _resumed_best(ck, path, write=True)["report"] == {"x": 1}
  # Killed after best.json was written but before its checkpoint landed: the disk decides.
  path.write_text(json.dumps({"score": 9.0, "step": 20, "report": {"x": 2}}))
  got = _resumed_best(ck, path, write=True)
  assert got["step"] == 10 and got["score"] == 7.5
  assert json.loads(path.read_text())["step"] == 10
  ck.close()
