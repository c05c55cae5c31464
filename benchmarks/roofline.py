"""The machine's limit for a benchmark row (the ``limit`` column).

A row may declare the :class:`Work` one call of ours must do at least: floating-point
operations and bytes moved through memory. Two probes, run in the same process as the rows
and with the same threads (XLA's default pool: every core of the process), measure what the
machine does at best:

* ``peak_flops``: a jitted ``[n, n] @ [n, n]`` matmul at the row's dtype (n = 2048 on a CPU,
  8192 on a GPU), ``2 n^3`` operations per call;
* ``peak_bytes``: a jitted ``x + 1`` over 2^26 elements of float32 (256 MiB read, 256 MiB
  written).

The roofline bound of a call is ``limit_s = max(flops / peak_flops, bytes / peak_bytes)``
(whichever resource binds); ``limit_fraction = limit_s / ours median`` is how close the row
comes to it (1 = at the machine's limit; the headroom is ``1 / limit_fraction``). The work
counts are what the computation needs, not what our program happens to do (each benchmark
states its model in ``work_model``), so a fraction near 1 cannot be had by doing redundant
work: ``flops`` counts the arithmetic of the algorithm (a matrix product of [m, k] by [k, n]
is 2 m k n; an exp or a comparison is one), ``bytes`` the compulsory traffic (the inputs read
once, the outputs written once). A kernel bound by another resource (matrix-vector products
at cache bandwidth, a Python loop) shows up as a small fraction: that is the headroom left.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.timing import time_call

MATMUL_N = {"cpu": 2048, "gpu": 8192}
STREAM_ELEMENTS = 1 << 26


@dataclasses.dataclass(frozen=True)
class Work:
  """What one call of ours needs at least: ``flops`` operations (an exp or a compare counts
  as one) and ``bytes`` through memory, at ``dtype`` (the matmul probe's dtype)."""

  flops: float
  bytes: float
  dtype: str = "float32"
  model: str = ""  # how the counts were obtained, shown in the JSON


@functools.cache
def peak_flops(dtype: str = "float32", tiny: bool = False) -> float:
  """Operations per second of the best matmul at ``dtype`` on the default device."""
  n = 256 if tiny else MATMUL_N.get(jax.default_backend(), 2048)
  with jax.enable_x64(dtype == "float64"):
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.dtype(dtype))
    mm = jax.jit(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST))
    timing, _ = time_call(lambda: mm(a, b), runs=3 if tiny else 7, warmup=2)
  return 2.0 * n**3 / timing.min_s


@functools.cache
def peak_bytes(tiny: bool = False) -> float:
  """Bytes per second of a streaming read + write on the default device."""
  n = (1 << 20) if tiny else STREAM_ELEMENTS
  # The buffer is donated and fed back, so each call reuses it (a fresh 256 MiB output
  # would measure the page faults of new memory, not the bandwidth).
  add = jax.jit(lambda v: v + 1.0, donate_argnums=0)
  buf = {"x": jnp.zeros((n,), jnp.float32)}

  def call():
    buf["x"] = add(buf["x"])
    return buf["x"]

  timing, _ = time_call(call, runs=3 if tiny else 7, warmup=2)
  return 2.0 * 4 * n / timing.min_s


def limit_fields(work: Work, ours_s: float, tiny: bool = False) -> dict[str, Any]:
  """The JSON fields of the limit column for a call of ``ours_s`` seconds."""
  flops_rate, bytes_rate = peak_flops(work.dtype, tiny), peak_bytes(tiny)
  compute_s, memory_s = work.flops / flops_rate, work.bytes / bytes_rate
  limit_s = max(compute_s, memory_s)
  return {
    "flops": work.flops,
    "bytes": work.bytes,
    "work_model": work.model,
    "achieved_gflops": work.flops / ours_s / 1e9,
    "achieved_gbs": work.bytes / ours_s / 1e9,
    "peak_gflops": flops_rate / 1e9,
    "peak_gbs": bytes_rate / 1e9,
    "bound": "compute" if compute_s >= memory_s else "memory",
    "limit_s": limit_s,
    "limit_fraction": limit_s / ours_s,
  }


def limit_cell(fields: dict[str, Any] | None) -> str:
  """Table cell: '41% compute' (fraction of the roofline bound reached, binding resource)."""
  if not fields:
    return "-"
  return f"{100 * fields['limit_fraction']:.3g}% {fields['bound']}"


def xla_flops(fn, *args) -> float:
  """Operations of ``jax.jit(fn)(*args)`` by XLA's cost analysis of the compiled program (a
  loop body counts once: use it for loop-free programs)."""
  lower = fn.lower if hasattr(fn, "lower") else jax.jit(fn).lower  # a jitted fn: its program
  cost = lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", 0.0))


def array_bytes(*arrays) -> float:
  """Bytes of the arrays (or shape-dtype structs) given."""
  return float(sum(a.size * jnp.dtype(a.dtype).itemsize for a in arrays))
