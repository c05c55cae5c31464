"""Acceptance: searching the tiny run's test clips by their captions, through the index
written by launch.embed, gives launch.evaluate's T2A metrics (rank by distance); the search
CLI prints the same results, by text and by audio, and fails with one line on bad input."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mltm_jax.search.store import Library
from tests.search_fixtures import REPO, prepared, retriever, split_captions

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, tiny_synthcaps):
  ready = prepared(tmp_path_factory, tiny_synthcaps)
  return {
    **ready,
    "r": retriever(ready["run"]),
    "root": tiny_synthcaps,
    "lib": Library.load(ready["index"]),
  }


def search_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "launch.search", *args],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_caption_search_gives_launch_evaluate_t2a(ctx):
  lib, r = ctx["lib"], ctx["r"]
  files, captions = split_captions(ctx["root"])
  assert sorted(lib.rel_paths) == sorted(files) and lib.skipped == []
  dist, ids = lib.index("exact").search(r.embed_text(captions) @ lib.factor, lib.size)
  found = np.asarray(lib.rel_paths)[ids]  # [160, 32] files, nearest first
  target = np.repeat(np.asarray(files), 5)
  ranks = 1 + np.argmax(found == target[:, None], axis=1)
  assert (found == target[:, None]).sum(1).tolist() == [1] * len(captions)
  ev = ctx["eval"]["distance"]["t2a"]
  for k in (1, 5, 10):
    assert 100.0 * np.mean(ranks <= k) == pytest.approx(ev[f"R@{k}"], abs=1e-9), (k, ev)
  assert float(np.floor(np.median(ranks))) == ev["medR"]
  assert float(np.mean(ranks)) == pytest.approx(ev["meanR"], abs=1e-9)
  assert np.all(np.diff(dist, axis=1) >= 0)


def test_search_cli_by_text_and_by_audio(ctx):
  lib, r = ctx["lib"], ctx["r"]
  _, captions = split_captions(ctx["root"])
  query = captions[7]
  audio = lib.paths[5]
  with ThreadPoolExecutor(2) as pool:  # the two CLI processes side by side
    by_text = pool.submit(search_cli, f"--index={ctx['index']}", "--k=4", "--json", query)
    by_audio = pool.submit(
      search_cli, f"--index={ctx['index']}", "--k=3", f"--audio={audio}", "--json"
    )
    res, res_audio = by_text.result(), by_audio.result()
  assert res.returncode == 0, res.stderr[-2000:]
  assert res_audio.returncode == 0, res_audio.stderr[-2000:]
  got = json.loads(res.stdout.strip().splitlines()[-1])
  dist, ids = lib.index("exact").search(r.embed_text([query]) @ lib.factor, 4)
  assert got["query"] == query
  assert [h["path"] for h in got["results"]] == [lib.paths[i] for i in ids[0]]
  np.testing.assert_allclose([h["distance"] for h in got["results"]], dist[0], rtol=1e-5)
  # The distances are the learned c_M between the caption and each file.
  np.testing.assert_allclose(
    dist[0],
    r.distance(r.embed_text([query]), r.embed_audio([lib.paths[i] for i in ids[0]]))[0],
    rtol=1e-4,
  )
  hits = json.loads(res_audio.stdout.strip().splitlines()[-1])["results"]
  assert hits[0]["path"] == audio and hits[0]["distance"] < 1e-3
  assert hits[1]["distance"] > hits[0]["distance"]


@pytest.mark.parametrize(
  "args,needle",
  [
    ((), "--index is required"),
    (("--index=/nonexistent_index", "dog"), "no manifest.json"),
    (("--index=x",), "give a text query"),
    (("--index=x", "--k=0", "dog"), "--k must be >= 1"),
    (("--index=x", "--audio=/no/such.wav"), "no such file"),
  ],
)
def test_search_cli_bad_input_is_one_line(args, needle):
  res = search_cli(*args)
  assert res.returncode == 2, res.stderr
  lines = [line for line in res.stderr.strip().splitlines() if line]
  assert len(lines) == 1 and needle in lines[0], res.stderr
