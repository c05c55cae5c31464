"""Evaluating a run on other data (launch.evaluate / launch.zeroshot --dataset, --data_dir) and
the SynthCaps guard: no entry point renders SynthCaps into a folder that holds something else,
and the evaluated folder is never written to (checked by a checksum of its whole tree)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mltm_jax import synthcaps as sc
from tests.cli_runs import REPO, Shared, tiny_flags, tiny_run

N_CLIPS = 12


def tree_state(root: Path) -> list[tuple]:
  """Every path under root (root included): kind, size, mtime and the sha256 of each file."""
  out = []
  for p in sorted([root, *root.rglob("*")]):
    st = p.lstat()
    rel = str(p.relative_to(root))
    if p.is_file():
      out.append((rel, "file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).digest()))
    else:
      out.append((rel, "dir" if p.is_dir() else "other", st.st_mtime_ns))
  return out


def clotho_folder(src: Path, dst: Path) -> Path:
  """A Clotho-layout folder (evaluation split only) of N_CLIPS clips copied from SynthCaps,
  renamed, without any SynthCaps file, plus a file of its own."""
  with open(src / "clotho_captions_evaluation.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))[1 : N_CLIPS + 1]
  (dst / "evaluation").mkdir(parents=True)
  with open(dst / "clotho_captions_evaluation.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["file_name"] + [f"caption_{k}" for k in range(1, 6)])
    for i, row in enumerate(rows):
      name = f"clip {i:02d}.wav"
      shutil.copy(src / "evaluation" / row[0], dst / "evaluation" / name)
      w.writerow([name, *row[1:]])
  (dst / "LICENSE.txt").write_text("not SynthCaps\n")
  return dst


def run_cli(shared: Shared, module: str, *args: str, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=shared.env(),
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


def one_error_line(res: subprocess.CompletedProcess, needle: str) -> None:
  assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
  lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  return Shared(tmp_path_factory)


@pytest.fixture(scope="module")
def run_dir(tiny_synthcaps, tmp_path_factory, shared):
  """A tiny SynthCaps-trained run (tests.cli_runs.tiny_run: 20 steps, shared)."""
  return tiny_run(tmp_path_factory, shared, tiny_synthcaps)


@pytest.fixture(scope="module")
def clotho_dir(tiny_synthcaps, tmp_path_factory):
  return clotho_folder(tiny_synthcaps, tmp_path_factory.mktemp("other") / "my clotho")


# --------------------------------------------------------------------------------------
# ensure_synthcaps itself
# --------------------------------------------------------------------------------------


def _ensure(out: Path) -> Path:
  return sc.ensure_synthcaps(
    out, {"evaluation": 1}, seed=0, sample_rate=8000, progress=False, workers=1
  )


def test_ensure_synthcaps_refuses_a_foreign_folder(tmp_path):
  foreign = tmp_path / "foreign"
  (foreign / "evaluation").mkdir(parents=True)
  (foreign / "clotho_captions_evaluation.csv").write_text("file_name,caption_1\n")
  (foreign / "evaluation" / "a.wav").write_bytes(b"RIFF")
  before = tree_state(foreign)
  with pytest.raises(sc.ForeignDirectoryError) as ei:
    _ensure(foreign)
  assert isinstance(ei.value, ValueError)
  assert "\n" not in str(ei.value) and str(foreign) in str(ei.value)
  assert tree_state(foreign) == before
  # a plain file is refused too, and left alone
  plain = tmp_path / "file"
  plain.write_text("x")
  with pytest.raises(sc.ForeignDirectoryError):
    _ensure(plain)
  assert plain.read_text() == "x"


def test_ensure_synthcaps_renders_into_new_empty_and_own_folders(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  assert _ensure(empty) == empty and (empty / sc.MARKER).is_file()
  new = tmp_path / "new" / "deeper"
  assert _ensure(new) == new and (new / sc.MARKER).is_file()
  assert (empty / "clotho_captions_evaluation.csv").read_bytes() == (
    new / "clotho_captions_evaluation.csv"
  ).read_bytes()
  # An interrupted rendering (parameters written, no marker yet) is ours: it resumes.
  (empty / sc.MARKER).unlink()
  (empty / "clotho_captions_evaluation.csv").unlink()
  assert (empty / sc.PARAMS).is_file()
  _ensure(empty)
  assert (empty / sc.MARKER).is_file() and (empty / "clotho_captions_evaluation.csv").is_file()
  # ... also when it stopped while writing the parameters (only their .tmp exists).
  early = tmp_path / "early"
  early.mkdir()
  (early / (sc.PARAMS + ".tmp")).write_text("{")
  sc.check_synthcaps_dir(early)


# --------------------------------------------------------------------------------------
# launch.evaluate on other data
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_synthcaps_run_on_clotho_folder(run_dir, clotho_dir, shared):
  own = run_dir / "eval_test.json"
  own.write_text('{"own": true}\n')
  own_state = (own.read_bytes(), own.stat().st_mtime_ns)
  before = tree_state(clotho_dir)
  res = run_cli(
    shared,
    "launch.evaluate",
    f"--workdir={run_dir}",
    "--dataset=clotho",
    f"--data_dir={clotho_dir}",
    "--split=test",
    "--rank_by=distance",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  assert "ranked by distance" in res.stdout and "R@10" in res.stdout
  assert tree_state(clotho_dir) == before
  assert (own.read_bytes(), own.stat().st_mtime_ns) == own_state
  written = run_dir / "eval_clotho_my_clotho_test.json"
  assert f"written {written}" in res.stdout
  ev = json.loads(written.read_text())
  assert ev["num_clips"] == N_CLIPS and ev["num_captions"] == 5 * N_CLIPS
  assert ev["dataset"] == "clotho" and set(ev["distance"]) >= {"t2a", "a2t"}

  # --out: the report goes there; a report inside the evaluated folder is refused.
  out = run_dir / "reports" / "mine.json"
  res = run_cli(
    shared,
    "launch.evaluate",
    f"--workdir={run_dir}",
    "--dataset=clotho",
    f"--data_dir={clotho_dir}",
    "--rank_by=distance",
    f"--out={out}",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  assert json.loads(out.read_text())["distance"] == ev["distance"]
  res = run_cli(
    shared,
    "launch.evaluate",
    f"--workdir={run_dir}",
    "--dataset=clotho",
    f"--data_dir={clotho_dir}",
    f"--out={clotho_dir / 'eval.json'}",
  )
  one_error_line(res, "inside the evaluated --data_dir")
  assert tree_state(clotho_dir) == before
  assert (own.read_bytes(), own.stat().st_mtime_ns) == own_state


@pytest.mark.slow
def test_evaluate_without_dataset_refuses_to_render_into_it(run_dir, clotho_dir, shared):
  before = tree_state(clotho_dir)
  reports = sorted(run_dir.glob("eval*.json"))
  res = run_cli(shared, "launch.evaluate", f"--workdir={run_dir}", f"--data_dir={clotho_dir}")
  one_error_line(res, "refusing to render SynthCaps")
  assert tree_state(clotho_dir) == before
  assert sorted(run_dir.glob("eval*.json")) == reports


# --------------------------------------------------------------------------------------
# every entry point that can render SynthCaps: one line, exit 2, nothing written
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_refuses_foreign_data_dir(tiny_synthcaps, clotho_dir, shared, tmp_path):
  before = tree_state(clotho_dir)
  workdir = tmp_path / "run"
  res = run_cli(
    shared, "launch.train", *tiny_flags(tiny_synthcaps, workdir, data_dir=str(clotho_dir))
  )
  one_error_line(res, "refusing to render SynthCaps")
  assert tree_state(clotho_dir) == before
  assert not workdir.exists()


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["prepare", "experiments", "zeroshot"])
def test_entry_points_refuse_foreign_data_dir(entry, request, clotho_dir, shared, tmp_path):
  before = tree_state(clotho_dir)
  out = tmp_path / "out"
  if entry == "prepare":
    args = ["--dataset=synthcaps", f"--src={clotho_dir}", f"--out={out}", "--workers=1"]
  elif entry == "experiments":
    args = ["--scale=smoke", "--cells=contrastive", f"--data_dir={clotho_dir}", f"--out={out}"]
  else:
    run_dir = request.getfixturevalue("run_dir")
    args = [f"--workdir={run_dir}", "--synthcaps", f"--data_dir={clotho_dir}"]
    assert json.loads((run_dir / "config.json").read_text())["dataset"] == "synthcaps"
  reports = sorted(run_dir.glob("zeroshot*.json")) if entry == "zeroshot" else []
  res = run_cli(shared, f"launch.{entry}", *args)
  one_error_line(res, "refusing to render SynthCaps")
  assert tree_state(clotho_dir) == before
  if entry != "zeroshot":
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
  else:
    assert sorted(run_dir.glob("zeroshot*.json")) == reports


@pytest.mark.slow
def test_zeroshot_on_another_synthcaps_reads_it_as_is(run_dir, shared, tmp_path):
  """A finished SynthCaps of other sizes, seed and rate than the run's is read, not re-rendered."""
  other = tmp_path / "other synth"
  sc.ensure_synthcaps(
    other, {"evaluation": 6}, seed=1, sample_rate=16000, progress=False, workers=1
  )
  before = tree_state(other)
  own = sorted(run_dir.glob("zeroshot*.json"))
  res = run_cli(
    shared,
    "launch.zeroshot",
    f"--workdir={run_dir}",
    "--synthcaps",
    "--dataset=synthcaps",
    f"--data_dir={other}",
    "--rank_by=distance",
    "--per_class=false",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  assert "zero-shot" in res.stdout
  assert tree_state(other) == before
  written = run_dir / "zeroshot_synthcaps_other_synth_synthcaps.json"
  rep = json.loads(written.read_text())
  assert rep["num_clips"] == 6 and rep["dataset"] == "synthcaps"
  assert sorted(run_dir.glob("zeroshot*.json")) == sorted([*own, written])
