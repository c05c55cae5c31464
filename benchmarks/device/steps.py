"""The train-step rows of the GPU benchmark (benchmarks/device/bench.py): ours vs PyTorch.

Each row: two steps from the same weights on both sides (their losses: the agreement), then
the timings, the steps continuing. ``step_demo``: ``Config()``'s step vs
benchmarks/references/torch_demo.py's mirror; ``step_paper``: configs/audiocaps_mltm.flags at
B = 32 (ResNet38 + BERT-base) vs RefPanns + transformers' BertModel + torch_demo's heads. The
reference loss is benchmarks/references/torch_loss.py's ``official_loss`` with
``torch_sinkhorn`` (POT's algorithm in torch; POT itself is not needed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch

from benchmarks.device.common import Env, jax_sync, timed, timing_cells, to_numpy
from benchmarks.references.torch_demo import TorchDemoModel, TorchHead, load_from_flax
from benchmarks.references.torch_loss import adam_with_metric_rate, official_loss, project_psd_
from benchmarks.references.torch_sinkhorn import torch_sinkhorn

STEP_ATOL = 1e-4  # fp32 rows; the others report their gap
PAPER_FLAGS = Path(__file__).resolve().parents[2] / "configs" / "audiocaps_mltm.flags"
PATH_FIELDS = ("dataset", "data_dir", "audio_init", "text_encoder_dir", "workdir")


class TorchTrainStep:
  """forward (autocast in bf16) -> official loss -> backward -> clip -> Adam -> M <- PSD(M)."""

  def __init__(self, env: Env, cfg, model, params, forward, mode: str):
    self.env, self.cfg, self.model, self.params = env, cfg, model, list(params)
    self.forward, self.mode = forward, mode
    self.opt = adam_with_metric_rate(self.params, model.metric, cfg)
    self.iterations = 0

  def __call__(self) -> torch.Tensor:
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    with self.env.autocast(self.mode):
      audio, text = self.forward()
    loss, self.iterations = official_loss(
      audio, text, self.model.metric, self.cfg.eps, torch_sinkhorn
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
    self.opt.step()
    project_psd_(self.model.metric)
    return loss.detach()


class JaxTrainStep:
  """Our jit-compiled train step on one device, its state chained (donated)."""

  def __init__(self, cfg, audio_tower, text_tower, params, stats, batch: dict):
    from mltm_jax.train import state as state_lib
    from mltm_jax.train.step import make_train_step
    from mltm_jax.sharding import make_mesh, replicated, to_global

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
    **timing_cells(ours_t, ref_t, b),
    "loss_0": [our_losses[0], ref_losses[0]],
    "loss_1": [our_losses[1], ref_losses[1]],
    "max_loss_gap": gap,
    "ot_iterations": [int(metrics[-1]["ot_iterations"]), ref.iterations],
    "skipped_updates": int(last["skipped"]),
    "agree": bool(gap <= STEP_ATOL) if mode == "fp32" else None,
  }


def demo_step_row(env: Env, mode: str) -> dict:
  from benchmarks.cpu.demo_step import TEXT_FEATURES, TINY_TEXT_FEATURES, bench_config, demo_inputs
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
  """RefPanns trunk + BertModel ([CLS]) + the two heads + M (torch_demo's TorchHead)."""

  def __init__(self, panns_net, bert, cfg):
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
  t = lambda x: np.ascontiguousarray(to_numpy(x), np.float32)
  return {
    fc: {"kernel": t(getattr(head, fc).weight).T.copy(), "bias": t(getattr(head, fc).bias)}
    for fc in ("fc1", "fc2")
  }


def paper_step_row(env: Env, mode: str) -> dict:
  import transformers

  from benchmarks.references.torch_panns import RefPanns, panns_state_dict
  from benchmarks.cpu.towers import TINY_BERT, caption_tokens
  from mltm_jax.models.hf_bert import load_bert_checkpoint
  from mltm_jax.models.panns_convert import convert_state_dict
  from mltm_jax import model as model_lib
  from mltm_jax.models.two_tower import build_towers

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
      lambda r: model_lib.init_params(
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
