"""Scaling figures: loss + gradient time vs batch size, evaluation time vs gallery size.

  python -m benchmarks.scaling --out=results/bench/scaling [--quick] [--ref_max_s=120]
      [--parts=loss,eval]

Loss (D = 512, eps 0.05, the loss benchmark's inputs and stopping rules): ours by the
default path (ott, the envelope gradient), by ott with the gradient unrolled through its
iterations and by the native solver, the cost-only program (the distance matrix and its
gradient: the floor every loss pays) and the official-style torch + POT reference, for
B = 64 ... 4096 (the reference up to ``REF_MAX_B``, its memory limit here). Evaluation by distance
(D = 1024, the eval benchmark's inputs, one caption per clip so the matrix is N x N): ours
(``distance_ranks``) and the numpy reference loop, for N = 1k ... 100k clips (in tiles above 16k
clips: the matrix is never whole in memory). A reference size whose previous size took longer than
``--ref_max_s`` per call is skipped (its time would only grow), so the big sizes are ours only. Each
point: median of ``--runs`` calls after one warm-up call (1 call when the warm-up took over 10 s).
``--parts`` picks the figures to measure; a part left out keeps its points from an existing
``scaling.json`` in ``--out``. Writes ``scaling.json`` (every point) and two log-log plots,
``loss.png`` and ``eval.png``, with the exponent k of a least-squares fit time ~ size^k over each
series' upper half (where the leading term dominates).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import app, flags

from benchmarks.cpu import bench_eval, bench_loss
from benchmarks.timing import blas_threads, time_call

_OUT = flags.DEFINE_string("out", "results/bench/scaling", "Output folder (json + plots).")
_QUICK = flags.DEFINE_bool("quick", False, "Fewer, smaller sizes (a few minutes).")
_REF_MAX_S = flags.DEFINE_float("ref_max_s", 120.0, "Skip reference sizes past this s/call.")
_RUNS = flags.DEFINE_integer("runs", 5, "Timed calls per point (ours).")
_PARTS = flags.DEFINE_list("parts", ["loss", "eval"], "Figures to measure: loss, eval.")

LOSS_D, EVAL_D = 512, 1024
LOSS_B = (64, 128, 256, 512, 1024, 2048, 4096)
# The reference's autograd tape holds every Sinkhorn iteration's [B, B] float64 tensors: at
# B = 4096 it outgrew 24 GB of RAM (killed by the OOM killer), so it stops at 2048.
REF_MAX_B = 2048
EVAL_N = (1000, 2000, 4000, 8000, 16000, 32000, 64000, 100000)
QUICK_LOSS_B, QUICK_EVAL_N = (64, 128, 256, 512), (500, 1000, 2000)


def fit_exponent(sizes: list[float], seconds: list[float]) -> float | None:
  """Slope of log(seconds) on log(size) over the upper half of the points (>= 2 points)."""
  pts = sorted(zip(sizes, seconds))
  if len(pts) < 2:
    return None
  upper = pts[(len(pts) - 1) // 2 :]
  x, y = np.log([p[0] for p in upper]), np.log([p[1] for p in upper])
  return float(np.polyfit(x, y, 1)[0])


def _report(head: str, series: dict[str, list], size: int) -> None:
  done = [f"{k} {v[-1][1]:.3g} s" for k, v in series.items() if v and v[-1][0] == size]
  print(f"{head}: {', '.join(done)}", flush=True)


def _time(fn, runs: int) -> float:
  """Median of ``runs`` calls after a warm-up call; one call when the warm-up took > 10 s."""
  warm, _ = time_call(fn, runs=1, warmup=0)
  if warm.median_s > 10.0:
    runs = 1
  timing, _ = time_call(fn, runs=runs, warmup=0)
  return timing.median_s


def _ref_time(fn) -> float:
  first, _ = time_call(fn, runs=1, warmup=0)
  if first.median_s > 10.0:
    return first.median_s
  return _time(fn, 3)


def loss_series(sizes, runs: int, ref_max_s: float) -> dict[str, list]:
  import jax.numpy as jnp

  variants = {
    "ours (ott, default)": ("ott", bench_loss.DEFAULT_DIFFERENTIATION),
    "ours (ott, unrolled)": ("ott", "unroll"),
    "ours (native)": ("native", bench_loss.DEFAULT_DIFFERENTIATION),
  }
  series: dict[str, list] = {k: [] for k in (*variants, "cost only", "torch + POT")}
  ref_ok = True
  for b in sizes:
    u, v = bench_loss.make_pairs(b, LOSS_D, seed=b)
    m = bench_loss.make_metric(LOSS_D, seed=b)
    ju, jv, jm = (jnp.asarray(x) for x in (u, v, m))
    for name, (solver, differentiation) in variants.items():
      fn = bench_loss.ours_loss_fn(solver, differentiation)
      series[name].append((b, _time(lambda: fn(ju, jv, jm), runs)))
    w = jnp.asarray(np.random.default_rng(0).normal(size=(b, b)).astype(np.float32))
    cost_fn = bench_loss.cost_only_fn()
    series["cost only"].append((b, _time(lambda: cost_fn(ju, jv, jm, w), runs)))
    if ref_ok and b <= REF_MAX_B:
      t = _ref_time(lambda: bench_loss.reference_loss(u, v, m, bench_loss.POT_STOP_THR))
      series["torch + POT"].append((b, t))
      ref_ok = t <= ref_max_s
    _report(f"loss B={b}", series, b)
  return series


def eval_series(sizes, runs: int, ref_max_s: float) -> dict[str, list]:
  series: dict[str, list] = {"ours (distance_ranks)": [], "numpy loop": []}
  ref_ok = True
  m = bench_loss.make_metric(EVAL_D, seed=11).astype(np.float64)
  for n in sizes:
    audio, text, c2c = bench_eval.make_embeddings(n, EVAL_D, seed=n, captions_per_clip=1)

    def ours():
      from mltm_jax.evaluation.distance_ranks import distance_ranks

      with blas_threads():
        return distance_ranks(audio, text, c2c, m)

    series["ours (distance_ranks)"].append((n, _time(ours, runs)))
    if ref_ok:
      t = _ref_time(lambda: bench_eval.reference(audio, text, m, c2c, "distance"))
      series["numpy loop"].append((n, t))
      ref_ok = t <= ref_max_s
    _report(f"eval N={n}", series, n)
  return series


def plot(series: dict[str, list], xlabel: str, title: str, path: Path) -> dict[str, float | None]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  exponents = {}
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for name, points in series.items():
    if not points:
      continue
    xs, ys = zip(*points)
    k = fit_exponent(list(xs), list(ys))
    exponents[name] = k
    label = f"{name}: ~ size^{k:.2f}" if k is not None else name
    ax.loglog(xs, ys, "o-", label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("seconds per call (median)")
  ax.set_title(title)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return exponents


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  loss_b = QUICK_LOSS_B if _QUICK.value else LOSS_B
  eval_n = QUICK_EVAL_N if _QUICK.value else EVAL_N
  parts = set(_PARTS.value)
  if not parts or parts - {"loss", "eval"}:
    raise app.UsageError(f"--parts must name loss and/or eval, got {_PARTS.value}")
  old = out / "scaling.json"
  doc = json.loads(old.read_text()) if parts != {"loss", "eval"} and old.is_file() else {}
  if "loss" in parts:
    loss = loss_series(loss_b, _RUNS.value, _REF_MAX_S.value)
    doc["loss"] = {"D": LOSS_D, "eps": bench_loss.EPS, "series": loss}
    doc["loss"]["exponents"] = plot(
      loss, "batch size B", f"m-LTM loss + gradient, D={LOSS_D}", out / "loss.png"
    )
  if "eval" in parts:
    evals = eval_series(eval_n, _RUNS.value, _REF_MAX_S.value)
    doc["eval"] = {"D": EVAL_D, "captions_per_clip": 1, "series": evals}
    doc["eval"]["exponents"] = plot(
      evals,
      "gallery size N (clips; N captions)",
      f"evaluation by distance, D={EVAL_D}",
      out / "eval.png",
    )
  (out / "scaling.json").write_text(json.dumps(doc, indent=2) + "\n")
  for part in sorted(parts):
    print(
      part, {k: (None if v is None else round(v, 2)) for k, v in doc[part]["exponents"].items()}
    )


if __name__ == "__main__":
  app.run(main)
