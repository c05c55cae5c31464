"""Benchmark ``partial``: partial-OT m-LTM loss + gradient w.r.t. the embeddings and M.

Ours: ``mahalanobis`` -> ``mltm_loss(variant='partial', mass=0.95)`` (Bregman
projections, ``num_iterations`` cycles), ``jax.value_and_grad`` under ``jax.jit``.

Reference: the official-style torch cost of ``bench_loss`` (the [B, B, D] broadcast,
full M, divided by its max), POT ``ot.partial.entropic_partial_wasserstein`` with the
torch backend and the same number of cycles (POT's iterates are ours: same loss up to
float32 rounding), loss ``-(1/B) sum_i log P_ii``, ``torch.autograd.grad``.

``agree``: |ours - reference| <= 1e-4, both within 1e-4 of the loss after
CONVERGED_ITERATIONS cycles (POT, no gradient), and gradients within GRAD_RTOL (max
abs difference relative to the largest reference entry) for u, v and M.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ot
import torch

from benchmarks.cpu.bench_loss import (
  EPS,
  GRAD_RTOL,
  LOSS_ATOL,
  cost_only_fn,
  grad_rel_error,
  leaves,
  loss_work,
  make_metric,
  make_pairs,
)
from benchmarks.roofline import xla_flops
from benchmarks.timing import Row, Settings
from benchmarks.references.torch_loss import official_cost
from mltm_jax import metric as metric_lib
from mltm_jax.losses.mltm import mltm_loss

MASS = 0.95
NUM_ITERATIONS = 200  # ours' default number of cycles (converged to 1e-6 at B = 256)
TINY_ITERATIONS = 500  # the toy shape converges more slowly
CONVERGED_ITERATIONS = 2000
SHAPE = (256, 256)  # B, D (the demo's embedding size)
TINY_SHAPE = (32, 64)


def reference_loss(u, v, m, num_iterations: int, grad: bool = True):
  """(loss, (grad_u, grad_v, grad_M) or None): POT partial OT on the official-style cost."""
  tu, tv, tm = leaves(u, v, m)
  with torch.set_grad_enabled(grad):
    cost = official_cost(tu, tv, tm)
    cost = cost / cost.max()
    b = cost.shape[0]
    a = torch.full((b,), 1.0 / b, dtype=cost.dtype)
    plan = ot.partial.entropic_partial_wasserstein(
      a, a, cost, EPS, m=MASS, numItermax=num_iterations
    )
    loss = -torch.log(torch.diagonal(plan)).mean()
  grads = torch.autograd.grad(loss, (tu, tv, tm)) if grad else None
  return loss.detach(), grads


@functools.cache
def ours_loss_fn(num_iterations: int):
  """jit((u, v, M) -> (loss, (grad_u, grad_v, grad_M)))."""

  def loss(u, v, m):
    cost = metric_lib.mahalanobis(u, v, {"M": m}, "full")
    value, _ = mltm_loss(cost, eps=EPS, variant="partial", mass=MASS, num_iterations=num_iterations)
    return value

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def run(settings: Settings) -> list[Row]:
  b, d = TINY_SHAPE if settings.tiny else SHAPE
  cycles = TINY_ITERATIONS if settings.tiny else NUM_ITERATIONS
  u, v = make_pairs(b, d, seed=7 + b + d)
  m = make_metric(d, seed=7 + b + d)
  target = float(reference_loss(u, v, m, CONVERGED_ITERATIONS, grad=False)[0])

  ref_t, (ref_loss, ref_grads) = settings.time_ref(lambda: reference_loss(u, v, m, cycles))
  ref_loss = float(ref_loss)
  fn = ours_loss_fn(cycles)
  ju, jv, jm = (jnp.asarray(x) for x in (u, v, m))
  ours_t, (loss, grads) = settings.time_ours(lambda: fn(ju, jv, jm))
  loss = float(loss)
  gaps = (abs(loss - ref_loss), abs(loss - target), abs(ref_loss - target))
  grad_err = grad_rel_error(grads, ref_grads)
  params = {
    "B": b,
    "D": d,
    "eps": EPS,
    "mass": MASS,
    "iters": f"{cycles} cycles both",
    "loss": round(loss, 6),
    "max_loss_gap": float(f"{max(gaps):.2g}"),
    f"gap_to_{CONVERGED_ITERATIONS}_cycles": float(f"{abs(loss - target):.2g}"),
    "grad_rel_err": float(f"{grad_err:.2g}"),
    "runs": f"{ours_t.runs}/{ref_t.runs}",
  }
  agree = max(gaps) <= LOSS_ATOL and grad_err <= GRAD_RTOL
  cost_flops = xla_flops(cost_only_fn(), ju, jv, jm, jnp.ones((b, b), jnp.float32))
  work = loss_work(
    cost_flops,
    b,
    cycles,
    (ju, jv, jm),
    per_iteration=18.0,
    iteration_model="per cycle 3 projections of the [B, B] plan (2 B^2 each forward, 4 B^2"
    " backward)",
  )
  return [Row("partial", params, ours_t, ref_t, agree, work=work)]
