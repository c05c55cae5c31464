"""Benchmark ``towers``: forward + backward throughput of the paper's two towers, ours vs PyTorch.

Rows (same weights, same inputs, one process, float32):
  towers_audio  the PANNs ResNet38 trunk (`mltm_jax.models.panns.ResNet38`, without fc1) on
                log-mels [B, 1001, 64] = 10 s at 32 kHz, hop 320 -> the pooled 2048-d embedding.
                Reference: `benchmarks.references.torch_panns.RefPanns("resnet38")` (fc1
                unused), its random weights and batch-norm statistics converted by
                `panns_convert.convert_state_dict`.
  towers_text   BERT-base (12 layers, 768 hidden, 12 heads, built from a config: random weights,
                no download) on captions [B, 32] tokens (varied lengths, masked) -> [CLS] vector.
                Reference: transformers' `BertModel(BertConfig(), add_pooling_layer=False)`; ours
                (`mltm_jax.models.bert.BertEncoder`) reads its weights back through
                `hf_bert.load_bert_checkpoint` from `save_pretrained`.
A timed call is one training forward + backward: train mode (batch norm on batch statistics),
dropout and SpecAugment off in both (so that both compute the same numbers), loss =
sum(output * fixed random probe), gradients w.r.t. every parameter of the tower. Ours is one
jit-compiled `value_and_grad`; the reference zeroes the gradients, runs forward and `backward()`.

`agree`: outputs and gradients as close to the truth as torch's own float32 ones are. The truth
is the same torch network run once in float64. Output error: max|y - y64| / max|y64|; a
parameter's gradient error: max|g - g64| / max|g64| (denominator floored at 1e-4 x the largest
gradient entry of the tower, for gradients that are zero in exact arithmetic, e.g. BERT's key
biases), `grad_err` the largest over parameters. Both reported ours/torch; agree when ours <=
2 x torch's + 1e-6 (outputs) / + 1e-5 (gradients). (Train-mode batch norm at batch 2 makes
the PANNs trunk ill-conditioned: torch float32 vs float64 differ by ~1e-5 in the embedding and
by a few % on some convolutions' gradients.) torch's gradients are mapped to our layout
by the same converters as the weights. Params: samples/s ours/torch (B / median seconds), the
errors, torch's thread count. --tiny: Cnn10 on [2, 64, 64] and a 2-layer BERT of width 32 on 8
tokens (a test of the plumbing, numbers meaningless).
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks.references.torch_panns import RefPanns, panns_state_dict
from benchmarks.roofline import Work, array_bytes, xla_flops
from benchmarks.timing import Row, Settings
from mltm_jax.models.bert import BertEncoder, pool_text
from mltm_jax.models.hf_bert import load_bert_checkpoint
from mltm_jax.models.panns import PANNS_MODELS
from mltm_jax.models.panns_convert import convert_state_dict

BATCH = 2
FRAMES, MELS = 1001, 64  # 10 s at 32 kHz, hop 320
TOKENS = 32
TINY_BATCH, TINY_FRAMES, TINY_TOKENS = 2, 64, 8
TINY_BERT = {
  "vocab_size": 99,
  "hidden_size": 32,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "intermediate_size": 48,
  "max_position_embeddings": 20,
}
FACTOR, OUT_SLACK, GRAD_SLACK = 2.0, 1e-6, 1e-5
ZERO_FLOOR = 1e-4


def _grad_error(grads: dict, truth: dict) -> float:
  """max over parameters of max|g - truth| / max(max|truth|, ZERO_FLOOR * max|all truth|)."""
  scale = max(float(np.max(np.abs(t))) for t in jax.tree.leaves(truth))
  errs = jax.tree.map(
    lambda g, t: (
      float(np.max(np.abs(np.asarray(g, np.float64) - t)))
      / max(float(np.max(np.abs(t))), ZERO_FLOOR * scale)
    ),
    grads,
    truth,
  )
  return max(jax.tree.leaves(errs))


def _rel_error(y, y64) -> float:
  y64 = np.asarray(y64, np.float64)
  return float(np.max(np.abs(np.asarray(y, np.float64) - y64)) / np.max(np.abs(y64)))


def tower_work(grad_fn, params, *inputs) -> Work:
  """XLA's operation count of the compiled forward + backward; bytes: the parameters read,
  their gradients written, the inputs read."""
  leaves = jax.tree.leaves(params)
  return Work(
    flops=xla_flops(grad_fn, params, *inputs),
    bytes=2 * array_bytes(*leaves) + array_bytes(*(jnp.asarray(x) for x in inputs)),
    model="XLA cost analysis of the jitted forward + backward; bytes: params + grads + inputs",
  )


def _row(name, shape, batch, ours_t, ref_t, outs, grads, ref_grads, truth, work=None) -> Row:
  """outs: (ours, torch float32, torch float64) outputs; grads likewise, truth = float64."""
  ours_sps, ref_sps = batch / ours_t.median_s, batch / ref_t.median_s
  ours_err, ref_err = _grad_error(grads, truth), _grad_error(ref_grads, truth)
  ours_out, ref_out = _rel_error(outs[0], outs[2]), _rel_error(outs[1], outs[2])
  params = {
    "B": batch,
    "input": shape,
    "samples_s": f"{ours_sps:.3g}/{ref_sps:.3g}",
    "out_err": f"{ours_out:.2g}/{ref_out:.2g}",
    "grad_err": f"{ours_err:.2g}/{ref_err:.2g}",
    "torch_threads": torch.get_num_threads(),
    "runs": f"{ours_t.runs}/{ref_t.runs}",
  }
  agree = ours_out <= FACTOR * ref_out + OUT_SLACK and ours_err <= FACTOR * ref_err + GRAD_SLACK
  return Row(name, params, ours_t, ref_t, agree, work=work)


def _float64_run(model: torch.nn.Module, call) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
  """Output of call(model copy in float64) and the gradients w.r.t. its parameters, by name."""
  model = copy.deepcopy(model).double()
  for p in model.parameters():
    p.grad = None
  out = call(model, torch.float64).detach().numpy()
  return out, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------- audio


def audio_row(settings: Settings) -> Row:
  arch = "cnn10" if settings.tiny else "resnet38"
  batch = TINY_BATCH if settings.tiny else BATCH
  frames = TINY_FRAMES if settings.tiny else FRAMES
  rng = np.random.default_rng(0)
  mel = rng.normal(-35.0, 12.0, (batch, frames, MELS)).astype(np.float32)

  torch.manual_seed(0)
  ref = RefPanns(arch, p_drop=0.0, p_block=0.0, p_fc=0.0).train()
  with torch.no_grad():  # non-trivial batch-norm affine parameters
    for m in ref.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.3)
  params, stats = convert_state_dict(panns_state_dict(ref), arch)
  params.pop("fc1")
  width = ref.fc1.in_features
  probe = rng.normal(size=(batch, width)).astype(np.float32)

  kw = {"block_dropout": 0.0} if arch == "resnet38" else {}
  model = PANNS_MODELS[arch](dropout=0.0, include_fc1=False, spec_augment=False, **kw)

  def loss_fn(p, x):
    emb, _ = model.apply(
      {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
    )
    return jnp.sum(emb * probe), emb

  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  x = jnp.asarray(mel)
  ours_t, ((_, ours_emb), ours_grads) = settings.time_ours(lambda: grad_fn(params, x))

  def forward_backward(net, dtype=torch.float32):
    emb = net(torch.from_numpy(mel).to(dtype))[0]
    (emb * torch.from_numpy(probe).to(dtype)).sum().backward()
    return emb

  def ref_call():
    for p in ref.parameters():
      p.grad = None
    return forward_backward(ref)

  ref_t, ref_emb = settings.time_ref(ref_call)

  def to_ours(named_grads):
    """torch gradients in our layout: the converter applied to a state dict of gradients."""
    sd = panns_state_dict(ref)
    sd.update(named_grads)
    grads, _ = convert_state_dict(sd, arch)
    grads.pop("fc1")
    return grads

  ref_grads = to_ours({n: p.grad for n, p in ref.named_parameters() if p.grad is not None})
  emb64, grads64 = _float64_run(ref, forward_backward)
  truth = to_ours(grads64)
  outs = (np.asarray(ours_emb), ref_emb.detach().numpy(), emb64)
  shape = f"{arch} mel[{batch},{frames},{MELS}]"
  work = tower_work(grad_fn, params, x)
  return _row("towers_audio", shape, batch, ours_t, ref_t, outs, ours_grads, ref_grads, truth, work)


# ----------------------------------------------------------------------------- text


def caption_tokens(batch: int, length: int, vocab: int, seed: int = 0):
  """ids, mask, token types [B, L] int32: [CLS] first, lengths from L down to L/4, padding 0."""
  rng = np.random.default_rng(seed)
  lengths = np.linspace(length, max(3, length // 4), batch).astype(int)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(1000 % vocab, vocab, size=(batch, length)).astype(np.int32) * mask
  ids[:, 0] = 101 % vocab  # [CLS]
  return ids, mask, np.zeros_like(ids)


def text_row(settings: Settings) -> Row:
  import transformers

  batch = TINY_BATCH if settings.tiny else BATCH
  length = TINY_TOKENS if settings.tiny else TOKENS
  hf_kw = dict(TINY_BERT) if settings.tiny else {}
  hf_cfg = transformers.BertConfig(
    **hf_kw, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
  )
  torch.manual_seed(0)
  ref = transformers.BertModel(hf_cfg, add_pooling_layer=False).train()
  with tempfile.TemporaryDirectory() as tmp:
    ref.save_pretrained(tmp)
    bert_cfg, params = load_bert_checkpoint(tmp)
  assert bert_cfg.hidden_dropout_prob == 0.0 and bert_cfg.attention_probs_dropout_prob == 0.0
  ids, mask, types = caption_tokens(batch, length, bert_cfg.vocab_size)
  probe = np.random.default_rng(1).normal(size=(batch, bert_cfg.hidden_size)).astype(np.float32)
  model = BertEncoder(bert_cfg)

  def loss_fn(p):
    hidden = model.apply({"params": p}, ids, mask, types, deterministic=False)
    cls = pool_text(hidden, mask, "cls")
    return jnp.sum(cls * probe), cls

  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  ours_t, ((_, ours_cls), ours_grads) = settings.time_ours(lambda: grad_fn(params))

  t_ids, t_mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
  t_types = torch.from_numpy(types).long()

  def forward_backward(net, dtype=torch.float32):
    out = net(input_ids=t_ids, attention_mask=t_mask, token_type_ids=t_types)
    cls = out.last_hidden_state[:, 0]
    (cls * torch.from_numpy(probe).to(dtype)).sum().backward()
    return cls

  def ref_call():
    for p in ref.parameters():
      p.grad = None
    return forward_backward(ref)

  ref_t, ref_cls = settings.time_ref(ref_call)

  def to_ours(named_grads):
    """torch gradients in our layout: written as a checkpoint, read by the same loader."""
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory() as tmp:
      (Path(tmp) / "config.json").write_text(json.dumps(ref.config.to_dict()))
      arrays = {n: g.detach().float().numpy().copy() for n, g in named_grads.items()}
      save_file(arrays, str(Path(tmp) / "model.safetensors"))
      return load_bert_checkpoint(tmp)[1]

  ref_grads = to_ours({n: p.grad for n, p in ref.named_parameters()})
  cls64, grads64 = _float64_run(ref, forward_backward)
  truth = to_ours(grads64)
  outs = (np.asarray(ours_cls), ref_cls.detach().numpy(), cls64)
  shape = f"bert {bert_cfg.num_hidden_layers}x{bert_cfg.hidden_size} tokens[{batch},{length}]"
  work = tower_work(grad_fn, params)
  return _row("towers_text", shape, batch, ours_t, ref_t, outs, ours_grads, ref_grads, truth, work)


def run(settings: Settings) -> list[Row]:
  return [audio_row(settings), text_row(settings)]
