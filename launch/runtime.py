"""Process-level set-up shared by the entry points (distributed init, quiet logs)."""

from __future__ import annotations

import logging
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def init_runtime() -> None:
  """Multi-host init when the environment asks for it; quiet third-party logs."""
  import jax

  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("MLTM_DISTRIBUTED"):
    jax.distributed.initialize()
  for name in ("absl", "orbax", "jax._src.xla_bridge", "transformers"):
    logging.getLogger(name).setLevel(logging.ERROR)
  warnings.filterwarnings("ignore", category=UserWarning, module="orbax")
