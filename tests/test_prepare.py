"""launch.prepare on tiny fixtures in each official layout, bad cases included.

References: librosa.resample on the file's own samples (soundfile) and the analytic sine for
resampling, numpy means for downmixing, the CSV rows as written for captions and grouping.
The fixture builders here are reused by test_prepare_train.py and test_zeroshot.py.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------
# Fixture builders
# --------------------------------------------------------------------------------------


def tone(sr: int, seconds: float, freq: float, amp: float = 0.3, phase: float = 0.0) -> np.ndarray:
  t = np.arange(round(sr * seconds)) / sr
  return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def write_csv_bytes(path: Path, header: list[str], rows: list[list], encodings=None) -> None:
  """A CSV in UTF-8, except the cells listed in encodings {(row, column): codec}."""
  out = bytearray()
  for r, row in enumerate([header] + rows):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([str(c) for c in row])
    data = buf.getvalue().encode("utf-8")
    for (rr, cc), codec in (encodings or {}).items():
      if rr == r - 1:
        data = data.replace(str(row[cc]).encode("utf-8"), str(row[cc]).encode(codec))
    out += data
  path.write_bytes(bytes(out))


CLOTHO_BAD = {
  # id: expected skip reason
  "missing.wav": "missing audio",
  "corrupt.wav": "corrupt",
  "zero_bytes.wav": "empty file",
  "no_frames.wav": "no samples",
  "silent.wav": "silent",
  "nocaps.wav": "no captions",
}


def make_clotho(
  root: Path,
  n_train: int = 12,
  n_val: int = 6,
  n_test: int = 6,
  sr: int = 44100,
  seconds: float = 1.5,
  bad: bool = True,
) -> Path:
  """Clotho v2.1 layout: good 44.1 kHz tones, plus (development) every bad case."""
  root.mkdir(parents=True, exist_ok=True)
  header = ["file_name"] + [f"caption_{k}" for k in range(1, 6)]
  for split, n in (("development", n_train), ("validation", n_val), ("evaluation", n_test)):
    d = root / split
    d.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
      name = f"{split}_{i:03d}.wav"
      f = 200.0 + 37.0 * i + {"development": 0, "validation": 11, "evaluation": 23}[split]
      sf.write(d / name, tone(sr, seconds, f), sr, subtype="PCM_16")
      rows.append([name] + [f"{split} tone {i} number {k}" for k in range(5)])
    enc = {}
    if bad and split == "development":
      sf.write(d / "stereo.wav", np.stack([tone(sr, 1.0, 300), tone(sr, 1.0, 500, 0.15)], 1), sr)
      sf.write(d / "odd_rate.wav", tone(7919, 1.0, 440), 7919)
      sf.write(d / "long.wav", tone(16000, 5.0, 250), 16000)
      (d / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt not really audio")
      (d / "zero_bytes.wav").write_bytes(b"")
      sf.write(d / "no_frames.wav", np.zeros(0, np.float32), sr)
      sf.write(d / "silent.wav", np.zeros(sr, np.float32), sr)
      sf.write(d / "nocaps.wav", tone(sr, 1.0, 600), sr)
      rows += [
        ["stereo.wav"] + [f"stereo caption {k}" for k in range(5)],
        ["odd_rate.wav", "an odd rate", "", "   ", "odd rate two", "odd rate three"],
        ["long.wav", "a long file", "café au lait", "long two", "long three", "long four"],
        ["corrupt.wav"] + ["x"] * 5,
        ["zero_bytes.wav"] + ["x"] * 5,
        ["no_frames.wav"] + ["x"] * 5,
        ["silent.wav"] + ["x"] * 5,
        ["missing.wav"] + ["y"] * 5,
        ["nocaps.wav", "", " ", "", "", ""],
        [f"{split}_000.wav"] + ["duplicate"] * 5,
      ]
      enc = {(len(rows) - 8, 2): "cp1252"}  # "café au lait" of long.wav in cp1252
    write_csv_bytes(root / f"clotho_captions_{split}.csv", header, rows, enc)
  return root


def make_audiocaps(root: Path, sr: int = 32000) -> Path:
  """AudioCaps layout, every accepted file-name variant, flac/mp3, a flat split, a missing clip."""
  root.mkdir(parents=True, exist_ok=True)
  header = ["audiocap_id", "youtube_id", "start_time", "caption"]
  cap_id = iter(range(1000, 100000))
  # train: (yid, start, file name or None = missing, folder)
  train = [
    ("trA", 30, "trA.wav"),
    ("trB", 0, "YtrB.wav"),
    ("trC", 10, "trC_10.wav"),
    ("trD", 20, "trD_20_30.wav"),
    ("trE", 40, "YtrE_40.000_50.000.flac"),
    ("trF", 5, "trF.mp3"),
    ("trG", 0, "trG.wav"),
    ("trH", 0, "trH.wav"),
    ("trI", 0, "trI.wav"),
    ("trJ", 0, "trJ.wav"),
    ("trMissing", 0, None),
  ]
  (root / "train").mkdir()
  rows = []
  for i, (yid, st, name) in enumerate(train):
    if name:
      fmt = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3"}[name.rsplit(".", 1)[1]]
      sf.write(root / "train" / name, tone(sr, 1.2, 300 + 41 * i), sr, format=fmt)
    rows.append([next(cap_id), yid, st, f"train sound {yid}"])
  rows.append([next(cap_id), "trA", 30, "a second caption of trA"])  # repeated train clip
  rows.append([next(cap_id), "trA", 60, "another segment of trA"])  # same video, other start
  sf.write(root / "train" / "trA_60.wav", tone(sr, 1.2, 999), sr)
  write_csv_bytes(root / "train.csv", header, rows)
  for split, prefix, flat in (("val", "va", False), ("test", "te", True)):
    folder = root if flat else root / split
    folder.mkdir(exist_ok=True)
    rows = []
    for i in range(4):
      yid = f"{prefix}{i}"
      sf.write(folder / f"{yid}.wav", tone(sr, 1.2, 350 + 53 * i), sr)
      rows += [[next(cap_id), yid, 0, f"{split} clip {i} caption {k}"] for k in range(5)]
    # interleave two clips' rows: grouping must not depend on adjacency
    rows[2], rows[7] = rows[7], rows[2]
    write_csv_bytes(root / f"{split}.csv", header, rows)
  return root


def make_esc50(
  root: Path,
  clips_per_class: int = 5,
  classes=("dog", "chirping_birds"),
  sr: int = 44100,
  waves=None,
) -> Path:
  """ESC-50 layout (meta/esc50.csv + audio/); fold = clip number % 5 + 1; optional waves
  {category: [(wave, sr), ...]} replace the tones. Adds one corrupt and one missing clip."""
  (root / "meta").mkdir(parents=True, exist_ok=True)
  (root / "audio").mkdir(exist_ok=True)
  header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
  rows = []
  for target, cat in enumerate(classes):
    for j in range(clips_per_class):
      name = f"{j % 5 + 1}-{1000 + 10 * target + j}-A-{target}.wav"
      if waves is not None:
        w, wsr = waves[cat][j]
      else:
        w, wsr = tone(sr, 1.0, 200 + 150 * target + 7 * j), sr
      sf.write(root / "audio" / name, w, wsr)
      rows.append([name, j % 5 + 1, target, cat, "False", 1000 + j, "A"])
  (root / "audio" / "1-9999-A-0.wav").write_bytes(b"garbage")
  rows.append(["1-9999-A-0.wav", 1, 0, classes[0], "True", 9999, "A"])
  rows.append(["2-9998-A-1.wav", 2, 1, classes[1], "False", 9998, "A"])
  write_csv_bytes(root / "meta" / "esc50.csv", header, rows)
  return root


def make_own_csv(root: Path, sr: int = 22050, n: int = 16) -> Path:
  """Own data: captions.csv (audio, caption_1, caption_2, split) with clips under wavs/."""
  (root / "wavs" / "sub").mkdir(parents=True, exist_ok=True)
  rows = []
  splits = ["train"] * (n - 6) + ["validation"] * 3 + ["test"] * 3
  for i in range(n):
    rel = f"wavs/sub/c{i:02d}.wav" if i % 2 else f"wavs/c{i:02d}.wav"
    sf.write(root / rel, tone(sr, 1.0, 220 + 30 * i), sr)
    rows.append([rel, f"own clip {i} first", f"own clip {i} second", splits[i]])
  rows.append(["wavs/c00.wav", "own clip 0 third", "", "train"])  # grouped with row 0
  rows.append(["wavs/absent.wav", "nothing here", "", "train"])
  rows.append(["wavs/c01.wav", "", "", "holdout"])  # unknown split
  write_csv_bytes(root / "captions.csv", ["audio", "caption_1", "caption_2", "split"], rows)
  return root / "captions.csv"


def run_prepare(*args, timeout: int = 180) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "launch.prepare", "--progress=false", *args],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def read_jsonl(path: Path) -> list[dict]:
  return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def waves_of(out: Path, split: str) -> dict[str, np.ndarray]:
  from mltm_jax.data.prepared import item_waves, read_items

  items = read_items(out, split)
  return dict(zip([it["id"] for it in items], item_waves(out, split, items)))


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_clotho_bad_cases_resampling_and_summary(tmp_path):
  src = make_clotho(tmp_path / "clotho")
  out = tmp_path / "out"
  res = run_prepare(
    "--dataset=clotho",
    f"--src={src}",
    f"--out={out}",
    "--workers=2",
    "--shard_size=4",
    "--max_seconds=3",
    "--sample_rate=16000",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  # Every bad case is skipped with its reason; the duplicate row too; nothing else.
  reasons = {s["id"]: s["reason"] for s in summary["skipped_items"]}
  assert reasons == {**CLOTHO_BAD, "development_000.wav": "duplicate row"}
  for reason in set(CLOTHO_BAD.values()):
    assert reason in res.stdout  # printed summary names each reason
  assert summary["splits"]["train"] == {
    "clips": 15,
    "captions": 73,
    "hours": pytest.approx((12 * 1.5 + 1.0 + 1.0 + 3.0) / 3600, abs=1e-4),
    "skipped": 7,
  }
  assert [summary["splits"][s]["clips"] for s in ("val", "test")] == [6, 6]
  assert summary["notes"]["downmixed from 2 channels"] == 1
  assert summary["notes"]["resampled from 7919 Hz"] == 1
  assert summary["notes"]["resampled from 44100 Hz"] == 12 + 1 + 6 + 6
  assert summary["notes"]["cropped to 3 s"] == 1
  assert summary["notes"]["empty caption dropped"] == 2
  assert summary["notes"]["caption not UTF-8 (decoded as cp1252)"] == 1

  items = {it["id"]: it for it in read_jsonl(out / "train.jsonl")}
  assert list(items)[:12] == [f"development_{i:03d}.wav" for i in range(12)]  # source order
  assert items["odd_rate.wav"]["captions"] == ["an odd rate", "odd rate two", "odd rate three"]
  assert items["long.wav"]["captions"][1] == "café au lait"
  assert items["stereo.wav"]["file"] == "development/stereo.wav"
  waves = waves_of(out, "train")
  src_dev = src / "development"

  def reference(name):  # librosa on soundfile's samples, channels averaged
    x, sr = sf.read(src_dev / name, dtype="float32", always_2d=True)
    return librosa.resample(x.mean(axis=1), orig_sr=sr, target_sr=16000)

  for name in ("development_003.wav", "stereo.wav", "odd_rate.wav"):
    ref = reference(name)
    assert waves[name].shape == ref.shape
    np.testing.assert_allclose(waves[name], ref, atol=1.0 / 32767)  # int16 storage step
  # Independent of librosa: the resampled 44.1 kHz tone is the analytic 16 kHz tone.
  t = np.arange(24000) / 16000
  want = 0.3 * np.sin(2 * np.pi * (200.0 + 37.0 * 3) * t)
  np.testing.assert_allclose(waves["development_003.wav"][1000:-1000], want[1000:-1000], atol=2e-3)
  down = 0.5 * (
    0.3 * np.sin(2 * np.pi * 300 * t[:16000]) + 0.15 * np.sin(2 * np.pi * 500 * t[:16000])
  )
  np.testing.assert_allclose(waves["stereo.wav"][1000:-1000], down[1000:-1000], atol=2e-3)
  assert waves["long.wav"].shape == (48000,)  # cropped to --max_seconds=3
  # two int16 roundings: the WAV file and the prepared storage
  np.testing.assert_allclose(waves["long.wav"], tone(16000, 3.0, 250), atol=2.0 / 32767)


def test_kill_and_rerun_gives_the_uninterrupted_output(tmp_path):
  src = make_clotho(tmp_path / "clotho", n_train=40, n_val=2, n_test=2, seconds=4.0, bad=False)
  flags = [f"--src={src}", "--dataset=clotho", "--shard_size=2", "--sample_rate=16000"]
  whole = run_prepare(*flags, f"--out={tmp_path / 'whole'}", "--workers=2")
  assert whole.returncode == 0, whole.stderr[-2000:]

  out = tmp_path / "killed"
  proc = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "launch.prepare",
      "--progress=false",
      *flags,
      f"--out={out}",
      "--workers=1",
    ],
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 120
  while time.time() < deadline and len(list(out.glob("train/shard-*.json"))) < 2:
    time.sleep(0.002)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  done = len(list(out.glob("train/shard-*.json")))
  assert 2 <= done < 20 and not (out / "summary.json").exists(), done  # killed mid-way
  from mltm_jax.data.prepared import read_items

  with pytest.raises(FileNotFoundError, match="did not finish"):
    read_items(out, "train")
  again = run_prepare(*flags, f"--out={out}", "--workers=1")
  assert again.returncode == 0, again.stderr[-2000:]
  s = json.loads((out / "summary.json").read_text())
  assert s["run"]["shards_reused"] == done and s["run"]["shards_written"] == 22 - done

  def files(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())

  assert files(out) == files(tmp_path / "whole")
  for rel in files(out):
    a, b = (out / rel).read_bytes(), (tmp_path / "whole" / rel).read_bytes()
    if rel == "summary.json":
      a, b = (json.loads(x) for x in (a, b))
      a.pop("run"), b.pop("run")
    assert a == b, rel


def test_audiocaps_names_grouping_and_missing(tmp_path):
  src = make_audiocaps(tmp_path / "ac")
  out = tmp_path / "out"
  res = run_prepare(
    "--dataset=audiocaps", f"--src={src}", f"--out={out}", "--workers=1", "--sample_rate=16000"
  )
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert [(s["split"], s["id"], s["reason"]) for s in summary["skipped_items"]] == [
    ("train", "trMissing_0", "missing audio")
  ]
  train = {it["id"]: it for it in read_jsonl(out / "train.jsonl")}
  files = {k: v["file"] for k, v in train.items()}
  assert files == {
    "trA_30": "train/trA.wav",
    "trB_0": "train/YtrB.wav",
    "trC_10": "train/trC_10.wav",
    "trD_20": "train/trD_20_30.wav",
    "trE_40": "train/YtrE_40.000_50.000.flac",
    "trF_5": "train/trF.mp3",
    "trG_0": "train/trG.wav",
    "trH_0": "train/trH.wav",
    "trI_0": "train/trI.wav",
    "trJ_0": "train/trJ.wav",
    "trA_60": "train/trA_60.wav",
  }
  assert train["trA_30"]["captions"] == ["train sound trA", "a second caption of trA"]
  assert len(train["trA_30"]["audiocap_ids"]) == 2 and train["trA_60"]["start_time"] == 60.0
  assert all(it["duration"] == pytest.approx(1.2, abs=0.06) for it in train.values())  # mp3 pads
  for split, prefix, folder in (("val", "va", "val/"), ("test", "te", "")):
    items = read_jsonl(out / f"{split}.jsonl")
    assert [it["id"] for it in items] == [f"{prefix}{i}_0" for i in range(4)]
    want: dict[str, list[str]] = {}  # the CSV's rows grouped by clip, in row order
    for row in csv.DictReader(io.StringIO((src / f"{split}.csv").read_text("utf-8"))):
      want.setdefault(row["youtube_id"], []).append(row["caption"])
    for i, it in enumerate(items):
      assert it["captions"] == want[f"{prefix}{i}"] and len(set(it["captions"])) == 5
      assert it["file"] == f"{folder}{prefix}{i}.wav"
    assert items[0]["captions"][-1] == f"{split} clip 0 caption 2"  # its row came late
  w = waves_of(out, "val")["va1_0"]
  ref = librosa.resample(
    sf.read(src / "val" / "va1.wav", dtype="float32")[0], orig_sr=32000, target_sr=16000
  )
  np.testing.assert_allclose(w, ref, atol=1.0 / 32767)


def test_esc50_layout_and_no_training_split(tmp_path):
  src = make_esc50(tmp_path / "esc")
  out = tmp_path / "out"
  res = run_prepare(
    "--dataset=esc50",
    f"--src={src}",
    f"--out={out}",
    "--workers=1",
    "--config=configs/audiocaps_mltm.flags",
  )  # its --sample_rate=32000
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["sample_rate"] == 32000 and all(
    it["num_samples"] == 32000 for it in read_jsonl(out / "all.jsonl")
  )
  assert {s["id"]: s["reason"] for s in summary["skipped_items"]} == {
    "1-9999-A-0.wav": "corrupt",
    "2-9998-A-1.wav": "missing audio",
  }
  items = read_jsonl(out / "all.jsonl")
  assert len(items) == 10 and summary["splits"]["all"]["clips"] == 10
  assert sorted({(it["category"], it["target"]) for it in items}) == [
    ("chirping_birds", 1),
    ("dog", 0),
  ]
  assert sorted(it["fold"] for it in items) == sorted(list(range(1, 6)) * 2)
  assert all(it["captions"] == [] and it["esc10"] is False for it in items)
  from mltm_jax.data.prepared import load_prepared_split

  with pytest.raises(FileNotFoundError, match="ESC-50 is for launch.zeroshot"):
    load_prepared_split(out, "train", 16000, progress=False)
  # A folder holding ESC-50 is not overwritten with another dataset.
  res = run_prepare(
    "--dataset=clotho", f"--src={make_clotho(tmp_path / 'c', 2, 1, 1, bad=False)}", f"--out={out}"
  )
  assert res.returncode == 2 and "refusing" in res.stderr and "Traceback" not in res.stderr


def test_own_csv_and_jsonl(tmp_path):
  meta = make_own_csv(tmp_path / "own")
  out = tmp_path / "out"
  res = run_prepare("--dataset=csv", f"--src={meta}", f"--out={out}", "--workers=1")
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert {s["id"]: s["reason"] for s in summary["skipped_items"]} == {
    "wavs/absent.wav": "missing audio",
    "wavs/c01.wav": "unknown split",
  }
  train = read_jsonl(out / "train.jsonl")
  assert [it["id"] for it in train][:2] == ["wavs/c00.wav", "wavs/sub/c01.wav"]
  assert train[0]["captions"] == ["own clip 0 first", "own clip 0 second", "own clip 0 third"]
  assert len(train) == 10 and len(read_jsonl(out / "val.jsonl")) == 3  # "validation" -> val
  # The same rows as JSON lines, without a split column: a seeded 60/20/20 split of the clips.
  rows = list(csv.DictReader(io.StringIO(meta.read_text("utf-8"))))
  jl = tmp_path / "own" / "data.jsonl"
  jl.write_text(
    "".join(
      json.dumps({"path": r["audio"], "captions": [r["caption_1"], r["caption_2"]]}) + "\n"
      for r in rows
    )
    + "{not json\n",
    encoding="utf-8",
  )
  o = tmp_path / "out_jsonl"
  res = run_prepare(
    "--dataset=csv",
    f"--src={jl}",
    f"--out={o}",
    "--workers=1",
    "--val_fraction=0.2",
    "--test_fraction=0.2",
    "--split_seed=5",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  got = {s: [it["id"] for it in read_jsonl(o / f"{s}.jsonl")] for s in ("train", "val", "test")}
  from mltm_jax.data.prepare import OwnOptions, read_layout

  for seed, same in ((5, True), (6, False)):  # a function of the seed
    again = read_layout(
      "csv", jl, own=OwnOptions(val_fraction=0.2, test_fraction=0.2, split_seed=seed)
    )
    ids = {s: [e.id for e in again.entries if e.split == s] for s in ("train", "val", "test")}
    assert (ids == got) == same
  assert {s: len(v) for s, v in got.items()} == {"train": 10, "val": 3, "test": 3}  # of 16 clips
  assert set().union(*got.values()) == {r["audio"] for r in rows} - {
    "wavs/absent.wav",
    "wavs/c01.wav",
  }
  s = json.loads((o / "summary.json").read_text())
  assert s["skip_reasons"] == {"bad JSON line": 1, "missing audio": 1, "no captions": 1}


def test_synthcaps_conversion_matches_the_clotho_reader(tiny_synthcaps, tmp_path):
  from mltm_jax.data.pipeline import load_split
  from mltm_jax.data.prepared import load_prepared_split
  from mltm_jax.synthcaps import source_labels

  out = tmp_path / "out"
  res = run_prepare(
    "--dataset=synthcaps",
    f"--src={tiny_synthcaps}",
    f"--out={out}",
    "--workers=1",
    "--sample_rate=8000",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  ref = load_split(tiny_synthcaps, "evaluation", 8000, progress=False)  # the existing reader
  got = load_prepared_split(out, "test", 8000, progress=False)
  assert got.file_names == ref.file_names and got.captions == ref.captions
  np.testing.assert_array_equal(got.caption_to_clip, ref.caption_to_clip)
  for a, b in zip(got.waves, ref.waves):
    np.testing.assert_allclose(a, b, atol=1.0 / 32767)
  labels = [it["labels"] for it in read_jsonl(out / "test.jsonl")]
  assert labels == source_labels(tiny_synthcaps / "synthcaps_metadata_evaluation.jsonl")
  # float32 storage: the same samples exactly, read window by window from the shards.
  out32 = tmp_path / "out32"
  res = run_prepare(
    "--dataset=synthcaps",
    f"--src={tiny_synthcaps}",
    f"--out={out32}",
    "--workers=1",
    "--sample_rate=8000",
    "--dtype=float32",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  got32 = load_prepared_split(out32, "test", 8000, progress=False)
  from mltm_jax.data.clips import ShardStore

  assert isinstance(got32.waves, ShardStore)
  for a, b in zip(got32.waves, ref.waves):
    np.testing.assert_array_equal(a, b)
  for i in range(0, got32.num_clips, 7):  # windows: the reference's slices, exactly
    np.testing.assert_array_equal(got32.waves.read(i, 100, 1000), ref.waves[i][100:1100])


@pytest.mark.parametrize(
  "args,needle",
  [
    (["--dataset=clotho", "--out=/tmp/x"], "--src is required"),
    (["--dataset=clotho", "--src=/no/such/dir", "--out=/tmp/x"], "no such file or folder"),
    (["--dataset=clotho", "--src=.", "--out=/tmp/x", "--shard_size=0"], "--shard_size"),
    (["--dataset=esc50", "--src=.", "--out=/tmp/x"], "meta/esc50.csv"),
  ],
)
def test_bad_invocations_fail_in_one_line(args, needle):
  res = run_prepare(*args)
  assert res.returncode == 2, res.stderr
  lines = [l for l in res.stderr.strip().splitlines() if l]
  assert len(lines) == 1 and needle in lines[0], res.stderr
