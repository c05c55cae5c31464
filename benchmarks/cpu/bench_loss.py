"""Benchmark ``loss``: m-LTM loss + gradient w.r.t. the embeddings and M.

Ours: ``mahalanobis`` (matrix products) -> ``mltm_loss`` (balanced, cost / max),
``jax.value_and_grad`` under ``jax.jit``: launch.train's default gradient
(``--ot_differentiation=auto``: the envelope gradient, the solver forward only) with
``solver='ott'`` (row ``loss``, the default path) and ``solver='native'`` (row
``loss_native``), and the gradient unrolled through ott's iterations (row ``loss_unrolled``,
the official code's way of differentiating).

Reference (the official code's style, written here from the method's description):
torch float32; the cost ``sqrt((u_i - v_j) M (u_i - v_j)^T)`` from the [B, B, D]
differences and the full M (row blocks of at most 2^27 elements, so big shapes fit
in memory; autograd keeps every block, exactly as one [B, B, D] tensor would), divided
by its max; POT ``ot.sinkhorn(a, b, C, reg, method='sinkhorn_log')`` with the torch
backend; loss ``-(1/B) sum_i log P_ii``; ``torch.autograd.grad``.

Equal accuracy: both solvers stop on a marginal error threshold (ours: L1 of the
column sums, checked every 10 iterations; POT: L2, every 10) set so that both losses
are within 1e-4 of the converged loss, computed once in float64 (numpy costs, POT
Sinkhorn to 1e-12). ``agree``: those two gaps and |ours - reference| are <= 1e-4,
and the gradients match (max abs difference <= GRAD_RTOL x max abs reference
gradient, for each of u, v, M).

``ours_over_cost_only``: ours against the cost-only program (the distance matrix and its
gradient, the floor of any loss on it), the two called alternately (``Settings.time_pair``).

Inputs: unit audio embeddings u, captions v = normalise(u + unit noise) (cosine
~0.7 to their pair, like a partly trained model), M = I + A A^T / (2 D) (PSD), eps
0.05 (the demo's).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import ot
import torch

from benchmarks.roofline import Work, array_bytes, xla_flops
from benchmarks.timing import Row, Settings
from benchmarks.references.torch_loss import official_cost
from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.losses.mltm import mltm_loss

EPS = 0.05
# Stopping thresholds (see the module docstring): ours on the L1 column error,
# POT on the L2 column error (POT's own measure).
OURS_THRESHOLD = 1e-4
POT_STOP_THR = 1e-5
MAX_ITERATIONS = 5000
LOSS_ATOL = 1e-4
GRAD_RTOL = 1e-3

SHAPES = ((64, 512), (64, 1024), (256, 512), (256, 1024), (1024, 512), (1024, 1024))
QUICK_SHAPES = ((256, 1024),)
TINY_SHAPES = ((32, 64),)


# ----------------------------------------------------------------------------- inputs


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_pairs(b: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """float32 unit embeddings u [b, d], v [b, d]; v_i is a noisy copy of u_i."""
  rng = np.random.default_rng(seed)
  u = _unit(rng.normal(size=(b, d)))
  v = _unit(u + _unit(rng.normal(size=(b, d))))
  return u.astype(np.float32), v.astype(np.float32)


def make_metric(d: int, seed: int) -> np.ndarray:
  """float32 [d, d] PSD metric I + A A^T / (2 d), eigenvalues in about [1, 3]."""
  a = np.random.default_rng(seed + 1).normal(size=(d, d))
  return (np.eye(d) + a @ a.T / (2 * d)).astype(np.float32)


def converged_loss(cost: np.ndarray, eps: float) -> float:
  """Converged m-LTM loss of a float64 [B, B] cost (POT Sinkhorn, numpy, to 1e-12)."""
  b = cost.shape[0]
  a = np.full(b, 1.0 / b)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    plan = ot.sinkhorn(a, a, cost / cost.max(), eps, stopThr=1e-12, numItermax=200_000)
  return float(-np.mean(np.log(np.diag(plan))))


def cost64(u: np.ndarray, v: np.ndarray, m: np.ndarray) -> np.ndarray:
  """float64 [B, B] Mahalanobis distances by numpy matrix products."""
  u, v, m = (np.asarray(x, np.float64) for x in (u, v, m))
  d2 = (
    np.einsum("id,de,ie->i", u, m, u)[:, None]
    + np.einsum("jd,de,je->j", v, m, v)[None, :]
    - 2.0 * (u @ m @ v.T)
  )
  return np.sqrt(np.maximum(d2, 1e-12))


# ----------------------------------------------------------------------------- reference


def leaves(*arrays: np.ndarray) -> list[torch.Tensor]:
  """Fresh torch leaf tensors that require grad."""
  return [torch.from_numpy(np.array(x)).requires_grad_(True) for x in arrays]


def reference_loss(u: np.ndarray, v: np.ndarray, m: np.ndarray, stop_thr: float):
  """Official-style loss and gradients: (loss, (grad_u, grad_v, grad_M), iterations)."""
  tu, tv, tm = leaves(u, v, m)
  cost = official_cost(tu, tv, tm)
  cost = cost / cost.max()
  b = cost.shape[0]
  a = torch.full((b,), 1.0 / b, dtype=cost.dtype)
  plan, log = ot.sinkhorn(
    a,
    a,
    cost,
    EPS,
    method="sinkhorn_log",
    numItermax=MAX_ITERATIONS,
    stopThr=stop_thr,
    log=True,
    warn=False,
  )
  loss = -torch.log(torch.diagonal(plan)).mean()
  grads = torch.autograd.grad(loss, (tu, tv, tm))
  return loss.detach(), grads, int(log["niter"]) + 1


# ----------------------------------------------------------------------------- ours


DEFAULT_DIFFERENTIATION = Config().resolved_ot_differentiation  # launch.train's


@functools.cache
def ours_loss_fn(solver: str, differentiation: str = DEFAULT_DIFFERENTIATION):
  """jit((u, v, M) -> ((loss, iterations), (grad_u, grad_v, grad_M)))."""

  def loss(u, v, m):
    cost = metric_lib.mahalanobis(u, v, {"M": m}, "full")
    value, aux = mltm_loss(
      cost,
      eps=EPS,
      variant="balanced",
      solver=solver,
      differentiation=differentiation,
      threshold=OURS_THRESHOLD,
      max_iterations=MAX_ITERATIONS,
    )
    return value, aux["ot_iterations"]

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


@functools.cache
def cost_only_fn():
  """jit((u, v, M, W) -> (<W, C_M(u, v)>, grads)): the distance matrix and its gradient."""

  def f(u, v, m, w):
    return jnp.vdot(w, metric_lib.mahalanobis(u, v, {"M": m}, "full"))

  return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


# ----------------------------------------------------------------------------- benchmark


def loss_work(
  cost_flops: float,
  b: int,
  iterations: int,
  inputs,
  per_iteration: float = 12.0,
  iteration_model: str = "12 B^2 per Sinkhorn iteration",
) -> Work:
  """Work of one loss + gradient call: the cost and its gradient (``cost_flops``, XLA's count
  of the loop-free cost-only program) and ``iterations`` solver iterations of
  ``per_iteration`` B^2 operations each. Sinkhorn's default: two [B, B] matrix-vector
  products forward (4 B^2) and at least two more plus the [B, B] cotangent accumulation
  backward (8 B^2). Compulsory bytes: the inputs read, their gradients written."""
  return Work(
    flops=cost_flops + per_iteration * b * b * iterations,
    bytes=2 * array_bytes(*inputs),
    model=f"cost fwd+bwd (XLA) + {iteration_model}; bytes: inputs + gradients",
  )


ENVELOPE_MODEL = "4 B^2 per Sinkhorn iteration (forward only: the envelope gradient)"


def grad_rel_error(ours, ref) -> float:
  """max over (u, v, M) of max|ours - ref| / max|ref|.

  M's gradients are compared on their symmetric parts: M is symmetric, and the two
  cost formulas agree on symmetric M only, so their raw gradients differ by an
  antisymmetric matrix (ours, from ``u M v^T``, is not symmetric) that the
  symmetric parametrisation (the PSD projection symmetrises) discards.
  """
  worst = 0.0
  for name, g_ours, g_ref in zip("uvM", ours, ref):
    g_ours = np.asarray(g_ours, np.float64)
    g_ref = g_ref.detach().numpy().astype(np.float64)
    if name == "M":
      g_ours, g_ref = (g_ours + g_ours.T) / 2, (g_ref + g_ref.T) / 2
    err = np.max(np.abs(g_ours - g_ref)) / np.max(np.abs(g_ref))
    worst = max(worst, float(err))
  return worst


def bench_shape(b: int, d: int, settings: Settings) -> list[Row]:
  u, v = make_pairs(b, d, seed=b + d)
  m = make_metric(d, seed=b + d)
  target = converged_loss(cost64(u, v, m), EPS)

  ref_t, (ref_loss, ref_grads, ref_iters) = settings.time_ref(
    lambda: reference_loss(u, v, m, POT_STOP_THR)
  )
  ref_loss = float(ref_loss)

  ju, jv, jm = (jnp.asarray(x) for x in (u, v, m))
  w = jnp.asarray(np.random.default_rng(0).normal(size=(b, b)).astype(np.float32))
  cost_fn = cost_only_fn()
  cost_flops = xla_flops(cost_fn, ju, jv, jm, w)

  rows = []
  variants = (
    ("loss", "ott", DEFAULT_DIFFERENTIATION),
    ("loss_native", "native", DEFAULT_DIFFERENTIATION),
    ("loss_unrolled", "ott", "unroll"),
  )
  for name, solver, differentiation in variants:
    fn = ours_loss_fn(solver, differentiation)
    # Paired with the cost-only program (call i of each back to back): the ratio between them
    # is what a solver adds to the distance matrix, on the same machine load.
    ours_t, ((loss, iters), grads), cost_t, _ = settings.time_pair(
      lambda: fn(ju, jv, jm), lambda: cost_fn(ju, jv, jm, w)
    )
    loss = float(loss)
    gaps = (abs(loss - target), abs(ref_loss - target), abs(loss - ref_loss))
    grad_err = grad_rel_error(grads, ref_grads)
    agree = max(gaps) <= LOSS_ATOL and grad_err <= GRAD_RTOL
    params = {
      "B": b,
      "D": d,
      "eps": EPS,
      "solver": solver,
      "gradient": differentiation,
      "iters": f"ours {int(iters)} (L1<{OURS_THRESHOLD:g}) / POT {ref_iters} (L2<{POT_STOP_THR:g})",
      "loss": round(loss, 6),
      "max_loss_gap": float(f"{max(gaps):.2g}"),
      "grad_rel_err": float(f"{grad_err:.2g}"),
      "cost_only_s": float(f"{cost_t.median_s:.4g}"),
      "ours_over_cost_only": round(ours_t.median_s / cost_t.median_s, 2),
      "runs": f"{ours_t.runs}/{ref_t.runs}",
    }
    if differentiation == "envelope":  # forward iterations only, then the plan once
      work = loss_work(cost_flops, b, int(iters), (ju, jv, jm), 4.0, ENVELOPE_MODEL)
    else:
      work = loss_work(cost_flops, b, int(iters), (ju, jv, jm))
    rows.append(Row(name, params, ours_t, ref_t, agree, work=work))
  return rows


def run(settings: Settings) -> list[Row]:
  shapes = TINY_SHAPES if settings.tiny else QUICK_SHAPES if settings.quick else SHAPES
  rows: list[Row] = []
  for b, d in shapes:
    rows.extend(bench_shape(b, d, settings))
  return rows
