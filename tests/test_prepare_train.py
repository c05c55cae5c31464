"""Prepared data through the user's commands: launch.prepare and launch.train (20 steps) on the
Clotho and own-CSV fixtures, then launch.evaluate on the Clotho run (which also has --noise_p
and a resampled input).
The AudioCaps layout goes through the same commands in tests/test_paper_configs.py (prepared
for configs/audiocaps_mltm.flags, trained with it). ESC-50 has no training split; its prepared
layout goes through launch.zeroshot (tests/test_zeroshot.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_prepare import make_clotho, make_own_csv, read_jsonl, run_prepare

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]
TINY = [
  "--dataset=prepared",
  "--sample_rate=8000",
  "--clip_seconds=2",
  "--n_fft=512",
  "--hop_length=320",
  "--fmax=4000",
  "--cnn_channels=16,32,32",
  "--embed_dim=32",
  "--head_hidden=64",
  "--batch_size=8",
  "--num_steps=20",
  "--eval_every=20",
  "--log_every=10",
  "--eval_batch_size=16",
  "--progress=false",
]


def run(module: str, *args) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.parametrize("layout", ["clotho", "csv"])
def test_prepare_train_evaluate(layout, tmp_path):
  if layout == "clotho":  # prepared at 16 kHz, trained at 8 kHz: resampled when loaded
    src, prep_args, extra = (
      make_clotho(tmp_path / "src"),
      ["--sample_rate=16000"],
      ["--noise_p=0.4"],
    )
  else:
    src, prep_args, extra = make_own_csv(tmp_path / "src"), ["--sample_rate=8000"], []
  data, work = tmp_path / "prepared", tmp_path / "run"
  res = run_prepare(
    f"--dataset={layout}", f"--src={src}", f"--out={data}", "--workers=1", *prep_args
  )
  assert res.returncode == 0, res.stderr[-3000:]
  res = run("launch.train", *TINY, f"--data_dir={data}", f"--workdir={work}", *extra)
  assert res.returncode == 0, res.stderr[-3000:]
  final = json.loads((work / "final_metrics.json").read_text())
  assert final["best_step"] == 20 and final["skipped_steps"] == 0
  test_items = read_jsonl(data / "test.jsonl")
  if layout == "clotho":  # launch.evaluate reads prepared data the same way for every layout
    res = run("launch.evaluate", f"--workdir={work}", "--split=test")
    assert res.returncode == 0, res.stderr[-3000:]
    ev = json.loads((work / "eval_test.json").read_text())
    assert ev["num_clips"] == len(test_items)
    assert ev["num_captions"] == sum(len(it["captions"]) for it in test_items)
    for d in ("t2a", "a2t"):
      for k in ("R@1", "R@10", "mAP@10"):
        assert ev["distance"][d][k] == pytest.approx(final[d][k], abs=1e-6)
  train_items = {it["id"]: it["captions"] for it in read_jsonl(data / "train.jsonl")}
  if layout == "clotho":
    rec = json.loads((work / "noisy_pairs.json").read_text())
    n_pairs = sum(len(c) for c in train_items.values())
    assert rec["num_pairs"] == n_pairs and rec["num_shuffled"] == round(0.4 * n_pairs)
    for p in rec["pairs"]:  # each shuffled pair: a training clip with another training caption
      assert p["clip"] in train_items and p["caption"] in train_items[p["caption_from"]]
    assert rec["num_mismatched"] == sum(p["clip"] != p["caption_from"] for p in rec["pairs"])
  else:
    assert not (work / "noisy_pairs.json").exists()
