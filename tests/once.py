"""Artefacts built once per pytest run and shared by every pytest process of it.

With pytest-xdist each worker has its own base temp dir (``.../pytest-N/popen-gwK``); their
parent is common to the run. An artefact (a rendered dataset, a trained run, the compilation
cache) lives there; the first process that asks for it builds it under an exclusive file lock,
and the others wait for that lock and then reuse what it built. Without xdist the base temp
dir itself is used, so a serial run behaves the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator


def shared_dir(tmp_path_factory) -> Path:
  """The folder every pytest process of this run sees."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
  """Holds an exclusive lock on ``lock_file`` (created if missing) across processes."""
  with open(lock_file, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
  """shared_dir/name, built by ``build(path)`` (which creates ``path``) by the first process
    that asks (its marker, ``name.built`` beside it, is written after ``build`` returns); a build
  that raised is removed and retried by the next caller."""
  root = shared_dir(tmp_path_factory)
  out, done = root / name, root / f"{name}.built"
  with exclusive(root / f"{name}.lock"):
    if not done.is_file():
      if out.exists():
        shutil.rmtree(out)
      build(out)
      done.touch()
  return out


def shared_text_cache(tmp_path_factory, workdir: Path) -> Path:
  """Points ``workdir/cache`` (a run's caption-feature cache) at one folder shared by every
  run of the test run, as launch.experiments does for a grid: the frozen encoder's features
  of the same captions are computed once (the cache is keyed by encoder and captions and
  written atomically, so processes may share it). Returns ``workdir``."""
  cache = shared_dir(tmp_path_factory) / "text_feature_cache"
  cache.mkdir(exist_ok=True)
  workdir.mkdir(parents=True, exist_ok=True)
  link = workdir / "cache"
  if not link.exists():
    link.symlink_to(cache, target_is_directory=True)
  return workdir
