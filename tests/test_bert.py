"""BertEncoder + HF checkpoint loading, checked against transformers' PyTorch BertModel."""

from __future__ import annotations

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from mltm_jax.models.bert import BertConfig, BertEncoder, pool_text  # noqa: E402
from mltm_jax.models.hf_bert import (  # noqa: E402
  load_bert_checkpoint,
  load_tokenizer,
  minilm_dir,
  tokenize,
)

CAPTIONS = [
  "A dog barks.",
  "Rain falls steadily on a tin roof while thunder rumbles far away in the distance.",
  "Birds chirp",
  "A man speaks, then a crowd applauds and cheers loudly for several seconds.",
  "Footsteps on gravel.",
  "An engine idles and a car door slams shut before the vehicle drives off quickly.",
  "water trickling",
  "Someone is typing rapidly on a mechanical keyboard in a quiet office room.",
  "Children laughing and screaming at a playground; a whistle blows twice.",
  "A train horn honks as the train passes over the tracks with a rhythmic clatter.",
  "Wind",
]
MAX_LEN = 40


def _masked_max_abs(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
  keep = mask.astype(bool)
  return float(np.max(np.abs(a[keep] - b[keep])))


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _torch_mean_pool(hidden: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
  """sentence-transformers' mean pooling, written in torch."""
  m = mask.unsqueeze(-1).to(hidden.dtype)
  return (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)


# ----------------------------------------------------------------------------- real MiniLM


@pytest.fixture(scope="module")
def minilm():
  model_dir = minilm_dir()
  tok = load_tokenizer(model_dir)
  batch = tokenize(tok, CAPTIONS, MAX_LEN)
  cfg, params = load_bert_checkpoint(model_dir)
  ours = jax.jit(lambda p, i, m, t: BertEncoder(cfg).apply({"params": p}, i, m, t))(
    params, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  )
  ref_model = transformers.BertModel.from_pretrained(str(model_dir), local_files_only=True).eval()
  with torch.no_grad():
    ref = ref_model(
      input_ids=torch.from_numpy(batch["input_ids"]).long(),
      attention_mask=torch.from_numpy(batch["attention_mask"]).long(),
      token_type_ids=torch.from_numpy(batch["token_type_ids"]).long(),
    ).last_hidden_state
  return batch, np.asarray(ours), ref


def test_tokenize_fixed_shapes(minilm):
  batch, _, _ = minilm
  lengths = batch["attention_mask"].sum(1)
  for k in ("input_ids", "attention_mask", "token_type_ids"):
    assert batch[k].shape == (len(CAPTIONS), MAX_LEN) and batch[k].dtype == np.int32
  assert (
    lengths.min() < lengths.max() < MAX_LEN
  )  # varied lengths, padding everywhere, no truncation
  assert np.all(batch["input_ids"][:, 0] == 101)  # [CLS]
  assert np.all(batch["input_ids"][np.arange(len(CAPTIONS)), lengths - 1] == 102)  # [SEP]


def test_tokenize_truncates():
  tok = load_tokenizer(minilm_dir())
  out = tokenize(tok, ["one two three four five six seven eight nine ten", "hi"], 6)
  assert out["input_ids"].shape == (2, 6)
  assert out["attention_mask"][0].tolist() == [1] * 6
  assert out["input_ids"][0, -1] == 102  # truncation keeps [SEP]
  assert out["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]


ODD_CAPTIONS = CAPTIONS + [
  "",
  "Café crème: a naïve señor's façade — ÉCOLE!",
  "鸟 chirping 鸟鸣 and 雨",
  "1,234.5 dB at 44.1kHz; 3x louder (approx.) -- #loud @night",
  "   leading and trailing spaces   ",
  " ".join(["supercalifragilistic"] * 30),
]


@pytest.mark.parametrize("max_length", [6, 16, 40])
def test_json_tokenizer_equals_transformers(max_length, tmp_path):
  """Our tokenizer.json path gives transformers' AutoTokenizer arrays (padding, truncation,
  special tokens, accents, CJK, empty text); a directory without tokenizer.json falls back to
  AutoTokenizer itself."""
  from mltm_jax.models.hf_bert import JsonTokenizer

  ours = load_tokenizer(minilm_dir())
  assert isinstance(ours, JsonTokenizer)
  ref = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
  want = ref(
    ODD_CAPTIONS, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
  )
  got = tokenize(ours, ODD_CAPTIONS, max_length)
  for k in ("input_ids", "attention_mask", "token_type_ids"):
    assert got[k].dtype == np.int32 and got[k].shape == (len(ODD_CAPTIONS), max_length)
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  assert tokenize(ours, [], max_length)["input_ids"].shape == (0, max_length)

  for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
    (tmp_path / name).write_bytes((minilm_dir() / name).read_bytes())
  fallback = load_tokenizer(tmp_path)
  assert not isinstance(fallback, JsonTokenizer)
  np.testing.assert_array_equal(
    tokenize(fallback, ODD_CAPTIONS, max_length)["input_ids"], want["input_ids"]
  )


def test_minilm_hidden_states_match_torch(minilm):
  batch, ours, ref = minilm
  assert ours.dtype == np.float32 and ours.shape == (len(CAPTIONS), MAX_LEN, 384)
  assert _masked_max_abs(ours, ref.numpy(), batch["attention_mask"]) <= 1e-4


@pytest.mark.parametrize("mode", ["cls", "mean"])
def test_minilm_pooled_match_torch(minilm, mode):
  batch, ours, ref = minilm
  mask = batch["attention_mask"]
  pooled = np.asarray(pool_text(jnp.asarray(ours), jnp.asarray(mask), mode))
  if mode == "cls":
    ref_pooled = ref[:, 0].numpy()
  else:
    ref_pooled = _torch_mean_pool(ref, torch.from_numpy(mask)).numpy()
  assert pooled.shape == (len(CAPTIONS), 384)
  assert np.min(_cosine_rows(pooled, ref_pooled)) >= 0.9999
  assert np.max(np.abs(pooled - ref_pooled)) <= 1e-4


def test_minilm_mean_pool_matches_sentence_transformers(minilm):
  st = pytest.importorskip("sentence_transformers")
  batch, ours, _ = minilm
  model = st.SentenceTransformer(str(minilm_dir()), device="cpu")
  ref = model.encode(CAPTIONS, convert_to_numpy=True, normalize_embeddings=True)
  pooled = np.asarray(pool_text(jnp.asarray(ours), jnp.asarray(batch["attention_mask"]), "mean"))
  pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
  assert np.max(np.abs(pooled - ref)) <= 1e-4


def test_pool_text_hand_built():
  hidden = jnp.asarray(np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2))
  mask = jnp.asarray([[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(pool_text(hidden, mask, "cls"), [[0, 1], [6, 7]])
  np.testing.assert_allclose(pool_text(hidden, mask, "mean"), [[1, 2], [6, 7]])
  with pytest.raises(ValueError, match="max"):
    pool_text(hidden, mask, "max")


# ----------------------------------------------------------------------------- config


def test_config_from_json_ignores_unknown_keys():
  path = minilm_dir() / "config.json"
  raw = json.loads(path.read_text())
  cfg = BertConfig.from_json(path)
  assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size) == (384, 6, 1536)
  assert cfg.layer_norm_eps == raw["layer_norm_eps"] and cfg.vocab_size == raw["vocab_size"]
  assert BertConfig.from_json({**raw, "some_future_key": 3}) == cfg
  with pytest.raises(ValueError, match="position_embedding_type"):
    BertConfig.from_json({**raw, "position_embedding_type": "relative_key"})
  with pytest.raises(ValueError, match="hidden_act"):
    BertConfig.from_json({**raw, "hidden_act": "swish_v9"})


# ------------------------------------------------------------------- tiny random checkpoints

TINY = dict(
  vocab_size=99,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=48,
  max_position_embeddings=20,
  type_vocab_size=3,
)


def _randomize(model: "torch.nn.Module", seed: int) -> None:
  """Random weights everywhere (biases, LayerNorm too, unlike HF's init): every tensor matters."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.2 * noise if name.endswith("LayerNorm.weight") else 0.3 * noise)


def _tiny_inputs(seed: int = 0, batch: int = 4, length: int = 12):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, TINY["vocab_size"], size=(batch, length)).astype(np.int32)
  lengths = np.array([length, 3, 7, 1])[:batch]
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  types = (rng.integers(0, TINY["type_vocab_size"], size=(batch, length)) * mask).astype(np.int32)
  ids = ids * mask
  return ids, mask, types


def _torch_hidden(module, ids, mask, types) -> np.ndarray:
  with torch.no_grad():
    out = module(
      input_ids=torch.from_numpy(ids).long(),
      attention_mask=torch.from_numpy(mask).long(),
      token_type_ids=torch.from_numpy(types).long(),
    )
  return out.last_hidden_state.numpy()


def _ours_hidden(model_dir, ids, mask, types) -> np.ndarray:
  cfg, params = load_bert_checkpoint(model_dir)
  for leaf in jax.tree.leaves(params):
    assert leaf.dtype == np.float32
  return np.asarray(BertEncoder(cfg).apply({"params": params}, ids, mask, types))


@pytest.fixture(scope="module")
def tiny_torch():
  cfg = transformers.BertConfig(**TINY, hidden_act="gelu")
  model = transformers.BertModel(cfg).eval()
  _randomize(model, 0)
  return model


@pytest.mark.slow  # compiles for several seconds on 2 cores
@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_tiny_safetensors_matches_torch(tmp_path, act):
  model = transformers.BertModel(transformers.BertConfig(**TINY, hidden_act=act)).eval()
  _randomize(model, 1)
  model.save_pretrained(tmp_path)
  assert (tmp_path / "model.safetensors").is_file()
  ids, mask, types = _tiny_inputs()
  ref = _torch_hidden(model, ids, mask, types)
  assert _masked_max_abs(_ours_hidden(tmp_path, ids, mask, types), ref, mask) <= 1e-5


def test_tiny_pytorch_bin_matches_torch(tmp_path, tiny_torch):
  # transformers 5 always writes safetensors, so the legacy .bin layout is written by hand.
  tiny_torch.config.save_pretrained(tmp_path)
  torch.save(tiny_torch.state_dict(), tmp_path / "pytorch_model.bin")
  assert not (tmp_path / "model.safetensors").exists()
  ids, mask, types = _tiny_inputs(1)
  ref = _torch_hidden(tiny_torch, ids, mask, types)
  assert _masked_max_abs(_ours_hidden(tmp_path, ids, mask, types), ref, mask) <= 1e-5


def test_tiny_masked_lm_prefix_loads(tmp_path):
  mlm = transformers.BertForMaskedLM(transformers.BertConfig(**TINY)).eval()
  _randomize(mlm, 2)
  mlm.save_pretrained(tmp_path)
  keys = load_file(str(tmp_path / "model.safetensors"))
  assert any(k.startswith("bert.") for k in keys) and any(k.startswith("cls.") for k in keys)
  ids, mask, types = _tiny_inputs(2)
  ref = _torch_hidden(mlm.bert, ids, mask, types)
  assert _masked_max_abs(_ours_hidden(tmp_path, ids, mask, types), ref, mask) <= 1e-5


def _write_state(tmp_path, model, state: dict[str, np.ndarray]):
  model.config.save_pretrained(tmp_path)
  save_file(state, str(tmp_path / "model.safetensors"))
  return tmp_path


def _state(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_old_gamma_beta_names_load(tmp_path, tiny_torch):
  state = {
    ("bert." + k)
    .replace("LayerNorm.weight", "LayerNorm.gamma")
    .replace("LayerNorm.bias", "LayerNorm.beta"): v
    for k, v in _state(tiny_torch).items()
  }
  assert "bert.embeddings.LayerNorm.gamma" in state
  _write_state(tmp_path, tiny_torch, state)
  ids, mask, types = _tiny_inputs(3)
  ref = _torch_hidden(tiny_torch, ids, mask, types)
  assert _masked_max_abs(_ours_hidden(tmp_path, ids, mask, types), ref, mask) <= 1e-5


def test_wrong_shape_raises_naming_key(tmp_path, tiny_torch):
  state = _state(tiny_torch)
  key = "encoder.layer.1.intermediate.dense.weight"
  state[key] = np.zeros((47, 32), np.float32)
  _write_state(tmp_path, tiny_torch, state)
  with pytest.raises(ValueError, match=rf"{key} \(47, 32\) expected \(48, 32\)"):
    load_bert_checkpoint(tmp_path)


def test_missing_tensor_raises_naming_key(tmp_path, tiny_torch):
  state = _state(tiny_torch)
  key = "encoder.layer.0.attention.self.key.bias"
  del state[key]
  _write_state(tmp_path, tiny_torch, state)
  with pytest.raises(ValueError, match=rf"missing tensors \['{key}'\]"):
    load_bert_checkpoint(tmp_path)


def test_unexpected_tensor_raises_but_extras_ignored(tmp_path, tiny_torch):
  state = _state(tiny_torch)
  state["pooler.dense.weight"] = np.zeros((32, 32), np.float32)
  state["cls.predictions.bias"] = np.zeros((99,), np.float32)
  state["embeddings.position_ids"] = np.arange(20, dtype=np.int64)[None]
  _write_state(tmp_path, tiny_torch, state)
  load_bert_checkpoint(tmp_path)  # harmless extras load fine
  key = "encoder.layer.2.output.dense.weight"  # a third layer the config does not have
  state[key] = np.zeros((32, 48), np.float32)
  save_file(state, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=rf"unexpected tensors \['{key}'\]"):
    load_bert_checkpoint(tmp_path)


def test_no_weights_file(tmp_path, tiny_torch):
  tiny_torch.config.save_pretrained(tmp_path)
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    load_bert_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- dropout / dtype


def _tiny_ours(dropout: float, dtype=jnp.float32):
  cfg = BertConfig(**TINY, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
  ids, mask, types = _tiny_inputs(4)
  model = BertEncoder(cfg, dtype=dtype)
  # Random params from numpy on the init's shapes (compiling the threefry init is slow on CPU).
  shapes = jax.eval_shape(lambda: BertEncoder(cfg).init(jax.random.key(0), ids, mask, types))[
    "params"
  ]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  return model, params, (ids, mask, types)


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_dropout_only_when_not_deterministic():
  model, params, args = _tiny_ours(0.1)
  # rbg keys: compiling threefry dropout masks is slow on CPU; the semantics are the same.
  rngs = lambda seed: {"dropout": jax.random.key(seed, impl="rbg")}
  apply = jax.jit(
    lambda p, seed, det: model.apply({"params": p}, *args, deterministic=det, rngs=rngs(seed)),
    static_argnums=2,
  )
  run = lambda det, seed: np.asarray(apply(params, seed, det))
  plain = np.asarray(jax.jit(lambda p: model.apply({"params": p}, *args))(params))
  np.testing.assert_array_equal(run(True, 1), plain)
  np.testing.assert_array_equal(run(True, 2), plain)
  assert np.max(np.abs(run(False, 1) - plain)) > 1e-2
  assert np.max(np.abs(run(False, 1) - run(False, 2))) > 1e-2
  # with zero dropout, training mode is the same function
  model0, params0, args0 = _tiny_ours(0.0)
  train0 = jax.jit(lambda p: model0.apply({"params": p}, *args0, deterministic=False, rngs=rngs(1)))
  eval0 = jax.jit(lambda p: model0.apply({"params": p}, *args0))
  np.testing.assert_allclose(train0(params0), eval0(params0), atol=1e-6)


def test_bf16_compute_keeps_float32_params_and_output():
  model, params, args = _tiny_ours(0.0, dtype=jnp.bfloat16)
  init_params = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))["params"]
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(init_params))
  out16 = jax.jit(lambda p: model.apply({"params": p}, *args))(params)
  out32 = jax.jit(lambda p: BertEncoder(model.config).apply({"params": p}, *args))(params)
  assert out16.dtype == jnp.float32
  mask = args[1]
  assert _masked_max_abs(np.asarray(out16), np.asarray(out32), mask) < 0.15


@pytest.mark.slow  # compiles for several seconds on 2 cores
@pytest.mark.parametrize("lookup", ["gather", "onehot_types", "onehot"])
def test_embedding_lookups_match_torch_output_and_gradients(tmp_path, tiny_torch, lookup):
  """Each lookup (the default onehot_types included) gives torch's hidden states and torch's
  gradients for the three embedding tables (loss = sum(hidden * probe) over real tokens)."""
  tiny_torch.save_pretrained(tmp_path)
  cfg, params = load_bert_checkpoint(tmp_path)
  ids, mask, types = _tiny_inputs(2)
  probe = np.random.default_rng(3).standard_normal((*ids.shape, TINY["hidden_size"]))
  probe = (probe * mask[..., None]).astype(np.float32)

  model = copy.deepcopy(tiny_torch)
  out = model(
    input_ids=torch.from_numpy(ids).long(),
    attention_mask=torch.from_numpy(mask).long(),
    token_type_ids=torch.from_numpy(types).long(),
  ).last_hidden_state
  (out * torch.from_numpy(probe)).sum().backward()
  emb = model.embeddings

  def loss(p):
    h = BertEncoder(cfg, lookup=lookup).apply({"params": p}, ids, mask, types)
    return jnp.sum(h * probe), h

  (_, hidden), grads = jax.value_and_grad(loss, has_aux=True)(params)
  assert _masked_max_abs(np.asarray(hidden), out.detach().numpy(), mask) <= 1e-5
  g = grads["embeddings"]
  for ours, ref in (
    (g["word_embeddings"]["embedding"], emb.word_embeddings.weight.grad),
    (g["token_type_embeddings"]["embedding"], emb.token_type_embeddings.weight.grad),
    (g["position_embeddings"]["embedding"], emb.position_embeddings.weight.grad),
  ):
    ref = ref.numpy()
    assert np.max(np.abs(np.asarray(ours) - ref)) <= 1e-4 * max(1.0, np.max(np.abs(ref)))
