"""Search an index written by launch.embed, by text or by audio.

  python -m launch.search --index=INDEX "a dog barks twice" ["another query" ...]
  python -m launch.search --index=INDEX --audio=FILE          # audio -> audio gallery
      [--k=10] [--backend=exact|flat|ivf|hnsw] [--nprobe=16] [--ef_search=128] [--json]

Queries are embedded by the run that built the index (its workdir and checkpoint step are
in the manifest), multiplied by the stored metric factor W and compared with the stored
gallery rows: the printed distance is the learned c_M(query, file). Text and audio queries
both search the audio gallery (an audio query ranks files by c_M between audio embeddings).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from absl import app, flags

from launch.flags import fail
from launch.runtime import init_runtime

_INDEX = flags.DEFINE_string("index", None, "Index directory written by launch.embed.")
_AUDIO = flags.DEFINE_multi_string("audio", [], "Audio file(s) to search by (repeatable).")
_K = flags.DEFINE_integer("k", 10, "Results per query.")
_BACKEND = flags.DEFINE_enum(
  "backend", "exact", ["exact", "flat", "ivf", "hnsw"], "Search backend."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: the one in the manifest).")
_BUDGET = flags.DEFINE_integer(
  "budget_mb", 256, "exact: bound on the queries x gallery distance blocks held at once (MiB)."
)
_NLIST = flags.DEFINE_integer("nlist", 0, "ivf: lists (0 = about 4 sqrt(N)).")
_NPROBE = flags.DEFINE_integer("nprobe", 16, "ivf: lists scanned per query.")
_TRAIN = flags.DEFINE_integer("train_size", 65536, "ivf: k-means training rows.")
_HNSW_M = flags.DEFINE_integer("hnsw_m", 32, "hnsw: links per node.")
_EFC = flags.DEFINE_integer("ef_construction", 80, "hnsw: build beam width.")
_EFS = flags.DEFINE_integer("ef_search", 128, "hnsw: search beam width.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object per query instead of a table.")


def ann_params():
  from mltm_jax.search import AnnParams

  return AnnParams(
    nlist=_NLIST.value,
    nprobe=_NPROBE.value,
    train_size=_TRAIN.value,
    hnsw_m=_HNSW_M.value,
    ef_construction=_EFC.value,
    ef_search=_EFS.value,
  )


def load_searcher(index_dir: str, workdir: str | None):
  """(library, retriever) of an index; exits with one line when they do not fit."""
  from mltm_jax.api import Retriever
  from mltm_jax.search.store import Library

  try:
    library = Library.load(index_dir)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  settings = library.settings
  run_dir = workdir or settings["workdir"]
  try:
    hop = settings["hop_samples"] / settings["sample_rate"]  # audio queries: the index's hop
    retriever = Retriever.from_run(run_dir, settings["checkpoint"], chunk_hop_seconds=hop)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  if retriever.step != settings["checkpoint_step"]:
    fail(
      f"{index_dir} was embedded with step {settings['checkpoint_step']} of {settings['workdir']},"
      f" {run_dir} has step {retriever.step}"
    )
  return library, retriever


def main(argv):
  queries = argv[1:]
  if not _INDEX.value:
    fail("--index is required")
  if not queries and not _AUDIO.value:
    fail('give a text query ("a dog barks") or --audio=FILE')
  if queries and _AUDIO.value:
    fail("give either text queries or --audio, not both")
  if _K.value < 1:
    fail(f"--k must be >= 1, got {_K.value}")
  if _BUDGET.value < 1:
    fail(f"--budget_mb must be >= 1, got {_BUDGET.value}")
  for path in _AUDIO.value:
    if not Path(path).is_file():
      fail(f"--audio={path}: no such file")
  init_runtime()
  params = ann_params()
  if params.problems():
    fail(params.problems()[0])
  from mltm_jax.data.audio import AudioError

  library, retriever = load_searcher(_INDEX.value, _WORKDIR.value)
  try:
    index = library.index(_BACKEND.value, params, _BUDGET.value << 20)
  except ValueError as e:
    fail(str(e).splitlines()[0])
  k = min(_K.value, library.size)
  if queries:
    emb = retriever.embed_text(queries)
    labels = queries
  else:
    try:
      emb = retriever.embed_audio(_AUDIO.value)
    except AudioError as e:
      fail(str(e))
    labels = _AUDIO.value
  dist, ids = index.search(emb @ library.factor, k)
  for label, d_row, i_row in zip(labels, dist, ids):
    hits = [(library.paths[i], float(d)) for d, i in zip(d_row, i_row) if i >= 0]
    if _JSON.value:
      print(json.dumps({"query": label, "results": [{"path": p, "distance": d} for p, d in hits]}))
      continue
    print(f"\n{label!r}: top {len(hits)} of {library.size} ({_BACKEND.value})")
    for rank, (path, d) in enumerate(hits, 1):
      print(f"{rank:4d}  {d:8.4f}  {path}")


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
