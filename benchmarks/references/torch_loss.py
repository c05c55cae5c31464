"""The official m-LTM loss and PSD projection in torch (the references' side), POT-free.

The Sinkhorn solver is an argument: ``ot.sinkhorn`` (POT, benchmarks/cpu/bench_step.py on
CPU) or ``benchmarks.references.torch_sinkhorn.torch_sinkhorn`` (its torch copy, the GPU
benchmark), so this module imports on a machine without POT.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

POT_STOP_THR = 1e-5  # L2 column-marginal error, checked every 10 iterations
POT_MAX_ITER = 1000  # the official default
# Largest [rows, B, D] block of differences the reference materialises at once.
REF_BLOCK_ELEMENTS = 1 << 27


def official_cost(u: torch.Tensor, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
  """[B, D], [B', D], [D, D] -> [B, B'] ``sqrt((u_i - v_j) M (u_i - v_j)^T)``.

  The official code's broadcast: differences [rows, B', D], times M, times the
  differences, summed over D; in row blocks of at most REF_BLOCK_ELEMENTS.
  """
  rows = max(1, REF_BLOCK_ELEMENTS // (v.shape[0] * u.shape[1]))
  parts = []
  for start in range(0, u.shape[0], rows):
    diff = u[start : start + rows, None, :] - v[None, :, :]
    parts.append(((diff @ m) * diff).sum(-1))
  return torch.sqrt(torch.clamp(torch.cat(parts), min=1e-12))


def official_loss(
  audio: torch.Tensor,
  text: torch.Tensor,
  m: torch.Tensor,
  eps: float,
  sinkhorn: Callable,
  stop_thr: float = POT_STOP_THR,
):
  """(loss, Sinkhorn iterations): audio [B, D], text [B, D], M [D, D] -> the official cost /
  its max -> ``sinkhorn`` (POT's signature, kernel domain, uniform marginals) -> -mean log
  P_ii; in float32, on the tensors' device."""
  cost = official_cost(audio.float(), text.float(), m)
  cost = cost / cost.max()
  b = cost.shape[0]
  w = torch.full((b,), 1.0 / b, dtype=cost.dtype, device=cost.device)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    plan, log = sinkhorn(
      w, w, cost, eps, numItermax=POT_MAX_ITER, stopThr=stop_thr, log=True, warn=False
    )
  return -torch.log(torch.diagonal(plan)).mean(), int(log["niter"]) + 1


def project_psd_(m: torch.Tensor) -> None:
  """M [D, D] <- V max(w, 0) V^T of its symmetric part (``torch.linalg.eigh``), in place."""
  with torch.no_grad():
    w, v = torch.linalg.eigh((m + m.T) / 2)
    m.copy_((v * torch.clamp(w, min=0.0)) @ v.T)


def adam_with_metric_rate(params, metric: torch.Tensor, cfg) -> torch.optim.Adam:
  """torch Adam over ``params`` at cfg.learning_rate, M (``metric``, one of them) at
  cfg.metric_learning_rate when > 0: ours' optax.multi_transform groups."""
  params = list(params)
  rest = [p for p in params if p is not metric]
  groups = [{"params": rest}, {"params": [p for p in params if p is metric]}]
  groups[1]["lr"] = cfg.metric_learning_rate or cfg.learning_rate
  return torch.optim.Adam(groups, lr=cfg.learning_rate)
