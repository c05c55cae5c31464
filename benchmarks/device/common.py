"""Plumbing of the GPU benchmark (benchmarks/device/bench.py): the run's environment, timing,
precision modes, error measures, the machine record and the table of results."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import torch

RUNS, TINY_RUNS = 10, 3


@dataclasses.dataclass
class Env:
  """One run: toy shapes or not, torch's device, the time budget, timed calls per row."""

  tiny: bool
  device: torch.device
  budget_s: float
  runs: int = RUNS
  start: float = dataclasses.field(default_factory=time.perf_counter)

  @property
  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def sync(self) -> None:
    if self.device.type == "cuda":
      torch.cuda.synchronize()

  def autocast(self, mode: str):
    if mode != "bf16":
      return contextlib.nullcontext()
    return torch.autocast(self.device.type, dtype=torch.bfloat16)

  def free(self) -> None:
    import gc

    gc.collect()
    if self.device.type == "cuda":
      torch.cuda.empty_cache()


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed(fn: Callable[[], Any], sync: Callable[[Any], Any], runs: int, warmup: int = 2):
  """({median_s, min_s, max_s, runs, first_call_s}, last output): warm-up calls untimed."""
  out = None
  first = None
  for _ in range(warmup):
    t0 = time.perf_counter()
    out = sync(fn())
    if first is None:
      first = time.perf_counter() - t0
      log(f"  first call {first:.2f} s")
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    out = sync(fn())
    times.append(time.perf_counter() - t0)
  stats = {
    "median_s": statistics.median(times),
    "min_s": min(times),
    "max_s": max(times),
    "runs": len(times),
    "first_call_s": first,
  }
  return stats, out


def jax_sync(out):
  return jax.block_until_ready(out)


@contextlib.contextmanager
def precision_mode(mode: str):
  """JAX matmul precision and torch TF32 flags of a mode (restored afterwards)."""
  old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
  tf32 = mode in ("tf32", "bf16")
  torch.backends.cuda.matmul.allow_tf32 = tf32
  torch.backends.cudnn.allow_tf32 = tf32
  try:
    if mode == "fp32":
      with jax_matmul_precision("float32"):  # dots and convolutions: no TF32
        yield
    else:
      yield
  finally:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def jax_matmul_precision(value: str):
  """``jax.default_matmul_precision(value)``, or the config option where that is absent."""
  ctx = getattr(jax, "default_matmul_precision", None)
  if ctx is not None:
    with ctx(value):
      yield
    return
  old = jax.config.jax_default_matmul_precision
  jax.config.update("jax_default_matmul_precision", value)
  try:
    yield
  finally:
    jax.config.update("jax_default_matmul_precision", old)


def rel_error(y, ref) -> float:
  """max|y - ref| / max|ref| (arrays of one shape), in float64."""
  y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
  return float(np.max(np.abs(y - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def to_numpy(t: torch.Tensor) -> np.ndarray:
  """A torch tensor's values on the host."""
  return t.detach().cpu().numpy()


def timing_cells(ours: dict, ref: dict, batch: int) -> dict:
  """A row's timing fields from two ``timed`` stats of one batch size."""
  return {
    "ours": ours,
    "ref": ref,
    "ours_samples_s": batch / ours["median_s"],
    "ref_samples_s": batch / ref["median_s"],
    "ratio": ref["median_s"] / ours["median_s"],  # > 1: ours faster
  }


def machine(env: Env) -> dict:
  """The JSON record of the machine and library versions (``pot``: null where POT is absent)."""
  import flax
  import optax

  info = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "python": platform.python_version(),
    "cpus": os.cpu_count(),
    "jax": jax.__version__,
    "jax_backend": jax.default_backend(),
    "jax_device": str(jax.devices()[0].device_kind),
    "flax": flax.__version__,
    "optax": optax.__version__,
    "torch": torch.__version__,
    "torch_device": torch.cuda.get_device_name() if env.device.type == "cuda" else "cpu",
    "pot": importlib.metadata.version("POT") if importlib.util.find_spec("ot") else None,
    "reference_sinkhorn": (
      "benchmarks.references.torch_sinkhorn.torch_sinkhorn (POT 0.9.7 sinkhorn_knopp)"
    ),
    "tiny": env.tiny,
    "budget_s": env.budget_s,
  }
  try:
    import ott

    info["ott"] = ott.__version__
  except Exception as e:  # noqa: BLE001  (reported, the step rows will fail on it)
    info["ott"] = f"import failed: {e}"
  return info


def fmt_s(s: float) -> str:
  return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def format_table(rows: list[dict]) -> str:
  """The rows (tower and step) as an aligned text table."""
  header = ("row", "mode", "B", "ours", "torch", "samples/s ours/torch", "ratio", "check", "agree")
  lines = []
  for r in rows:
    if "ours" not in r:
      continue
    if "out_err" in r:
      check = (
        f"out_err {r['out_err'][0]:.2g}/{r['out_err'][1]:.2g} "
        f"grad_err {r['grad_err'][0]:.2g}/{r['grad_err'][1]:.2g} diff {r['out_diff']:.2g}"
      )
    else:
      check = (
        f"loss gap {r['max_loss_gap']:.2g} iters {r['ot_iterations'][0]}/{r['ot_iterations'][1]}"
      )
    cell = lambda t: f"{fmt_s(t['median_s'])} [{fmt_s(t['min_s'])}-{fmt_s(t['max_s'])}]"
    lines.append(
      (
        r["name"],
        r["mode"],
        str(r["B"]),
        cell(r["ours"]),
        cell(r["ref"]),
        f"{r['ours_samples_s']:.4g}/{r['ref_samples_s']:.4g}",
        f"{r['ratio']:.3g}x",
        check,
        {True: "yes", False: "NO", None: "-"}[r["agree"]],
      )
    )
  widths = [max(len(x) for x in col) for col in zip(header, *lines)]
  fmt = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
  return "\n".join([fmt(header), "-+-".join("-" * w for w in widths), *map(fmt, lines)])
