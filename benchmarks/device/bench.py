"""GPU benchmark of the paper's towers (issue #3) and the train step (issue #6), ours vs PyTorch.

  python -m benchmarks.device.bench [--out=FILE] [--only=towers,step] [--rows=LABEL,...]
                                    [--budget_s=N] [--tiny]

One process, one GPU shared by JAX and torch (same weights, same inputs). Rows, by priority
(a row is skipped, and listed as such, when the time budget is near; each row's failure is
recorded and the next row runs):

  towers_audio  PANNs ResNet38 trunk (no fc1) on log-mels [B, 1001, 64], B = 32: one training
                forward + backward (train-mode batch norm, dropout and SpecAugment off, loss =
                sum(embedding * fixed probe), gradients w.r.t. every parameter). Reference:
                ``benchmarks.references.torch_panns.RefPanns`` on cuda, its weights converted by
                ``panns_convert.convert_state_dict`` (as benchmarks/cpu/towers.py does on CPU).
  towers_text   BERT-base (``transformers.BertConfig()``, random weights, dropout 0) on [B, 32]
                tokens (varied lengths, masked) -> [CLS]; ours reads transformers' weights back
                through ``hf_bert.load_bert_checkpoint``. B = 32 (and 128 last, if time allows).
  step_demo     the demo train step (``Config()``: temporal_cnn on [128, 251, 64] log-mels +
                cached text features [128, 384] -> heads -> m-LTM loss -> clip -> Adam -> PSD
                projection), ours ``make_train_step`` vs the torch mirror of
                benchmarks/references/torch_demo.py.
  step_paper    the paper step at B = 32: ResNet38 on 10-s log-mels [32, 1001, 64] + BERT-base
                fine-tuned on [32, 32] tokens ([CLS]) -> heads 2048|768 -> 2048 -> 1024 -> full-M
                m-LTM loss (eps 0.05, cost / max) -> clip 2.0 -> Adam 5e-5 -> PSD projection of
                the 1024 x 1024 M (configs/audiocaps_mltm.flags). Reference: RefPanns +
                transformers' BertModel + torch_demo's TorchHead + the official loss, on cuda.

Both step rows run with dropout and SpecAugment OFF on both sides (one compiled program per
row serves the agreement check and the timing; the masks are elementwise work, the same on
both sides). Our AudioTower does not pass a block dropout to ResNet38 (default 0.1), so the
paper step builds it with block_dropout 0 (``_no_block_dropout``). The reference's Sinkhorn is
``benchmarks.references.torch_sinkhorn.torch_sinkhorn``: POT 0.9.7's ``sinkhorn_knopp`` (what
``ot.sinkhorn`` runs) line for line in torch (kernel domain, autograd through the iterations,
the per-iteration numerical check and the every-10-iterations marginal-error stop at stopThr
1e-5, at most 1000 iterations); POT itself is not installed on the GPU machine, and nothing
here imports it.

Precision modes (each row names one):
  fp32  JAX ``default_matmul_precision('float32')``; torch TF32 off (matmul and cuDNN).
  tf32  both at their TF32-allowing settings: JAX's default precision, torch
        ``allow_tf32 = True`` for matmul and cuDNN (rows after the others).
  bf16  ours: the modules' ``dtype=bfloat16`` (``Config.precision='bfloat16'`` for the steps),
        params float32; torch: ``torch.autocast(dtype=bfloat16)`` around the towers and heads
        (the loss in float32). The float32 parts (loss, optimizer) at the tf32 settings.
torch runs with ``cudnn.benchmark = True`` (its conv autotuning, as XLA autotunes).

Agreement. towers: the truth is the torch network run once in float64; ``out_err`` = max|y -
y64| / max|y64| ours/torch, ``grad_err`` the largest over parameters of max|g - g64| / max|g64|
(benchmarks/cpu/towers.py's definition) ours/torch, ``out_diff`` = max|ours - torch| / max|torch|;
``agree`` when ours <= 2 x torch + slack (as benchmarks/cpu/towers.py). steps: the losses of two
consecutive steps from the same weights (the second checks gradients, clipping, Adam and the
projection), ours/torch, ``agree`` when within 1e-4. ``agree`` is judged on fp32 rows only
(null on bf16 / tf32 rows, whose errors are reported). Timing: two untimed calls (compilation,
autotuning), then >= 10 timed calls, each synchronised (``jax.block_until_ready`` /
``torch.cuda.synchronize``); median, min, max; ``first_call_s`` = the first call (our compile time
included).

Output: ``--out`` (default $OUT/device_bench.json, or device_bench.json) rewritten after every
row; a table on stdout at the end. ``--tiny``: toy shapes on CPU (Cnn10, a 2-layer BERT of width
32, small batches; a test of the plumbing, numbers meaningless). Without --tiny the script
refuses to run unless JAX and torch both see a GPU.

Modules (benchmarks/device/): common.py (environment, timing, precision modes, machine record,
table), towers.py (the tower rows), steps.py (the step rows); benchmarks/references/
torch_demo.py / torch_loss.py / torch_sinkhorn.py (the torch references); this file plans and
runs the rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import torch
from absl import app, flags

from benchmarks.device.common import (
  RUNS,
  TINY_RUNS,
  Env,
  fmt_s,
  format_table,
  log,
  machine,
  precision_mode,
)
from benchmarks.device.steps import demo_step_row, paper_step_row
from benchmarks.device.towers import AudioTower, TextTower

SECTIONS = ("towers", "step")

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "JSON output (default $OUT/device_bench.json or ./...).")
flags.DEFINE_list("only", None, f"Sections to run (default all): {', '.join(SECTIONS)}.")
flags.DEFINE_float("budget_s", 290.0, "Skip the remaining rows when this would be exceeded.")
flags.DEFINE_list("rows", None, "Only these rows (labels as logged, e.g. 'step_paper fp32').")
flags.DEFINE_bool("tiny", False, "Toy shapes on CPU (a smoke test; numbers meaningless).")


@dataclasses.dataclass
class Plan:
  section: str
  label: str
  est_s: float  # a guess of the row's wall time on an H200 (compilation included)
  fn: Callable[[], dict]


def plan_rows(env: Env) -> list[Plan]:
  cache: dict[str, Any] = {}

  def audio():
    if "audio" not in cache:
      cache["audio"] = AudioTower(env)
    return cache["audio"]

  def text():
    if "text" not in cache:
      cache["text"] = TextTower(env)
    return cache["text"]

  big = 8 if env.tiny else 128
  small = 2 if env.tiny else 32
  return [
    Plan("towers", "towers_audio fp32", 90, lambda: audio().row("fp32")),
    Plan("towers", "towers_text fp32", 35, lambda: text().row("fp32", small)),
    Plan("step", "step_demo fp32", 30, lambda: demo_step_row(env, "fp32")),
    Plan("step", "step_paper fp32", 100, lambda: paper_step_row(env, "fp32")),
    Plan("towers", "towers_audio bf16", 50, lambda: audio().row("bf16")),
    Plan("towers", "towers_text bf16", 25, lambda: text().row("bf16", small)),
    Plan("step", "step_paper bf16", 80, lambda: paper_step_row(env, "bf16")),
    Plan("step", "step_demo bf16", 25, lambda: demo_step_row(env, "bf16")),
    Plan("towers", "towers_audio tf32", 50, lambda: audio().row("tf32")),
    Plan("towers", "towers_text tf32", 25, lambda: text().row("tf32", small)),
    Plan("towers", f"towers_text fp32 B={big}", 30, lambda: text().row("fp32", big)),
    Plan("towers", f"towers_text bf16 B={big}", 25, lambda: text().row("bf16", big)),
  ]


def select(plans: list[Plan], sections, rows=None) -> list[Plan]:
  """The plans of the given sections whose label is one of ``rows`` (None: all)."""
  return [p for p in plans if p.section in sections and (not rows or p.label in rows)]


def default_out() -> Path:
  return (
    Path(os.environ["OUT"]) / "device_bench.json"
    if os.environ.get("OUT")
    else Path("device_bench.json")
  )


def run(tiny: bool, out: Path, sections=SECTIONS, budget_s: float = 290.0, rows=None) -> dict:
  """Runs the planned rows (``rows``: their labels, None = all), rewriting ``out`` after each
  row; returns the JSON document."""
  device = torch.device("cpu" if tiny else "cuda")
  env = Env(tiny=tiny, device=device, budget_s=budget_s, runs=TINY_RUNS if tiny else RUNS)
  torch.backends.cudnn.benchmark = True
  plans = plan_rows(env)
  unknown = sorted(set(rows or ()) - {p.label for p in plans})
  if unknown:
    raise ValueError(
      f"--rows: unknown row(s) {', '.join(unknown)}; "
      f"choose from {', '.join(p.label for p in plans)}"
    )
  if tiny:  # toy tensors on a shared CPU: one torch thread
    torch.set_num_threads(1)
  doc: dict[str, Any] = {"machine": machine(env), "rows": [], "skipped": [], "errors": []}

  def write():
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(out)

  write()
  log(f"machine: {doc['machine']}")
  for plan in select(plans, sections, rows):
    est = 0.5 if tiny else plan.est_s
    if env.elapsed + est > budget_s:
      doc["skipped"].append({"row": plan.label, "elapsed_s": env.elapsed, "est_s": est})
      log(f"SKIP {plan.label}: {env.elapsed:.0f} s elapsed + ~{est:.0f} s > budget {budget_s} s")
      write()
      continue
    mode = plan.label.split()[1]
    log(f"start {plan.label}")
    t0 = time.perf_counter()
    try:
      with precision_mode(mode):
        row = plan.fn()
      row["wall_s"] = time.perf_counter() - t0
      doc["rows"].append(row)
      log(
        f"done  {plan.label} in {row['wall_s']:.1f} s: ours {fmt_s(row['ours']['median_s'])}"
        f" torch {fmt_s(row['ref']['median_s'])} ratio {row['ratio']:.3g}x agree={row['agree']}"
        f" first call ours {row['ours']['first_call_s']:.1f} s"
      )
    except Exception as e:  # noqa: BLE001  (recorded; the next rows still run)
      doc["errors"].append(
        {"row": plan.label, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
      )
      log(f"FAIL  {plan.label} after {time.perf_counter() - t0:.1f} s: {type(e).__name__}: {e}")
      traceback.print_exc()
    env.free()
    doc["elapsed_s"] = env.elapsed
    write()
  print(format_table(doc["rows"]), flush=True)
  log(
    f"{len(doc['rows'])} rows, {len(doc['skipped'])} skipped, {len(doc['errors'])} errors,"
    f" {env.elapsed:.0f} s; wrote {out}"
  )
  return doc


def main(argv: list[str]) -> None:
  from launch.flags import fail

  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  sections = FLAGS.only or list(SECTIONS)
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown:
    fail(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
  if FLAGS.budget_s <= 0:
    fail(f"--budget_s must be > 0, got {FLAGS.budget_s}")
  if not FLAGS.tiny and (jax.default_backend() != "gpu" or not torch.cuda.is_available()):
    fail(
      "benchmarks.device.bench is a GPU benchmark: JAX backend is"
      f" {jax.default_backend()!r}, torch.cuda.is_available() = {torch.cuda.is_available()};"
      " use --tiny for a CPU smoke run"
    )
  out = Path(FLAGS.out) if FLAGS.out else default_out()
  try:
    run(FLAGS.tiny, out, sections, FLAGS.budget_s, FLAGS.rows)
  except ValueError as e:  # bad --rows (raised before anything runs)
    fail(str(e))


if __name__ == "__main__":
  app.run(main)
