"""The on-disk library index written by ``launch.embed`` and read by search and serve.

Layout of an index directory::

  manifest.json     settings (run, checkpoint step, audio dir, clip/hop, metric), the
                    completed shards, totals; rewritten atomically after every shard
  files.txt         the work list: every audio file under the audio dir (relative POSIX
                    paths, sorted), fixed when the index is started
  factor.npy        W [D, r] float32, M = W W^T (queries are transformed with it)
  shards/NNNNN.npz  ids int64 [m] (rows of files.txt), emb float32 [m, r] = v W (unit
                    audio embeddings v times W), skipped_ids int64 [j], skipped_reasons [j]
  ann/*.faiss       faiss indexes built on demand, keyed by their build parameters

Shard s covers files.txt rows [s * shard_size, (s + 1) * shard_size). A shard file is
written (temporary file + rename) before the manifest names it, so an interrupted run
loses at most the shard in progress and a rerun continues with the first missing one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "mltm-index/1"
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3", "aiff", "aif", "au")


@dataclasses.dataclass
class AudioScan:
  """What :func:`scan_audio_files` found: ``files`` (sorted POSIX paths relative to the
  resolved audio dir, one per real file), ``outside`` (symlinks pointing outside it, not
  followed), ``repeated`` (entries reaching a file or folder already reached through a symlink
  or its real path: not walked or listed twice)."""

  files: list[str]
  outside: int = 0
  repeated: int = 0


def scan_audio_files(
  audio_dir: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS
) -> AudioScan:
  """Every audio file under audio_dir, each real file once.

  Symlinks are followed only when they resolve inside the (resolved) audio dir; a folder is
  walked once whatever the links to it (no loops), and a file is listed under its real path
  relative to the audio dir. The extension checked is the real file's.
  """
  root = os.path.realpath(audio_dir)
  exts = {"." + e.lower().lstrip(".") for e in extensions}

  def inside(path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)

  seen_dirs, files = {root}, set()
  scan = AudioScan(files=[])
  stack = [root]
  while stack:
    folder = stack.pop()
    try:
      entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
      continue  # unreadable folder: nothing under it is listed
    for entry in entries:
      path = entry.path
      if entry.is_symlink():
        path = os.path.realpath(path)
        if not inside(path):
          scan.outside += 1
          continue
      if os.path.isdir(path):
        if path in seen_dirs:
          scan.repeated += 1
        else:
          seen_dirs.add(path)
          stack.append(path)
      elif os.path.isfile(path) and Path(path).suffix.lower() in exts:
        if path in files:
          scan.repeated += 1
        files.add(path)
  scan.files = sorted(Path(p).relative_to(root).as_posix() for p in files)
  return scan


def list_audio_files(audio_dir: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS):
  """Sorted POSIX paths, relative to audio_dir, of files whose extension is listed (each real
  file once, symlinks followed inside audio_dir only: :func:`scan_audio_files`)."""
  return scan_audio_files(audio_dir, extensions).files


def _atomic_write(path: Path, data: bytes) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(data)
  tmp.replace(path)


def _shard_name(s: int) -> str:
  return f"shards/{s:05d}.npz"


class IndexWriter:
  """Creates an index directory or reopens an unfinished one with the same settings.

  Args:
    root: the index directory.
    settings: what the embeddings depend on (run, checkpoint step, audio dir, clip and hop,
      metric); a rerun must pass the same values.
    files: the work list (ignored when resuming: the stored list is kept).
    factor: W [D, r].
    shard_size: files per shard (kept from the first run when resuming).
  """

  def __init__(
    self,
    root: str | Path,
    settings: dict[str, Any],
    files: list[str],
    factor: np.ndarray,
    shard_size: int,
  ):
    self.root = Path(root)
    path = self.root / "manifest.json"
    if path.is_file():
      self.manifest = json.loads(path.read_text())
      if self.manifest.get("format") != FORMAT:
        raise ValueError(f"{self.root}: not an index of format {FORMAT}")
      old = self.manifest["settings"]
      changed = sorted(k for k in settings if old.get(k) != settings[k])
      if changed:
        k = changed[0]
        raise ValueError(
          f"{self.root} was started with {k}={old.get(k)!r}, now {settings[k]!r}; "
          "use another --out or the same settings"
        )
      self.files = (self.root / "files.txt").read_text().splitlines()
      self.new_files = sorted(set(files) - set(self.files))
    else:
      if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
      (self.root / "shards").mkdir(parents=True, exist_ok=True)
      self.files = list(files)
      self.new_files = []
      _atomic_write(self.root / "files.txt", "".join(f + "\n" for f in self.files).encode())
      np.save(self.root / "factor.npy", np.asarray(factor, np.float32))
      self.manifest = {
        "format": FORMAT,
        "settings": settings,
        "num_files": len(self.files),
        "shard_size": int(shard_size),
        "dim": int(factor.shape[0]),
        "rank": int(factor.shape[1]),
        "shards": [],
        "embedded": 0,
        "skipped": 0,
        "complete": False,
      }
      self._write_manifest()
    (self.root / "shards").mkdir(parents=True, exist_ok=True)

  @property
  def shard_size(self) -> int:
    return int(self.manifest["shard_size"])

  @property
  def num_shards(self) -> int:
    return -(-len(self.files) // self.shard_size)

  def done_shards(self) -> set[int]:
    return {int(s["shard"]) for s in self.manifest["shards"]}

  def pending(self) -> list[tuple[int, list[int]]]:
    """(shard number, rows of files.txt) of the shards still to embed, in order."""
    done = self.done_shards()
    n, s = len(self.files), self.shard_size
    return [
      (i, list(range(i * s, min(n, (i + 1) * s)))) for i in range(self.num_shards) if i not in done
    ]

  def files_done(self) -> int:
    return sum(int(s["stop"]) - int(s["start"]) for s in self.manifest["shards"])

  def write_shard(
    self, shard: int, ids: np.ndarray, emb: np.ndarray, skipped: list[tuple[int, str]]
  ) -> None:
    """Stores one shard, then records it in the manifest."""
    rows = shard * self.shard_size, min(len(self.files), (shard + 1) * self.shard_size)
    name = _shard_name(shard)
    tmp = self.root / (name + ".tmp.npz")
    np.savez(
      tmp,
      ids=np.asarray(ids, np.int64),
      emb=np.asarray(emb, np.float32).reshape(len(ids), int(self.manifest["rank"])),
      skipped_ids=np.asarray([i for i, _ in skipped], np.int64),
      skipped_reasons=np.asarray([r for _, r in skipped], dtype=str),
    )
    tmp.replace(self.root / name)
    entries = [e for e in self.manifest["shards"] if int(e["shard"]) != shard]
    entries.append(
      {
        "shard": shard,
        "file": name,
        "start": rows[0],
        "stop": rows[1],
        "embedded": len(ids),
        "skipped": len(skipped),
      }
    )
    self.manifest["shards"] = sorted(entries, key=lambda e: e["shard"])
    self.manifest["embedded"] = sum(e["embedded"] for e in entries)
    self.manifest["skipped"] = sum(e["skipped"] for e in entries)
    self.manifest["complete"] = len(entries) == self.num_shards
    self._write_manifest()

  def _write_manifest(self) -> None:
    _atomic_write(self.root / "manifest.json", json.dumps(self.manifest, indent=2).encode())


@dataclasses.dataclass
class Library:
  """A complete index in memory.

  paths: N absolute file paths; rel_paths: the same relative to the audio dir;
  emb: float32 [N, r] = v W; factor: W [D, r]; skipped: (relative path, reason).
  """

  root: Path
  manifest: dict
  rel_paths: list[str]
  paths: list[str]
  emb: np.ndarray
  factor: np.ndarray
  skipped: list[tuple[str, str]]

  @property
  def settings(self) -> dict:
    return self.manifest["settings"]

  @property
  def size(self) -> int:
    return len(self.paths)

  @classmethod
  def load(cls, root: str | Path, allow_incomplete: bool = False) -> Library:
    """Reads an index directory; raises FileNotFoundError / ValueError with one-line reasons."""
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
      raise FileNotFoundError(f"{root}: no manifest.json (not an index written by launch.embed)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
      raise ValueError(f"{root}: not an index of format {FORMAT}")
    if not manifest["complete"] and not allow_incomplete:
      done = sum(e["stop"] - e["start"] for e in manifest["shards"])
      raise ValueError(
        f"{root}: incomplete ({done} of {manifest['num_files']} files); rerun launch.embed"
      )
    files = (root / "files.txt").read_text().splitlines()
    ids, embs, skipped = [], [], []
    for entry in manifest["shards"]:
      with np.load(root / entry["file"]) as z:
        ids.append(z["ids"])
        embs.append(z["emb"])
        skipped.extend(
          (files[int(i)], str(r)) for i, r in zip(z["skipped_ids"], z["skipped_reasons"])
        )
    rank = int(manifest["rank"])
    ids_all = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    emb = np.concatenate(embs) if embs else np.zeros((0, rank), np.float32)
    audio_dir = Path(manifest["settings"]["audio_dir"])
    rel = [files[int(i)] for i in ids_all]
    return cls(
      root=root,
      manifest=manifest,
      rel_paths=rel,
      paths=[str(audio_dir / r) for r in rel],
      emb=np.ascontiguousarray(emb, np.float32),
      factor=np.load(root / "factor.npy"),
      skipped=skipped,
    )

  def index(self, backend: str = "exact", params=None, budget_bytes: int | None = None, mesh=None):
    """A search index over ``emb``; faiss indexes are built once and kept under ann/."""
    from mltm_jax.search import DEFAULT_BUDGET_BYTES, AnnParams, FaissIndex, make_index

    params = params or AnnParams()
    if self.size == 0:
      raise ValueError(f"{self.root}: no embedded files to search")
    if backend in ("ivf", "hnsw"):
      build = (
        {"nlist": params.nlist, "train_size": params.train_size, "seed": params.seed}
        if backend == "ivf"
        else {"hnsw_m": params.hnsw_m, "ef_construction": params.ef_construction}
      )
      key = hashlib.sha256(json.dumps([backend, build, self.size]).encode()).hexdigest()[:12]
      path = self.root / "ann" / f"{backend}_{key}.faiss"
      if path.is_file():
        return FaissIndex.load(path, backend, params)
      index = FaissIndex.build(self.emb, backend, params)
      path.parent.mkdir(exist_ok=True)
      index.save(path)
      return index
    return make_index(self.emb, backend, params, budget_bytes or DEFAULT_BUDGET_BYTES, mesh=mesh)
