"""Tests for mltm_jax.data.clotho.read_clotho_split on hand-built fixtures."""

from __future__ import annotations

import unicodedata
import warnings

import numpy as np
import pytest
import soundfile as sf

from mltm_jax.data.clotho import Item, read_clotho_split

HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\r\n"


def _wav(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, np.zeros(160, np.float32), 16000)


@pytest.fixture
def root(tmp_path):
  r = tmp_path / "clotho"
  for name in ("a.wav", "b, with comma.wav", "partial.wav", "empty_caps.wav", "dup.wav"):
    _wav(r / "development" / name)
  rows = [
    'a.wav,A dog barks.,  A dog barks loudly.  ,Dogs bark.,A dog is barking.,Barking.',
    '"b, with comma.wav","Rain falls, then thunder.",Rain.,Rain falls.,Thunder rolls.,'
    "Rain and thunder.",
    "missing.wav,Wind blows.,Wind.,Wind howls.,A gust.,Breeze.",
    "empty_caps.wav,,  , ,,",
    "partial.wav,Birds sing.,,   ,Birds chirp.,",
    "",
    "dup.wav,One.,Two.,Three.,Four.,Five.",
    "dup.wav,Again.,Again.,Again.,Again.,Again.",
  ]
  (r / "clotho_captions_development.csv").write_text(
    HEADER + "\r\n".join(rows) + "\r\n", encoding="utf-8"
  )
  return r


def test_items_and_skips(root):
  items, skipped = read_clotho_split(root, "development")
  assert [it.file_name for it in items] == ["a.wav", "b, with comma.wav", "partial.wav", "dup.wav"]
  a = items[0]
  assert isinstance(a, Item)
  assert a.path == root / "development" / "a.wav" and a.path.is_file()
  assert a.captions == (
    "A dog barks.",
    "A dog barks loudly.",
    "Dogs bark.",
    "A dog is barking.",
    "Barking.",
  )
  assert items[1].captions[0] == "Rain falls, then thunder."
  assert items[2].captions == ("Birds sing.", "Birds chirp.")
  assert items[3].captions[0] == "One."
  assert sorted(skipped) == sorted(
    [
      ("missing.wav", "missing audio"),
      ("empty_caps.wav", "no captions"),
      ("dup.wav", "duplicate row"),
    ]
  )


def test_items_are_frozen(root):
  items, _ = read_clotho_split(root, "development")
  with pytest.raises(Exception):
    items[0].file_name = "x"  # type: ignore[misc]


def test_missing_csv_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError) as ei:
    read_clotho_split(tmp_path, "validation")
  msg = str(ei.value)
  assert str(tmp_path / "clotho_captions_validation.csv") in msg
  assert "\n" not in msg


def test_unknown_split(tmp_path):
  with pytest.raises(ValueError, match="development"):
    read_clotho_split(tmp_path, "train")


def test_latin1_bytes_fall_back_with_warning(tmp_path):
  r = tmp_path / "c"
  _wav(r / "evaluation" / "x.wav")
  body = (HEADER + "x.wav,Un caf\xe9 bruyant.,b,c,d,e\r\n").encode("latin-1")
  with pytest.raises(UnicodeDecodeError):
    body.decode("utf-8")
  (r / "clotho_captions_evaluation.csv").write_bytes(body)
  with pytest.warns(UnicodeWarning, match="latin-1"):
    items, skipped = read_clotho_split(r, "evaluation")
  assert skipped == []
  assert items[0].captions[0] == "Un café bruyant."


def test_utf8_with_bom_and_no_warning(tmp_path):
  r = tmp_path / "c"
  _wav(r / "validation" / "y.wav")
  (r / "clotho_captions_validation.csv").write_bytes(
    ("\ufeff" + HEADER + "y.wav,Un café.,b,c,d,e\n").encode("utf-8")
  )
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    items, _ = read_clotho_split(r, "validation")
  assert items[0].file_name == "y.wav" and items[0].captions[0] == "Un café."


def test_unicode_normalisation_of_file_names(tmp_path):
  r = tmp_path / "c"
  nfd = unicodedata.normalize("NFD", "Café terrace.wav")
  nfc = unicodedata.normalize("NFC", "Café terrace.wav")
  assert nfd != nfc
  _wav(r / "development" / nfd)  # on disk in NFD, CSV in NFC (happens with Clotho archives)
  (r / "clotho_captions_development.csv").write_text(
    HEADER + f"{nfc},a,b,c,d,e\n", encoding="utf-8"
  )
  items, skipped = read_clotho_split(r, "development")
  assert skipped == [] and items[0].path.is_file()


def test_header_without_file_name(tmp_path):
  (tmp_path / "clotho_captions_development.csv").write_text("name,caption_1\nx.wav,a\n")
  with pytest.raises(ValueError, match="file_name"):
    read_clotho_split(tmp_path, "development")
