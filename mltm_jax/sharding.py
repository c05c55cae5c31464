"""The one module that knows about devices: the data-parallel mesh and how host arrays become
global arrays on it.

A 1-D mesh over every device of every process, axis ``data``. Batches are sharded along it
(each process contributes the rows of its own devices), parameters and optimizer state are
replicated. Everything else in the library is written for one device.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
  "DATA_AXIS",
  "batch_sharded",
  "from_host_copy",
  "make_mesh",
  "replicated",
  "to_global",
]

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices, axis ``data``.

  Devices are ordered by (process, id), so each process's devices hold a contiguous block of
  batch rows: process p's rows are ``host_slice(B, p, process_count)``.
  """
  if devices is None:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def to_global(mesh: Mesh, local: Any) -> Any:
  """Host-local numpy batch (leading axis = this host's rows) -> global sharded arrays."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
  )


def from_host_copy(mesh: Mesh, full: Any) -> Any:
  """A batch that EVERY process holds in full (numpy, leading axis B) -> global arrays sharded
  over ``data`` (each process contributes its devices' rows). Global arrays pass unchanged;
  lazy rows (mltm_jax.data.pipeline.LazyRows) are read per addressable shard only."""

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x
    if not hasattr(x, "padded"):
      x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, batch_sharded(mesh), lambda idx: x[idx])

  return jax.tree.map(one, full)
