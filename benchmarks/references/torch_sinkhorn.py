"""POT's Sinkhorn in torch: the reference solver where POT is not installed (the GPU machine).

``torch_sinkhorn`` is POT 0.9.7's ``ot.bregman.sinkhorn_knopp`` (what ``ot.sinkhorn`` runs by
default) line for line; tests/test_device_bench.py checks it against POT to 1e-12.
"""

from __future__ import annotations

import warnings

import torch


def torch_sinkhorn(a, b, M, reg, numItermax=1000, stopThr=1e-9, log=False, warn=True, **_):
  """POT 0.9.7 ``ot.bregman.sinkhorn_knopp`` (what ``ot.sinkhorn`` runs by default), in torch.

  a [n], b [m], M [n, m] torch tensors (same device) -> the plan [n, m] (and POT's log dict
  with ``niter`` when ``log``). Autograd flows through the iterations, as with POT's torch
  backend. Like POT, it checks for numerical errors every iteration and the L2 error of the
  column marginal every 10th iteration (each a host synchronisation on a GPU).
  """
  dim_a, dim_b = a.shape[0], b.shape[0]
  u = torch.ones(dim_a, dtype=M.dtype, device=M.device) / dim_a
  v = torch.ones(dim_b, dtype=M.dtype, device=M.device) / dim_b
  K = torch.exp(M / (-reg))
  Kp = (1 / a).reshape(-1, 1) * K
  info = {"err": []}
  ii = 0
  for ii in range(numItermax):
    uprev, vprev = u, v
    ktu = K.T @ u
    v = b / ktu
    u = 1.0 / (Kp @ v)
    if bool(
      torch.any(ktu == 0)
      or torch.any(torch.isnan(u))
      or torch.any(torch.isnan(v))
      or torch.any(torch.isinf(u))
      or torch.any(torch.isinf(v))
    ):
      if warn:
        warnings.warn(f"Warning: numerical errors at iteration {ii}", stacklevel=2)
      u, v = uprev, vprev
      break
    if ii % 10 == 0:
      err = torch.linalg.norm(torch.einsum("i,ij,j->j", u, K, v) - b)
      info["err"].append(err)
      if err < stopThr:
        break
  info["niter"], info["u"], info["v"] = ii, u, v
  plan = u.reshape(-1, 1) * K * v.reshape(1, -1)
  return (plan, info) if log else plan
