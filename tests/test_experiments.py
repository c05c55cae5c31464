"""The claims grid: its cells, the runner (run, skip, resume files) and the report's numbers."""

import dataclasses
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mltm_jax.config import Config
from mltm_jax.experiments import claims
from mltm_jax.experiments.report import PLOTS

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]
DIRS = ("t2a", "a2t")
KEYS = ("R@1", "R@5", "R@10", "mAP@10")
# What a cell may change; everything else (data, towers, steps, seeds) is shared.
LOSS_FIELDS = {"loss", "metric", "ot", "ot_solver", "eps", "noise_p"}


def test_grid_holds_every_claim_cell_once_with_shared_setup():
  grid = claims.claims_grid("full")
  names = [c.name for c in grid.cells]
  assert len(names) == len(set(names)) == 22  # 9 losses + 3 losses x 3 noise levels + 4 eps
  assert grid.seeds == (1997, 1998, 1999)
  # Every loss of the issue, each a distinct training objective.
  seen = {
    (
      dict(grid.cell(n).overrides).get("loss"),
      dict(grid.cell(n).overrides).get("metric"),
      dict(grid.cell(n).overrides).get("ot"),
    )
    for _, n in grid.losses
  }
  assert len(seen) == 9
  assert {s[0] for s in seen} == {
    "triplet",
    "ranking",
    "contrastive",
    "entropic_contrastive",
    "mltm",
  }
  mltm = {(m, o) for loss, m, o in seen if loss == "mltm"}
  assert {
    ("identity", None),
    ("full", "balanced"),
    ("diagonal", None),
    ("full", "partial"),
    ("full", "unbalanced"),
  } == mltm
  # The p = 0 noise cells and the eps = 0.05 cell are the loss cells (shared runs).
  noise = dict(grid.noise)
  assert [p for p, _ in noise["InfoNCE"]] == [0.0, 0.2, 0.4, 0.6]
  assert noise["InfoNCE"][0][1] == "contrastive"
  assert noise["m-LTM, partial OT"][0][1] == "mltm_partial"
  assert dict(grid.eps)[0.05] == "mltm_full"
  assert [e for e, _ in grid.eps] == [0.01, 0.02, 0.05, 0.1, 0.5]
  for _, cells in grid.noise:
    for p, name in cells[1:]:
      assert dict(grid.cell(name).overrides)["noise_p"] == p
  # Full scale = the demo flagfile, read independently of the grid's parser.
  demo = dict(
    line.lstrip("-").split("=", 1)
    for line in (REPO / "configs" / "demo.flags").read_text().splitlines()
    if line.startswith("--")
  )
  for k in ("synthcaps_sizes", "cnn_channels", "embed_dim", "batch_size", "num_steps"):
    assert str(grid.base[k]) == demo[k], k
  # Cells differ only in loss fields; effective configs are pairwise distinct.
  keys = {claims.config_key(grid.base, dict(c.overrides)) for c in grid.cells}
  assert len(keys) == len(grid.cells)
  base = json.loads(claims.config_key(grid.base, {}))
  for c in grid.cells:
    cfg = json.loads(claims.config_key(grid.base, dict(c.overrides)))
    assert {k for k in cfg if cfg[k] != base.get(k)} <= LOSS_FIELDS, c.name


def test_cell_config_names_a_missing_field_and_validates():
  grid = claims.claims_grid("smoke")
  cell = claims.Cell("future", (("loss", "mltm"), ("no_such_field", 1)))
  with pytest.raises(ValueError, match="no_such_field"):
    claims.cell_config(grid, cell, 1997, "/tmp/x")
  cfg = claims.cell_config(grid, grid.cell("mltm_partial"), 1998, "/tmp/y")
  assert isinstance(cfg, Config) and cfg.ot == "partial" and cfg.seed == 1998
  assert cfg.synthcaps_sizes == "192,32,32" and cfg.problems() == []
  with pytest.raises(ValueError, match="unknown cell"):
    claims.select(grid, ["contrastive", "nope"])


def _fake_final(rng, rank_by="distance"):
  def direction():
    return {k: float(rng.uniform(0, 100)) for k in (*KEYS, "R@50", "medR", "meanR")}

  other = "plan" if rank_by == "distance" else "distance"
  return {
    "t2a": direction(),
    "a2t": direction(),
    "modality_gap": float(rng.uniform(0, 1)),
    "rank_by": rank_by,
    f"by_{other}": {"t2a": direction(), "a2t": direction()},
    "wall_seconds": 1.0,
  }


def _table_rows(report: str, heading_start: str) -> dict:
  """{first column: [cells]} of the table under the first '### ' heading starting so."""
  lines = report.splitlines()
  i = next(k for k, l in enumerate(lines) if l.startswith("### " + heading_start))
  header = None
  rows = {}
  for line in lines[i + 1 :]:
    if line.startswith("#"):
      break
    if not line.startswith("|") or line.startswith("|---"):
      continue
    cells = [c.strip() for c in line.strip("|").split("|")]
    if header is None:
      header = cells
    else:
      rows[cells[0]] = dict(zip(header[1:], cells[1:]))
  return rows


def _fmt(values, digits=1):
  v = np.asarray(values, np.float64)
  s = f"{v.mean():.{digits}f}"
  return s + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")


def _run(*args, timeout=300):
  return subprocess.run(
    [sys.executable, "-m", "launch.experiments", *args],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_report_only_means_and_stds_over_seeds(tmp_path):
  """Fake finished cells of 3 seeds -> --report_only's numbers are numpy's mean and std."""
  grid = claims.claims_grid("smoke", num_seeds=3)
  rng = np.random.default_rng(0)
  finals = {}
  for label, cell in grid.losses[:4]:
    for seed in grid.seeds:
      rank_by = "plan" if seed == 1998 else "distance"  # both layouts of final_metrics.json
      f = _fake_final(rng, rank_by)
      d = tmp_path / "cells" / f"{cell}__seed{seed}"
      d.mkdir(parents=True)
      (d / "final_metrics.json").write_text(json.dumps(f))
      finals.setdefault(label, []).append(f)
  res = _run("--scale=smoke", "--seeds=3", f"--out={tmp_path}", "--report_only", timeout=120)
  assert res.returncode == 0, res.stderr[-3000:]
  report = (tmp_path / "REPORT.md").read_text()
  head = subprocess.run(
    ["git", "rev-parse", "HEAD"], check=True, cwd=REPO, capture_output=True, text=True
  ).stdout.strip()
  assert f"`{head}" in report  # the commit (maybe -dirty) of the report
  assert f"--out={tmp_path} --report_only`" in report  # the exact command
  assert re.search(r"report written \d{4}-\d\d-\d\d \d\d:\d\d UTC", report)
  for method in ("distance", "plan"):
    rows = _table_rows(report, f"Losses, ranked by {method}")
    assert len(rows) == 9
    for label, fs in finals.items():

      def pick(f, d, k, method=method):
        src = f if f["rank_by"] == method else f[f"by_{method}"]
        return src[d][k]

      for d in DIRS:
        for k in KEYS:
          assert rows[label][f"{d.upper()} {k}"] == _fmt([pick(f, d, k) for f in fs]), (label, k)
      assert rows[label]["modality gap"] == _fmt([f["modality_gap"] for f in fs], 3)
    untouched = [label for label, _ in grid.losses[4:]]
    assert all(rows[u]["T2A R@1"] == "—" for u in untouched)
  for name in PLOTS:
    with Image.open(tmp_path / name) as im:
      im.verify()


def test_smoke_grid_runs_skips_and_reports(tiny_synthcaps, tmp_path):
  out = tmp_path / "grid"
  args = [
    "--suite=claims",
    "--scale=smoke",
    "--cells=contrastive,mltm_full",
    f"--out={out}",
    f"--data_dir={tiny_synthcaps}",
    "--noprogress",
  ]
  res = _run(*args)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "[1/2] contrastive__seed1997: done in" in res.stdout
  assert "[2/2] mltm_full__seed1997: done in" in res.stdout
  cells = {n: out / "cells" / f"{n}__seed1997" for n in ("contrastive", "mltm_full")}
  finals = {n: json.loads((d / "final_metrics.json").read_text()) for n, d in cells.items()}
  for f in finals.values():
    assert f["rank_by"] == "distance" and set(f["by_plan"]) == {"t2a", "a2t"}
  mtimes = {n: (d / "final_metrics.json").stat().st_mtime_ns for n, d in cells.items()}

  # The saved embeddings are the evaluated ones: InfoNCE ranks by Euclidean distance of the
  # normalised embeddings; brute-force T2A R@1/R@10 (ties count against the query).
  z = np.load(cells["contrastive"] / "embeddings.npz")
  audio, text, c2c = (z[k].astype(np.float64) for k in ("audio", "text", "caption_to_clip"))
  assert audio.shape == (32, 64) and text.shape == (160, 64)
  dist = np.linalg.norm(text[:, None, :] - audio[None, :, :], axis=-1)  # [captions, clips]
  true = dist[np.arange(len(text)), c2c.astype(int)]
  ranks = (dist <= true[:, None] + 1e-9).sum(axis=1)
  for k in (1, 10):
    assert 100 * np.mean(ranks <= k) == pytest.approx(
      finals["contrastive"]["t2a"][f"R@{k}"], abs=100 / len(text) + 1e-6
    )

  # Second invocation: both runs are skipped, nothing is retrained; the report is rewritten.
  for name in ("REPORT.md", *PLOTS):
    (out / name).unlink()
  res2 = _run(*args)
  assert res2.returncode == 0, res2.stderr[-3000:]
  assert res2.stdout.count("finished before, skipped") == 2 and "running" not in res2.stdout
  for n, d in cells.items():
    assert (d / "final_metrics.json").stat().st_mtime_ns == mtimes[n]

  # The report: the cells' numbers in the right rows and columns, both rankings.
  report = (out / "REPORT.md").read_text()
  head = subprocess.run(
    ["git", "rev-parse", "HEAD"], check=True, cwd=REPO, capture_output=True, text=True
  ).stdout.strip()
  assert head and f"`{head}" in report
  assert "--scale=smoke --cells=contrastive,mltm_full" in report
  labels = {"contrastive": "InfoNCE", "mltm_full": "m-LTM, Mahalanobis full"}
  for method in ("distance", "plan"):
    rows = _table_rows(report, f"Losses, ranked by {method}")
    for n, label in labels.items():
      src = finals[n] if method == "distance" else finals[n]["by_plan"]
      for d in DIRS:
        for k in KEYS:
          assert rows[label][f"{d.upper()} {k}"] == f"{src[d][k]:.1f}"
    assert rows["triplet (hardest negative)"]["T2A R@1"] == "—"
  assert re.search(r"seeds 1997 \(n=1\)", report)

  for name in PLOTS:
    with Image.open(out / name) as im:
      im.verify()
      assert im.size[0] > 200 and im.size[1] > 200


def test_prune_keeps_results_and_bad_input_is_one_line(tmp_path):
  from mltm_jax.experiments.runner import prune_run

  d = tmp_path / "cells" / "x__seed1"
  (d / "checkpoints" / "latest" / "3").mkdir(parents=True)
  (d / "cache").symlink_to(tmp_path, target_is_directory=True)
  prune_run(d)  # not finished: nothing is deleted
  assert (d / "checkpoints").is_dir()
  (d / "final_metrics.json").write_text("{}")
  pairs = [
    {"clip": "a.wav", "slot": 0, "caption_index": 3, "caption": "x", "caption_from": "b.wav"}
  ]
  record = {"noise_p": 0.2, "seed": 1, "num_pairs": 10, "num_shuffled": 2, "num_mismatched": 1}
  (d / "noisy_pairs.json").write_text(json.dumps({**record, "pairs": pairs}))
  prune_run(d)
  assert not (d / "checkpoints").exists() and not (d / "cache").exists()
  assert (d / "final_metrics.json").is_file() and tmp_path.is_dir()
  kept = json.loads((d / "noisy_pairs.json").read_text())  # counts + digest, not the list
  assert "pairs" not in kept and {k: kept[k] for k in record} == record
  assert len(kept["pairs_sha256"]) == 64

  res = _run("--scale=smoke", "--cells=nope", f"--out={tmp_path}", timeout=120)
  assert res.returncode == 2
  lines = [l for l in res.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "unknown cell(s) nope" in lines[0]
  # A run directory of another config is refused before any work.
  grid = claims.claims_grid("smoke")
  other = dataclasses.replace(grid, base={**grid.base, "num_steps": 7})
  from mltm_jax.experiments.runner import plan_runs

  wd = tmp_path / "g" / "cells" / "contrastive__seed1997"
  wd.mkdir(parents=True)
  cfg = claims.cell_config(other, grid.cell("contrastive"), 1997, wd)
  (wd / "config.json").write_text(cfg.to_json())
  with pytest.raises(ValueError, match="num_steps"):
    plan_runs(claims.select(grid, ["contrastive"]), tmp_path / "g")


def test_claims_paired_column_counts_per_seed_signs():
  """'paired' = per-seed differences with the claimed sign, counted here by hand from the same
  fake finals (seed 1999 of partial OT missing: only seeds both cells have are paired)."""
  from mltm_jax.experiments.report import Results, claims_section

  grid = claims.claims_grid("smoke", num_seeds=3)
  rng = np.random.default_rng(1)
  cells = ["mltm_full", "triplet", "contrastive", "mltm_partial"]
  cells += [c for _, cs in grid.noise for _, c in cs[1:] if "noise0.2" in c]
  finals = {c: {s: _fake_final(rng, "distance") for s in grid.seeds} for c in cells}
  del finals["mltm_partial"][1999]
  lines = claims_section(grid, Results(finals, {}))

  def r1(cell, seed):  # [distance t2a, distance a2t, plan t2a, plan a2t]
    f = finals[cell][seed]
    return [f[d]["R@1"] for d in DIRS] + [f["by_plan"][d]["R@1"] for d in DIRS]

  def count(a, b):
    seeds = sorted(set(finals[a]) & set(finals[b]))
    diffs = [x - y for s in seeds for x, y in zip(r1(a, s), r1(b, s))]
    return f"{sum(d > 0 for d in diffs)}/{len(diffs)}"

  def row(start):
    line = next(l for l in lines if l.startswith("| " + start))
    return [c.strip() for c in line.strip("|").split("|")]

  assert row("m-LTM beats triplet")[6] == count("mltm_full", "triplet")  # x/12
  assert row("m-LTM beats triplet")[6].endswith("/12")
  assert row("partial OT adds")[6] == count("mltm_partial", "mltm_full")
  assert row("partial OT adds")[6].endswith("/8")
  # Noise at p = 0.2: partial's drop smaller than InfoNCE's, per seed (1997, 1998 only).
  drops = [
    (c0 - c) - (p0 - p)
    for s in (1997, 1998)
    for c0, c, p0, p in zip(
      r1("contrastive", s),
      r1("contrastive__noise0.2", s),
      r1("mltm_partial", s),
      r1("mltm_partial__noise0.2", s),
    )
  ]
  assert row("0.2")[-2] == f"{sum(d > 0 for d in drops)}/8"


def test_chance_r10_against_a_shuffled_ranking_and_failed_runs_are_invalid():
  """Chance R@10 equals the mean over random rankings (simulated here); a collapsed cell makes
  its comparisons invalid; the noise verdict follows the absolute R@1 at p."""
  from mltm_jax.experiments.report import Results, chance_r10, claims_section

  n, k = 32, 5
  rng = np.random.default_rng(0)
  c2c = np.repeat(np.arange(n), k)
  t2a, a2t = [], []
  for _ in range(300):  # random scores, ranked by numpy: the share of hits in the top 10
    scores = rng.normal(size=(n * k, n))  # caption x clip
    t2a.append(100 * np.mean((scores > scores[np.arange(n * k), c2c][:, None]).sum(1) < 10))
    order = np.argsort(-scores.T, axis=1)[:, :10]  # each clip's 10 best captions
    a2t.append(100 * np.mean([np.any(c2c[order[i]] == i) for i in range(n)]))
  chance = chance_r10(n, k)
  assert abs(np.mean(t2a) - chance["t2a"]) < 1.5, (np.mean(t2a), chance)  # sd of mean ~0.2
  assert abs(np.mean(a2t) - chance["a2t"]) < 2.0, (np.mean(a2t), chance)  # sd of mean ~0.5

  grid = claims.claims_grid("smoke", num_seeds=1)  # test split of 32 clips
  cells = ["mltm_full", "triplet", "contrastive", "mltm_partial"]
  cells += [c for _, cs in grid.noise for _, c in cs[1:] if "noise0.2" in c]

  def final(r1, r10):
    d = {"R@1": r1, "R@5": r1, "R@10": r10, "mAP@10": r1, "R@50": 90.0, "medR": 5, "meanR": 9}
    return {
      "t2a": d,
      "a2t": dict(d),
      "rank_by": "distance",
      "modality_gap": 0.1,
      "by_plan": {"t2a": dict(d), "a2t": dict(d)},
    }

  finals = {c: {1997: final(40.0, 80.0)} for c in cells}
  finals["triplet"] = {1997: final(3.0, 2 * chance_r10(32)["t2a"] - 1)}  # collapsed
  finals["mltm_partial__noise0.2"] = {1997: final(30.0, 70.0)}  # smaller drop? no: lower R@1
  finals["contrastive"] = {1997: final(50.0, 85.0)}
  finals["contrastive__noise0.2"] = {1997: final(35.0, 75.0)}
  lines = claims_section(grid, Results(finals, {}))
  row = lambda start: next(l for l in lines if l.startswith("| " + start))
  assert "invalid: triplet (hardest negative) failed" in row("m-LTM beats triplet")
  assert "holds" not in row("m-LTM beats triplet").split("|")[-2]
  # partial drops 10 (40 -> 30), InfoNCE 15 (50 -> 35): smaller drop, but lower R@1 at p.
  noise = row("0.2")
  assert "-5.0, -5.0, -5.0, -5.0" in noise and "25 % vs 30 %" in noise
  assert noise.strip("|").split("|")[-1].strip() == "does not hold"


def test_a_failed_run_is_logged_and_the_grid_goes_on(tmp_path, monkeypatch):
  """One run raising (e.g. a checkpoint write timing out) does not stop the grid: the runs
  after it run, and the stage then ends with RunsFailed naming it (rerun to retry)."""
  from types import SimpleNamespace

  from mltm_jax.experiments import runner

  metrics = {"t2a": {"R@1": 1.0}, "a2t": {"R@1": 2.0}, "rank_by": "distance"}

  def fake_train(run, provenance):
    if run.name == "b":
      raise TimeoutError("commit timed out\ntraceback details")
    return metrics

  monkeypatch.setattr(runner, "train_one", fake_train)
  runs = [
    SimpleNamespace(name=n, workdir=tmp_path / n, finished=lambda: False) for n in ("a", "b", "c")
  ]
  lines = []
  with pytest.raises(runner.RunsFailed, match=r"1 of 3 runs failed \(b\)"):
    runner.run_grid(runs, tmp_path / "grid", log=lines.append)
  assert lines[0] == "[1/3] a: running (elapsed 0m00s)"
  assert lines[3].startswith("[2/3] b: FAILED after ")
  assert lines[3].endswith(": TimeoutError: commit timed out")
  assert lines[4].startswith("[3/3] c: running") and lines[5].startswith("[3/3] c: done in")

  # An interruption still stops the grid at once.
  def interrupted(run, provenance):
    raise runner.Interrupted("stopped")

  monkeypatch.setattr(runner, "train_one", interrupted)
  with pytest.raises(runner.Interrupted):
    runner.run_grid(runs, tmp_path / "grid", log=lines.append)


def test_resolved_counts_differences_welch_t_resolves():
  """Welch's t over 3 seeds a side (df = 4 for equal spreads; two-sided 5% critical value
  2.776): a difference of 3 with unit spreads (t = 3.67) is resolved, one of 2 (t = 2.45,
  resolved by a normal approximation but not by t with 4 degrees of freedom) is not; nor
  a difference against the claim, equal samples, or a single seed."""
  from mltm_jax.experiments.verdicts import resolved

  base = [0.0, 1.0, 2.0]
  plus = lambda k: [x + k for x in base]
  assert resolved([(plus(3.0), base)]) == "1/1"
  assert resolved([(plus(2.0), base)]) == "0/1"
  assert resolved([(base, plus(3.0))]) == "0/1"
  assert resolved([(base, base)]) == "0/1"
  assert resolved([([9.0], base)]) == "0/1"
  assert resolved([(plus(3.0), base), (plus(10.0), base), (plus(2.0), base)]) == "2/3"
  assert resolved([]) == "—"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no scipy warning escapes for samples without spread
    assert resolved([([5.0] * 3, [1.0] * 3)]) == "0/1"  # no spread on either side: never
    assert resolved([([10.0] * 3, base)]) == "1/1"  # t = 15.6, Welch df = 2: p = 0.004
