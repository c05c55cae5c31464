"""Convert a PANNs PyTorch checkpoint to an orbax checkpoint of our Flax PANNs model.

  python -m launch.convert_panns --input Cnn14_mAP=0.431.pth --output pretrained/cnn14
      [--arch=auto|cnn10|cnn14|resnet38] [--overwrite] [--allow_pickle]

Writes {'params', 'batch_stats'} (orbax StandardSave) to --output; read it back with
`mltm_jax.models.panns_convert.load_panns_checkpoint(DIR)`. A checkpoint with missing,
unexpected or mis-shaped tensors is refused with one line naming them (exit status 2).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from absl import app, flags

from launch.flags import fail
from launch.runtime import init_runtime

_INPUT = flags.DEFINE_string(
  "input", None, "PANNs .pth file (a dict whose 'model' is the state dict)."
)
_OUTPUT = flags.DEFINE_string("output", None, "Directory of the orbax checkpoint to write.")
_ARCH = flags.DEFINE_enum(
  "arch", "auto", ["auto", "cnn10", "cnn14", "resnet38"], "Architecture (auto: from tensor names)."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
_ALLOW_PICKLE = flags.DEFINE_bool(
  "allow_pickle",
  False,
  "Fully unpickle --input if torch.load(weights_only=True) cannot read it (trusted files only).",
)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _INPUT.value:
    fail("--input is required")
  if not _OUTPUT.value:
    fail("--output is required")
  output = Path(_OUTPUT.value)
  if output.exists() and not _OVERWRITE.value:
    fail(f"--output={output} exists (pass --overwrite to replace it)")
  init_runtime()
  from mltm_jax.models import panns_convert

  try:
    state = panns_convert.read_panns_pth(_INPUT.value, allow_pickle=_ALLOW_PICKLE.value)
    arch = _ARCH.value
    if arch == "auto":
      arch = panns_convert.detect_arch(state, _INPUT.value)
    params, batch_stats = panns_convert.convert_state_dict(state, arch, source=_INPUT.value)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  if output.exists():
    shutil.rmtree(output)
  path = panns_convert.save_panns_checkpoint(output, params, batch_stats)
  n = sum(a.size for c in (params, batch_stats) for a in _leaves(c))
  print(f"{arch}: {n} values from {_INPUT.value} -> {path}")


def _leaves(tree):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _leaves(v)
    else:
      yield v


if __name__ == "__main__":
  app.run(main)
