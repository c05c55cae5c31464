"""Benchmark ``step``: train-step throughput of the demo configuration, ours vs PyTorch.

The demo step (``Config()`` defaults): the temporal_cnn audio tower on precomputed log-mels
[B, 251, 64] and the frozen text encoder's cached features [B, 384] -> projection heads ->
full-M m-LTM loss (cost / max, eps 0.05, balanced Sinkhorn) -> gradient-norm clipping 2.0
-> Adam (lr 1e-3) -> PSD projection of M (eigh). Dropout 0.2 and SpecAugment on.

Ours: ``mltm_jax.train.step.make_train_step`` (one XLA program, state donated, steps
chained as in training), with the BLAS thread limit a training run sets
(``launch.runtime``). Reference, written here: torch modules mirroring
``mltm_jax/models/temporal_cnn.py`` and ``heads.py`` (Conv1d with "SAME" padding, BatchNorm,
ReLU, dropout, max + mean pooling; SpecAugment stripes), and the loss as the official code
computes it: the [B, B, D] differences times the full M (``bench_loss.official_cost``),
divided by its max, POT ``ot.sinkhorn`` (torch backend, kernel domain, autograd through
the iterations), ``-mean(log diag P)``, ``backward()``, ``clip_grad_norm_(2.0)``, Adam, and
M <- V max(w, 0) V^T (``torch.linalg.eigh``). POT's ``stopThr`` is set for equal accuracy
(both losses within 1e-4 of each other); its iteration count is reported.

``agree``: with the same weights (ours copied into torch), dropout and SpecAugment off, the
losses of two consecutive steps (the initial loss, and the loss after one update, which
checks gradients, clipping, Adam and the projection) are within 1e-4. Rows report samples/s
(B / median step seconds) ours/torch; ratio = torch s / ours s. Ours and torch are timed
alternately; torch is also timed on one thread (``torch_1_thread_samples_s``: on the
shared 2-core machine, torch's two OpenMP threads degrade badly under load). ``--tiny``: the small model of tests/sharding_check.py at B = 8, without
dropout and SpecAugment, torch on one thread (a test of the plumbing).
"""

from __future__ import annotations

import warnings

import numpy as np
import ot
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.bench_loss import official_cost
from benchmarks.demo_step import (
  TEXT_FEATURES,
  TINY_TEXT_FEATURES,
  OursStep,
  bench_config,
  demo_inputs,
)
from benchmarks.timing import Row, Settings, blas_threads
from mltm_jax.config import Config

POT_STOP_THR = 1e-5  # L2 column-marginal error, checked every 10 iterations
POT_MAX_ITER = 1000  # the official default
LOSS_ATOL = 1e-4


# ----------------------------------------------------------------------------- torch modules


def same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
  """(left, right) padding of XLA's "SAME" convolution (output ceil(length / stride))."""
  out = -(-length // stride)
  total = max((out - 1) * stride + kernel - length, 0)
  return total // 2, total - total // 2


def torch_spec_augment(x: torch.Tensor, time_width: int, freq_width: int) -> torch.Tensor:
  """[B, M, T] -> the same with 2 time and 2 frequency stripes per example set to 0."""
  b, m, t = x.shape

  def stripes(length: int, width: int) -> torch.Tensor:  # bool [B, length]
    w = torch.randint(0, width, (b, 2))
    start = (torch.rand(b, 2) * (length - w + 1)).floor().long()
    pos = torch.arange(length)[None, None, :]
    return ((pos >= start[..., None]) & (pos < (start + w)[..., None])).any(dim=1)

  keep = ~stripes(t, time_width)[:, None, :] & ~stripes(m, freq_width)[:, :, None]
  return x * keep


class TorchTemporalCNN(nn.Module):
  """Mirror of mltm_jax.models.temporal_cnn.TemporalCNN: [B, T, M] -> [B, channels[-1]]."""

  def __init__(self, cfg: Config):
    super().__init__()
    self.cfg = cfg
    self.bn0 = nn.BatchNorm1d(cfg.n_mels, eps=1e-5, momentum=0.1)
    chans = (cfg.n_mels, *cfg.channels)
    self.kernels = [5 if i == 0 else 3 for i in range(len(cfg.channels))]
    self.strides = [2 if i < 2 else 1 for i in range(len(cfg.channels))]
    self.convs = nn.ModuleList(
      nn.Conv1d(chans[i], chans[i + 1], self.kernels[i], self.strides[i], bias=False)
      for i in range(len(cfg.channels))
    )
    self.bns = nn.ModuleList(nn.BatchNorm1d(c, eps=1e-5, momentum=0.1) for c in cfg.channels)

  def forward(self, mel: torch.Tensor) -> torch.Tensor:
    x = self.bn0(mel.transpose(1, 2))  # [B, M, T]
    if self.training and self.cfg.spec_augment:
      x = torch_spec_augment(x, self.cfg.spec_time_width, self.cfg.spec_freq_width)
    for conv, bn, k, s in zip(self.convs, self.bns, self.kernels, self.strides, strict=True):
      x = conv(F.pad(x, same_padding(x.shape[-1], k, s)))
      x = F.dropout(F.relu(bn(x)), self.cfg.dropout, self.training)
    return x.amax(dim=-1) + x.mean(dim=-1)


class TorchHead(nn.Module):
  """Mirror of mltm_jax.models.heads.ProjectionHead (Linear-ReLU-Dropout-Linear, L2 norm)."""

  def __init__(self, cin: int, hidden: int, out: int, dropout: float):
    super().__init__()
    self.fc1, self.fc2, self.dropout = nn.Linear(cin, hidden), nn.Linear(hidden, out), dropout

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.fc2(F.dropout(F.relu(self.fc1(x)), self.dropout, self.training))
    return x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=1e-12))


class TorchDemoModel(nn.Module):
  """Both towers and the metric M."""

  def __init__(self, cfg: Config, text_features: int):
    super().__init__()
    self.cnn = TorchTemporalCNN(cfg)
    self.audio_head = TorchHead(cfg.channels[-1], cfg.head_hidden, cfg.embed_dim, cfg.dropout)
    self.text_head = TorchHead(text_features, cfg.head_hidden, cfg.embed_dim, cfg.dropout)
    self.metric = nn.Parameter(torch.eye(cfg.embed_dim))

  def forward(self, mel, text):
    return self.audio_head(self.cnn(mel)), self.text_head(text)


def load_from_flax(model: TorchDemoModel, params, batch_stats) -> None:
  """Copies our parameters (and batch-norm statistics) into the torch model."""
  t = lambda x: torch.from_numpy(np.array(x, np.float32))
  cnn = params["audio"]["cnn"]
  with torch.no_grad():
    for i, (conv, bn) in enumerate(zip(model.cnn.convs, model.cnn.bns, strict=True)):
      conv.weight.copy_(t(np.transpose(np.asarray(cnn[f"conv{i}"]["kernel"]), (2, 1, 0))))
    for name, bn in [("bn0", model.cnn.bn0)] + [
      (f"bn{i + 1}", b) for i, b in enumerate(model.cnn.bns)
    ]:
      bn.weight.copy_(t(cnn[name]["scale"]))
      bn.bias.copy_(t(cnn[name]["bias"]))
      bn.running_mean.copy_(t(batch_stats["cnn"][name]["mean"]))
      bn.running_var.copy_(t(batch_stats["cnn"][name]["var"]))
    for head, flax_head in (
      (model.audio_head, params["audio"]["head"]),
      (model.text_head, params["text"]["head"]),
    ):
      for fc in ("fc1", "fc2"):
        getattr(head, fc).weight.copy_(t(np.asarray(flax_head[fc]["kernel"]).T))
        getattr(head, fc).bias.copy_(t(flax_head[fc]["bias"]))
    model.metric.copy_(t(params["metric"]["M"]))


def official_loss(audio, text, m, eps: float, stop_thr: float):
  """(loss, POT iterations): cost / max -> POT sinkhorn (torch, kernel) -> -mean log P_ii."""
  cost = official_cost(audio, text, m)
  cost = cost / cost.max()
  b = cost.shape[0]
  w = torch.full((b,), 1.0 / b)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    plan, log = ot.sinkhorn(
      w, w, cost, eps, numItermax=POT_MAX_ITER, stopThr=stop_thr, log=True, warn=False
    )
  return -torch.log(torch.diagonal(plan)).mean(), int(log["niter"]) + 1


class TorchStep:
  """One training step of the reference: forward, loss, backward, clip, Adam, projection."""

  def __init__(self, cfg: Config, model: TorchDemoModel, stop_thr: float = POT_STOP_THR):
    self.cfg, self.model, self.stop_thr = cfg, model, stop_thr
    self.opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    self.iterations = 0

  def __call__(self, mel: torch.Tensor, text: torch.Tensor) -> float:
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    audio, text_emb = self.model(mel, text)
    loss, self.iterations = official_loss(
      audio, text_emb, self.model.metric, self.cfg.eps, self.stop_thr
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
    self.opt.step()
    with torch.no_grad():
      m = self.model.metric
      w, v = torch.linalg.eigh((m + m.T) / 2)
      m.copy_((v * torch.clamp(w, min=0.0)) @ v.T)
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
  return [Row("step", params_out, ours_t, ref_t, gap <= LOSS_ATOL)]
