"""Benchmark ``psd``: the PSD projection of the metric and its share of a train step.

Ours: ``jit(mltm_jax.metric.project_psd)`` (eigh) on a float32 [D, D] matrix.
Reference: the same projection with numpy, ``V max(w, 0) V^T`` from
``np.linalg.eigh((M + M^T) / 2)``, float32. Both timed alternately with one BLAS thread
(the limit of a training run). ``agree``: max abs difference <= 1e-3
(entries are O(1)); the input I + W (W symmetric Gaussian, spectrum ~[-1, 3]) has
about a fifth of its eigenvalues negative.

Share of a train step: the demo's step (``Config()`` defaults; ``embed_dim = D``),
built as ``tests/sharding_check.py`` builds it, on a random batch of precomputed
log-mels [128, 251, 64] and text features [128, 384]; timed with ``psd_every=1``
(projection every update) and ``psd_every=10**9`` (no projection after the first
update). Every timed call steps from the same state, whose projection counter is 1
(so only ``psd_every=1`` projects): the two differ by the projection alone (chained
steps would let M, and with it the Sinkhorn iteration count, drift apart).
``psd_share_of_step`` = (t_every_1 - t_never) / t_every_1 with the BLAS thread limit a
training run sets (``launch.runtime.init_runtime``: OpenBLAS limited to 1 thread by
default); ``unlimited_*``: the same with OpenBLAS's default threads (all cores). The eigh
is a LAPACK call (scipy's OpenBLAS) inside the XLA program; with OpenBLAS's default
threads they compete with XLA's own pool for the cores, which makes it far slower inside
the step than alone. Each of the four variants is timed as a block of consecutive steps (as
in training: OpenBLAS threads left spinning by one step's eigh slow the next), the blocks
alternating over 5 rounds so that they see the same load.

Drift of a lazy projection: Adam (the demo's lr 1e-3) on M alone, STEPS updates with
random gradients (a fixed symmetric direction plus fresh symmetric noise, so M
leaves the cone), projected every update vs every 10; reported: the Frobenius
distance between the two final metrics, relative to ||M||_F, and the smallest
eigenvalue of the lazily projected one.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.roofline import Work, array_bytes
from benchmarks.timing import Row, Settings, blas_threads, block
from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.models.two_tower import build_towers
from mltm_jax import model as model_lib
from mltm_jax.train import state as state_lib
from mltm_jax.train.step import make_train_step
from mltm_jax.sharding import make_mesh, replicated, to_global

DIMS = (256, 1024)
QUICK_DIMS = (256,)
TINY_DIMS = (32,)
TEXT_FEATURES = 384  # the bundled MiniLM-L6's hidden size
LAZY_EVERY = 10
ROUNDS = 5  # step timing: blocks of runs / ROUNDS consecutive steps per variant, per round
STEPS = 300
ATOL = 1e-3


def make_symmetric(d: int, seed: int) -> np.ndarray:
  """float32 [d, d] I + W, W symmetric with N(0, 1/d) entries (spectrum ~[-1, 3])."""
  g = np.random.default_rng(seed).normal(size=(d, d)) / np.sqrt(2 * d)
  return (np.eye(d) + g + g.T).astype(np.float32)


def reference_projection(m: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((m + m.T) / 2)
  return (v * np.maximum(w, 0.0)) @ v.T


@functools.cache
def _project():
  return jax.jit(metric_lib.project_psd)


# ----------------------------------------------------------------------------- train step


def step_config(d: int, tiny: bool) -> Config:
  if tiny:  # the small model of tests/sharding_check.py
    return Config(
      sample_rate=8000,
      clip_seconds=2.0,
      n_fft=256,
      hop_length=128,
      fmax=4000.0,
      cnn_channels="8,16",
      embed_dim=d,
      head_hidden=64,
      batch_size=8,
    )
  return Config(embed_dim=d)


def step_times(d: int, settings: Settings) -> dict[tuple[int, str], float]:
  """Median seconds of one train step, keyed by (psd_every, BLAS threads).

  psd_every in (1, 10**9); BLAS threads "runtime" (the limit of a training run) or
  "unlimited" (OpenBLAS's default: every core).
  """
  cfg = step_config(d, settings.tiny)
  audio_tower, text_tower = build_towers(cfg, None)
  frames = 1 + cfg.clip_samples // cfg.hop_length
  rng = np.random.default_rng(0)
  text_dim = 48 if settings.tiny else TEXT_FEATURES
  batch = {
    "audio": (rng.normal(size=(cfg.batch_size, frames, cfg.n_mels)) * 10 - 40).astype(np.float32),
    "text": rng.normal(size=(cfg.batch_size, text_dim)).astype(np.float32),
  }
  params, stats = model_lib.init_params(
    cfg, audio_tower, text_tower, batch["text"][:2], jax.random.PRNGKey(0)
  )
  mesh = make_mesh(jax.devices()[:1])
  global_batch = to_global(mesh, batch)
  calls = {}
  for every in (1, 10**9):
    run_cfg = cfg.replace(psd_every=every)
    tx = state_lib.make_optimizer(run_cfg)
    start = state_lib.create_state(run_cfg, params, stats, tx, jax.random.PRNGKey(1))
    # As if one update had been taken: psd_every=1 projects now, 10**9 does not.
    start = jax.device_get(start.replace(opt_state=_with_projection_count(start.opt_state, 1)))
    step = make_train_step(run_cfg, audio_tower, text_tower, tx, mesh)
    for threads in ("runtime", "unlimited"):
      # Every call steps from the same state (a fresh copy: the step donates its input).
      n_copies = settings.runs + 1 + 2 * ROUNDS
      copies = iter([jax.device_put(start, replicated(mesh)) for _ in range(n_copies)])

      def call(step=step, copies=copies, threads=threads):
        with blas_threads(None if threads == "runtime" else 0):
          state, metrics = step(next(copies), global_batch)
          return block((state.params["metric"], metrics["loss"]))

      calls[(every, threads)] = call
  times = {key: [] for key in calls}
  # Each variant runs as a block of consecutive steps, as in training (OpenBLAS threads
  # left spinning by one step's eigh slow the next step: that is the cost measured), the
  # blocks alternating over ROUNDS rounds so that all variants see the same load.
  for call in calls.values():  # compile
    call()
  per_block = max(1, settings.runs // ROUNDS)
  for _ in range(ROUNDS):
    for key, call in calls.items():
      call()  # warm-up: the previous block's threads
      for _ in range(per_block):
        t0 = time.perf_counter()
        call()
        times[key].append(time.perf_counter() - t0)
  return {key: statistics.median(ts) for key, ts in times.items()}


def _with_projection_count(opt_state, count: int):
  """opt_state with the PSD projection's update counter set to ``count``."""
  is_counter = lambda s: isinstance(s, metric_lib.PsdProjectionState)
  return jax.tree.map(
    lambda s: s._replace(count=jnp.asarray(count, jnp.int32)) if is_counter(s) else s,
    opt_state,
    is_leaf=is_counter,
  )


# ----------------------------------------------------------------------------- drift


def lazy_projection_drift(d: int, steps: int, lr: float = 1e-3) -> dict[str, float]:
  """Frobenius distance after ``steps`` Adam updates: projected every update vs every 10."""
  key = jax.random.PRNGKey(0)
  direction = jax.random.normal(key, (d, d)) / jnp.sqrt(d)
  direction = direction + direction.T

  def gradient(t):
    noise = jax.random.normal(jax.random.fold_in(key, t + 1), (d, d)) / jnp.sqrt(d)
    return direction + noise + noise.T

  finals = {}
  for every in (1, LAZY_EVERY):
    tx = optax.chain(optax.adam(lr), metric_lib.psd_projection(every=every))
    params = {"metric": {"M": jnp.eye(d, dtype=jnp.float32)}}

    @jax.jit
    def train(params, tx=tx):
      def one(carry, t):
        params, opt = carry
        updates, opt = tx.update({"metric": {"M": gradient(t)}}, opt, params)
        return (optax.apply_updates(params, updates), opt), None

      (params, _), _ = jax.lax.scan(one, (params, tx.init(params)), jnp.arange(steps))
      return params["metric"]["M"]

    finals[every] = np.asarray(train(params), np.float64)
  exact, lazy = finals[1], finals[LAZY_EVERY]
  err = float(np.linalg.norm(exact - lazy))
  return {
    "frob_err": err,
    "frob_rel": err / float(np.linalg.norm(exact)),
    "lazy_min_eig": float(np.linalg.eigvalsh((lazy + lazy.T) / 2)[0]),
  }


# ----------------------------------------------------------------------------- benchmark


def run(settings: Settings) -> list[Row]:
  dims = TINY_DIMS if settings.tiny else QUICK_DIMS if settings.quick else DIMS
  rows = []
  for d in dims:
    m = make_symmetric(d, seed=d)
    project = _project()
    jm = jnp.asarray(m)
    # Both with the BLAS limit of a training run (one thread): with OpenBLAS's default
    # threads the two libraries (scipy's for jax, numpy's) leave each other's threads
    # spinning, and the timings on the shared 2-core machine swing by 100x.
    with blas_threads():
      ours_t, ours_out, ref_t, ref_out = settings.time_pair(
        lambda jm=jm, project=project: project(jm), lambda m=m: reference_projection(m)
      )
    err = float(np.max(np.abs(np.asarray(ours_out, np.float64) - ref_out)))
    steps = step_times(d, settings)
    with_psd, without = steps[(1, "runtime")], steps[(10**9, "runtime")]
    with_psd_u, without_u = steps[(1, "unlimited")], steps[(10**9, "unlimited")]
    params = {
      "D": d,
      "max_abs_diff": float(f"{err:.2g}"),
      "blas_threads": "runtime default (launch.runtime) / unlimited",
      "step_s_psd_every_1": f"{with_psd:.4f}/{with_psd_u:.4f}",
      "step_s_no_psd": f"{without:.4f}/{without_u:.4f}",
      "psd_share_of_step": round((with_psd - without) / with_psd, 3),
      "unlimited_psd_share": round((with_psd_u - without_u) / with_psd_u, 3),
      "step_default_over_unlimited": round(with_psd / with_psd_u, 3),
      "eigh_over_step": round(ours_t.median_s / with_psd, 3),
      f"psd_every_{LAZY_EVERY}_share": round((with_psd - without) / LAZY_EVERY / with_psd, 4),
    }
    if d == dims[0]:
      steps_drift = 50 if settings.tiny else STEPS
      drift = lazy_projection_drift(d, steps_drift)
      params.update(
        {
          f"every_{LAZY_EVERY}_vs_1_after_{steps_drift}_adam_steps": (
            f"||dM||_F={drift['frob_err']:.3g} (rel {drift['frob_rel']:.2g}),"
            f" lazy min eig {drift['lazy_min_eig']:.2g}"
          )
        }
      )
    params["runs"] = f"{ours_t.runs}/{ref_t.runs}"
    work = Work(
      flops=11.0 * d**3,
      bytes=2 * array_bytes(jm),
      model="symmetric eigendecomposition with vectors ~9 D^3 (Golub & Van Loan) +"
      " V max(w, 0) V^T 2 D^3; bytes: M read, the projection written",
    )
    rows.append(Row("psd", params, ours_t, ref_t, err <= ATOL, work=work))
  return rows
