"""``python -m launch.train`` with every loaded split recording the clips its store reads.

Run as ``python -m tests.reads_driver <launch.train flags>``; at exit, writes
{"train": [[clip, ...] per load], "val": ..., "test": ...} to the file named by the
environment variable MLTM_READS_OUT. Used by tests/test_multihost.py to check that each
process of a multi-process run reads only the clips of its own rows.
"""

import atexit
import json
import logging
import os

from absl import app

from launch import train as train_cli
from mltm_jax.train import loop

_reads: dict[str, list[list[int]]] = {}
_load = loop.load


def _recording_load(cfg, which, progress=True):
  split = _load(cfg, which, progress)
  _reads.setdefault(which, []).append(split.waves.record_reads())
  return split


def _dump():
  with open(os.environ["MLTM_READS_OUT"], "w") as f:
    json.dump({k: [[int(c) for c in r] for r in v] for k, v in _reads.items()}, f)


if __name__ == "__main__":
  loop.load = _recording_load
  atexit.register(_dump)
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(train_cli.main)
