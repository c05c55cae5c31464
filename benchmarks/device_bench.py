"""GPU benchmark of the paper's towers (issue #3) and the train step (issue #6), ours vs PyTorch.

  python -m benchmarks.device_bench [--out=FILE] [--only=towers,step] [--rows=LABEL,...]
                                    [--budget_s=N] [--tiny]

One process, one GPU shared by JAX and torch (same weights, same inputs). Rows, by priority
(a row is skipped, and listed as such, when the time budget is near; each row's failure is
recorded and the next row runs):

  towers_audio  PANNs ResNet38 trunk (no fc1) on log-mels [B, 1001, 64], B = 32: one training
                forward + backward (train-mode batch norm, dropout and SpecAugment off, loss =
                sum(embedding * fixed probe), gradients w.r.t. every parameter). Reference:
                ``benchmarks.torch_panns.RefPanns`` on cuda, its weights converted by
                ``panns_convert.convert_state_dict`` (as benchmarks/towers.py does on CPU).
  towers_text   BERT-base (``transformers.BertConfig()``, random weights, dropout 0) on [B, 32]
                tokens (varied lengths, masked) -> [CLS]; ours reads transformers' weights back
                through ``hf_bert.load_bert_checkpoint``. B = 32 (and 128 last, if time allows).
  step_demo     the demo train step (``Config()``: temporal_cnn on [128, 251, 64] log-mels +
                cached text features [128, 384] -> heads -> m-LTM loss -> clip -> Adam -> PSD
                projection), ours ``make_train_step`` vs the torch mirror of benchmarks/bench_step.py.
  step_paper    the paper step at B = 32: ResNet38 on 10-s log-mels [32, 1001, 64] + BERT-base
                fine-tuned on [32, 32] tokens ([CLS]) -> heads 2048|768 -> 2048 -> 1024 -> full-M
                m-LTM loss (eps 0.05, cost / max) -> clip 2.0 -> Adam 5e-5 -> PSD projection of
                the 1024 x 1024 M (configs/audiocaps_mltm.flags). Reference: RefPanns +
                transformers' BertModel + bench_step's TorchHead + the official loss, on cuda.

Both step rows run with dropout and SpecAugment OFF on both sides (one compiled program per
row serves the agreement check and the timing; the masks are elementwise work, the same on
both sides). Our AudioTower does not pass a block dropout to ResNet38 (default 0.1), so the
paper step builds it with block_dropout 0 (``_no_block_dropout``). The reference's Sinkhorn is
``torch_sinkhorn``: POT 0.9.7's ``sinkhorn_knopp`` (what ``ot.sinkhorn`` runs) line for line in
torch (kernel domain, autograd through the iterations, the per-iteration numerical check and the
every-10-iterations marginal-error stop at stopThr 1e-5, at most 1000 iterations); POT itself is
not installed on the GPU machine. When POT is absent, a module ``ot`` exposing this function is
registered so that benchmarks/bench_step.py (which imports ``ot``) can be imported for its torch
mirror of the demo model.

Precision modes (each row names one):
  fp32  JAX ``default_matmul_precision('float32')``; torch TF32 off (matmul and cuDNN).
  tf32  both at their TF32-allowing settings: JAX's default precision, torch
        ``allow_tf32 = True`` for matmul and cuDNN (rows after the others).
  bf16  ours: the modules' ``dtype=bfloat16`` (``Config.precision='bfloat16'`` for the steps),
        params float32; torch: ``torch.autocast(dtype=bfloat16)`` around the towers and heads
        (the loss in float32). The float32 parts (loss, optimizer) at the tf32 settings.
torch runs with ``cudnn.benchmark = True`` (its conv autotuning, as XLA autotunes).

Agreement. towers: the truth is the torch network run once in float64; ``out_err`` = max|y -
y64| / max|y64| ours/torch, ``grad_err`` the largest over parameters of max|g - g64| / max|g64|
(benchmarks/towers.py's definition) ours/torch, ``out_diff`` = max|ours - torch| / max|torch|;
``agree`` when ours <= 2 x torch + slack (as benchmarks/towers.py). steps: the losses of two
consecutive steps from the same weights (the second checks gradients, clipping, Adam and the
projection), ours/torch, ``agree`` when within 1e-4. ``agree`` is judged on fp32 rows only
(null on bf16 / tf32 rows, whose errors are reported). Timing: two untimed calls (compilation, autotuning), then >= 10
timed calls, each synchronised (``jax.block_until_ready`` / ``torch.cuda.synchronize``);
median, min, max; ``first_call_s`` = the first call (our compile time included).

Output: ``--out`` (default $OUT/device_bench.json, or device_bench.json) rewritten after every
row; a table on stdout at the end. ``--tiny``: toy shapes on CPU (Cnn10, a 2-layer BERT of width
32, small batches; a test of the plumbing, numbers meaningless). Without --tiny the script
refuses to run unless JAX and torch both see a GPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import app, flags

SECTIONS = ("towers", "step")
STEP_ATOL = 1e-4  # fp32 rows; the others report their gap
POT_STOP_THR, POT_MAX_ITER = 1e-5, 1000  # as benchmarks/bench_step.py
RUNS, TINY_RUNS = 10, 3
PAPER_FLAGS = Path(__file__).resolve().parent.parent / "configs" / "audiocaps_mltm.flags"
PATH_FIELDS = ("dataset", "data_dir", "audio_init", "text_encoder_dir", "workdir")

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "JSON output (default $OUT/device_bench.json or ./...).")
flags.DEFINE_list("only", None, f"Sections to run (default all): {', '.join(SECTIONS)}.")
flags.DEFINE_float("budget_s", 290.0, "Skip the remaining rows when this would be exceeded.")
flags.DEFINE_list("rows", None, "Only these rows (labels as logged, e.g. 'step_paper fp32').")
flags.DEFINE_bool("tiny", False, "Toy shapes on CPU (a smoke test; numbers meaningless).")


# ----------------------------------------------------------------------------- POT mirror


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


def _ensure_ot_importable() -> str:
  """POT's version, or registers a module ``ot`` with ``sinkhorn = torch_sinkhorn`` (so that
  benchmarks.bench_step, which imports ``ot``, imports where POT is not installed)."""
  if "ot" not in sys.modules and importlib.util.find_spec("ot") is None:
    shim = types.ModuleType("ot")
    shim.sinkhorn = torch_sinkhorn
    shim.__version__ = "absent (benchmarks.device_bench.torch_sinkhorn)"
    sys.modules["ot"] = shim
  return sys.modules["ot"].__version__ if "ot" in sys.modules else "installed"


# ----------------------------------------------------------------------------- plumbing


@dataclasses.dataclass
class Env:
  tiny: bool
  device: torch.device
  budget_s: float
  runs: int = RUNS
  start: float = dataclasses.field(default_factory=time.perf_counter)

  @property
  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def sync(self) -> None:
    if self.device.type == "cuda":
      torch.cuda.synchronize()

  def autocast(self, mode: str):
    if mode != "bf16":
      return contextlib.nullcontext()
    return torch.autocast(self.device.type, dtype=torch.bfloat16)

  def free(self) -> None:
    import gc

    gc.collect()
    if self.device.type == "cuda":
      torch.cuda.empty_cache()


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed(fn: Callable[[], Any], sync: Callable[[Any], Any], runs: int, warmup: int = 2):
  """({median_s, min_s, max_s, runs, first_call_s}, last output): warm-up calls untimed."""
  out = None
  first = None
  for _ in range(warmup):
    t0 = time.perf_counter()
    out = sync(fn())
    if first is None:
      first = time.perf_counter() - t0
      log(f"  first call {first:.2f} s")
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    out = sync(fn())
    times.append(time.perf_counter() - t0)
  stats = {
    "median_s": statistics.median(times),
    "min_s": min(times),
    "max_s": max(times),
    "runs": len(times),
    "first_call_s": first,
  }
  return stats, out


def jax_sync(out):
  return jax.block_until_ready(out)


@contextlib.contextmanager
def precision_mode(mode: str):
  """JAX matmul precision and torch TF32 flags of a mode (restored afterwards)."""
  old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
  tf32 = mode in ("tf32", "bf16")
  torch.backends.cuda.matmul.allow_tf32 = tf32
  torch.backends.cudnn.allow_tf32 = tf32
  try:
    if mode == "fp32":
      with _jax_matmul_precision("float32"):  # dots and convolutions: no TF32
        yield
    else:
      yield
  finally:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def _jax_matmul_precision(value: str):
  """``jax.default_matmul_precision(value)``, or the config option where that is absent."""
  ctx = getattr(jax, "default_matmul_precision", None)
  if ctx is not None:
    with ctx(value):
      yield
    return
  old = jax.config.jax_default_matmul_precision
  jax.config.update("jax_default_matmul_precision", value)
  try:
    yield
  finally:
    jax.config.update("jax_default_matmul_precision", old)


def _rel(y, ref) -> float:
  y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
  return float(np.max(np.abs(y - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def _np(t: torch.Tensor) -> np.ndarray:
  return t.detach().cpu().numpy()


def _timing_cells(ours: dict, ref: dict, batch: int) -> dict:
  return {
    "ours": ours,
    "ref": ref,
    "ours_samples_s": batch / ours["median_s"],
    "ref_samples_s": batch / ref["median_s"],
    "ratio": ref["median_s"] / ours["median_s"],  # > 1: ours faster
  }


# ----------------------------------------------------------------------------- towers


def _tower_agreement(mode, outs, ours_grads, ref_grads, truth_grads) -> dict:
  from benchmarks.towers import FACTOR, GRAD_SLACK, OUT_SLACK, _grad_error

  ours_out, ref_out, out64 = outs
  o_err, r_err = _rel(ours_out, out64), _rel(ref_out, out64)
  og_err, rg_err = _grad_error(ours_grads, truth_grads), _grad_error(ref_grads, truth_grads)
  return {
    "out_err": [o_err, r_err],
    "grad_err": [og_err, rg_err],
    "out_diff": _rel(ours_out, ref_out),
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
    out = _np(call(m64, torch.float64))
  finally:
    torch.backends.cudnn.benchmark = bench
  grads = {n: p.grad.detach().cpu() for n, p in m64.named_parameters() if p.grad is not None}
  del m64
  return out, grads


class AudioTower:
  """ResNet38 (tiny: Cnn10) trunk, torch reference and its float64 truth, built once."""

  def __init__(self, env: Env):
    from benchmarks.torch_panns import RefPanns, panns_state_dict
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
    outs = (np.asarray(ours_emb), _np(ref_emb.float()), out64)
    row = {
      "name": "towers_audio",
      "mode": mode,
      "B": self.batch,
      "input": f"{self.arch} mel[{self.batch},{self.frames},64]",
      **_timing_cells(ours_t, ref_t, self.batch),
      **_tower_agreement(mode, outs, jax.device_get(ours_grads), ref_grads, truth),
    }
    for p in self.ref.parameters():
      p.grad = None
    return row


class TextTower:
  """BERT-base (tiny: 2 x 32) from a config, torch reference and float64 truth per batch."""

  def __init__(self, env: Env):
    import transformers

    from benchmarks.towers import TINY_BERT
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
    from benchmarks.towers import caption_tokens

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
    outs = (np.asarray(ours_cls), _np(ref_cls.float()), out64)
    cfg = self.bert_cfg
    row = {
      "name": "towers_text",
      "mode": mode,
      "B": batch,
      "input": f"bert {cfg.num_hidden_layers}x{cfg.hidden_size} tokens[{batch},{self.length}]",
      **_timing_cells(ours_t, ref_t, batch),
      **_tower_agreement(mode, outs, jax.device_get(ours_grads), ref_grads, truth),
    }
    for p in self.ref.parameters():
      p.grad = None
    return row


# ----------------------------------------------------------------------------- steps


def official_loss(audio, text, m, eps: float):
  """(loss, iterations): the official cost / max -> Sinkhorn (POT's algorithm) -> -mean log
  P_ii, on the tensors' device, in float32."""
  from benchmarks.bench_loss import official_cost

  cost = official_cost(audio.float(), text.float(), m)
  cost = cost / cost.max()
  b = cost.shape[0]
  w = torch.full((b,), 1.0 / b, dtype=cost.dtype, device=cost.device)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    plan, info = torch_sinkhorn(
      w, w, cost, eps, numItermax=POT_MAX_ITER, stopThr=POT_STOP_THR, log=True, warn=False
    )
  return -torch.log(torch.diagonal(plan)).mean(), int(info["niter"]) + 1


class TorchTrainStep:
  """forward (autocast in bf16) -> official loss -> backward -> clip -> Adam -> M <- PSD(M)."""

  def __init__(self, env: Env, cfg, model, params, forward, mode: str):
    self.env, self.cfg, self.model, self.params = env, cfg, model, list(params)
    self.forward, self.mode = forward, mode
    self.opt = torch.optim.Adam(self.params, lr=cfg.learning_rate)
    self.iterations = 0

  def __call__(self) -> torch.Tensor:
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    with self.env.autocast(self.mode):
      audio, text = self.forward()
    loss, self.iterations = official_loss(audio, text, self.model.metric, self.cfg.eps)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
    self.opt.step()
    with torch.no_grad():
      m = self.model.metric
      w, v = torch.linalg.eigh((m + m.T) / 2)
      m.copy_((v * torch.clamp(w, min=0.0)) @ v.T)
    return loss.detach()


class JaxTrainStep:
  """Our jit-compiled train step on one device, its state chained (donated)."""

  def __init__(self, cfg, audio_tower, text_tower, params, stats, batch: dict):
    from mltm_jax.train import state as state_lib
    from mltm_jax.train.step import make_mesh, make_train_step, replicated, to_global

    mesh = make_mesh(jax.devices()[:1])
    tx = state_lib.make_optimizer(cfg)
    start = state_lib.create_state(cfg, params, stats, tx, jax.random.PRNGKey(1))
    self.state = jax.device_put(start, replicated(mesh))
    self.step = make_train_step(cfg, audio_tower, text_tower, tx, mesh)
    self.batch = to_global(mesh, batch)

  def __call__(self):
    self.state, metrics = self.step(self.state, self.batch)
    return metrics


def _step_row(env, name, mode, cfg, ours: JaxTrainStep, ref: TorchTrainStep, info: dict) -> dict:
  """Agreement (two steps each from the same weights), then the timings, continuing."""
  t0 = time.perf_counter()
  ref_losses = [float(ref())]
  ref_first = time.perf_counter() - t0
  ref_losses.append(float(ref()))
  t0 = time.perf_counter()
  metrics = [jax.device_get(ours())]
  ours_first = time.perf_counter() - t0  # compilation included
  metrics.append(jax.device_get(ours()))
  our_losses = [float(m["loss"]) for m in metrics]
  gap = max(abs(a - b) for a, b in zip(our_losses, ref_losses, strict=True))
  ours_t, last = timed(ours, jax_sync, env.runs, warmup=1)
  ref_t, _ = timed(ref, lambda o: (env.sync(), o)[1], env.runs, warmup=1)
  ours_t["first_call_s"], ref_t["first_call_s"] = ours_first, ref_first
  b = cfg.batch_size
  return {
    "name": name,
    "mode": mode,
    "B": b,
    "D": cfg.embed_dim,
    **info,
    **_timing_cells(ours_t, ref_t, b),
    "loss_0": [our_losses[0], ref_losses[0]],
    "loss_1": [our_losses[1], ref_losses[1]],
    "max_loss_gap": gap,
    "ot_iterations": [int(metrics[-1]["ot_iterations"]), ref.iterations],
    "skipped_updates": int(last["skipped"]),
    "agree": bool(gap <= STEP_ATOL) if mode == "fp32" else None,
  }


def demo_step_row(env: Env, mode: str) -> dict:
  from benchmarks.bench_step import TorchDemoModel, load_from_flax
  from benchmarks.demo_step import TEXT_FEATURES, TINY_TEXT_FEATURES, bench_config, demo_inputs
  from mltm_jax.models.two_tower import build_towers

  precision = "bfloat16" if mode == "bf16" else "float32"
  cfg = bench_config(env.tiny).replace(dropout=0.0, spec_augment=False, precision=precision)
  text_dim = TINY_TEXT_FEATURES if env.tiny else TEXT_FEATURES
  with jax.default_device(jax.devices("cpu")[0]):  # eager init: many tiny ops, on the host
    params, stats, batch = demo_inputs(cfg, text_dim)
    params, stats = jax.device_get((params, stats))
  model = TorchDemoModel(cfg, text_dim)
  load_from_flax(model, params, stats)
  model.to(env.device)
  mel = torch.from_numpy(batch["audio"]).to(env.device)
  text = torch.from_numpy(batch["text"]).to(env.device)
  ref = TorchTrainStep(env, cfg, model, model.parameters(), lambda: model(mel, text), mode)
  audio_tower, text_tower = build_towers(cfg, None)
  ours = JaxTrainStep(cfg, audio_tower, text_tower, params, stats, batch)
  frames = batch["audio"].shape[1]
  info = {"input": f"temporal_cnn {cfg.cnn_channels} mel[{cfg.batch_size},{frames},64]"}
  return _step_row(env, "step_demo", mode, cfg, ours, ref, info)


def paper_config(tiny: bool, mode: str):
  """configs/audiocaps_mltm.flags (paths dropped), B = 32, dropout and SpecAugment off."""
  from mltm_jax.config import Config

  fields = {f.name: f for f in dataclasses.fields(Config)}
  base, values = Config(), {}
  for line in PAPER_FLAGS.read_text().splitlines():
    line = line.strip()
    if not line.startswith("--") or "=" not in line:
      continue
    key, value = line[2:].split("=", 1)
    if key in PATH_FIELDS or key not in fields:
      continue
    kind = type(getattr(base, key))
    values[key] = value.lower() == "true" if kind is bool else kind(value)
  cfg = dataclasses.replace(base, **values).replace(
    dropout=0.0,
    spec_augment=False,
    batch_size=32,
    precision="bfloat16" if mode == "bf16" else "float32",
  )
  if tiny:
    cfg = cfg.replace(audio_encoder="cnn10", embed_dim=32, head_hidden=64, batch_size=4)
  return cfg


@contextlib.contextmanager
def _no_block_dropout():
  """AudioTower builds PANNS_MODELS[name](...) without a block dropout (ResNet38: 0.1 by
  default); the deterministic paper step needs it at 0. Restored on exit."""
  from mltm_jax.models import panns

  old = panns.PANNS_MODELS["resnet38"]
  panns.PANNS_MODELS["resnet38"] = functools.partial(old, block_dropout=0.0)
  try:
    yield
  finally:
    panns.PANNS_MODELS["resnet38"] = old


class PaperTorchModel(torch.nn.Module):
  """RefPanns trunk + BertModel ([CLS]) + the two heads + M (bench_step's TorchHead)."""

  def __init__(self, panns_net, bert, cfg):
    from benchmarks.bench_step import TorchHead

    super().__init__()
    self.panns, self.bert = panns_net, bert
    width, hidden = panns_net.fc1.in_features, bert.config.hidden_size
    self.audio_head = TorchHead(width, cfg.head_hidden, cfg.embed_dim, 0.0)
    self.text_head = TorchHead(hidden, cfg.head_hidden, cfg.embed_dim, 0.0)
    self.metric = torch.nn.Parameter(torch.eye(cfg.embed_dim))

  def forward(self, mel, ids, mask, types_):
    audio = self.panns(mel)[0]
    out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types_)
    return self.audio_head(audio), self.text_head(out.last_hidden_state[:, 0])

  def trained_parameters(self):
    """Everything our step trains (not PANNs' fc1 / fc_audioset, which ours does not have)."""
    skip = ("panns.fc1.", "panns.fc_audioset.")
    return [p for n, p in self.named_parameters() if not n.startswith(skip)]


def _head_params(head) -> dict:
  t = lambda x: np.ascontiguousarray(_np(x), np.float32)
  return {
    fc: {"kernel": t(getattr(head, fc).weight).T.copy(), "bias": t(getattr(head, fc).bias)}
    for fc in ("fc1", "fc2")
  }


def paper_step_row(env: Env, mode: str) -> dict:
  import transformers

  from benchmarks.torch_panns import RefPanns, panns_state_dict
  from benchmarks.towers import TINY_BERT, caption_tokens
  from mltm_jax.models.hf_bert import load_bert_checkpoint
  from mltm_jax.models.panns_convert import convert_state_dict
  from mltm_jax.models.two_tower import build_towers
  from mltm_jax.train import state as state_lib

  cfg = paper_config(env.tiny, mode)
  b, frames = cfg.batch_size, (64 if env.tiny else 1 + cfg.clip_samples // cfg.hop_length)
  length = 8 if env.tiny else cfg.max_text_length
  torch.manual_seed(0)
  ref_panns = RefPanns(cfg.audio_encoder, p_drop=0.0, p_block=0.0, p_fc=0.0)
  hf_cfg = transformers.BertConfig(
    **(TINY_BERT if env.tiny else {}), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
  )
  bert = transformers.BertModel(hf_cfg, add_pooling_layer=False)
  model = PaperTorchModel(ref_panns, bert, cfg)

  trunk, trunk_stats = convert_state_dict(panns_state_dict(ref_panns), cfg.audio_encoder)
  trunk.pop("fc1")
  with tempfile.TemporaryDirectory() as tmp:
    bert.save_pretrained(tmp)
    bert_cfg, bert_params = load_bert_checkpoint(tmp)
  params = {
    "audio": {"cnn": trunk, "head": _head_params(model.audio_head)},
    "text": {"encoder": bert_params, "head": _head_params(model.text_head)},
    "metric": {"M": np.eye(cfg.embed_dim, dtype=np.float32)},
    "loss": {},
  }
  params = jax.tree.map(np.array, params)  # copies: nothing shared with torch's storage
  stats = jax.tree.map(np.array, {"cnn": trunk_stats})
  ids, mask, types_ = caption_tokens(b, length, bert_cfg.vocab_size, seed=2)
  mel = np.random.default_rng(3).normal(-35.0, 12.0, (b, frames, cfg.n_mels)).astype(np.float32)
  batch = {
    "audio": mel,
    "text": {"input_ids": ids, "attention_mask": mask, "token_type_ids": types_},
  }
  with _no_block_dropout():
    audio_tower, text_tower = build_towers(cfg, bert_cfg)
    # Our layout must be exactly what init would create (shapes only, nothing computed).
    shapes = jax.eval_shape(
      lambda r: state_lib.init_params(
        cfg, audio_tower, text_tower, jax.tree.map(lambda x: x[:2], batch["text"]), r
      ),
      jax.random.PRNGKey(0),
    )
    mine = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), (params, stats))
    want = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), shapes)
    if mine != want:
      raise ValueError("paper step: converted parameters do not match our init's layout")
    ours = JaxTrainStep(cfg, audio_tower, text_tower, params, stats, batch)
    model.to(env.device)
    dev = env.device
    t_mel = torch.from_numpy(mel).to(dev)
    t_tok = [torch.from_numpy(a).long().to(dev) for a in (ids, mask, types_)]
    ref = TorchTrainStep(
      env, cfg, model, model.trained_parameters(), lambda: model(t_mel, *t_tok), mode
    )
    info = {
      "input": f"{cfg.audio_encoder} mel[{b},{frames},{cfg.n_mels}] + bert "
      f"{bert_cfg.num_hidden_layers}x{bert_cfg.hidden_size} tokens[{b},{length}]",
    }
    return _step_row(env, "step_paper", mode, cfg, ours, ref, info)


# ----------------------------------------------------------------------------- driver


@dataclasses.dataclass
class Plan:
  section: str
  label: str
  est_s: float  # a guess of the row's wall time on an H200 (compilation included)
  fn: Callable[[], dict]


def plan_rows(env: Env) -> list[Plan]:
  cache: dict[str, Any] = {}

  def audio():
    if "audio" not in cache:
      cache["audio"] = AudioTower(env)
    return cache["audio"]

  def text():
    if "text" not in cache:
      cache["text"] = TextTower(env)
    return cache["text"]

  big = 8 if env.tiny else 128
  small = 2 if env.tiny else 32
  return [
    Plan("towers", "towers_audio fp32", 90, lambda: audio().row("fp32")),
    Plan("towers", "towers_text fp32", 35, lambda: text().row("fp32", small)),
    Plan("step", "step_demo fp32", 30, lambda: demo_step_row(env, "fp32")),
    Plan("step", "step_paper fp32", 100, lambda: paper_step_row(env, "fp32")),
    Plan("towers", "towers_audio bf16", 50, lambda: audio().row("bf16")),
    Plan("towers", "towers_text bf16", 25, lambda: text().row("bf16", small)),
    Plan("step", "step_paper bf16", 80, lambda: paper_step_row(env, "bf16")),
    Plan("step", "step_demo bf16", 25, lambda: demo_step_row(env, "bf16")),
    Plan("towers", "towers_audio tf32", 50, lambda: audio().row("tf32")),
    Plan("towers", "towers_text tf32", 25, lambda: text().row("tf32", small)),
    Plan("towers", f"towers_text fp32 B={big}", 30, lambda: text().row("fp32", big)),
    Plan("towers", f"towers_text bf16 B={big}", 25, lambda: text().row("bf16", big)),
  ]


def select(plans: list[Plan], sections, rows=None) -> list[Plan]:
  """The plans of the given sections whose label is one of ``rows`` (None: all)."""
  return [p for p in plans if p.section in sections and (not rows or p.label in rows)]


def machine(env: Env) -> dict:
  import flax
  import optax

  info = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "python": platform.python_version(),
    "cpus": os.cpu_count(),
    "jax": jax.__version__,
    "jax_backend": jax.default_backend(),
    "jax_device": str(jax.devices()[0].device_kind),
    "flax": flax.__version__,
    "optax": optax.__version__,
    "torch": torch.__version__,
    "torch_device": torch.cuda.get_device_name() if env.device.type == "cuda" else "cpu",
    "ot_module": _ensure_ot_importable(),
    "reference_sinkhorn": "benchmarks.device_bench.torch_sinkhorn (POT 0.9.7 sinkhorn_knopp)",
    "tiny": env.tiny,
    "budget_s": env.budget_s,
  }
  try:
    import ott

    info["ott"] = ott.__version__
  except Exception as e:  # noqa: BLE001  (reported, the step rows will fail on it)
    info["ott"] = f"import failed: {e}"
  return info


def _fmt_s(s: float) -> str:
  return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def format_table(rows: list[dict]) -> str:
  header = ("row", "mode", "B", "ours", "torch", "samples/s ours/torch", "ratio", "check", "agree")
  lines = []
  for r in rows:
    if "ours" not in r:
      continue
    if "out_err" in r:
      check = (
        f"out_err {r['out_err'][0]:.2g}/{r['out_err'][1]:.2g} "
        f"grad_err {r['grad_err'][0]:.2g}/{r['grad_err'][1]:.2g} diff {r['out_diff']:.2g}"
      )
    else:
      check = (
        f"loss gap {r['max_loss_gap']:.2g} iters {r['ot_iterations'][0]}/{r['ot_iterations'][1]}"
      )
    cell = lambda t: f"{_fmt_s(t['median_s'])} [{_fmt_s(t['min_s'])}-{_fmt_s(t['max_s'])}]"
    lines.append(
      (
        r["name"],
        r["mode"],
        str(r["B"]),
        cell(r["ours"]),
        cell(r["ref"]),
        f"{r['ours_samples_s']:.4g}/{r['ref_samples_s']:.4g}",
        f"{r['ratio']:.3g}x",
        check,
        {True: "yes", False: "NO", None: "-"}[r["agree"]],
      )
    )
  widths = [max(len(x) for x in col) for col in zip(header, *lines)]
  fmt = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
  return "\n".join([fmt(header), "-+-".join("-" * w for w in widths), *map(fmt, lines)])


def default_out() -> Path:
  return (
    Path(os.environ["OUT"]) / "device_bench.json"
    if os.environ.get("OUT")
    else Path("device_bench.json")
  )


def run(tiny: bool, out: Path, sections=SECTIONS, budget_s: float = 290.0, rows=None) -> dict:
  """Runs the planned rows (``rows``: their labels, None = all), rewriting ``out`` after each
  row; returns the JSON document."""
  device = torch.device("cpu" if tiny else "cuda")
  env = Env(tiny=tiny, device=device, budget_s=budget_s, runs=TINY_RUNS if tiny else RUNS)
  torch.backends.cudnn.benchmark = True
  plans = plan_rows(env)
  unknown = sorted(set(rows or ()) - {p.label for p in plans})
  if unknown:
    raise ValueError(
      f"--rows: unknown row(s) {', '.join(unknown)}; choose from {', '.join(p.label for p in plans)}"
    )
  if tiny:  # toy tensors on a shared CPU: one torch thread
    torch.set_num_threads(1)
  doc: dict[str, Any] = {"machine": machine(env), "rows": [], "skipped": [], "errors": []}

  def write():
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(out)

  write()
  log(f"machine: {doc['machine']}")
  for plan in select(plans, sections, rows):
    est = 0.5 if tiny else plan.est_s
    if env.elapsed + est > budget_s:
      doc["skipped"].append({"row": plan.label, "elapsed_s": env.elapsed, "est_s": est})
      log(f"SKIP {plan.label}: {env.elapsed:.0f} s elapsed + ~{est:.0f} s > budget {budget_s} s")
      write()
      continue
    mode = plan.label.split()[1]
    log(f"start {plan.label}")
    t0 = time.perf_counter()
    try:
      with precision_mode(mode):
        row = plan.fn()
      row["wall_s"] = time.perf_counter() - t0
      doc["rows"].append(row)
      log(
        f"done  {plan.label} in {row['wall_s']:.1f} s: ours {_fmt_s(row['ours']['median_s'])}"
        f" torch {_fmt_s(row['ref']['median_s'])} ratio {row['ratio']:.3g}x agree={row['agree']}"
        f" first call ours {row['ours']['first_call_s']:.1f} s"
      )
    except Exception as e:  # noqa: BLE001  (recorded; the next rows still run)
      doc["errors"].append(
        {"row": plan.label, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
      )
      log(f"FAIL  {plan.label} after {time.perf_counter() - t0:.1f} s: {type(e).__name__}: {e}")
      traceback.print_exc()
    env.free()
    doc["elapsed_s"] = env.elapsed
    write()
  print(format_table(doc["rows"]), flush=True)
  log(
    f"{len(doc['rows'])} rows, {len(doc['skipped'])} skipped, {len(doc['errors'])} errors,"
    f" {env.elapsed:.0f} s; wrote {out}"
  )
  return doc


def main(argv: list[str]) -> None:
  from launch.flags import fail

  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  sections = FLAGS.only or list(SECTIONS)
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown:
    fail(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
  if FLAGS.budget_s <= 0:
    fail(f"--budget_s must be > 0, got {FLAGS.budget_s}")
  if not FLAGS.tiny and (jax.default_backend() != "gpu" or not torch.cuda.is_available()):
    fail(
      "benchmarks.device_bench is a GPU benchmark: JAX backend is"
      f" {jax.default_backend()!r}, torch.cuda.is_available() = {torch.cuda.is_available()};"
      " use --tiny for a CPU smoke run"
    )
  _ensure_ot_importable()
  out = Path(FLAGS.out) if FLAGS.out else default_out()
  try:
    run(FLAGS.tiny, out, sections, FLAGS.budget_s, FLAGS.rows)
  except ValueError as e:  # bad --rows (raised before anything runs)
    fail(str(e))


if __name__ == "__main__":
  app.run(main)
