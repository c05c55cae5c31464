"""Tests for mltm_jax.models.audio_cnn.SmallCNN (reference: the same net in PyTorch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mltm_jax.models.audio_cnn import SmallCNN

B, T, M = 4, 37, 16  # odd frame count on purpose
CHANNELS = (4, 8, 8)


def _init(model, mel):
  return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, mel, train=False)


def _randomise_stats(variables, seed=0):
  """Non-trivial running stats and BN affine params so eval mode is really tested."""
  rs = np.random.RandomState(seed)

  def fill(path, x):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return jnp.asarray(rs.uniform(0.5, 2.0, x.shape), jnp.float32)
    if "mean" in name or "bias" in name:
      return jnp.asarray(rs.normal(0, 0.5, x.shape), jnp.float32)
    if "scale" in name:
      return jnp.asarray(rs.uniform(0.5, 1.5, x.shape), jnp.float32)
    return x

  return jax.tree_util.tree_map_with_path(fill, variables)


def _torch_reference(variables, mel, *, train, double, strided):
  """The same architecture written with torch.nn.functional, weights copied over.

  Returns (embedding [B, C], bn0 running mean after the call).
  """
  p = jax.tree.map(lambda a: torch.tensor(np.asarray(a)), variables["params"])
  s = jax.tree.map(lambda a: torch.tensor(np.asarray(a)), variables["batch_stats"])
  x = torch.tensor(np.asarray(mel))  # [B, T, M]

  def bn(x, pp, ss):
    rm, rv = ss["mean"].clone(), ss["var"].clone()
    y = F.batch_norm(x, rm, rv, pp["scale"], pp["bias"], training=train, momentum=0.1, eps=1e-5)
    return y, rm

  x, rm0 = bn(x.transpose(1, 2), p["bn0"], s["bn0"])  # BatchNorm1d over mel bins
  x = x.transpose(1, 2)[:, None]  # [B, 1, T, M]
  for i in range(len(CHANNELS)):
    blk_p, blk_s = p[f"block{i}"], s[f"block{i}"]
    for j in range(2 if double else 1):
      w = blk_p[f"conv{j}"]["kernel"].permute(3, 2, 0, 1)  # HWIO -> OIHW
      stride = 2 if (strided and i == 0 and j == 0) else 1
      x = F.conv2d(x, w, stride=stride, padding=1)
      x, _ = bn(x, blk_p[f"bn{j}"], blk_s[f"bn{j}"])
      x = F.relu(x)
    if not (strided and i == 0):
      x = F.avg_pool2d(x, 2)
  x = x.mean(dim=3)  # over frequency -> [B, C, T']
  return (x.max(dim=2).values + x.mean(dim=2)).numpy(), rm0.numpy()


@pytest.mark.slow  # compiles for several seconds on 2 cores
@pytest.mark.parametrize("double,strided", [(False, False), (True, False), (False, True)])
def test_matches_pytorch_eval_and_train(double, strided):
  mel = jnp.asarray(np.random.RandomState(0).normal(-40, 10, (B, T, M)).astype(np.float32))
  model = SmallCNN(
    channels=CHANNELS, double_conv=double, strided_stem=strided, dropout=0.0, spec_augment=False
  )
  v = _randomise_stats(_init(model, mel))
  # eval: running statistics
  out = model.apply(v, mel, train=False)
  ref, _ = _torch_reference(v, mel, train=False, double=double, strided=strided)
  assert out.shape == (B, CHANNELS[-1]) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)
  # train: batch statistics, running mean updated like torch momentum 0.1
  out, upd = model.apply(
    v, mel, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}
  )
  ref, ref_rm = _torch_reference(v, mel, train=True, double=double, strided=strided)
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
    np.asarray(upd["batch_stats"]["bn0"]["mean"]), ref_rm, rtol=1e-5, atol=1e-5
  )


def test_eval_is_per_example_train_is_not():
  rs = np.random.RandomState(1)
  mel_a = rs.normal(size=(B, T, M)).astype(np.float32)
  mel_b = mel_a.copy()
  mel_b[1:] = rs.normal(size=(B - 1, T, M))  # same example 0, different partners
  model = SmallCNN(channels=CHANNELS, dropout=0.0, spec_augment=False)
  v = _init(model, jnp.asarray(mel_a))
  ea, eb = (
    model.apply(v, jnp.asarray(mel_a), train=False),
    model.apply(v, jnp.asarray(mel_b), train=False),
  )
  np.testing.assert_allclose(np.asarray(ea[0]), np.asarray(eb[0]), rtol=1e-6, atol=1e-6)
  single = model.apply(v, jnp.asarray(mel_a[:1]), train=False)
  np.testing.assert_allclose(np.asarray(single[0]), np.asarray(ea[0]), rtol=1e-5, atol=1e-6)
  ta, _ = model.apply(v, jnp.asarray(mel_a), train=True, mutable=["batch_stats"])
  tb, _ = model.apply(v, jnp.asarray(mel_b), train=True, mutable=["batch_stats"])
  assert np.abs(np.asarray(ta[0]) - np.asarray(tb[0])).max() > 1e-3


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_train_updates_every_batch_stat_and_uses_dropout_rng():
  mel = jnp.asarray(np.random.RandomState(2).normal(size=(B, T, M)).astype(np.float32))
  model = SmallCNN(channels=CHANNELS, time_width=8)  # dropout 0.2 + SpecAugment on
  v = _init(model, mel)
  o1, upd = model.apply(
    v, mel, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)}
  )
  o2, _ = model.apply(
    v, mel, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(4)}
  )
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"], upd["batch_stats"])
  assert all(jax.tree.leaves(changed))
  assert np.abs(np.asarray(o1) - np.asarray(o2)).max() > 1e-4  # stochastic in training
  with pytest.raises(Exception):  # training without a 'dropout' rng must fail loudly
    model.apply(v, mel, train=True, mutable=["batch_stats"])


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_jit_and_finite_gradient():
  mel = jnp.asarray(np.random.RandomState(3).normal(-30, 15, (B, T, M)).astype(np.float32))
  model = SmallCNN(channels=CHANNELS, strided_stem=True, time_width=8)
  v = _init(model, mel)

  @jax.jit
  def loss_fn(params, stats, mel, key):
    emb, upd = model.apply(
      {"params": params, "batch_stats": stats},
      mel,
      train=True,
      mutable=["batch_stats"],
      rngs={"dropout": key},
    )
    return jnp.mean(jnp.square(emb - 1.0)), upd

  (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    v["params"], v["batch_stats"], mel, jax.random.key(5)
  )
  assert np.isfinite(float(loss))
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert all(float(jnp.abs(g).max()) > 0 for g in leaves)
  eval_jit = jax.jit(lambda v, m: model.apply(v, m, train=False))
  np.testing.assert_allclose(
    np.asarray(eval_jit(v, mel)), np.asarray(model.apply(v, mel, train=False)), rtol=1e-5, atol=1e-5
  )


@pytest.mark.slow  # compiles for several seconds on 2 cores
def test_bfloat16_compute_keeps_float32_params():
  mel = jnp.asarray(np.random.RandomState(4).normal(size=(B, T, M)).astype(np.float32))
  f32 = SmallCNN(channels=CHANNELS, dropout=0.0, spec_augment=False)
  bf16 = SmallCNN(channels=CHANNELS, dropout=0.0, spec_augment=False, dtype=jnp.bfloat16)
  v = _init(bf16, mel)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v))
  out = bf16.apply(v, mel, train=False)
  assert out.dtype == jnp.float32
  ref = f32.apply(v, mel, train=False)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=0.05, atol=0.05)


def test_too_small_input_raises():
  model = SmallCNN(channels=CHANNELS)
  with pytest.raises(ValueError, match="need frames and n_mels"):
    _init(model, jnp.zeros((1, 4, 16)))
