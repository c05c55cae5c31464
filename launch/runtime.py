"""Process-level set-up shared by the entry points (distributed init, quiet logs)."""

from __future__ import annotations

import logging
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Threads of the BLAS libraries (OpenBLAS of numpy and scipy); 0 = their default (all cores).
BLAS_THREADS_ENV = "MLTM_BLAS_THREADS"
DEFAULT_BLAS_THREADS = 1


def limit_blas_threads(threads: int | None = None):
  """Limits the BLAS thread pools of this process (threadpoolctl); returns the limiter.

  JAX's CPU eigh (the PSD projection inside the train step) is a LAPACK call into
  scipy's OpenBLAS, whose threads then compete with XLA's own pool for the cores (the
  measured effect: WORKSPACE.md, Benchmarks, psd). ``threads``: None = $MLTM_BLAS_THREADS
  or 1; 0 = leave the defaults (returns None).
  """
  import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, the one jax's eigh calls)
  from threadpoolctl import threadpool_limits

  if threads is None:
    value = os.environ.get(BLAS_THREADS_ENV, str(DEFAULT_BLAS_THREADS))
    try:
      threads = int(value)
    except ValueError:
      from launch.flags import fail

      fail(f"${BLAS_THREADS_ENV} must be an integer (0 = BLAS default), got {value!r}")
  if threads <= 0:
    return None
  return threadpool_limits(limits=threads, user_api="blas")


def define_distributed_flags() -> None:
  """--coordinator_address, --num_processes, --process_id (multi-host runs; see init_runtime)."""
  from absl import flags

  if "coordinator_address" in flags.FLAGS:
    return
  flags.DEFINE_string(
    "coordinator_address",
    "",
    "Multi-host: host:port of the coordinator (process 0's machine), the same on every "
    "process, with --num_processes and --process_id. Empty: from the environment "
    "(JAX_COORDINATOR_ADDRESS, or MLTM_DISTRIBUTED=1 for jax's auto-detection, e.g. on a TPU "
    "pod slice), else a single process.",
  )
  flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes (hosts).")
  flags.DEFINE_integer("process_id", -1, "Multi-host: index of this process, in [0, N).")


def distributed_problems(address: str, num_processes: int, process_id: int, batch_size: int = 0):
  """Problems of the multi-host flags, one line each (empty = valid)."""
  if not address:
    if num_processes or process_id != -1:
      return ["--num_processes/--process_id need --coordinator_address"]
    return []
  out = []
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    out.append(f"--coordinator_address must be host:port, got {address!r}")
  if num_processes < 1:
    out.append(f"--num_processes must be >= 1 with --coordinator_address, got {num_processes}")
  elif not 0 <= process_id < num_processes:
    out.append(f"--process_id must be in [0, --num_processes={num_processes}), got {process_id}")
  elif batch_size % num_processes:
    out.append(f"--batch_size={batch_size} is not divisible by --num_processes={num_processes}")
  return out


def _distributed_flags() -> tuple[str, int, int]:
  from absl import flags

  if "coordinator_address" not in flags.FLAGS or not flags.FLAGS.is_parsed():
    return "", 0, -1
  f = flags.FLAGS
  return f.coordinator_address, f.num_processes, f.process_id


def check_distributed_flags(batch_size: int) -> None:
  """Fails (one line, exit 2) on invalid multi-host flags, before any work."""
  problems = distributed_problems(*_distributed_flags(), batch_size)
  if problems:
    from launch.flags import fail

    fail(problems[0])


def init_runtime() -> None:
  """Multi-host init (flags, or the environment); BLAS threads; quiet logs.

  With --coordinator_address (define_distributed_flags) every process calls
  jax.distributed.initialize(address, num_processes, process_id); without it,
  JAX_COORDINATOR_ADDRESS or MLTM_DISTRIBUTED=1 let jax read the rest from the environment
  (TPU pods, SLURM, JAX_NUM_PROCESSES / JAX_PROCESS_ID). CPU processes exchange
  collectives through gloo.
  """
  import jax

  limit_blas_threads()

  address, num_processes, process_id = _distributed_flags()
  if address or os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("MLTM_DISTRIBUTED"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU client only
    if address:
      jax.distributed.initialize(address, num_processes, process_id)
    else:
      jax.distributed.initialize()
  for name in ("absl", "orbax", "jax._src.xla_bridge", "transformers"):
    logging.getLogger(name).setLevel(logging.ERROR)
  warnings.filterwarnings("ignore", category=UserWarning, module="orbax")
