"""benchmarks.roofline: the probes measure what a matmul and a stream reach on this machine,
so a row that is exactly such a kernel sits at (about) its limit; XLA's operation count of a
matrix product is 2 m k n."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.roofline import Work, array_bytes, limit_fields, xla_flops
from benchmarks.timing import time_call


def test_xla_counts_a_matrix_product_as_2mkn():
  a, b = jnp.ones((96, 64)), jnp.ones((64, 40))
  assert xla_flops(jnp.dot, a, b) == 2 * 96 * 64 * 40
  assert array_bytes(a, b, np.ones((3,), np.float64)) == 4 * (96 * 64 + 64 * 40) + 8 * 3


def test_a_matmul_row_sits_at_the_compute_limit():
  n = 2048
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  mm = jax.jit(lambda x: jnp.dot(x, x, precision=jax.lax.Precision.HIGHEST))
  timing, _ = time_call(lambda: mm(a), runs=5)
  fields = limit_fields(Work(2.0 * n**3, 3 * 4.0 * n * n), timing.min_s)
  assert fields["bound"] == "compute"
  # Same kernel as the probe: at its limit, up to timing noise (min of runs on both sides;
  # the wide band: the other pytest process may load the machine during one of the two).
  assert 0.25 <= fields["limit_fraction"] <= 1.6, fields


def test_a_stream_row_sits_at_the_memory_limit():
  x = jnp.zeros((1 << 26,), jnp.float32)
  work = Work(float(x.size), 2 * array_bytes(x))
  scale = jax.jit(lambda v: 2.0 * v, donate_argnums=0)  # in place, as the probe
  buf = {"x": x}

  def call():
    buf["x"] = scale(buf["x"])
    return buf["x"]

  timing, _ = time_call(call, runs=5)
  fields = limit_fields(work, timing.min_s)
  assert fields["bound"] == "memory"
  assert 0.25 <= fields["limit_fraction"] <= 1.6, fields
  # A row that does the same work in twice the time reaches half the limit.
  slower = limit_fields(work, 2 * timing.min_s)
  assert slower["limit_fraction"] == pytest.approx(fields["limit_fraction"] / 2)
