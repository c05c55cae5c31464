"""Noisy correspondence (docs/method.md section 6): shuffle the captions of a fraction of the
training pairs among themselves, before training; validation and test stay clean.

A training pair is one (clip, caption) slot of the split (Clotho: 5 per clip; AudioCaps train:
mostly 1). ``round(p * num_pairs)`` slots are drawn without replacement by
``np.random.default_rng([seed, NOISE_STREAM])``, put in a random order, and each takes the
caption of the next slot in that order (a cyclic shift: no drawn slot keeps its own caption).
A caption can land on another slot of its own clip (then the pair is still correct); the
record counts those apart. Only the clip -> caption mapping changes: the caption list (and so
the cached text features) is untouched, and every caption still belongs to exactly one slot.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

__all__ = [
  "NOISE_STREAM",
  "RECORD",
  "apply_noise",
  "compact_record",
  "corrupt_pairs",
  "pairs_digest",
]

NOISE_STREAM = 0x6E6F6973  # "nois": the noise draw's own random stream
RECORD = "noisy_pairs.json"


def corrupt_pairs(split, p: float, seed: int):
  """(noisy copy of ``split``, record dict).

  Args:
    split: pipeline Split (clip_captions: per clip int indices into captions).
    p: fraction of pairs in [0, 1).
    seed: the draw's seed (the run's --seed).

  Returns:
    A Split with new clip_captions / caption_to_clip (same captions, waves, names) and
    {"noise_p", "seed", "num_pairs", "num_shuffled", "num_mismatched", "pairs": [{"clip",
    "slot", "caption_index", "caption", "caption_from"}, ...]} for the shuffled slots, sorted
    by (clip index, slot).
  """
  if not 0.0 <= p < 1.0:
    raise ValueError(f"noise_p must be in [0, 1), got {p}")
  slots = [(c, k) for c, caps in enumerate(split.clip_captions) for k in range(len(caps))]
  n = len(slots)
  m = round(p * n)
  record = {
    "noise_p": p,
    "seed": int(seed),
    "num_pairs": n,
    "num_shuffled": 0,
    "num_mismatched": 0,
    "pairs": [],
  }
  if m < 2:  # nothing to shuffle among
    return split, record
  rng = np.random.default_rng([int(seed), NOISE_STREAM])
  order = rng.permutation(rng.choice(n, size=m, replace=False))
  clip_caps = [np.array(c, np.int32, copy=True) for c in split.clip_captions]
  old_c2c = np.asarray(split.caption_to_clip)
  pairs = []
  for i in range(m):
    c, k = slots[order[i]]
    src_c, src_k = slots[order[(i + 1) % m]]
    cap = int(split.clip_captions[src_c][src_k])
    clip_caps[c][k] = cap
    pairs.append((c, k, cap))
  c2c = np.empty_like(old_c2c)
  for c, caps in enumerate(clip_caps):
    c2c[caps] = c
  pairs.sort()
  record["num_shuffled"] = m
  record["num_mismatched"] = int(sum(int(old_c2c[cap]) != c for c, _, cap in pairs))
  record["pairs"] = [
    {
      "clip": split.file_names[c],
      "slot": k,
      "caption_index": cap,
      "caption": split.captions[cap],
      "caption_from": split.file_names[int(old_c2c[cap])],
    }
    for c, k, cap in pairs
  ]
  return dataclasses.replace(split, clip_captions=clip_caps, caption_to_clip=c2c), record


def apply_noise(cfg, train, workdir: str | os.PathLike, write: bool = True):
  """The training split with --noise_p applied (unchanged at 0) and WORKDIR/noisy_pairs.json
  written (atomically; the same file on every resume)."""
  if cfg.noise_p <= 0:
    return train
  noisy, record = corrupt_pairs(train, cfg.noise_p, cfg.seed)
  if write:
    path = Path(workdir) / RECORD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
  return noisy


def pairs_digest(pairs: list[dict]) -> str:
  """sha256 of a record's "pairs" list (canonical JSON): identifies it without storing it."""
  import hashlib

  text = json.dumps(pairs, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def compact_record(record: dict) -> dict:
  """The record without its per-pair list (which can be MBs): the counts, plus the list's
  digest. The list is a pure function of (training data, noise_p, seed): ``python -m
  launch.noise_record --workdir=RUN`` rebuilds it and checks it against the digest."""
  if "pairs" not in record:
    return dict(record)
  out = {k: v for k, v in record.items() if k != "pairs"}
  out["pairs_sha256"] = pairs_digest(record["pairs"])
  out["pairs_omitted"] = "rebuild: python -m launch.noise_record --workdir=<this run>"
  return out
