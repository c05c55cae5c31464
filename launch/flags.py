"""absl flags derived from ``mltm_jax.config.Config`` (one flag per field)."""

from __future__ import annotations

import dataclasses
import sys

from absl import flags

from mltm_jax.config import Config


def define_config_flags(exclude: tuple[str, ...] = ()) -> None:
  """Defines one absl flag per Config field (same name, type, default, help)."""
  for f in dataclasses.fields(Config):
    if f.name in exclude or f.name in flags.FLAGS:
      continue
    help_text = f.metadata.get("help", f.name)
    default = f.default
    if isinstance(default, bool):
      flags.DEFINE_bool(f.name, default, help_text)
    elif isinstance(default, int):
      flags.DEFINE_integer(f.name, default, help_text)
    elif isinstance(default, float):
      flags.DEFINE_float(f.name, default, help_text)
    else:
      flags.DEFINE_string(f.name, default, help_text)


def config_from_flags(base: Config | None = None, only_given: bool = False) -> Config:
  """Config from parsed flags; with ``only_given`` only flags set explicitly override base."""
  base = base or Config()
  values = {}
  for f in dataclasses.fields(Config):
    if f.name not in flags.FLAGS:
      continue
    flag = flags.FLAGS[f.name]
    if only_given and not flag.present:
      continue
    values[f.name] = flag.value
  return dataclasses.replace(base, **values)


def fail(message: str) -> None:
  """One clear line on stderr and exit status 2 (bad flags or input)."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def validated(config: Config) -> Config:
  problems = config.problems()
  if problems:
    fail(problems[0] + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
  return config
