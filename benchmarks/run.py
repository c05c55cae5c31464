"""Runs the benchmarks and prints one row per measurement.

  python -m benchmarks.run [--only=loss,partial,eval,psd,data,latency] [--json=FILE] [--quick]

Each benchmark times ours and a reference (torch / POT / numpy, written in
benchmarks/ from the method's description) in this process: warm-up excluded,
median of --runs calls, min-max shown; and checks that both give the same
numbers. Columns: name, params, ours, reference, ratio (= reference s / ours s),
agree, limit (the fraction of the machine's roofline bound our median reaches, and
whether compute or memory binds: benchmarks/roofline.py, probes run in this process).
--json writes a list of {"name", "params", "ours_s", "ref_s", "ratio", "agree",
"limit_fraction", ...} (the limit fields: benchmarks.roofline.limit_fields).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

from absl import app, flags

from benchmarks.cpu import (
  bench_data,
  bench_eval,
  bench_latency,
  bench_loss,
  bench_memory,
  bench_partial,
  bench_psd,
  bench_search,
  bench_step,
  towers,
)
from benchmarks.roofline import limit_cell, limit_fields
from benchmarks.timing import Row, Settings

BENCHMARKS = {
  "loss": bench_loss,  # rows loss (solver ott), loss_native
  "partial": bench_partial,
  "eval": bench_eval,  # rows eval (by distance), eval_plan
  "psd": bench_psd,
  "step": bench_step,  # row step (demo train step, samples/s vs torch)
  "memory": bench_memory,  # row memory (peak memory of the demo step vs batch size)
  "towers": towers,  # rows towers_audio (ResNet38 trunk), towers_text (BERT-base)
  "search": bench_search,  # rows search_exact (JAX vs faiss flat), search_ann (faiss IVF)
  "data": bench_data,  # rows data (input pipeline: peak RSS and clips/s vs dataset size)
  "latency": bench_latency,  # row search_latency (one text query vs a 10k index, p50/p99)
}

FLAGS = flags.FLAGS
flags.DEFINE_list("only", None, f"Benchmarks to run (default all): {', '.join(BENCHMARKS)}.")
flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")
flags.DEFINE_bool("quick", False, "Acceptance shapes only (loss: B=256, D=1024; psd: D=256).")
flags.DEFINE_bool("tiny", False, "Toy shapes, for tests (seconds, numbers meaningless).")
flags.DEFINE_integer("runs", 10, "Timed calls per measurement (median, min, max).")
flags.DEFINE_float(
  "ref_budget_s",
  300.0,
  "A reference whose timed calls take longer than this in total stops after 3 calls"
  " (the 'runs' param of the row says ours/ref calls); 0 = never stop early.",
)


def machine() -> str:
  import jax
  import ot
  import torch

  return (
    f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
    f" jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__},"
    f" POT {ot.__version__}"
  )


def _params_text(params: dict) -> str:
  return " ".join(f"{k}={v}" for k, v in params.items())


def row_limit(row: Row, tiny: bool) -> dict | None:
  """The limit-column fields of a row (None when it declares no work)."""
  return limit_fields(row.work, row.ours.median_s, tiny) if row.work is not None else None


def format_table(rows: list[Row], limits: list[dict | None]) -> str:
  header = ("name", "params", "ours", "reference", "ratio", "agree", "limit")
  lines = [
    (
      r.name,
      _params_text(r.params),
      r.ours_cell(),
      r.ref_cell(),
      f"{r.ratio:.3g}x",
      "yes" if r.agree else "NO",
      limit_cell(lim),
    )
    for r, lim in zip(rows, limits)
  ]
  widths = [max(len(x) for x in col) for col in zip(header, *lines)]
  fmt = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
  sep = "-+-".join("-" * w for w in widths)
  return "\n".join([fmt(header), sep, *(fmt(line) for line in lines)])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  names = FLAGS.only or list(BENCHMARKS)
  unknown = [n for n in names if n not in BENCHMARKS]
  if unknown:
    raise app.UsageError(
      f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
    )
  if FLAGS.runs < 1:
    raise app.UsageError(f"--runs must be >= 1, got {FLAGS.runs}")
  settings = Settings(
    quick=FLAGS.quick,
    tiny=FLAGS.tiny,
    runs=FLAGS.runs,
    ref_budget_s=FLAGS.ref_budget_s or None,
  )
  print(f"# {datetime.date.today()} | {machine()}", flush=True)
  rows: list[Row] = []
  limits: list[dict | None] = []
  for name in names:
    for row in BENCHMARKS[name].run(settings):
      rows.append(row)
      limits.append(row_limit(row, settings.tiny))
      print(
        f"[{row.name}] ours {row.ours_cell()} ref {row.ref_cell()} ratio {row.ratio:.3g}x"
        f" agree={row.agree} limit {limit_cell(limits[-1])} {_params_text(row.params)}",
        file=sys.stderr,
        flush=True,
      )
  print(format_table(rows, limits), flush=True)
  if FLAGS.json:
    doc = [r.to_json(lim) for r, lim in zip(rows, limits)]
    Path(FLAGS.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
  app.run(main)
