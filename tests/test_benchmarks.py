"""benchmarks.run end to end on toy shapes: the JSON rows and the agreement checks."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = {"name", "params", "ours_s", "ref_s", "ratio", "agree"}


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "benchmarks.run", *args],
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
  assert [r["name"] for r in rows] == ["loss", "loss_native", "eval", "eval_plan"]
  for r in rows:
    assert set(r) == KEYS, r
    assert isinstance(r["params"], dict) and r["params"], r
    assert r["ours_s"] > 0 and r["ref_s"] > 0, r
    assert abs(r["ratio"] - r["ref_s"] / r["ours_s"]) <= 1e-9 * r["ratio"], r
    assert r["agree"] is True, r
  # The printed table has a header and one line per row.
  table = [l for l in out.stdout.splitlines() if " | " in l and not l.startswith("#")]
  assert table[0].split(" | ")[0].strip() == "name"
  assert len(table) == 1 + len(rows)


def test_unknown_benchmark_is_one_line_usage_error():
  out = _run("--only=nope")
  assert out.returncode != 0
  assert "--only: unknown benchmark(s) nope" in out.stderr
