"""Which ott-jax Sinkhorn settings move the default loss path, against the cost-only time.

  python -m benchmarks.ott_knobs [--shapes=256x1024,256x512,1024x512,1024x1024] [--runs=15]

The loss benchmark's inputs and stopping rule (``benchmarks/cpu/bench_loss.py``: eps 0.05, L1
column error < 1e-4) at each B x D; per variant, m-LTM loss + gradient w.r.t. (u, v, M), jitted.
Variants: ott as launch.train runs it (the envelope gradient, error checked every 10
iterations), checked every 5, with ``--ot_momentum`` 1.3 and 1.5; ott with the gradient unrolled
through its iterations (the default before ``--ot_differentiation``), with and without momentum
1.3; the native solver with each gradient. The calls of every variant and of the cost-only
program (the distance matrix and its gradient) alternate, ``--runs`` rounds; each cell is the
median. Printed per variant: time, time / cost-only, iterations, |loss - converged loss|
(float64 POT to 1e-12) and the gradient's error against the loss benchmark's reference (torch
autograd through POT's Sinkhorn; ``bench_loss.grad_rel_error``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.cpu import bench_loss as bl
from mltm_jax import metric as metric_lib
from mltm_jax.losses.mltm import mltm_loss

# name: (solver, check every, momentum, gradient)
VARIANTS = {
  "ott (default)": ("ott", 10, 1.0, "envelope"),
  "ott, check every 5": ("ott", 5, 1.0, "envelope"),
  "ott, momentum 1.3": ("ott", 10, 1.3, "envelope"),
  "ott, momentum 1.5": ("ott", 10, 1.5, "envelope"),
  "ott, unrolled": ("ott", 10, 1.0, "unroll"),
  "ott, unrolled, momentum 1.3": ("ott", 10, 1.3, "unroll"),
  "native": ("native", 10, 1.0, "envelope"),
  "native, unrolled": ("native", 10, 1.0, "unroll"),
}


def loss_and_grad(solver: str, inner: int, momentum: float, differentiation: str):
  """jit((u, v, M) -> ((loss, iterations), grads))."""

  def loss(u, v, m):
    cost = metric_lib.mahalanobis(u, v, {"M": m}, "full")
    value, aux = mltm_loss(
      cost,
      eps=bl.EPS,
      solver=solver,
      threshold=bl.OURS_THRESHOLD,
      max_iterations=bl.MAX_ITERATIONS,
      inner_iterations=inner,
      momentum=momentum,
      differentiation=differentiation,
    )
    return value, aux["ot_iterations"]

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def measure(b: int, d: int, runs: int) -> dict[str, dict[str, float]]:
  """Prints the shape's table; returns it: {variant: {seconds, over_cost_only, iterations,
  loss_gap, grad_err}}."""
  u, v = bl.make_pairs(b, d, seed=b + d)
  m = bl.make_metric(d, seed=b + d)
  target = bl.converged_loss(bl.cost64(u, v, m), bl.EPS)
  _, ref_grads, _ = bl.reference_loss(u, v, m, bl.POT_STOP_THR)
  args = tuple(jnp.asarray(x) for x in (u, v, m))
  w = jnp.asarray(np.random.default_rng(0).normal(size=(b, b)).astype(np.float32))
  calls = {"cost only": lambda: bl.cost_only_fn()(*args, w)}
  outs = {}
  for name, spec in VARIANTS.items():
    fn = loss_and_grad(*spec)
    outs[name] = jax.block_until_ready(fn(*args))
    calls[name] = lambda fn=fn: fn(*args)
  times: dict[str, list[float]] = {name: [] for name in calls}
  jax.block_until_ready(calls["cost only"]())  # the variants ran once above
  for _ in range(runs):
    for name, call in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(call())
      times[name].append(time.perf_counter() - start)
  cost_s = float(np.median(times["cost only"]))
  print(f"B={b} D={d}: cost only {cost_s * 1e3:.1f} ms")
  table = {}
  for name in VARIANTS:
    (loss, iters), grads = outs[name]
    s = float(np.median(times[name]))
    row = table[name] = {
      "seconds": s,
      "over_cost_only": s / cost_s,
      "iterations": int(iters),
      "loss_gap": abs(float(loss) - target),
      "grad_err": bl.grad_rel_error(grads, ref_grads),
    }
    print(
      f"  {name:28s} {s * 1e3:8.1f} ms {row['over_cost_only']:6.2f}x  iterations"
      f" {row['iterations']:4d}  |loss - converged| {row['loss_gap']:.1e}"
      f"  grad err {row['grad_err']:.1e}"
    )
  return table


def main(argv):
  del argv
  for shape in flags.FLAGS.shapes:
    b, d = (int(x) for x in shape.split("x"))
    measure(b, d, flags.FLAGS.runs)


if __name__ == "__main__":
  # Defined here, not at import: tests import this module beside benchmarks.scaling (--runs).
  flags.DEFINE_list("shapes", ["256x1024", "256x512", "1024x512", "1024x1024"], "B x D.")
  flags.DEFINE_integer("runs", 15, "Alternating rounds of calls (median per variant).")
  app.run(main)
