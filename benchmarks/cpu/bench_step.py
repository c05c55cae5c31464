"""Benchmark ``step``: train-step throughput of the demo configuration, ours vs PyTorch.

The demo step (``Config()`` defaults): the temporal_cnn audio tower on precomputed log-mels
[B, 251, 64] and the frozen text encoder's cached features [B, 384] -> projection heads ->
full-M m-LTM loss (cost / max, eps 0.05, balanced Sinkhorn) -> gradient-norm clipping 2.0
-> Adam (lr 1e-3; M at --metric_learning_rate) -> PSD projection of M (eigh). Dropout 0.2 and
SpecAugment on.

Ours: ``mltm_jax.train.step.make_train_step`` (one XLA program, state donated, steps
chained as in training), with the BLAS thread limit a training run sets
(``launch.runtime``). Reference: benchmarks/references/torch_demo.py's torch modules mirroring
``mltm_jax/models/temporal_cnn.py`` and ``heads.py`` (Conv1d with "SAME" padding, BatchNorm,
ReLU, dropout, max + mean pooling; SpecAugment stripes), and the loss as the official code
computes it (benchmarks/references/torch_loss.py): the [B, B, D] differences times the full M
(``official_cost``), divided by its max, POT ``ot.sinkhorn`` (torch backend, kernel domain,
autograd through the iterations), ``-mean(log diag P)``, ``backward()``,
``clip_grad_norm_(2.0)``, Adam, and M <- V max(w, 0) V^T (``torch.linalg.eigh``). POT's
``stopThr`` is set for equal accuracy (both losses within 1e-4 of each other); its iteration
count is reported.

``agree``: with the same weights (ours copied into torch), dropout and SpecAugment off, the
losses of two consecutive steps (the initial loss, and the loss after one update, which
checks gradients, clipping, Adam and the projection) are within 1e-4. Rows report samples/s
(B / median step seconds) ours/torch; ratio = torch s / ours s. Ours and torch are timed
alternately; torch is also timed on one thread (``torch_1_thread_samples_s``: on the
shared 2-core machine, torch's two OpenMP threads degrade badly under load). ``--tiny``: the small
model of tests/sharding_check.py at B = 8, without dropout and SpecAugment, torch on one thread (a
test of the plumbing).
"""

from __future__ import annotations

import jax
import ot
import torch

from benchmarks.cpu.demo_step import (
  TEXT_FEATURES,
  TINY_TEXT_FEATURES,
  OursStep,
  bench_config,
  demo_inputs,
)
from benchmarks.roofline import Work, array_bytes, xla_flops
from benchmarks.timing import Row, Settings, blas_threads
from benchmarks.references.torch_demo import TorchDemoModel, load_from_flax
from benchmarks.references.torch_loss import (
  POT_STOP_THR,
  adam_with_metric_rate,
  official_loss,
  project_psd_,
)
from mltm_jax.config import Config

LOSS_ATOL = 1e-4


class TorchStep:
  """One training step of the reference: forward, loss, backward, clip, Adam, projection."""

  def __init__(self, cfg: Config, model: TorchDemoModel, stop_thr: float = POT_STOP_THR):
    self.cfg, self.model, self.stop_thr = cfg, model, stop_thr
    self.opt = adam_with_metric_rate(model.parameters(), model.metric, cfg)
    self.iterations = 0

  def __call__(self, mel: torch.Tensor, text: torch.Tensor) -> float:
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    audio, text_emb = self.model(mel, text)
    loss, self.iterations = official_loss(
      audio, text_emb, self.model.metric, self.cfg.eps, ot.sinkhorn, self.stop_thr
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
    self.opt.step()
    project_psd_(self.model.metric)
    return float(loss.detach())


def agreement(cfg: Config, text_dim: int) -> dict:
  """Two deterministic steps (dropout, SpecAugment off) from the same weights: the losses."""
  det = cfg.replace(dropout=0.0, spec_augment=False)
  params, stats, batch = demo_inputs(det, text_dim)
  model = TorchDemoModel(det, text_dim)
  load_from_flax(model, params, stats)
  ref = TorchStep(det, model)
  mel, text = torch.from_numpy(batch["audio"]), torch.from_numpy(batch["text"])
  ref_losses = [ref(mel, text) for _ in range(2)]
  with blas_threads():
    step = OursStep(det, params, stats, batch)
    our_losses = [float(step()) for _ in range(2)]
  return {"ours": our_losses, "torch": ref_losses, "pot_iterations": ref.iterations}


def run(settings: Settings) -> list[Row]:
  cfg = bench_config(settings.tiny)
  text_dim = TINY_TEXT_FEATURES if settings.tiny else TEXT_FEATURES
  threads = torch.get_num_threads()
  if settings.tiny:  # toy tensors: one torch thread, the timed step deterministic too
    torch.set_num_threads(1)
    cfg = cfg.replace(dropout=0.0, spec_augment=False)
  try:
    return _run(cfg, text_dim, settings)
  finally:
    torch.set_num_threads(threads)


def _run(cfg: Config, text_dim: int, settings: Settings) -> list[Row]:
  check = agreement(cfg, text_dim)
  gap = max(abs(a - b) for a, b in zip(check["ours"], check["torch"], strict=True))

  params, stats, batch = demo_inputs(cfg, text_dim)
  model = TorchDemoModel(cfg, text_dim)
  load_from_flax(model, params, stats)
  ref = TorchStep(cfg, model)
  mel, text = torch.from_numpy(batch["audio"]), torch.from_numpy(batch["text"])
  with blas_threads():
    ours = OursStep(cfg, params, stats, batch)

  def ours_call():
    with blas_threads():
      return ours()

  ours_t, _, ref_t, _ = settings.time_pair(ours_call, lambda: ref(mel, text))
  b = cfg.batch_size
  threads = torch.get_num_threads()
  if threads > 1 and not settings.tiny:  # torch's default threads vs one (shared machine)
    torch.set_num_threads(1)
    try:
      one_t, _, _, _ = settings.time_pair(lambda: ref(mel, text), ours_call)
    finally:
      torch.set_num_threads(threads)
  else:
    one_t = None
  params_out = {
    "B": b,
    "D": cfg.embed_dim,
    "audio": f"temporal_cnn {cfg.cnn_channels} on [{b}, 251, 64]" if not settings.tiny else "tiny",
    "samples_s": f"{b / ours_t.median_s:.1f}/{b / ref_t.median_s:.1f}",
    "loss_0": f"{check['ours'][0]:.6f}/{check['torch'][0]:.6f}",
    "loss_1": f"{check['ours'][1]:.6f}/{check['torch'][1]:.6f}",
    "max_loss_gap": float(f"{gap:.2g}"),
    "pot_iterations": check["pot_iterations"],
    "pot_stop_thr": POT_STOP_THR,
    "torch_threads": threads,
    "torch_1_thread_samples_s": round(b / one_t.median_s, 1) if one_t else "n/a",
    "runs": f"{ours_t.runs}/{ref_t.runs}",
  }
  return [Row("step", params_out, ours_t, ref_t, gap <= LOSS_ATOL, work=step_work(ours))]


def step_work(ours: OursStep) -> Work:
  """XLA's operation count of the compiled step (the Sinkhorn loop's body counted once: its
  iterations are a few percent of the towers' convolutions); bytes: the state read and
  written, the batch read."""
  return Work(
    flops=xla_flops(ours.step, ours.state, ours.batch),
    bytes=2 * array_bytes(*jax.tree.leaves(ours.state)) + array_bytes(*jax.tree.leaves(ours.batch)),
    model="XLA cost analysis of the train step; bytes: state read + written, batch read",
  )
