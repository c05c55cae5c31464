"""A split of the configured dataset, by role (train / val / test)."""

from __future__ import annotations

from pathlib import Path

import jax

from mltm_jax.config import Config
from mltm_jax.data.clotho import ROLE_SPLITS
from mltm_jax.data.pipeline import Split, load_split

__all__ = ["dataset_root", "load"]


def dataset_root(cfg: Config) -> Path:
  """The dataset directory; SynthCaps is rendered there first if it is not complete (only into
  a new, empty or SynthCaps folder: mltm_jax.synthcaps refuses any other)."""
  root = Path(cfg.data_dir)
  if cfg.dataset == "synthcaps":
    from mltm_jax.synthcaps import ensure_synthcaps

    render = lambda: ensure_synthcaps(
      root, cfg.sizes, seed=cfg.synthcaps_seed, sample_rate=cfg.sample_rate, progress=cfg.progress
    )
    if jax.process_index() == 0:
      render()
    if jax.process_count() > 1:  # the others wait for process 0, then render only where
      from jax.experimental import multihost_utils  # root is not shared (host-local disks)

      multihost_utils.sync_global_devices(f"synthcaps {root}")
      if jax.process_index() > 0:
        render()
    return root
  if not root.is_dir():
    raise FileNotFoundError(f"--data_dir={root}: no such directory")
  return root


def load(cfg: Config, which: str, progress: bool = True) -> Split:
  """A split by role: which in {"train", "val", "test", "heldout"} (heldout: SynthCaps' extra
  split, mltm_jax.synthcaps.heldout)."""
  if cfg.dataset == "prepared":  # launch.prepare names its splits train / val / test
    from mltm_jax.data.prepared import load_prepared_split

    return load_prepared_split(dataset_root(cfg), which, cfg.sample_rate, progress=progress)
  return load_split(dataset_root(cfg), ROLE_SPLITS[which], cfg.sample_rate, progress=progress)
