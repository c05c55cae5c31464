"""The data launch.evaluate and launch.zeroshot read (--dataset / --data_dir overrides of the
run's own) and where their report goes, so that evaluating on other data never overwrites the
run's own reports nor writes into the evaluated folder."""

from __future__ import annotations

import re
from pathlib import Path

from launch.flags import fail
from mltm_jax.config import Config


def _resolved(path: str | Path) -> Path:
  return Path(path).expanduser().resolve()


def target_config(own: Config, dataset: str | None, data_dir: str | None) -> tuple[Config, bool]:
  """(the config with the overrides, whether its data differ from the run's own)."""
  cfg = own
  if dataset:
    cfg = cfg.replace(dataset=dataset)
  if data_dir:
    cfg = cfg.replace(data_dir=data_dir)
  other = cfg.dataset != own.dataset or _resolved(cfg.data_dir) != _resolved(own.data_dir)
  return cfg, other


def loading_config(cfg: Config, other: bool) -> Config:
  """The config to load the data with: a finished SynthCaps rendering given as another
  dataset is read as it is (the Clotho layout it is written in), never re-rendered to the
  run's sizes, seed or rate; the run's own data load as in training."""
  from mltm_jax.synthcaps import MARKER

  if other and cfg.dataset == "synthcaps" and (Path(cfg.data_dir) / MARKER).is_file():
    return cfg.replace(dataset="clotho")
  return cfg


def data_name(cfg: Config) -> str:
  """A short file-name-safe name of the evaluated data: the dataset and the folder's name."""
  base = _resolved(cfg.data_dir).name
  base = re.sub(r"[^A-Za-z0-9.-]+", "_", base).strip("._-") or "root"
  return f"{cfg.dataset}_{base}"


def report_path(workdir: Path, out: str | None, own_name: str, cfg: Config, other: bool) -> Path:
  """--out if given (refused inside the evaluated --data_dir); else WORKDIR/<own_name>.json on
  the run's own data, WORKDIR/<prefix>_<data name>_<rest>.json on other data, where own_name
  is '<prefix>_<rest>' (eval_test -> eval_clotho_mydata_test)."""
  if out:
    path = Path(out)
    if _resolved(path).is_relative_to(_resolved(cfg.data_dir)):
      fail(f"--out={out} lies inside the evaluated --data_dir={cfg.data_dir}")
    return path
  if not other:
    return workdir / f"{own_name}.json"
  prefix, _, rest = own_name.partition("_")
  return workdir / f"{prefix}_{data_name(cfg)}_{rest}.json"
