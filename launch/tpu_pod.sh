#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice (create, ship, install, run on every worker).
# A thin wrapper: the logic, its flags and --dry_run are in launch/tpu_pod.py.
#   launch/tpu_pod.sh --name=mltm-v4 --zone=us-central2-b --accelerator_type=v4-32 \
#       --flagfile_local=configs/clotho_mltm.flags --bucket=gs://my-bucket/mltm [--dry_run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m launch.tpu_pod "$@"
