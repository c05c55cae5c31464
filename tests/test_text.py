"""Frozen caption features: length-bucketed batches equal fixed-length encoding; cache; the
batch rows padded to 1, 8, 32 or the batch size, every shape compiled by warm_up."""

import numpy as np
import pytest

from mltm_jax.compiles import CompileCounter
from mltm_jax.data.text import (
  TextEncoder,
  batch_sizes,
  cached_features,
  padded_rows,
  width_buckets,
)
from mltm_jax.models.hf_bert import minilm_dir

CAPTIONS = [
  "a dog barks",
  "rain falls on a metal roof while thunder rumbles in the distance",
  "piano",
  "a loud trumpet plays a fast melody, then a quiet flute answers",
  "",
  "someone claps twice",
]


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_bucketed_features_equal_full_length_and_cache(tmp_path):
  enc = TextEncoder(minilm_dir(), max_length=32, pooling="mean")
  got = enc.features(CAPTIONS, batch_size=4, progress=False)
  toks = enc.tokens(CAPTIONS)
  ref = np.asarray(enc._pooled(enc.params, toks))  # every caption at the full 32 tokens
  np.testing.assert_allclose(got, ref, atol=1e-5)
  first = cached_features(enc, CAPTIONS, tmp_path, progress=False)
  assert len(list(tmp_path.glob("text_features_*.npy"))) == 1
  np.testing.assert_array_equal(cached_features(enc, CAPTIONS, tmp_path, progress=False), first)


def test_padded_rows_and_widths():
  rows = (1, 2, 8, 9, 32, 33, 255, 256)
  assert [padded_rows(n, 256) for n in rows] == [1, 8, 8, 32, 32, 256, 256, 256]
  assert [padded_rows(n, 32) for n in (1, 5, 20, 32)] == [1, 8, 32, 32]
  assert [padded_rows(n, 4) for n in (1, 2, 4)] == [1, 4, 4]
  assert batch_sizes(256) == [1, 8, 32, 256] and batch_sizes(4) == [1, 4]
  assert width_buckets(32) == [8, 16, 24, 32] and width_buckets(30) == [8, 16, 24, 30]


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_small_batches_equal_the_bulk_batch_and_compile_nothing_after_warm_up():
  enc = TextEncoder(minilm_dir(), max_length=32, pooling="mean")
  bulk = enc.features(CAPTIONS, batch_size=256, progress=False, buckets=(256,))
  assert enc.warm_up([1, 8]) == 8  # 2 batch sizes x 4 widths
  with CompileCounter() as counter:
    one = np.stack([enc.features([c], progress=False)[0] for c in CAPTIONS])
    few = enc.features(CAPTIONS, progress=False)  # 6 rows: padded to 8
  assert counter.count == 0, counter.names
  np.testing.assert_allclose(one, bulk, atol=1e-5)
  np.testing.assert_allclose(few, bulk, atol=1e-5)
