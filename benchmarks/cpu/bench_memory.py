"""Benchmark ``memory``: peak host memory of the demo train step vs batch size, ours vs torch.

For each batch size B (``BATCHES``) and side, a fresh process (``python -m
benchmarks.cpu.bench_memory --side=ours|torch --batch=B``) builds the demo step of
``benchmarks/cpu/bench_step.py`` (``Config()`` with ``batch_size=B``; ours: the jit-compiled
step, compiled ahead of time; torch: the reference step), records the resident set
(``baseline``: runtime, weights, batch; ours compiled), resets the kernel's high-water mark
(``/proc/self/clear_refs``), runs 1 + ``STEPS`` steps (the first allocates the step's
buffers, caches and optimizer state) and reads the peak (``VmHWM``). Reported per B: peak RSS, and
the step's own share, peak - baseline; for ours also XLA's buffer assignment of the compiled step
(``compiled.memory_analysis()``: temporaries + arguments + outputs - aliased).

The largest batch that fits ``RAM_BYTES`` (24 GB) is extrapolated from the measured
peaks by a least-squares fit peak(B) = a + b B + c B^2 (activations grow like B, the
[B, B] cost / plan like B^2; the reference's [B, B, D] differences like B^2 D), solved
for peak = 24 GB: an extrapolation beyond the measured range, not a measurement.

The row's ours_s / ref_s are the step seconds at B = 128 measured in the same children
(median of ``STEPS``). ``agree``: every measurement ran (none failed, e.g. out of memory).
``--tiny``: the small model at B = 8, measured in this
process (no children; one step, torch on one thread; numbers meaningless).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import Row, Settings, Timing

BATCHES = (64, 128, 256, 512, 1024)
TINY_BATCHES = (8,)
QUICK_BATCHES = (128, 512)
STEPS = 3
RAM_BYTES = 24e9
TIMED_BATCH = 128
MB = 2.0**20
REPO = Path(__file__).resolve().parents[2]


def _status_kb(key: str) -> int:
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith(key + ":"):
      return int(line.split()[1])
  raise KeyError(key)


def _reset_peak() -> None:
  Path("/proc/self/clear_refs").write_text("5")


def measure(side: str, batch: int, tiny: bool, steps: int = STEPS) -> dict:
  """Peak memory of one step of ``side`` ("ours" / "torch") at ``batch``, in this process."""
  from benchmarks.cpu import demo_step
  from benchmarks.timing import blas_threads, block

  cfg = demo_step.bench_config(tiny, batch)
  text_dim = demo_step.TINY_TEXT_FEATURES if tiny else demo_step.TEXT_FEATURES
  params, stats, batch_np = demo_step.demo_inputs(cfg, text_dim)
  out: dict = {"side": side, "batch": batch}
  if side == "ours":  # (torch not imported: a training process does not have it)
    with blas_threads():
      step = demo_step.OursStep(cfg, params, stats, batch_np)
      compiled = step.step.lower(step.state, step.batch).compile()
      analysis = compiled.memory_analysis()
      if analysis is not None:
        out["xla_bytes"] = int(
          analysis.temp_size_in_bytes
          + analysis.argument_size_in_bytes
          + analysis.output_size_in_bytes
          - analysis.alias_size_in_bytes
        )
        out["xla_temp_bytes"] = int(analysis.temp_size_in_bytes)

      def call():
        step.state, metrics = compiled(step.state, step.batch)
        return block(metrics["loss"])

      del params, stats
      out.update(_peak(call, blas_threads, steps))
  else:
    import torch

    from benchmarks.cpu.bench_step import TorchStep
    from benchmarks.references.torch_demo import TorchDemoModel, load_from_flax

    model = TorchDemoModel(cfg, text_dim)
    load_from_flax(model, params, stats)
    del params, stats
    ref = TorchStep(cfg, model)
    mel, text = torch.from_numpy(batch_np["audio"]), torch.from_numpy(batch_np["text"])
    call = lambda: ref(mel, text)
    out.update(_peak(call, None, steps))
  return out


def _peak(call, threads_ctx, steps: int) -> dict:
  import contextlib

  ctx = threads_ctx() if threads_ctx else contextlib.nullcontext()
  with ctx:
    baseline = _status_kb("VmRSS") * 1024
    _reset_peak()
    call()  # the first step allocates the step's buffers (and the optimizer state)
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      call()
      times.append(time.perf_counter() - start)
    peak = _status_kb("VmHWM") * 1024
  return {"baseline_bytes": baseline, "peak_bytes": peak, "step_s": statistics.median(times)}


def _child(side: str, batch: int) -> dict:
  proc = subprocess.run(
    [sys.executable, "-m", "benchmarks.cpu.bench_memory", f"--side={side}", f"--batch={batch}"],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=1800,
  )
  if proc.returncode != 0:
    tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
    return {"side": side, "batch": batch, "error": tail[0][:200]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def max_batch(batches, peaks, limit: float = RAM_BYTES) -> int | None:
  """Largest B with a + b B + c B^2 <= limit (least-squares fit of peaks), or None."""
  if len(batches) < 3:
    return None
  b = np.asarray(batches, np.float64)
  coef = np.polyfit(b, np.asarray(peaks, np.float64), 2)  # c, b, a
  c2, c1, c0 = coef
  if c2 > 0:
    roots = np.roots([c2, c1, c0 - limit])
    real = roots[np.isreal(roots)].real
    real = real[real > 0]
    return int(real.max()) if real.size else None
  if c1 > 0:
    return int((limit - c0) / c1)
  return None


def run(settings: Settings) -> list[Row]:
  import torch

  threads = torch.get_num_threads()
  if settings.tiny:
    torch.set_num_threads(1)
  try:
    return _run(settings)
  finally:
    torch.set_num_threads(threads)


def _run(settings: Settings) -> list[Row]:
  batches = TINY_BATCHES if settings.tiny else QUICK_BATCHES if settings.quick else BATCHES
  results: dict[str, list[dict]] = {"ours": [], "torch": []}
  for b in batches:
    for side in ("ours", "torch"):
      res = measure(side, b, True, steps=1) if settings.tiny else _child(side, b)
      results[side].append(res)
      print(f"[memory] {json.dumps(res)}", file=sys.stderr, flush=True)

  def ok(side):
    return [r for r in results[side] if "error" not in r]

  params: dict = {}
  extra: dict = {}
  for side in ("ours", "torch"):
    for r in results[side]:
      key = f"{side}_B{r['batch']}"
      if "error" in r:
        params[key] = f"failed: {r['error']}"
        continue
      step_mb = (r["peak_bytes"] - r["baseline_bytes"]) / MB
      params[key] = f"peak {r['peak_bytes'] / MB:.0f} MB (step {step_mb:.0f} MB)"
    good = ok(side)
    fit = max_batch([r["batch"] for r in good], [r["peak_bytes"] for r in good])
    params[f"{side}_max_batch_24GB"] = f"~{fit} (extrapolated)" if fit else "n/a"
    extra[f"{side}_peak_bytes"] = {str(r["batch"]): r["peak_bytes"] for r in good}
    extra[f"{side}_step_bytes"] = {
      str(r["batch"]): r["peak_bytes"] - r["baseline_bytes"] for r in good
    }
    extra[f"{side}_max_batch_24GB"] = fit
  for r in ok("ours"):
    if "xla_bytes" in r:
      params[f"xla_B{r['batch']}"] = f"{r['xla_bytes'] / MB:.0f} MB"
  extra["xla_bytes"] = {str(r["batch"]): r.get("xla_bytes") for r in ok("ours")}

  timed = TIMED_BATCH if TIMED_BATCH in batches else batches[0]
  t = {s: next((r for r in ok(s) if r["batch"] == timed), None) for s in ("ours", "torch")}
  if t["ours"] is None or t["torch"] is None:
    raise RuntimeError(f"bench_memory: no measurement at B={timed}: {results}")
  as_timing = lambda r: Timing(r["step_s"], r["step_s"], r["step_s"], STEPS)
  largest = max(b for b in batches if all(any(r["batch"] == b for r in ok(s)) for s in t))
  peak = {s: next(r for r in ok(s) if r["batch"] == largest)["peak_bytes"] for s in t}
  params["timed_B"] = timed
  cells = (f"{peak['ours'] / MB:.0f} MB @B={largest}", f"{peak['torch'] / MB:.0f} MB @B={largest}")
  extra["memory_ratio_at_largest"] = peak["torch"] / peak["ours"]
  agree = all("error" not in r for s in results for r in results[s])
  return [Row("memory", params, as_timing(t["ours"]), as_timing(t["torch"]), agree, extra, cells)]


def main(argv: list[str]) -> None:
  side = next(a.split("=", 1)[1] for a in argv if a.startswith("--side="))
  batch = int(next(a.split("=", 1)[1] for a in argv if a.startswith("--batch=")))
  tiny = "--tiny" in argv
  print(json.dumps(measure(side, batch, tiny)), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
