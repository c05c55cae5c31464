"""The tower rows of the GPU benchmark (benchmarks/device/bench.py): ours vs torch, one
train-mode forward + backward, judged against the torch network run in float64.

``AudioTower``: the PANNs trunk (ResNet38; tiny: Cnn10) vs
``benchmarks.references.torch_panns.RefPanns``.
``TextTower``: BERT (base; tiny: 2 x 32) vs ``transformers.BertModel``.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks.device.common import Env, jax_sync, rel_error, timed, timing_cells, to_numpy


def _tower_agreement(mode, outs, ours_grads, ref_grads, truth_grads) -> dict:
  """out_err / grad_err (ours, torch) against the float64 truth, out_diff, and ``agree`` (fp32
  rows: ours within benchmarks/cpu/towers.py's factor + slack of torch; else None).
  ``outs`` = (ours, torch, float64) outputs; gradients as trees of our layout."""
  from benchmarks.cpu.towers import FACTOR, GRAD_SLACK, OUT_SLACK, _grad_error

  ours_out, ref_out, out64 = outs
  o_err, r_err = rel_error(ours_out, out64), rel_error(ref_out, out64)
  og_err, rg_err = _grad_error(ours_grads, truth_grads), _grad_error(ref_grads, truth_grads)
  return {
    "out_err": [o_err, r_err],
    "grad_err": [og_err, rg_err],
    "out_diff": rel_error(ours_out, ref_out),
    "agree": (
      bool(o_err <= FACTOR * r_err + OUT_SLACK and og_err <= FACTOR * rg_err + GRAD_SLACK)
      if mode == "fp32"
      else None
    ),
  }


def _torch_float64(model, call):
  """(output numpy, named float64 gradients on the CPU) of call(float64 copy of model)."""
  m64 = copy.deepcopy(model).double()
  for p in m64.parameters():
    p.grad = None
  bench = torch.backends.cudnn.benchmark
  torch.backends.cudnn.benchmark = False  # no autotuning of float64 convolutions (slow, once)
  try:
    out = to_numpy(call(m64, torch.float64))
  finally:
    torch.backends.cudnn.benchmark = bench
  grads = {n: p.grad.detach().cpu() for n, p in m64.named_parameters() if p.grad is not None}
  del m64
  return out, grads


class AudioTower:
  """ResNet38 (tiny: Cnn10) trunk, torch reference and its float64 truth, built once."""

  def __init__(self, env: Env):
    from benchmarks.references.torch_panns import RefPanns, panns_state_dict
    from mltm_jax.models.panns_convert import convert_state_dict

    self.env = env
    self.arch = "cnn10" if env.tiny else "resnet38"
    self.batch = 2 if env.tiny else 32
    self.frames = 64 if env.tiny else 1001
    rng = np.random.default_rng(0)
    self.mel = rng.normal(-35.0, 12.0, (self.batch, self.frames, 64)).astype(np.float32)
    torch.manual_seed(0)
    ref = RefPanns(self.arch, p_drop=0.0, p_block=0.0, p_fc=0.0).train()
    with torch.no_grad():
      for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          m.weight.uniform_(0.5, 1.5)
          m.bias.normal_(0.0, 0.3)
    params, self.stats = convert_state_dict(panns_state_dict(ref), self.arch)
    params.pop("fc1")
    self.params = jax.device_put(params)
    self.stats = jax.device_put(self.stats)
    self.probe = rng.normal(size=(self.batch, ref.fc1.in_features)).astype(np.float32)
    self.ref = ref.to(env.device)
    self.mel_t = torch.from_numpy(self.mel).to(env.device)
    self.probe_t = torch.from_numpy(self.probe).to(env.device)
    self._truth = None
    self._convert = lambda sd: convert_state_dict(sd, self.arch)[0]
    self._sd = lambda: panns_state_dict(ref)

  def to_ours(self, named_grads):
    sd = {k: v.detach().cpu() for k, v in self._sd().items()}
    sd.update({n: g.detach().cpu() for n, g in named_grads.items()})
    grads = self._convert(sd)
    grads.pop("fc1")
    return grads

  def forward_backward(self, net, dtype=torch.float32, mode="fp32"):
    with self.env.autocast(mode):
      emb = net(self.mel_t.to(dtype))[0]
    (emb.to(dtype) * self.probe_t.to(dtype)).sum().backward()
    return emb

  def truth(self):
    if self._truth is None:
      out64, grads64 = _torch_float64(self.ref, self.forward_backward)
      self._truth = (out64, self.to_ours(grads64))
      self.env.free()
    return self._truth

  def row(self, mode: str) -> dict:
    from mltm_jax.models.panns import PANNS_MODELS

    dtype = jnp.bfloat16 if mode == "bf16" else jnp.float32
    kw = {"block_dropout": 0.0} if self.arch == "resnet38" else {}
    model = PANNS_MODELS[self.arch](
      dropout=0.0, include_fc1=False, spec_augment=False, dtype=dtype, **kw
    )
    stats, probe = self.stats, jnp.asarray(self.probe)

    def loss_fn(p, x):
      emb, _ = model.apply(
        {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
      )
      return jnp.sum(emb * probe), emb

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    x = jnp.asarray(self.mel)
    ours_t, ((_, ours_emb), ours_grads) = timed(
      lambda: grad_fn(self.params, x), jax_sync, self.env.runs
    )

    def ref_call():
      for p in self.ref.parameters():
        p.grad = None
      return self.forward_backward(self.ref, mode=mode)

    ref_t, ref_emb = timed(ref_call, lambda o: (self.env.sync(), o)[1], self.env.runs)
    ref_grads = self.to_ours(
      {n: p.grad for n, p in self.ref.named_parameters() if p.grad is not None}
    )
    out64, truth = self.truth()
    outs = (np.asarray(ours_emb), to_numpy(ref_emb.float()), out64)
    row = {
      "name": "towers_audio",
      "mode": mode,
      "B": self.batch,
      "input": f"{self.arch} mel[{self.batch},{self.frames},64]",
      **timing_cells(ours_t, ref_t, self.batch),
      **_tower_agreement(mode, outs, jax.device_get(ours_grads), ref_grads, truth),
    }
    for p in self.ref.parameters():
      p.grad = None
    return row


class TextTower:
  """BERT-base (tiny: 2 x 32) from a config, torch reference and float64 truth per batch."""

  def __init__(self, env: Env):
    import transformers

    from benchmarks.cpu.towers import TINY_BERT
    from mltm_jax.models.hf_bert import load_bert_checkpoint

    self.env = env
    self.length = 8 if env.tiny else 32
    hf_cfg = transformers.BertConfig(
      **(TINY_BERT if env.tiny else {}), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    torch.manual_seed(0)
    ref = transformers.BertModel(hf_cfg, add_pooling_layer=False).train()
    with tempfile.TemporaryDirectory() as tmp:
      ref.save_pretrained(tmp)
      self.bert_cfg, params = load_bert_checkpoint(tmp)
    self.params = jax.device_put(params)
    self.ref = ref.to(env.device)
    self._truth: dict[int, Any] = {}

  def to_ours(self, named_grads):
    from safetensors.numpy import save_file

    from mltm_jax.models.hf_bert import load_bert_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
      (Path(tmp) / "config.json").write_text(json.dumps(self.ref.config.to_dict()))
      arrays = {n: g.detach().float().cpu().numpy().copy() for n, g in named_grads.items()}
      save_file(arrays, str(Path(tmp) / "model.safetensors"))
      return load_bert_checkpoint(tmp)[1]

  def inputs(self, batch: int):
    from benchmarks.cpu.towers import caption_tokens

    ids, mask, types_ = caption_tokens(batch, self.length, self.bert_cfg.vocab_size)
    probe = np.random.default_rng(1).normal(size=(batch, self.bert_cfg.hidden_size))
    return ids, mask, types_, probe.astype(np.float32)

  def forward_backward(self, batch, net, dtype=torch.float32, mode="fp32"):
    ids, mask, types_, probe = self.inputs(batch)
    dev = self.env.device
    t = lambda a: torch.from_numpy(a).long().to(dev)
    with self.env.autocast(mode):
      out = net(input_ids=t(ids), attention_mask=t(mask), token_type_ids=t(types_))
      cls = out.last_hidden_state[:, 0]
    (cls.to(dtype) * torch.from_numpy(probe).to(dev, dtype)).sum().backward()
    return cls

  def truth(self, batch: int):
    if batch not in self._truth:
      call = lambda net, dtype: self.forward_backward(batch, net, dtype)
      out64, grads64 = _torch_float64(self.ref, call)
      self._truth[batch] = (out64, self.to_ours(grads64))
      self.env.free()
    return self._truth[batch]

  def row(self, mode: str, batch: int) -> dict:
    from mltm_jax.models.bert import BertEncoder, pool_text

    dtype = jnp.bfloat16 if mode == "bf16" else jnp.float32
    ids, mask, types_, probe = self.inputs(batch)
    model = BertEncoder(self.bert_cfg, dtype=dtype)
    ids, mask, types_, probe_j = map(jnp.asarray, (ids, mask, types_, probe))

    def loss_fn(p):
      hidden = model.apply({"params": p}, ids, mask, types_, deterministic=False)
      cls = pool_text(hidden, mask, "cls")
      return jnp.sum(cls * probe_j), cls

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    ours_t, ((_, ours_cls), ours_grads) = timed(
      lambda: grad_fn(self.params), jax_sync, self.env.runs
    )
    t_ids, t_mask, t_types = (
      torch.from_numpy(np.array(a)).long().to(self.env.device) for a in (ids, mask, types_)
    )
    t_probe = torch.from_numpy(probe).to(self.env.device)

    def ref_call():
      for p in self.ref.parameters():
        p.grad = None
      with self.env.autocast(mode):
        out = self.ref(input_ids=t_ids, attention_mask=t_mask, token_type_ids=t_types)
        cls = out.last_hidden_state[:, 0]
      (cls.float() * t_probe).sum().backward()
      return cls

    ref_t, ref_cls = timed(ref_call, lambda o: (self.env.sync(), o)[1], self.env.runs)
    ref_grads = self.to_ours({n: p.grad for n, p in self.ref.named_parameters()})
    out64, truth = self.truth(batch)
    outs = (np.asarray(ours_cls), to_numpy(ref_cls.float()), out64)
    cfg = self.bert_cfg
    row = {
      "name": "towers_text",
      "mode": mode,
      "B": batch,
      "input": f"bert {cfg.num_hidden_layers}x{cfg.hidden_size} tokens[{batch},{self.length}]",
      **timing_cells(ours_t, ref_t, batch),
      **_tower_agreement(mode, outs, jax.device_get(ours_grads), ref_grads, truth),
    }
    for p in self.ref.parameters():
      p.grad = None
    return row
