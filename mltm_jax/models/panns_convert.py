"""Convert PANNs PyTorch checkpoints to `mltm_jax.models.panns` variables, save and load them.

A PANNs checkpoint (``torch.save({'model': state_dict, ...})``) names its tensors after the
PyTorch modules: ``bn0.*``, ``conv_block{k}.conv{1,2}.weight``, ``conv_block{k}.bn{1,2}.*``,
``resnet.layer{s}.{j}.{conv1,bn1,conv2,bn2}.*``, ``resnet.layer{s}.0.downsample.{1,2}.*``
(avg pool, 1x1 conv, BN), ``conv_block_after1.*``, ``fc1.*``. Every one of them is mapped:

  conv weight [O, I, kh, kw]  -> params .../kernel [kh, kw, I, O]  (kh = time, kw = mel)
  BN weight / bias            -> params .../scale / bias
  BN running_mean / var       -> batch_stats .../mean / var
  fc1 weight [out, in] / bias -> params fc1/kernel [in, out] / bias

Dropped silently: ``*.num_batches_tracked``, the frontend's ``spectrogram_extractor.*`` and
``logmel_extractor.*`` (our log-mel is `mltm_jax.frontend`) and the AudioSet classifier
``fc_audioset.*``. Anything else, anything missing and any shape mismatch is refused with one
line naming the tensors. torch is imported only to read ``.pth`` files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mltm_jax.models import panns
from mltm_jax.models.weights import shape_mismatch

ARCHS = tuple(panns.PANNS_MODELS)
_IGNORED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "fc_audioset.")
_IGNORED_SUFFIX = ".num_batches_tracked"

# torch name -> (collection, our path, shape in the torch file, axes permutation or None)
_Target = tuple[str, tuple[str, ...], tuple[int, ...], tuple[int, ...] | None]


def expected_tensors(arch: str, n_mels: int = panns.PANNS_MEL_BINS) -> dict[str, _Target]:
  """Every tensor a PANNs checkpoint of `arch` must hold, with where it goes in our variables."""
  if arch not in ARCHS:
    raise ValueError(f"unknown PANNs architecture {arch!r} (one of {', '.join(ARCHS)})")
  out: dict[str, _Target] = {}

  def bn(src: str, dst: tuple[str, ...], n: int) -> None:
    out[f"{src}.weight"] = ("params", dst + ("scale",), (n,), None)
    out[f"{src}.bias"] = ("params", dst + ("bias",), (n,), None)
    out[f"{src}.running_mean"] = ("batch_stats", dst + ("mean",), (n,), None)
    out[f"{src}.running_var"] = ("batch_stats", dst + ("var",), (n,), None)

  def conv(src: str, dst: tuple[str, ...], c_in: int, c_out: int, k: int) -> None:
    out[f"{src}.weight"] = ("params", dst + ("kernel",), (c_out, c_in, k, k), (2, 3, 1, 0))

  def conv_block(src: str, dst: str, c_in: int, c_out: int) -> None:
    conv(f"{src}.conv1", (dst, "conv1"), c_in, c_out, 3)
    bn(f"{src}.bn1", (dst, "bn1"), c_out)
    conv(f"{src}.conv2", (dst, "conv2"), c_out, c_out, 3)
    bn(f"{src}.bn2", (dst, "bn2"), c_out)

  bn("bn0", ("bn0",), n_mels)
  if arch in ("cnn10", "cnn14"):
    channels = panns.CNN10_CHANNELS if arch == "cnn10" else panns.CNN14_CHANNELS
    c_in = 1
    for k, c in enumerate(channels, start=1):
      conv_block(f"conv_block{k}", f"conv_block{k}", c_in, c)
      c_in = c
  else:
    conv_block("conv_block1", "conv_block1", 1, panns.RESNET38_STEM)
    c_in = panns.RESNET38_STEM
    for s, (c, blocks) in enumerate(panns.RESNET38_STAGES, start=1):
      for j in range(blocks):
        src, dst = f"resnet.layer{s}.{j}", f"layer{s}_{j}"
        conv(f"{src}.conv1", (dst, "conv1"), c_in, c, 3)
        bn(f"{src}.bn1", (dst, "bn1"), c)
        conv(f"{src}.conv2", (dst, "conv2"), c, c, 3)
        bn(f"{src}.bn2", (dst, "bn2"), c)
        if s > 1 and j == 0:  # downsample = Sequential(AvgPool2d(2), conv1x1, BN)
          conv(f"{src}.downsample.1", (dst, "shortcut_conv"), c_in, c, 1)
          bn(f"{src}.downsample.2", (dst, "shortcut_bn"), c)
        c_in = c
    conv_block("conv_block_after1", "conv_block_after1", c_in, panns.RESNET38_AFTER)
    c_in = panns.RESNET38_AFTER
  out["fc1.weight"] = ("params", ("fc1", "kernel"), (c_in, c_in), (1, 0))
  out["fc1.bias"] = ("params", ("fc1", "bias"), (c_in,), None)
  return out


def detect_arch(names, source: str = "state dict") -> str:
  """The PANNs architecture whose tensor names these are (by name only, not shape)."""
  names = {n.removeprefix("module.") for n in names}
  if any(n.startswith("resnet.layer") for n in names):
    return "resnet38"
  if any(n.startswith("conv_block6.") for n in names):
    return "cnn14"
  if any(n.startswith("conv_block4.") for n in names):
    return "cnn10"
  raise ValueError(
    f"{source}: cannot tell the PANNs architecture "
    "(no resnet.layer*, conv_block6.* or conv_block4.* tensors)"
  )


def convert_state_dict(
  state_dict: dict[str, Any],
  arch: str | None = None,
  *,
  n_mels: int = panns.PANNS_MEL_BINS,
  source: str = "state dict",
) -> tuple[dict[str, Any], dict[str, Any]]:
  """PANNs state dict (torch tensors or numpy arrays) -> (params, batch_stats) for `arch`.

  arch: "cnn10", "cnn14", "resnet38", or None to detect it from the tensor names.
  n_mels: the mel bins of bn0 (the AudioSet checkpoints: 64).
  source: what to name in error messages (e.g. the file). A leading ``module.`` (DataParallel)
  is stripped from every name. Returns nested dicts of float32 numpy arrays in the layout of
  `panns.PANNS_MODELS[arch]().init(...)` (include_fc1=True). Raises ValueError with one line
  naming the missing, unexpected or mis-shaped tensors.
  """
  if not state_dict:
    raise ValueError(f"{source}: empty state dict")
  kept = _kept_tensors(state_dict)
  arch = arch or detect_arch(kept, source)
  expected = expected_tensors(arch, n_mels=n_mels)
  problems = shape_mismatch(
    {n: tuple(v.shape) for n, v in kept.items()}, {n: e[2] for n, e in expected.items()}
  )
  if problems:
    raise ValueError(f"{source}: not a PANNs {arch} checkpoint ({'; '.join(problems)})")

  variables: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}
  for name, (collection, path, _, perm) in expected.items():
    arr = _to_numpy(kept[name])
    if perm is not None:
      arr = np.ascontiguousarray(arr.transpose(perm))
    node = variables[collection]
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = arr
  return variables["params"], variables["batch_stats"]


def _kept_tensors(state_dict: dict[str, Any]) -> dict[str, Any]:
  """Names without a DataParallel ``module.`` prefix, minus the silently dropped tensors."""
  if all(k.startswith("module.") for k in state_dict):
    state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
  return {
    k: v
    for k, v in state_dict.items()
    if not (k.startswith(_IGNORED_PREFIXES) or k.endswith(_IGNORED_SUFFIX))
  }


def _to_numpy(value: Any) -> np.ndarray:
  """A float32 numpy COPY (torch's .numpy() shares memory with the tensor)."""
  if hasattr(value, "detach"):  # torch tensor
    value = value.detach().cpu().float().numpy()
  return np.array(value, dtype=np.float32, copy=True)


def read_panns_pth(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, Any]:
  """The state dict of a PANNs ``.pth``: its 'model' entry, or the file itself if it is one.

  Loads with ``torch.load(weights_only=True)``; allow_pickle=True falls back to full unpickling
  (runs code from the file: only for files you trust). Raises FileNotFoundError / ValueError
  with one line naming the file.
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file")
  import torch  # only needed to read the PyTorch file

  try:
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 -- any unpickling failure is reported in one line
    if not allow_pickle:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ValueError(
        f"{path}: not readable with torch.load(weights_only=True) ({first}); "
        "if you trust the file, allow full unpickling"
      ) from None
    obj = torch.load(str(path), map_location="cpu", weights_only=False)
  if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
    obj = obj["model"]
  if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
    raise ValueError(f"{path}: expected a dict with a 'model' state dict (or a state dict)")
  return obj


def save_panns_checkpoint(
  directory: str | os.PathLike, params: dict[str, Any], batch_stats: dict[str, Any]
) -> Path:
  """Write {'params', 'batch_stats'} as an orbax StandardSave checkpoint at `directory`.

  The directory must not exist yet (orbax refuses to overwrite). Returns its absolute path.
  """
  import orbax.checkpoint as ocp

  directory = Path(directory).absolute()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(directory, {"params": params, "batch_stats": batch_stats})
    ckptr.wait_until_finished()
  return directory


def load_panns_checkpoint(
  directory: str | os.PathLike, *, include_fc1: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, batch_stats) written by `save_panns_checkpoint` / ``launch.convert_panns``.

  Arrays are float32 numpy, laid out for `panns.PANNS_MODELS[arch](include_fc1=...)`:
  include_fc1=False drops fc1 (a retrieval tower replaces it by its projection head).
  Raises FileNotFoundError / ValueError with one line naming the directory.
  """
  import jax
  import orbax.checkpoint as ocp

  directory = Path(directory).absolute()
  with ocp.StandardCheckpointer() as ckptr:
    tree = _metadata_tree(ckptr, directory)
    target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, np.float32), tree, is_leaf=_is_array_metadata
    )
    restored = ckptr.restore(directory, target)
  out = jax.tree.map(lambda a: np.asarray(a, dtype=np.float32), restored)
  params = dict(out["params"])
  if not include_fc1:
    params.pop("fc1", None)
  return params, dict(out["batch_stats"])


def _is_array_metadata(x: Any) -> bool:
  return hasattr(x, "shape") and hasattr(x, "dtype")


def _metadata_tree(ckptr: Any, directory: Path) -> dict[str, Any]:
  """{'params', 'batch_stats'} -> array metadata (shapes, no values) of a saved checkpoint."""
  if not directory.is_dir():
    raise FileNotFoundError(f"{directory}: no such checkpoint directory")
  meta = ckptr.metadata(directory)
  tree = getattr(meta, "item_metadata", meta)  # StepMetadata -> its tree (orbax >= 0.11)
  tree = getattr(tree, "tree", tree)
  if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
    keys = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
    raise ValueError(f"{directory}: expected a checkpoint of params and batch_stats, got {keys}")
  return dict(tree)


# ---------------------------------------------------------------- a training run's audio trunk


def arch_of_variables(params: dict[str, Any]) -> str | None:
  """The PANNs architecture whose (our) parameter tree this is, by module names; else None."""
  if "layer1_0" in params:
    return "resnet38"
  if "conv_block6" in params:
    return "cnn14"
  if "conv_block4" in params:
    return "cnn10"
  return None


def _flat_shapes(tree: Any, prefix: str) -> dict[str, tuple[int, ...]]:
  """{'prefix/a/b': shape} for every leaf of a nested dict of arrays (or array metadata)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) or hasattr(v, "items"):
      out.update(_flat_shapes(v, f"{prefix}/{k}"))
    else:
      out[f"{prefix}/{k}"] = tuple(v.shape)
  return out


def _check_trunk_tree(
  directory: Path, arch: str, saved: dict[str, Any], params_like: Any, stats_like: Any
) -> None:
  """Raises ValueError (one line) unless `saved` holds exactly the trunk's variables (+ fc1)."""
  found = arch_of_variables(saved["params"])
  if found is None:
    raise ValueError(f"{directory}: not a converted PANNs checkpoint (no PANNs module names)")
  if found != arch:
    raise ValueError(f"{directory}: holds PANNs {found} weights, but the audio encoder is {arch}")
  got = {
    **_flat_shapes({k: v for k, v in saved["params"].items() if k != "fc1"}, "params"),
    **_flat_shapes(saved["batch_stats"], "batch_stats"),
  }
  want = {**_flat_shapes(params_like, "params"), **_flat_shapes(stats_like, "batch_stats")}
  problems = shape_mismatch(got, want, noun="")
  if problems:
    raise ValueError(f"{directory}: does not fit the {arch} trunk ({'; '.join(problems)})")


def check_trunk_checkpoint(
  directory: str | os.PathLike, arch: str, params_like: Any, stats_like: Any
) -> None:
  """Checks, from the checkpoint's metadata only (no values read), that `directory` (written
  by `save_panns_checkpoint`) holds PANNs `arch` weights whose tensors are exactly those of
  `params_like` / `stats_like` (the trunk's params and batch stats, or their shapes), fc1 aside.

  Raises FileNotFoundError, or ValueError with one line naming the architecture found or the
  missing, unexpected and mis-shaped variables (e.g. ``params/bn0/scale (64,) expected (40,)``).
  """
  import orbax.checkpoint as ocp

  directory = Path(directory).absolute()
  with ocp.StandardCheckpointer() as ckptr:
    saved = _metadata_tree(ckptr, directory)
  _check_trunk_tree(directory, arch, saved, params_like, stats_like)


def load_trunk_checkpoint(
  directory: str | os.PathLike, arch: str, params_like: Any, stats_like: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, batch_stats) of a PANNs trunk from `directory`, fc1 dropped, after the checks of
  `check_trunk_checkpoint`. float32 numpy, same tree structure as params_like / stats_like.
  """
  directory = Path(directory).absolute()
  check_trunk_checkpoint(directory, arch, params_like, stats_like)
  return load_panns_checkpoint(directory, include_fc1=False)
