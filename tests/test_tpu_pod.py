"""launch/tpu_pod.sh: the gcloud commands it would run (--dry_run), and the worker scripts
executed by bash against stand-ins for gcloud and python3 (no cloud here)."""

import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import tpu_pod

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]
FLAGFILE = "configs/clotho_mltm.flags"


def pod(*args: str):
  return subprocess.run(
    ["bash", str(REPO / "launch" / "tpu_pod.sh"), *args],
    cwd=REPO,
    env=dict(os.environ, PYTHON=sys.executable),
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
  )


BASE = (
  "--name=mltm-v4",
  "--zone=us-central2-b",
  "--accelerator_type=v4-32",
  f"--flagfile_local={FLAGFILE}",
  "--bucket=gs://my-bucket/exp",
  "--dry_run",
)


def test_dry_run_prints_every_step_in_order():
  res = pod(*BASE, "--spot", "--project=proj-1", "--steps=create,ship,setup,run,delete")
  assert res.returncode == 0, res.stderr
  cmds = [shlex.split(line) for line in res.stdout.strip().splitlines()]
  assert [c[:5] for c in cmds if c[0] == "gcloud" and c[1] == "compute"] == [
    ["gcloud", "compute", "tpus", "tpu-vm", "create"],
    ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
    ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
    ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
    ["gcloud", "compute", "tpus", "tpu-vm", "delete"],
  ]
  create = cmds[0]
  assert create[5] == "mltm-v4" and "--accelerator-type=v4-32" in create and "--spot" in create
  assert "--zone=us-central2-b" in create and "--project=proj-1" in create
  assert cmds[1][:3] == ["git", "-C", str(REPO)] and "archive" in cmds[1]
  assert cmds[3] == ["gcloud", "storage", "cp", FLAGFILE, "gs://my-bucket/exp/mltm-v4/train.flags"]
  for ssh in (cmds[4], cmds[5]):
    assert "--worker=all" in ssh and ssh[5] == "mltm-v4"
    script = next(a for a in ssh if a.startswith("--command=")).split("=", 1)[1]
    check = subprocess.run(
      ["bash", "-n", "-c", script], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr  # valid shell
  setup = cmds[4][-3]
  assert f"jax[tpu]=={tpu_pod.jax_version()}" in setup and "requirements.txt" in setup
  assert tpu_pod.jax_version() in (REPO / "requirements.txt").read_text()
  assert cmds[6] == [
    *("gcloud", "compute", "tpus", "tpu-vm", "delete", "mltm-v4", "--quiet"),
    *("--zone=us-central2-b", "--project=proj-1"),
  ]


def test_default_steps_do_not_delete():
  res = pod(*BASE)
  assert res.returncode == 0, res.stderr
  assert "create" in res.stdout and " delete " not in res.stdout


@pytest.mark.parametrize(
  "override,needle",
  [
    ("--name=Mltm_v4", "--name must be"),
    ("--zone=", "--zone is required"),
    ("--bucket=s3://x", "--bucket must be gs://"),
    ("--flagfile_local=nope.flags", "no such file"),
    ("--steps=create,launch", "--steps must be"),
    ("--accelerator_type=big", "--accelerator_type must look like"),
  ],
)
def test_bad_arguments_fail_with_one_line(override, needle):
  key = override.split("=")[0]
  res = pod(*[a for a in BASE if not a.startswith(key + "=")], override)
  assert res.returncode == 2
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and needle in lines[0], res.stderr
  assert res.stdout == ""  # nothing printed, nothing run


def test_flagfile_must_not_choose_the_hosts(tmp_path):
  f = tmp_path / "x.flags"
  f.write_text((REPO / FLAGFILE).read_text() + "--num_processes=4\n")
  res = pod(*[a for a in BASE if not a.startswith("--flagfile_local")], f"--flagfile_local={f}")
  assert res.returncode == 2 and "--num_processes" in res.stderr


def _fake_bin(tmp_path: Path) -> Path:
  """gcloud (storage cp from a local 'bucket') and python3 (records argv and env)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  scripts = {
    "gcloud": '#!/bin/bash\n[ "$1 $2" = "storage cp" ] || exit 3\n'
    'cp "$FAKE_BUCKET/${3#gs://}" "$4"\n',
    "python3": '#!/bin/bash\necho "MLTM_DISTRIBUTED=$MLTM_DISTRIBUTED" > "$HOME/called"\n'
    'printf "%s\\n" "$@" >> "$HOME/called"\n',
  }
  for name, text in scripts.items():
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(stat.S_IRWXU)
  return bin_dir


@pytest.mark.parametrize("detach", [False, True])
def test_worker_run_script_starts_distributed_training(tmp_path, detach):
  """The `run` step's worker script, executed by bash: it fetches the flagfile from the
  bucket and starts launch.train with MLTM_DISTRIBUTED=1 and the shared run directory."""
  home = tmp_path / "home"
  (home / tpu_pod.REMOTE_DIR).mkdir(parents=True)
  bucket = tmp_path / "gcs"
  (bucket / "my-bucket" / "exp" / "mltm-v4").mkdir(parents=True)
  (bucket / "my-bucket" / "exp" / "mltm-v4" / "train.flags").write_text("--num_steps=7\n")
  cmd = tpu_pod.build_commands(
    ["run"],
    name="mltm-v4",
    zone="z",
    bucket="gs://my-bucket/exp",
    detach=detach,
    train_args=("--data_dir=/data dir",),
    jax_pin="0",
  )[0]
  script = next(a for a in cmd if a.startswith("--command=")).split("=", 1)[1]
  env = dict(
    os.environ,
    HOME=str(home),
    PATH=f"{_fake_bin(tmp_path)}:{os.environ['PATH']}",
    FAKE_BUCKET=str(bucket),
  )
  res = subprocess.run(
    ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False
  )
  assert res.returncode == 0, res.stderr
  called = home / "called"
  for _ in range(100):  # detached: started in the background
    if called.is_file() and len(called.read_text().splitlines()) >= 6:
      break
    time.sleep(0.05)
  lines = called.read_text().splitlines()
  assert lines[0] == "MLTM_DISTRIBUTED=1"
  argv = lines[1:]
  assert argv[:2] == ["-m", "launch.train"]
  assert (Path("/tmp/mltm_train.flags")).read_text() == "--num_steps=7\n"
  assert f"--workdir={home}/bucket/exp/mltm-v4/run" in argv  # $HOME expanded
  assert "--data_dir=/data dir" in argv and argv.index("--flagfile=/tmp/mltm_train.flags") < (
    argv.index(f"--workdir={home}/bucket/exp/mltm-v4/run")
  )
  assert (home / "train.log").exists() == detach

  # absl: the later --workdir overrides the flagfile's (the shipped configs set one).
  probe = subprocess.run(
    [
      sys.executable,
      "-c",
      (
        "import sys; from absl import flags; from launch.flags import define_config_flags, "
        "config_from_flags; define_config_flags(); flags.FLAGS(sys.argv); "
        "print(config_from_flags().workdir)"
      ),
      f"--flagfile={FLAGFILE}",
      f"--workdir={home}/bucket/exp/mltm-v4/run",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  assert probe.stdout.strip() == f"{home}/bucket/exp/mltm-v4/run", probe.stderr
