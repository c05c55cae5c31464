"""Rebuild a run's full noisy-pairs record from its data, --noise_p and --seed.

  python -m launch.noise_record --workdir=RUN [--out=FILE]

Committed runs keep only the counts and a digest of the per-pair list (noisy_pairs.json with
"pairs_sha256"); the list is a pure function of the training data, the noise fraction and the
seed. This recomputes it, checks it against the digest when there is one (exit 1 on a
mismatch), and writes the full record to --out (default RUN/noisy_pairs.full.json).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from absl import app, flags

from launch.flags import fail
from launch.runtime import init_runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch.train.")
_OUT = flags.DEFINE_string("out", None, "Where to write the full record.")


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    fail("--workdir is required")
  init_runtime()
  from mltm_jax.data.noise import RECORD, corrupt_pairs, pairs_digest
  from mltm_jax.data.splits import load
  from mltm_jax.run_dir import RunDir

  run_dir = RunDir(_WORKDIR.value)
  try:
    cfg = run_dir.config(progress=False)
  except FileNotFoundError as e:
    fail(str(e))
  if cfg.noise_p <= 0:
    fail(f"{run_dir}: --noise_p is 0, the run has no noisy pairs")
  try:
    train = load(cfg, "train", progress=False)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  _, record = corrupt_pairs(train, cfg.noise_p, cfg.seed)
  digest = pairs_digest(record["pairs"])
  stored = run_dir.read_json(RECORD) or {}
  want = stored.get("pairs_sha256") or (
    pairs_digest(stored["pairs"]) if "pairs" in stored else None
  )
  out = Path(_OUT.value) if _OUT.value else run_dir.path / "noisy_pairs.full.json"
  out.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
  print(f"{record['num_shuffled']} pairs shuffled ({record['num_mismatched']} mismatched); {out}")
  if want is not None and want != digest:
    print(f"MISMATCH: rebuilt pairs digest {digest} != stored {want} (data changed?)")
    raise SystemExit(1)
  print("digest matches the stored record" if want else "no stored record to check against")


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
