"""The SynthCaps dataset writer: renders the clips of every split into the Clotho v2.1
layout, with per-clip metadata and the markers that make a rendering resumable and
recognisable.

Output under ``out_dir``::

    clotho_captions_{split}.csv        file_name,caption_1,...,caption_5 (split: development,
                                       validation, evaluation and the extra split heldout)
    {split}/{split}_{i:05d}.wav        mono PCM_16 at sample_rate
    synthcaps_metadata_{split}.jsonl   one JSON object per clip (events, attributes, sources)
    SYNTHCAPS_PARAMS.json              seed, sample_rate, version of the files on disk
    SYNTHCAPS_DONE.json                written last: sizes, seed, sample_rate, version

Clip ``i`` of split ``s`` depends only on (seed, s, i) (see :func:`.events.clip_rng`), so the
same seed gives byte-identical WAVs, CSVs and JSONL for any number of workers, and an
interrupted rendering resumes where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from mltm_jax.synthcaps.captions import N_CAPTIONS, make_captions
from mltm_jax.synthcaps.events import clip_rng, plan_clip
from mltm_jax.synthcaps.heldout import HELDOUT_SPLIT
from mltm_jax.synthcaps.render import render_clip, soundfont_bytes, soundfont_path
from mltm_jax.synthcaps.sources import SOURCES

VERSION = "2.0"  # 2.0: the held-out split (reserved source pairs and phrasings)
SPLITS = ("development", "validation", "evaluation", HELDOUT_SPLIT)
DEFAULT_SIZES = {"development": 3000, "validation": 400, "evaluation": 400, HELDOUT_SPLIT: 400}
MARKER = "SYNTHCAPS_DONE.json"
PARAMS = "SYNTHCAPS_PARAMS.json"  # parameters of the files currently on disk (in-progress runs)


def _file_name(split: str, index: int) -> str:
  return f"{split}_{index:05d}.wav"


def _wav_ok(path: Path, sample_rate: int, num_samples: int) -> bool:
  import soundfile as sf

  try:
    info = sf.info(str(path))
  except Exception:  # noqa: BLE001 - any unreadable file is simply re-rendered
    return False
  return (
    info.samplerate == sample_rate
    and info.channels == 1
    and info.frames == num_samples
    and info.subtype == "PCM_16"
  )


def _clip_job(args: tuple) -> tuple[int, dict, list[str], bool]:
  """Plan (always) and render (unless a valid file exists) clip ``index``."""
  import soundfile as sf

  seed, split, index, sample_rate, audio_dir, trust_existing = args
  rng = clip_rng(seed, split, index)
  held_out = split == HELDOUT_SPLIT
  plan = plan_clip(rng, sample_rate, held_out=held_out)
  captions = make_captions(rng, plan, held_out=held_out)
  path = Path(audio_dir) / _file_name(split, index)
  if trust_existing and _wav_ok(path, sample_rate, plan["num_samples"]):
    return index, plan, captions, False
  y = render_clip(plan, sample_rate, soundfont_bytes())
  tmp = path.with_name(path.name + ".tmp")
  sf.write(str(tmp), y, sample_rate, subtype="PCM_16", format="WAV")
  os.replace(tmp, path)
  return index, plan, captions, True


def _metadata_record(file_name: str, plan: dict) -> dict:
  events = []
  for ev in plan["events"]:
    e = {
      k: ev[k]
      for k in (
        "source",
        "kind",
        "register",
        "tempo",
        "count",
        "loudness",
        "duration",
        "relation_to_previous",
        "start",
        "end",
        "level_db",
        "program",
        "is_drum",
      )
    }
    e["notes"] = ev["notes"]
    events.append(e)
  return {
    "file_name": file_name,
    "duration": plan["duration"],
    "num_samples": plan["num_samples"],
    "sources": plan["sources"],
    "relations": plan["relations"],
    "events": events,
  }


def _write_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    f.write(text)
  os.replace(tmp, path)


def _params(seed: int, sample_rate: int) -> dict:
  return {"version": VERSION, "seed": int(seed), "sample_rate": int(sample_rate)}


def generate_synthcaps(
  out_dir: str | os.PathLike,
  sizes: dict[str, int] | None = None,
  seed: int = 0,
  sample_rate: int = 32000,
  progress: bool = True,
  workers: int | None = None,
) -> dict:
  """Generate SynthCaps in the Clotho v2.1 layout under ``out_dir``.

  Args:
    out_dir: output folder (created).
    sizes: clips per split, keys among development/validation/evaluation/heldout
      (default 3000/400/400/400; see :mod:`mltm_jax.synthcaps.heldout`).
    seed: dataset seed; clip i of split s depends only on (seed, s, i).
    sample_rate: WAV sample rate in Hz.
    progress: show a tqdm bar per split.
    workers: processes rendering in parallel (default: min(cpu count, 8); 1 renders in
      this process). The output is byte-identical for any value. Workers are started
      with "spawn", so a calling script must guard its entry point with
      ``if __name__ == "__main__":`` (absl's ``app.run`` idiom does).

  Resumable: WAVs already on disk from a run with the same seed, sample rate and version
  (recorded in SYNTHCAPS_PARAMS.json) are kept if their header matches; CSV and JSONL of a
  split are written atomically when the split is done; SYNTHCAPS_DONE.json is written last.

  Returns:
    summary dict: out_dir, sizes, seed, sample_rate, version, num_sources, rendered and
    reused counts per split, seconds.
  """
  from tqdm.auto import tqdm

  sizes = {k: int(v) for k, v in (DEFAULT_SIZES if sizes is None else sizes).items()}
  for split, n in sizes.items():
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r} in sizes; expected keys among {', '.join(SPLITS)}")
    if int(n) < 0:
      raise ValueError(f"sizes[{split!r}] must be >= 0, got {n}")
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be positive, got {sample_rate}")
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  marker = out / MARKER
  if marker.exists():
    marker.unlink()
  params = _params(seed, sample_rate)
  params_path = out / PARAMS
  trust = False
  if params_path.is_file():
    try:
      trust = json.loads(params_path.read_text()) == params
    except (OSError, ValueError):
      trust = False
  _write_atomic(params_path, json.dumps(params, sort_keys=True) + "\n")

  soundfont_path()  # fail early, with a clear message, if the SoundFont is missing
  if workers is None:
    workers = min(os.cpu_count() or 1, 8)
  pool = None
  if workers > 1:
    import multiprocessing as mp

    pool = ProcessPoolExecutor(max_workers=int(workers), mp_context=mp.get_context("spawn"))
  rendered: dict[str, int] = {}
  reused: dict[str, int] = {}
  try:
    for split in SPLITS:
      if split not in sizes:
        continue
      n = int(sizes[split])
      audio_dir = out / split
      audio_dir.mkdir(exist_ok=True)
      jobs = [(seed, split, i, sample_rate, str(audio_dir), trust) for i in range(n)]
      results: list[Any] = [None] * n
      it = map(_clip_job, jobs) if pool is None else pool.map(_clip_job, jobs, chunksize=16)
      n_new = 0
      for index, plan, captions, new in tqdm(
        it, total=n, desc=f"SynthCaps {split}", disable=not progress
      ):
        results[index] = (plan, captions)
        n_new += int(new)
      rendered[split], reused[split] = n_new, n - n_new
      buf = io.StringIO()
      w = csv.writer(buf)
      w.writerow(["file_name"] + [f"caption_{k + 1}" for k in range(N_CAPTIONS)])
      meta_lines = []
      for i, (plan, captions) in enumerate(results):
        fn = _file_name(split, i)
        w.writerow([fn] + captions)
        meta_lines.append(json.dumps(_metadata_record(fn, plan), ensure_ascii=False))
      _write_atomic(out / f"clotho_captions_{split}.csv", buf.getvalue())
      _write_atomic(
        out / f"synthcaps_metadata_{split}.jsonl", "".join(m + "\n" for m in meta_lines)
      )
  finally:
    if pool is not None:
      pool.shutdown()
  summary = {
    "out_dir": str(out),
    "sizes": sizes,
    "seed": int(seed),
    "sample_rate": int(sample_rate),
    "version": VERSION,
    "num_sources": len(SOURCES),
    "rendered": rendered,
    "reused": reused,
    "seconds": round(time.perf_counter() - t0, 2),
  }
  _write_atomic(marker, json.dumps({"sizes": sizes, **params}, sort_keys=True) + "\n")
  return summary


class ForeignDirectoryError(ValueError):
  """SynthCaps would be rendered into a folder that holds something else (one-line message)."""


# Files that mark a folder as a SynthCaps rendering: the finished marker, or the parameters
# file generate_synthcaps writes (atomically, through its .tmp) before anything else, so an
# interrupted rendering is still recognised and resumed.
_OWN_FILES = (MARKER, PARAMS, PARAMS + ".tmp")


def check_synthcaps_dir(out_dir: str | os.PathLike) -> None:
  """Raises ForeignDirectoryError unless SynthCaps may be rendered into ``out_dir``: it does
  not exist, is an empty folder, or holds a SynthCaps rendering (finished or interrupted).
  Reads only; writes nothing."""
  out = Path(out_dir)
  if not out.exists() and not out.is_symlink():
    return
  if not out.is_dir():
    raise ForeignDirectoryError(
      f"refusing to render SynthCaps into {out}: it exists and is not a folder"
    )
  if any((out / name).exists() for name in _OWN_FILES):
    return
  if next(out.iterdir(), None) is not None:
    raise ForeignDirectoryError(
      f"refusing to render SynthCaps into {out}: the folder is not empty and holds no "
      f"SynthCaps (no {MARKER}); give a new or empty folder, or the --dataset it holds"
    )


def ensure_synthcaps(
  out_dir: str | os.PathLike,
  sizes: dict[str, int] | None = None,
  seed: int = 0,
  sample_rate: int = 32000,
  **how: Any,
) -> Path:
  """Return ``Path(out_dir)``, generating SynthCaps first unless SYNTHCAPS_DONE.json matches
  (sizes, seed, sample_rate, version).

  Arguments as :func:`generate_synthcaps`: ``sizes``, ``seed`` and ``sample_rate`` name the
  dataset; ``how`` (``progress``, ``workers``) only says how to render it and is passed on.

  Raises:
    ForeignDirectoryError (a ValueError): ``out_dir`` is not empty and holds no SynthCaps
      (see check_synthcaps_dir); nothing is written then.
  """
  out = Path(out_dir)
  check_synthcaps_dir(out)
  sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
  want = {"sizes": {k: int(v) for k, v in sizes.items()}, **_params(seed, sample_rate)}
  marker = out / MARKER
  if marker.is_file():
    try:
      have = json.loads(marker.read_text())
    except (OSError, ValueError):
      have = None
    if have == want:
      return out
  generate_synthcaps(out, sizes, seed=seed, sample_rate=sample_rate, **how)
  return out


def source_labels(metadata_jsonl_path: str | os.PathLike) -> list[list[str]]:
  """Per clip (file order), the list of its source names (labels for zero-shot evaluation)."""
  labels = []
  with open(metadata_jsonl_path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        labels.append(list(json.loads(line)["sources"]))
  return labels
