"""benchmarks.run --tiny --only=search: the rows, their extra fields, exact agreement."""

import json
import subprocess
import sys
from pathlib import Path

import pytest  # noqa: E402

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]


def test_tiny_search_benchmark_rows(tmp_path):
  out_file = tmp_path / "rows.json"
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.run",
      "--tiny",
      "--only=search",
      "--runs=2",
      f"--json={out_file}",
    ],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  rows = {r["name"]: r for r in json.loads(out_file.read_text())}
  assert list(rows) == ["search_exact", "search_ann", "search_ann_clustered"]
  exact, ann, clustered = rows["search_exact"], rows["search_ann"], rows["search_ann_clustered"]
  # Exact: the same ids as faiss IndexFlatL2 for every query.
  assert exact["agree"] is True and exact["params"]["same_ids"] == 1.0
  assert exact["qps"] > 0 and exact["faiss_qps"] > 0
  for r in (ann, clustered):
    assert 0.0 <= r["recall_at_10"] <= 1.0 and r["qps"] > 0 and r["exact_qps"] > 0
    assert r["agree"] == (r["recall_at_10"] >= 0.95)
    assert abs(r["ratio"] - r["ref_s"] / r["ours_s"]) <= 1e-9 * r["ratio"]
    assert r["params"]["sweep"].startswith("1:")
  # On the clustered gallery few lists suffice (the sweep stops at the target).
  assert clustered["recall_at_10"] >= 0.95 and clustered["nprobe"] < 64
  # The limit column: exact search does 2 Q N D operations; IVF scans the probed share.
  p = exact["params"]
  assert exact["flops"] == 2.0 * p["queries"] * p["N"] * p["D"]
  assert 0 < exact["limit_fraction"] == exact["limit_s"] / exact["ours_s"]
  for r in (ann, clustered):
    share = r["nprobe"] / 64  # TINY nlist
    rows_scanned = r["params"]["N"] * share + 64
    assert r["flops"] == pytest.approx(
      2.0 * r["params"]["queries"] * rows_scanned * r["params"]["D"]
    )


def test_tiny_search_latency_row(tmp_path):
  """benchmarks.run --tiny --only=latency: one row, the results of the old pad-to-256 path
  (distances at every rank within 1e-5), no compilation after warm-up (a CompileCounter, not
  a timing)."""
  out_file = tmp_path / "rows.json"
  res = subprocess.run(
    [sys.executable, "-m", "benchmarks.run", "--tiny", "--only=latency", "--runs=1"]
    + [f"--json={out_file}"],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  (row,) = json.loads(out_file.read_text())
  assert row["name"] == "search_latency" and row["agree"] is True, row
  assert row["compiles_after_warm_up"] == 0 and row["params"]["max_dist_diff"] <= 1e-5
  assert 0 < row["p50_s"] <= row["p99_s"] and 0 < row["ref_p50_s"] <= row["ref_p99_s"]
  assert abs(row["ratio"] - row["ref_s"] / row["ours_s"]) <= 1e-9 * row["ratio"]
  assert row["ours_s"] == row["p50_s"] and row["ratio"] > 1.0  # batch 1 beats batch 256
  # the limit column: one query's encoder matmuls + gallery scan at the probed peaks
  assert row["flops"] > 2 * row["params"]["N"] * row["params"]["r"] and row["work_model"]
  assert row["limit_fraction"] == pytest.approx(row["limit_s"] / row["ours_s"], rel=1e-9)
  assert 0 < row["limit_fraction"] < 1.6, row
