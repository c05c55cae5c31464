"""Entries -> the prepared format (mltm_jax/data/prepared.py), in parallel and resumable.

Each split's entries (source order) are cut into shards of ``shard_size`` clips. A shard is
the unit of work and of resumption: its clips are decoded (in a process pool), written as
one .npy, then its record .json; both by write-to-temp + fsync + rename, so a shard on disk is
always whole. A rerun skips every shard whose record holds the same plan hash (settings +
the shard's entries + their files' size and mtime), so an interrupted run continues where it
stopped and a changed source file or setting redoes only the shards it touches; the final
files are byte-identical to an uninterrupted run's.

Per clip (``decode_clip``): any channel count is averaged to mono, any sample rate is
resampled (librosa/soxr) to ``sample_rate``, files longer than ``max_seconds`` keep their
first ``max_seconds`` (noted "cropped to N s"; 0 keeps them whole). Skipped with the reason:
"missing audio", "empty file" (0 bytes), "corrupt" (libsndfile cannot read it), "no samples",
"nonfinite", "silent" (every |x| < 1e-6; unless keep_silent), "decode error" (anything else).
int16 storage keeps a per-clip scale (peak / 32767 when the peak exceeds 1), so resampling
overshoot is never clipped.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mltm_jax.data.audio import AudioError, load_audio
from mltm_jax.data.prepare.common import Entry, Listing, Skip
from mltm_jax.data.prepared import FORMAT_VERSION, INFO, SUMMARY, items_path, shard_paths

__all__ = ["Settings", "decode_clip", "format_summary", "quantize", "write_prepared"]

_REASONS = {"missing": "missing audio", "empty": "no samples"}


@dataclasses.dataclass(frozen=True)
class Settings:
  """How clips are written: rate (Hz), storage dtype, clips per shard, crop length (s, 0 =
  whole), whether all-silent clips are kept."""

  sample_rate: int = 16000
  dtype: str = "int16"
  shard_size: int = 128
  max_seconds: float = 600.0
  keep_silent: bool = False

  def problems(self) -> list[str]:
    out = []
    if self.sample_rate <= 0:
      out.append(f"--sample_rate must be > 0, got {self.sample_rate}")
    if self.dtype not in ("int16", "float32"):
      out.append(f"--dtype must be int16 or float32, got {self.dtype!r}")
    if self.shard_size < 1:
      out.append(f"--shard_size must be >= 1, got {self.shard_size}")
    if self.max_seconds < 0:
      out.append(f"--max_seconds must be >= 0 (0 = keep whole), got {self.max_seconds}")
    return out


def decode_clip(path: str | os.PathLike, settings: Settings) -> tuple[np.ndarray, list[str]]:
  """(float32 [T] mono at settings.sample_rate, notes) of one file.

  Raises:
    AudioError: with the reason of the skip (see the module docstring).
  """
  import soundfile as sf

  p = Path(path)
  if not p.is_file():
    raise AudioError(p, "missing audio")
  if p.stat().st_size == 0:
    raise AudioError(p, "empty file")
  try:
    info = sf.info(str(p))
  except (sf.SoundFileError, RuntimeError) as e:
    raise AudioError(p, "corrupt", str(e).splitlines()[0] if str(e) else "") from e
  notes = []
  if info.channels > 1:
    notes.append(f"downmixed from {info.channels} channels")
  if int(info.samplerate) != settings.sample_rate:
    notes.append(f"resampled from {int(info.samplerate)} Hz")
  limit = settings.max_seconds or None
  try:
    wave = load_audio(
      p, settings.sample_rate, max_seconds=limit, reject_silent=not settings.keep_silent
    )
  except AudioError as e:
    raise AudioError(p, _REASONS.get(e.reason, e.reason), e.detail) from None
  if limit is not None and info.frames > limit * info.samplerate:
    notes.append(f"cropped to {limit:g} s")
  return wave, notes


def quantize(wave: np.ndarray, dtype: str) -> tuple[np.ndarray, float]:
  """(stored array, scale) with wave ~= stored * scale. int16: scale = max(peak, 1) / 32767."""
  if dtype == "float32":
    return np.asarray(wave, np.float32), 1.0
  peak = float(np.max(np.abs(wave))) if wave.size else 0.0
  scale = max(peak, 1.0) / 32767.0
  q = np.clip(np.round(wave / scale), -32767, 32767).astype(np.int16)
  return q, scale


def _job(args: tuple[str, Settings]) -> tuple:
  """Worker: ("ok", stored array, scale, notes) or ("skip", reason, detail)."""
  path, settings = args
  try:
    wave, notes = decode_clip(path, settings)
    q, scale = quantize(wave, settings.dtype)
    return ("ok", q, scale, notes)
  except AudioError as e:
    return ("skip", e.reason, e.detail)
  except Exception as e:  # noqa: BLE001 - one bad file never stops the rest
    return (
      "skip",
      "decode error",
      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
    )


def _stat(path: str) -> list[int]:
  try:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]
  except OSError:
    return [-1, -1]


def _plan_hash(dataset: str, settings: Settings, entries: list[Entry]) -> str:
  plan = {
    "format": FORMAT_VERSION,
    "dataset": dataset,
    "settings": dataclasses.asdict(settings),
    "entries": [
      [e.split, e.id, e.file, _stat(e.path), list(e.captions), e.extra, list(e.notes)]
      for e in entries
    ],
  }
  return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def _write_bytes_atomic(path: Path, write: Callable[[Any], None]) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _write_json_atomic(path: Path, obj: Any, lines: bool = False) -> None:
  if lines:
    text = "".join(json.dumps(o, ensure_ascii=False, sort_keys=True) + "\n" for o in obj)
  else:
    text = json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
  _write_bytes_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _item_record(
  e: Entry, shard: int, offset: int, n: int, scale: float, notes: list[str], rate: int
) -> dict:
  return {
    **e.extra,
    "id": e.id,
    "file": e.file,
    "split": e.split,
    "captions": list(e.captions),
    "duration": round(n / rate, 4),
    "num_samples": int(n),
    "shard": shard,
    "offset": int(offset),
    "scale": scale,
    "notes": list(e.notes) + notes,
  }


def _write_shard(
  out: Path,
  split: str,
  k: int,
  plan: str,
  entries: list[Entry],
  results: list[tuple],
  settings: Settings,
) -> None:
  arrays, items, skips = [], [], []
  offset = 0
  for e, res in zip(entries, results):
    if res[0] == "ok":
      _, q, scale, notes = res
      items.append(_item_record(e, k, offset, len(q), scale, notes, settings.sample_rate))
      arrays.append(q)
      offset += len(q)
    else:
      skips.append(Skip(e.split, e.id, e.file, res[1], res[2]).record())
  data = np.concatenate(arrays) if arrays else np.zeros(0, settings.dtype)
  npy, rec = shard_paths(out, split, k)
  npy.parent.mkdir(parents=True, exist_ok=True)
  _write_bytes_atomic(npy, lambda f: np.save(f, data, allow_pickle=False))
  _write_json_atomic(rec, {"plan": plan, "items": items, "skipped": skips})


def _shard_done(out: Path, split: str, k: int, plan: str) -> bool:
  npy, rec = shard_paths(out, split, k)
  if not (npy.is_file() and rec.is_file()):
    return False
  try:
    return json.loads(rec.read_text(encoding="utf-8")).get("plan") == plan
  except (OSError, ValueError):
    return False


def _clean_stale(out: Path, splits: Iterable[str], shards: dict[str, int]) -> None:
  """Temp files of an interrupted run; shards beyond the current plan (an older run's)."""
  for p in out.glob("*.tmp"):
    p.unlink(missing_ok=True)
  for split in splits:
    d = out / split
    if not d.is_dir():
      continue
    for p in d.iterdir():
      if p.name.endswith(".tmp"):
        p.unlink(missing_ok=True)
      elif p.name.startswith("shard-") and p.suffix in (".npy", ".json"):
        try:
          k = int(p.stem.split("-")[1])
        except ValueError:
          continue
        if k >= shards.get(split, 0):
          p.unlink(missing_ok=True)


def write_prepared(
  listing: Listing,
  out: str | os.PathLike,
  dataset: str,
  settings: Settings,
  *,
  source: str = "",
  workers: int = 1,
  progress: bool = True,
) -> dict:
  """Decodes and writes every entry of ``listing`` under ``out``; returns the summary.

  Args:
    listing: entries, metadata skips and warnings of a layout reader.
    out: output folder (created). A folder holding another dataset is refused.
    dataset: layout name recorded in prepared.json / summary.json.
    settings: rate, dtype, shard size, crop, silence policy.
    source: the source path, recorded in the summary.
    workers: decoding processes (1 = in this process). Workers start with "spawn": a calling
      script needs the ``if __name__ == "__main__":`` guard (absl's app.run has it).
    progress: tqdm bar over the clips still to decode.

  Raises:
    ValueError: ``out`` holds a different dataset.
  """
  from tqdm.auto import tqdm

  t0 = time.time()
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  info_path = out / INFO
  if info_path.is_file():
    try:
      old = json.loads(info_path.read_text(encoding="utf-8")).get("dataset")
    except (OSError, ValueError):
      old = dataset
    if old != dataset:
      raise ValueError(
        f"{out} holds prepared {old!r} data; refusing to write {dataset!r} into it "
        "(use another --out)"
      )
  (out / SUMMARY).unlink(missing_ok=True)  # incomplete until the end
  _write_json_atomic(
    info_path,
    {"format_version": FORMAT_VERSION, "dataset": dataset, **dataclasses.asdict(settings)},
  )

  splits: list[str] = []
  for s in [e.split for e in listing.entries] + [s.split for s in listing.skipped]:
    if s and s not in splits:
      splits.append(s)
  by_split = {s: [e for e in listing.entries if e.split == s] for s in splits}
  plans: dict[str, list[tuple[int, str, list[Entry]]]] = {}
  for s, ents in by_split.items():
    chunks = [ents[i : i + settings.shard_size] for i in range(0, len(ents), settings.shard_size)]
    plans[s] = [(k, _plan_hash(dataset, settings, c), c) for k, c in enumerate(chunks)]
  _clean_stale(out, splits, {s: len(p) for s, p in plans.items()})
  pending = [(s, k, h, c) for s in splits for k, h, c in plans[s] if not _shard_done(out, s, k, h)]
  n_shards = sum(len(p) for p in plans.values())
  jobs = [(e.path, settings) for _, _, _, c in pending for e in c]

  pool = None
  if workers > 1 and len(pending) > 0:
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(int(workers))
  bar = tqdm(total=len(jobs), desc=f"prepare {dataset}", unit="clip", disable=not progress)
  n_skip = 0
  try:
    results = pool.imap(_job, jobs, chunksize=2) if pool is not None else map(_job, jobs)
    for split, k, h, chunk in pending:
      got = []
      for _ in chunk:
        res = next(results)
        got.append(res)
        n_skip += res[0] != "ok"
        bar.update(1)
      bar.set_postfix(skipped=n_skip, refresh=False)
      _write_shard(out, split, k, h, chunk, got, settings)
    if pool is not None:
      pool.close()
      pool.join()
      pool = None
  finally:
    bar.close()
    if pool is not None:
      pool.terminate()
      pool.join()

  # Assemble: per split items (source order), the summary last.
  split_info: dict[str, dict] = {}
  skipped = [s.record() for s in listing.skipped]
  notes: collections.Counter = collections.Counter()
  for s in splits:
    items = []
    for k, _, _ in plans[s]:
      rec = json.loads(shard_paths(out, s, k)[1].read_text(encoding="utf-8"))
      items += rec["items"]
      skipped += rec["skipped"]
    _write_json_atomic(items_path(out, s), items, lines=True)
    for it in items:
      notes.update(it["notes"])
    split_info[s] = {
      "clips": len(items),
      "captions": sum(len(it["captions"]) for it in items),
      "hours": round(sum(it["num_samples"] for it in items) / settings.sample_rate / 3600, 4),
      "skipped": sum(1 for r in skipped if r["split"] == s),
    }
  reasons = collections.Counter(r["reason"] for r in skipped)
  summary = {
    "dataset": dataset,
    "source": source,
    "format_version": FORMAT_VERSION,
    **dataclasses.asdict(settings),
    "splits": split_info,
    "written": sum(v["clips"] for v in split_info.values()),
    "skipped": len(skipped),
    "skip_reasons": dict(sorted(reasons.items(), key=lambda t: (-t[1], t[0]))),
    "notes": dict(sorted(notes.items(), key=lambda t: (-t[1], t[0]))),
    "warnings": list(listing.warnings),
    "skipped_items": skipped,
    "run": {
      "shards_written": len(pending),
      "shards_reused": n_shards - len(pending),
      "seconds": round(time.time() - t0, 2),
    },
  }
  _write_json_atomic(out / SUMMARY, summary)
  return summary


def format_summary(summary: dict, out: str | os.PathLike) -> str:
  """The printed summary: a table per split, skip reasons, notes, warnings."""
  lines = [
    f"prepared {summary['dataset']} -> {out} ({summary['sample_rate']} Hz, {summary['dtype']})",
    f"{'split':<8} {'clips':>8} {'captions':>9} {'hours':>8} {'skipped':>8}",
  ]
  for s, v in summary["splits"].items():
    lines.append(f"{s:<8} {v['clips']:>8} {v['captions']:>9} {v['hours']:>8.2f} {v['skipped']:>8}")
  lines.append(f"written {summary['written']} clips, skipped {summary['skipped']}")
  for reason, n in summary["skip_reasons"].items():
    names = [r["file"] or r["id"] for r in summary["skipped_items"] if r["reason"] == reason]
    more = f", ... ({n - 3} more)" if n > 3 else ""
    lines.append(f"  skipped {n:>6}  {reason}: {', '.join(names[:3])}{more}")
  for note, n in summary["notes"].items():
    lines.append(f"  note    {n:>6}  {note}")
  for w in summary["warnings"]:
    lines.append(f"  warning {w}")
  run = summary["run"]
  lines.append(
    f"shards: {run['shards_written']} written, {run['shards_reused']} reused "
    f"({run['seconds']:.1f} s); details in {Path(out) / SUMMARY}"
  )
  return "\n".join(lines)
