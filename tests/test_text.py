"""Frozen caption features: length-bucketed batches equal fixed-length encoding; cache."""

import numpy as np

from mltm_jax.data.text import TextEncoder, cached_features
from mltm_jax.models.hf_bert import minilm_dir

CAPTIONS = [
  "a dog barks",
  "rain falls on a metal roof while thunder rumbles in the distance",
  "piano",
  "a loud trumpet plays a fast melody, then a quiet flute answers",
  "",
  "someone claps twice",
]


def test_bucketed_features_equal_full_length_and_cache(tmp_path):
  enc = TextEncoder(minilm_dir(), max_length=32, pooling="mean")
  got = enc.features(CAPTIONS, batch_size=4, progress=False)
  toks = enc.tokens(CAPTIONS)
  ref = np.asarray(enc._pooled(enc.params, toks))  # every caption at the full 32 tokens
  np.testing.assert_allclose(got, ref, atol=1e-5)
  first = cached_features(enc, CAPTIONS, tmp_path, progress=False)
  assert len(list(tmp_path.glob("text_features_*.npy"))) == 1
  np.testing.assert_array_equal(cached_features(enc, CAPTIONS, tmp_path, progress=False), first)
