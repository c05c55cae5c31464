"""Caption inputs of the text tower: token arrays, or cached frozen-encoder features.

Compiled shapes of the frozen encoder: a batch of captions is cut to its longest caption
rounded up to a multiple of 8 tokens (:func:`width_buckets`) and padded to the smallest of
:data:`BATCH_BUCKETS` that holds it (:func:`padded_rows`), so a single interactive query runs
at batch 1, not at the bulk batch size, and every shape can be compiled ahead of time
(:meth:`TextEncoder.warm_up`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from mltm_jax.models.bert import BertEncoder, pool_text
from mltm_jax.models.hf_bert import load_bert_checkpoint, load_tokenizer, minilm_dir, tokenize

BATCH_BUCKETS = (1, 8, 32, 256)  # padded rows of a batch smaller than the batch size


def padded_rows(rows: int, batch_size: int, buckets: tuple[int, ...] = BATCH_BUCKETS) -> int:
  """Rows a batch of ``rows`` captions is padded to: the smallest bucket >= rows that is below
  batch_size, else batch_size (rows <= batch_size)."""
  for b in sorted(buckets):
    if rows <= b < batch_size:
      return b
  return batch_size


def batch_sizes(batch_size: int, buckets: tuple[int, ...] = BATCH_BUCKETS) -> list[int]:
  """Every padded batch size :func:`padded_rows` can return for ``batch_size``, ascending."""
  return sorted({b for b in buckets if b < batch_size} | {batch_size})


def width_buckets(max_length: int) -> list[int]:
  """Token widths a batch is cut to: multiples of 8 up to max_length (and max_length)."""
  return sorted({min(max_length, w) for w in range(8, max_length + 8, 8)})


def text_encoder_dir(path: str) -> Path:
  """The configured HF checkpoint dir, or the bundled MiniLM-L6 when empty."""
  if not path:
    return minilm_dir()
  p = Path(path)
  if not (p / "config.json").is_file():
    raise FileNotFoundError(f"--text_encoder_dir={path}: no config.json there")
  return p


class TextEncoder:
  """A BERT-architecture encoder with its tokenizer and pretrained weights."""

  def __init__(self, model_dir: str | Path, max_length: int, pooling: str):
    self.dir = Path(model_dir)
    self.config, self.params = load_bert_checkpoint(self.dir)
    self.tokenizer = load_tokenizer(self.dir)
    self.max_length = max_length
    self.pooling = pooling
    self._module = BertEncoder(self.config)
    self._pooled = jax.jit(self._pooled_fn)
    # Device-resident once: host arrays would be copied to the device on every call.
    self._device_params = None

  def tokens(self, captions: list[str]) -> dict[str, np.ndarray]:
    """{input_ids, attention_mask, token_type_ids}: int32 [N, max_length]."""
    return tokenize(self.tokenizer, captions, self.max_length)

  def _pooled_fn(self, params, toks):
    hidden = self._module.apply(
      {"params": params},
      toks["input_ids"],
      toks["attention_mask"],
      toks["token_type_ids"],
      deterministic=True,
    )
    return pool_text(hidden, toks["attention_mask"], self.pooling)

  def _run(self, chunk: dict[str, np.ndarray]) -> np.ndarray:
    """Pooled outputs [B, H] of one padded batch of token arrays [B, W]."""
    if self._device_params is None:
      self._device_params = jax.device_put(self.params)
    return np.asarray(self._pooled(self._device_params, chunk))

  def warm_up(self, sizes: list[int]) -> int:
    """Compiles the encoder for every batch size in ``sizes`` and every token width
    (:func:`width_buckets`); returns the number of shapes run."""
    count = 0
    for rows in sizes:
      for width in width_buckets(self.max_length):
        zeros = np.zeros((rows, width), np.int32)
        self._run({"input_ids": zeros, "attention_mask": zeros + 1, "token_type_ids": zeros})
        count += 1
    return count

  def features(
    self,
    captions: list[str],
    batch_size: int = 256,
    progress: bool = True,
    buckets: tuple[int, ...] = BATCH_BUCKETS,
  ) -> np.ndarray:
    """Pooled frozen-encoder outputs, float32 [N, H] (eval mode, no dropout).

    Captions are sorted by token length and each batch is cut to its longest
    caption rounded up to a multiple of 8 (a handful of compiled shapes) and padded to
    :func:`padded_rows` rows (a single caption runs at batch 1); the padding positions
    are masked, so the result equals the fixed-length one.
    """
    if not captions:
      return np.zeros((0, self.config.hidden_size), np.float32)
    toks = self.tokens(captions)
    lengths = toks["attention_mask"].sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((len(captions), self.config.hidden_size), np.float32)
    for start in tqdm(
      range(0, len(captions), batch_size),
      desc="encode captions",
      disable=not progress,
      leave=False,
      unit="batch",
    ):
      rows = order[start : start + batch_size]
      width = int(min(self.max_length, -(-max(int(lengths[rows].max()), 1) // 8) * 8))
      chunk = {k: v[rows, :width] for k, v in toks.items()}
      pad = padded_rows(len(rows), batch_size, buckets) - len(rows)
      if pad:
        chunk = {k: np.concatenate([v, np.zeros((pad, width), v.dtype)]) for k, v in chunk.items()}
      out[rows] = self._run(chunk)[: len(rows)]
    return out


def cached_features(
  encoder: TextEncoder, captions: list[str], cache_dir: str | Path, progress: bool = True
) -> np.ndarray:
  """``encoder.features(captions)``, cached on disk under a key of everything it depends on."""
  key = hashlib.sha256(
    json.dumps([str(encoder.dir.resolve()), encoder.pooling, encoder.max_length, captions]).encode()
  ).hexdigest()[:16]
  path = Path(cache_dir) / f"text_features_{key}.npy"
  if path.is_file():
    try:
      feats = np.load(path)
      if feats.shape[0] == len(captions):
        return feats
    except (OSError, ValueError) as e:
      logging.warning("text feature cache %s unreadable (%s); recomputing", path, e)
  feats = encoder.features(captions, progress=progress)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".{uuid.uuid4().hex[:12]}.tmp.npy")  # processes may share cache_dir
  np.save(tmp, feats)
  tmp.replace(path)
  return feats


def text_inputs(
  encoder: TextEncoder,
  captions: list[str],
  frozen: bool,
  cache_dir: str | Path,
  progress: bool = True,
) -> Any:
  """What the text tower consumes for these captions: features [N, H] or token dict [N, L]."""
  if frozen:
    return cached_features(encoder, captions, cache_dir, progress)
  return encoder.tokens(captions)
