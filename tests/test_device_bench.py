"""benchmarks.device.bench (the GPU benchmark) on CPU: --tiny end to end with POT hidden (the GPU
machine has none), the torch Sinkhorn of its reference against POT, the machine record's POT
version, and its refusal to run without a GPU."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot
import torch

from benchmarks.device.common import Env, machine
from benchmarks.references.torch_sinkhorn import torch_sinkhorn

import pytest  # noqa: E402

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]
ROWS = "towers_text fp32,towers_audio bf16,step_demo fp32,step_paper fp32"
# `python -m benchmarks.device.bench` in a process where `import ot` fails.
WITHOUT_POT = (
  "import runpy, sys; sys.modules['ot'] = None; "
  "runpy.run_module('benchmarks.device.bench', run_name='__main__', alter_sys=True)"
)


def _run(*args: str, timeout: float = 180, pot: bool = True) -> subprocess.CompletedProcess:
  command = ["-m", "benchmarks.device.bench"] if pot else ["-c", WITHOUT_POT]
  return subprocess.run(
    [sys.executable, *command, *args],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_tiny_rows_agree_with_torch_without_pot(tmp_path):
  out_file = tmp_path / "bench.json"
  out = _run("--tiny", f"--rows={ROWS}", f"--out={out_file}", pot=False)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  doc = json.loads(out_file.read_text())
  assert doc["errors"] == [] and doc["skipped"] == [], doc
  assert doc["machine"]["tiny"] is True and doc["machine"]["pot"] is None, doc["machine"]
  rows = {(r["name"], r["mode"]): r for r in doc["rows"]}
  assert set(rows) == {
    ("towers_text", "fp32"),
    ("towers_audio", "bf16"),
    ("step_demo", "fp32"),
    ("step_paper", "fp32"),
  }
  for r in rows.values():
    for side in ("ours", "ref"):
      t = r[side]
      assert 0 < t["min_s"] <= t["median_s"] <= t["max_s"] and t["runs"] == 3, r
      assert t["first_call_s"] > 0, r
    assert math.isclose(r["ratio"], r["ref"]["median_s"] / r["ours"]["median_s"]), r
  # fp32: our outputs / gradients as close to torch's float64 truth as torch's float32 are, and
  # the two-step losses of the train steps equal within 1e-4 (the judged 'agree').
  for key in (("towers_text", "fp32"), ("step_demo", "fp32"), ("step_paper", "fp32")):
    assert rows[key]["agree"] is True, rows[key]
  text = rows[("towers_text", "fp32")]
  assert text["out_diff"] < 1e-5 and max(text["grad_err"]) < 1e-4, text
  paper = rows[("step_paper", "fp32")]
  assert paper["max_loss_gap"] <= 1e-4 and paper["skipped_updates"] == 0, paper
  # bf16 rows are reported, not judged: errors of bfloat16 size, not garbage.
  audio = rows[("towers_audio", "bf16")]
  assert audio["agree"] is None and 1e-5 < audio["out_err"][0] < 5e-2, audio
  table = [line for line in out.stdout.splitlines() if " | " in line]
  assert table[0].startswith("row") and len(table) == 1 + len(rows)


def test_torch_sinkhorn_is_pots_sinkhorn():
  rng = np.random.default_rng(0)
  cost = torch.from_numpy(rng.uniform(size=(24, 24)))
  cost = (cost / cost.max()).requires_grad_(True)
  w = torch.full((24,), 1 / 24, dtype=torch.float64)
  plan, info = torch_sinkhorn(w, w, cost, 0.05, numItermax=1000, stopThr=1e-5, log=True)
  ref_cost = cost.detach().clone().requires_grad_(True)
  ref, ref_log = ot.sinkhorn(w, w, ref_cost, 0.05, numItermax=1000, stopThr=1e-5, log=True)
  assert info["niter"] == ref_log["niter"] > 10
  np.testing.assert_allclose(plan.detach().numpy(), ref.detach().numpy(), rtol=1e-12, atol=0)
  (-torch.log(torch.diagonal(plan)).mean()).backward()
  (-torch.log(torch.diagonal(ref)).mean()).backward()
  np.testing.assert_allclose(cost.grad.numpy(), ref_cost.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_machine_records_pot_version():
  info = machine(Env(tiny=True, device=torch.device("cpu"), budget_s=1.0))
  assert info["pot"] == ot.__version__ and info["torch"] == torch.__version__, info


def test_refuses_without_gpu(tmp_path):
  out = _run(f"--out={tmp_path / 'x.json'}", timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: benchmarks.device.bench is a GPU")
  assert not (tmp_path / "x.json").exists()
