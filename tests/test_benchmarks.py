"""benchmarks.run end to end on toy shapes: the JSON rows and the agreement checks."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest  # noqa: E402

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]
KEYS = {"name", "params", "ours_s", "ref_s", "ratio", "agree", "limit_fraction"}
LIMIT_KEYS = {
  "flops",
  "bytes",
  "work_model",
  "achieved_gflops",
  "achieved_gbs",
  "peak_gflops",
  "peak_gbs",
  "bound",
  "limit_s",
}


def check_limit(r: dict) -> None:
  """The limit column of a row is the roofline bound of its declared work at the probed
  peaks, divided by our median time."""
  compute_s = r["flops"] / (r["peak_gflops"] * 1e9)
  memory_s = r["bytes"] / (r["peak_gbs"] * 1e9)
  assert r["flops"] > 0 and r["bytes"] > 0 and r["work_model"], r
  assert r["limit_s"] == pytest.approx(max(compute_s, memory_s), rel=1e-9), r
  assert r["bound"] == ("compute" if compute_s >= memory_s else "memory"), r
  assert r["limit_fraction"] == pytest.approx(r["limit_s"] / r["ours_s"], rel=1e-9), r
  assert r["achieved_gflops"] == pytest.approx(r["flops"] / r["ours_s"] / 1e9, rel=1e-9), r


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "benchmarks.run", *args],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_quick_loss_and_eval_rows_agree(tmp_path):
  out_file = tmp_path / "rows.json"
  out = _run("--quick", "--tiny", "--only=loss,eval", f"--json={out_file}")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads(out_file.read_text())
  assert [r["name"] for r in rows] == ["loss", "loss_native", "loss_unrolled", "eval", "eval_plan"]
  assert [r["params"]["gradient"] for r in rows[:3]] == ["envelope", "envelope", "unroll"]
  for r in rows:
    assert set(r) == KEYS | LIMIT_KEYS, r
    assert isinstance(r["params"], dict) and r["params"], r
    assert r["ours_s"] > 0 and r["ref_s"] > 0, r
    assert abs(r["ratio"] - r["ref_s"] / r["ours_s"]) <= 1e-9 * r["ratio"], r
    assert r["agree"] is True, r
    check_limit(r)
  # The printed table has a header and one line per row, the limit column last.
  table = [l for l in out.stdout.splitlines() if " | " in l and not l.startswith("#")]
  assert table[0].split(" | ")[0].strip() == "name"
  assert table[0].split(" | ")[-1].strip() == "limit"
  assert len(table) == 1 + len(rows)
  cells = [l.split(" | ")[-1].strip() for l in table[1:]]
  assert cells == [f"{100 * r['limit_fraction']:.3g}% {r['bound']}" for r in rows], cells


def test_tiny_step_and_memory_rows(tmp_path):
  """The demo train step vs its torch mirror (same losses), and the memory row."""
  out_file = tmp_path / "rows.json"
  out = _run("--tiny", "--only=step,memory", "--runs=1", f"--json={out_file}")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads(out_file.read_text())
  assert [r["name"] for r in rows] == ["step", "memory"]
  step, memory = rows
  assert set(step) == KEYS | LIMIT_KEYS and step["agree"] is True, step
  check_limit(step)
  assert step["params"]["max_loss_gap"] <= 1e-4, step
  ours_sps, ref_sps = (float(x) for x in step["params"]["samples_s"].split("/"))
  assert abs(ours_sps / ref_sps - step["ratio"]) <= 0.02 * step["ratio"], step
  assert KEYS <= set(memory) and memory["agree"] is True, memory
  assert memory["limit_fraction"] is None  # a memory row: no time limit modelled
  for side in ("ours", "torch"):
    peaks = memory[f"{side}_peak_bytes"]
    assert list(peaks) == ["8"] and peaks["8"] > 0, memory
  assert memory["xla_bytes"]["8"] > 0, memory


def test_unknown_benchmark_is_one_line_usage_error():
  out = _run("--only=nope")
  assert out.returncode != 0
  assert "--only: unknown benchmark(s) nope" in out.stderr


def test_towers_tiny_rows_agree(tmp_path):
  """Cnn10 + a 2-layer BERT, forward + backward, ours vs torch (benchmarks/cpu/towers.py)."""
  out_file = tmp_path / "rows.json"
  out = _run("--tiny", "--only=towers", "--runs=1", f"--json={out_file}")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads(out_file.read_text())
  assert [r["name"] for r in rows] == ["towers_audio", "towers_text"]
  for r in rows:
    assert KEYS <= set(r) and r["agree"] is True, r
    check_limit(r)  # XLA's count of the forward + backward
    assert 0 < r["limit_fraction"] < 1.6, r
    ours_sps, ref_sps = (float(x) for x in r["params"]["samples_s"].split("/"))
    assert abs(ours_sps / ref_sps - r["ratio"]) <= 0.02 * r["ratio"], r


def test_tiny_data_rows(tmp_path):
  """The input-pipeline row: per N, the child's peak RSS and clips/s; the dataset is removed."""
  out_file = tmp_path / "rows.json"
  data_dir = tmp_path / "data"
  (data_dir / "mine").mkdir(parents=True)  # not the benchmark's: must survive
  out = _run(
    "--tiny", "--only=data", "--runs=1", f"--json={out_file}", f"--data_bench_dir={data_dir}"
  )
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads(out_file.read_text())
  assert [r["name"] for r in rows] == ["data", "data"]
  assert [r["params"]["clips"] for r in rows] == [40, 80]
  for r in rows:
    assert KEYS <= set(r), r
    assert r["rss_peak_mb"] > 50 and r["clips_per_s"] > 0, r
    check_limit(r)  # the samples' bytes through memory: a memory-bound row
    assert r["bound"] == "memory" and 0 < r["limit_fraction"] < 1.6, r
  assert rows[0]["ref_rss_peak_mb"] > 50 and rows[0]["ref_clips_per_s"] > 0
  assert [p.name for p in data_dir.iterdir()] == ["mine"]  # its datasets deleted, only those


def test_ott_knobs_probe_runs(capsys):
  """benchmarks.ott_knobs at a toy shape: a line per variant, momentum in fewer iterations."""
  from benchmarks import ott_knobs

  table = ott_knobs.measure(32, 64, runs=1)
  assert len(capsys.readouterr().out.splitlines()) == 1 + len(ott_knobs.VARIANTS)
  assert set(table) == set(ott_knobs.VARIANTS)
  plain = table["ott (default)"]
  assert table["ott, momentum 1.5"]["iterations"] < plain["iterations"], table
  assert table["ott, unrolled"]["iterations"] == plain["iterations"], table
  # Stopped at L1 error 1e-4: the unrolled gradients within 1e-4 of the reference's (measured
  # 5e-5), the envelope ones within about the threshold's order (measured 8e-4 to 1.8e-3).
  for name, row in table.items():
    assert row["loss_gap"] <= 1e-4, (name, row)
    assert row["grad_err"] <= (5e-4 if "unrolled" in name else 5e-3), (name, row)


def test_time_interleaved_settle_times_the_second_call_of_each_pair():
  """settle: each timed call of ours follows an untimed one; the reference alternates."""
  from benchmarks.timing import time_interleaved

  calls = []

  def ours():
    calls.append("ours")
    time.sleep(0.02 if calls.count("ours") % 2 == 1 else 0.0)  # calls 3, 5, 7: the timed ones

  first: list[float] = []
  t_o, _, t_r, _ = time_interleaved(ours, lambda: calls.append("ref"), runs=3, settle=first)
  assert calls == ["ref", "ours"] + ["ref", "ours", "ours"] * 3
  assert len(first) == 3 and max(first) < 0.01 <= t_o.min_s and t_r.runs == 3
