"""Torch mirror of the demo model (temporal_cnn tower, projection heads, M), torch only.

``TorchDemoModel(cfg, text_features)`` mirrors ``mltm_jax/models/temporal_cnn.py`` and
``heads.py`` (Conv1d with "SAME" padding, BatchNorm, ReLU, dropout, max + mean pooling;
SpecAugment stripes); ``load_from_flax`` copies our parameters into it. Used by the CPU step
benchmark (benchmarks/cpu/bench_step.py, bench_memory.py) and the GPU one
(benchmarks/device/steps.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mltm_jax.config import Config


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
