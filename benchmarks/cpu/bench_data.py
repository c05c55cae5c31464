"""Benchmark ``data``: the training input pipeline over a prepared dataset of N clips.

For each N, a prepared dataset of N 10 s clips (int16, 16 kHz, shards of 128 clips, the
``launch.prepare`` format; noise waveforms, one caption each) is written once under ``--dir``
(the largest N; smaller N are views of its first clips), and a fresh process
(``python -m benchmarks.cpu.bench_data --child``) runs the training input pipeline of a paper-config
run (``TrainBatches`` of mltm_jax.data.input_pipeline: batch 256, random 10 s crops, caption
features gathered, batches put on the device mesh by a grain thread pool) for ``STEPS`` steps,
with the train step stubbed out (each batch is waited for on the device and dropped): it
measures the pipeline, not the model. The caption features are a random [Nc, 384] array standing
in for the cached frozen-encoder features (the same gather as a real run).

Per N the row records the child's peak resident set (``rss_peak_mb``: the kernel's high-water
mark ``VmHWM``, from process start, so loading the split's metadata counts), and clips per
second delivered to the device after a warm-up step (``clips_per_s``). The reference, in the
same run and at the smallest N only (at the largest it needs N x 640 KB of RAM), is the
pipeline as it was before: every clip decoded to float32 in memory, then cropped
(``--side=inmemory``). Page cache: the data was just written, so reads are served from memory
where it fits; a cold disk is bounded by its random-read bandwidth instead.

``--quick``: N = 2,000 and 20,000. ``--tiny``: N = 40 and 80, 1 s clips, batch 8 (for tests).
The dataset is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags

from benchmarks.roofline import Work
from benchmarks.timing import Row, Settings, Timing

SIZES = (5_000, 50_000)
QUICK_SIZES = (2_000, 20_000)
TINY_SIZES = (40, 80)
SAMPLE_RATE = 16_000
SECONDS, TINY_SECONDS = 10.0, 1.0
BATCH, TINY_BATCH = 256, 8
STEPS, TINY_STEPS = 40, 4
SHARD = 128
MB = 2.0**20
REPO = Path(__file__).resolve().parents[2]

FLAGS = flags.FLAGS
flags.DEFINE_string("data_bench_dir", None, "Where the data benchmark writes its dataset.")
flags.DEFINE_bool("keep", False, "Keep the data benchmark's dataset.")


def write_dataset(root: Path, n: int, seconds: float, seed: int = 0) -> None:
  """A prepared dataset of n noise clips (train split only, one caption per clip)."""
  from mltm_jax.data.prepared import FORMAT_VERSION, INFO, SUMMARY, items_path, shard_paths

  root.mkdir(parents=True, exist_ok=True)
  length = int(seconds * SAMPLE_RATE)
  info = {
    "format_version": FORMAT_VERSION,
    "dataset": "bench",
    "sample_rate": SAMPLE_RATE,
    "dtype": "int16",
    "shard_size": SHARD,
  }
  (root / INFO).write_text(json.dumps(info))
  rng = np.random.default_rng(seed)
  items_file = items_path(root, "train")
  with open(items_file, "w", encoding="utf-8") as f:
    for k in range(-(-n // SHARD)):
      count = min(SHARD, n - k * SHARD)
      npy, rec = shard_paths(root, "train", k)
      npy.parent.mkdir(parents=True, exist_ok=True)
      np.save(npy, rng.integers(-3000, 3000, size=count * length, dtype=np.int16))
      for j in range(count):
        i = k * SHARD + j
        item = {
          "id": f"clip{i:06d}",
          "file": f"clip{i:06d}.wav",
          "split": "train",
          "captions": [f"sound number {i} with a {('dog', 'bell', 'car')[i % 3]}"],
          "duration": seconds,
          "num_samples": length,
          "shard": k,
          "offset": j * length,
          "scale": 1.0 / 3000,
          "notes": [],
        }
        f.write(json.dumps(item) + "\n")
      rec.write_text(json.dumps({"items": count}))
  summary = {
    "format_version": FORMAT_VERSION,
    "dataset": "bench",
    "sample_rate": SAMPLE_RATE,
    "splits": {"train": {"clips": n, "skipped": 0}},
  }
  (root / SUMMARY).write_text(json.dumps(summary))


def view_dataset(src: Path, dst: Path, n: int) -> None:
  """dst: the first n clips of src (shards linked, records cut)."""
  from mltm_jax.data.prepared import INFO, SUMMARY, items_path

  (dst / "train").mkdir(parents=True, exist_ok=True)
  for name in (INFO, SUMMARY):
    shutil.copy(src / name, dst / name)
  shards = -(-n // SHARD)
  for k in range(shards):
    for ext in (".npy", ".json"):
      (dst / "train" / f"shard-{k:05d}{ext}").symlink_to(src / "train" / f"shard-{k:05d}{ext}")
  with (
    open(items_path(src, "train"), encoding="utf-8") as f,
    open(items_path(dst, "train"), "w", encoding="utf-8") as g,
  ):
    for _, line in zip(range(n), f):
      g.write(line)


def _vm_hwm_mb() -> float:
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024.0
  raise KeyError("VmHWM")


def _former_batch(batches, waves, clip_samples: int, step: int) -> dict:
  """A batch as the former pipeline made it: crops copied out of in-memory waves into a
  zero-filled array (numpy's allocation: not aligned, so copied again by device_put)."""
  from mltm_jax.data.pipeline import _crop_starts

  clips, caps = batches.sampler.global_batch(step)
  starts = _crop_starts([len(waves[c]) for c in clips], clip_samples, batches.seed, step)
  sel = range(len(clips))[batches.rows]
  audio = np.zeros((len(sel), clip_samples), np.float32)
  for r, i in enumerate(sel):
    w = waves[clips[i]][starts[i] : starts[i] + clip_samples]
    audio[r, : len(w)] = w
  return {"audio": audio, "text": batches.text[caps[batches.rows]]}


def child(root: Path, side: str, seconds: float, batch: int, steps: int) -> dict:
  """Runs the pipeline in this process; returns {"rss_peak_mb", "clips_per_s", ...}."""
  import jax

  from mltm_jax.data.input_pipeline import TrainBatches
  from mltm_jax.data.prepared import load_prepared_split
  from mltm_jax.sharding import make_mesh, to_global

  split = load_prepared_split(root, "train", SAMPLE_RATE, progress=False)
  text = np.random.default_rng(0).standard_normal((len(split.captions), 384)).astype(np.float32)
  mesh = make_mesh()
  clip_samples = int(seconds * SAMPLE_RATE)
  batches = TrainBatches(split, text, batch, 0, clip_samples, 1 + clip_samples // 320)
  if side == "inmemory":  # the former pipeline: the split as float32 arrays in RAM, then crops
    waves = [split.waves[i] for i in range(split.num_clips)]
    batches.local_batch = lambda step: _former_batch(batches, waves, clip_samples, step)
  times = []
  with batches.iterate(0, steps, put=lambda b: to_global(mesh, b)) as it:
    for b in it:
      jax.block_until_ready(b)  # the stubbed step: the batch is on the device, then dropped
      times.append(time.perf_counter())
  warm = np.diff(times)  # step 0 (thread start, first reads) excluded
  return {
    "rss_peak_mb": round(_vm_hwm_mb(), 1),
    "clips_per_s": round(batch * len(warm) / float(warm.sum()), 1),
    "step_s_median": float(np.median(warm)),
    "step_s_min": float(warm.min()),
    "step_s_max": float(warm.max()),
  }


def _run_child(root: Path, side: str, seconds: float, batch: int, steps: int) -> dict:
  cmd = [
    sys.executable,
    "-m",
    "benchmarks.cpu.bench_data",
    f"--root={root}",
    f"--side={side}",
    f"--seconds={seconds}",
    f"--batch={batch}",
    f"--steps={steps}",
  ]
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
  if res.returncode != 0:
    raise RuntimeError(f"bench_data child failed:\n{res.stderr[-3000:]}")
  return json.loads(res.stdout.strip().splitlines()[-1])


def run(settings: Settings) -> list[Row]:
  sizes = TINY_SIZES if settings.tiny else QUICK_SIZES if settings.quick else SIZES
  seconds = TINY_SECONDS if settings.tiny else SECONDS
  batch = TINY_BATCH if settings.tiny else BATCH
  steps = TINY_STEPS if settings.tiny else STEPS
  own_base = not FLAGS.data_bench_dir
  base = Path(FLAGS.data_bench_dir or tempfile.mkdtemp(prefix="mltm-data-bench-"))
  full = base / f"clips-{max(sizes)}"
  made = [base / f"clips-{n}" for n in sizes if not (base / f"clips-{n}").exists()]
  try:
    if not (full / "summary.json").is_file():
      t0 = time.time()
      write_dataset(full, max(sizes), seconds)
      print(f"[data] wrote {max(sizes)} clips in {time.time() - t0:.0f} s", file=sys.stderr)
    results = {}
    for n in sizes:
      root = full if n == max(sizes) else base / f"clips-{n}"
      if root != full and not (root / "summary.json").is_file():
        view_dataset(full, root, n)
      results[n] = _run_child(root, "stream", seconds, batch, steps)
    small = min(sizes)
    ref = _run_child(base / f"clips-{small}", "inmemory", seconds, batch, steps)
  finally:
    if not FLAGS.keep:  # only what this run made (a --data_bench_dir may hold other things)
      for path in [base] if own_base else made:
        shutil.rmtree(path, ignore_errors=True)
  rows = []
  for n in sizes:
    r = results[n]
    ours = Timing(batch / r["clips_per_s"], r["step_s_min"], r["step_s_max"], steps - 1)
    params = {"clips": n, "batch": batch, "clip_s": seconds, "steps": steps}
    extra = {"rss_peak_mb": r["rss_peak_mb"], "clips_per_s": r["clips_per_s"]}
    if n == small:
      reft = Timing(batch / ref["clips_per_s"], ref["step_s_min"], ref["step_s_max"], steps - 1)
      extra.update(ref_rss_peak_mb=ref["rss_peak_mb"], ref_clips_per_s=ref["clips_per_s"])
      cells = (
        f"{r['rss_peak_mb']:.0f} MB, {r['clips_per_s']:.0f} clips/s",
        f"{ref['rss_peak_mb']:.0f} MB, {ref['clips_per_s']:.0f} clips/s (in memory)",
      )
    else:
      reft = ours
      cells = (f"{r['rss_peak_mb']:.0f} MB, {r['clips_per_s']:.0f} clips/s", "(needs N x 640 KB)")
    big = results[max(sizes)]["rss_peak_mb"]
    flat = big <= 1.25 * results[small]["rss_peak_mb"] + 256
    samples = batch * int(seconds * SAMPLE_RATE)
    work = Work(
      flops=float(samples),
      bytes=samples * (2 + 4),
      model="per batch: each int16 sample read once, converted (1 op), written once as float32",
    )
    rows.append(Row("data", params, ours, reft, agree=flat, extra=extra, cells=cells, work=work))
  return rows


if __name__ == "__main__":
  from absl import app

  flags.DEFINE_string("root", None, "child: prepared dataset")
  flags.DEFINE_string("side", "stream", "child: stream | inmemory")
  flags.DEFINE_float("seconds", SECONDS, "child: crop seconds")
  flags.DEFINE_integer("batch", BATCH, "child: global batch")
  flags.DEFINE_integer("steps", STEPS, "child: steps")

  def _main(argv):
    del argv
    out = child(Path(FLAGS.root), FLAGS.side, FLAGS.seconds, FLAGS.batch, FLAGS.steps)
    print(json.dumps(out))

  app.run(_main)
