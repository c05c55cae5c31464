#!/usr/bin/env bash
# The GPU-machine command of benchmarks/device/bench.py, run from the repo root with .whl/
# carried:   bash benchmarks/device/run.sh [benchmarks.device.bench flags]
# Installs the wheels in .whl/ (flax, optax, ott-jax + jaxopt, librosa and its missing
# dependencies; the image's jax, torch and transformers are kept) into /tmp/site, prints the
# devices, runs the benchmark and writes $OUT/device_bench.json and $OUT/device_bench.log.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# One GPU shared by JAX and torch: JAX preallocates 45% of it, torch allocates from the rest.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=1
export NUMBA_CACHE_DIR=/tmp/numba_cache
# A rerun on the same warm machine (e.g. --rows=... for rows skipped by the budget) reuses the
# compiled programs; its first_call_s then excludes compilation.
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=2
OUT="${OUT:-/tmp/device_bench_out}"
mkdir -p "$OUT"
nvidia-smi -L
python3 -c 'import jax, torch, flax, optax, numpy, numba, librosa.filters, ott
print("jax", jax.__version__, jax.devices(), "| flax", flax.__version__, "| optax",
optax.__version__, "| ott", ott.__version__, "| librosa", librosa.__version__, "| numba",
numba.__version__, "| numpy", numpy.__version__, "| torch", torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else "no cuda")' || true
python3 -m benchmarks.device.bench --out="$OUT/device_bench.json" "$@" 2>&1 \
  | tee "$OUT/device_bench.log"
