"""The held-out split: source combinations that never occur in the other splits.

SynthCaps' ``heldout`` split (an extra split in the Clotho layout, beside development,
validation and evaluation) measures generalisation rather than fit to the grammar:

* **sources**: a fixed sixth of all unordered source pairs is *reserved*
  (:func:`is_reserved_pair`, a hash of the two names, so the choice is deterministic and
  independent of the seed). A clip of the other splits never holds a reserved pair; every
  held-out clip holds 2-3 events, one reserved pair among them, so no held-out combination of
  sources occurs in training.
* **wording**: held-out captions use only the phrasings the grammar reserves for them
  (:data:`mltm_jax.synthcaps.captions.RESERVED_PHRASES`: synonyms and sentence templates the
  other splits never use) wherever the grammar has an alternative.
"""

from __future__ import annotations

import itertools
import zlib
from typing import Sequence

from mltm_jax.synthcaps.sources import SOURCE_SPECS

__all__ = ["HELDOUT_SPLIT", "RESERVED_PAIRS", "has_reserved_pair", "is_reserved_pair"]

HELDOUT_SPLIT = "heldout"
_RESERVED_MODULUS = 6  # one pair in six


def is_reserved_pair(a: str, b: str) -> bool:
  """Whether the unordered pair of source names ``(a, b)`` is reserved for the held-out split."""
  lo, hi = sorted((a, b))
  return zlib.crc32(f"{lo}|{hi}".encode("utf-8")) % _RESERVED_MODULUS == 0


def has_reserved_pair(sources: Sequence[str]) -> bool:
  """Whether any two of ``sources`` form a reserved pair."""
  return any(is_reserved_pair(a, b) for a, b in itertools.combinations(sources, 2))


# Every reserved pair of the source table, sorted (the held-out split draws from these).
RESERVED_PAIRS: tuple[tuple[str, str], ...] = tuple(
  (a, b)
  for a, b in itertools.combinations(sorted(s.name for s in SOURCE_SPECS), 2)
  if is_reserved_pair(a, b)
)
