"""Train an audio-text retrieval model.

  python -m launch.train --flagfile=configs/demo.flags [--loss=contrastive ...]

With no data and no network, the demo config renders SynthCaps, trains, and
prints the test retrieval metrics (also in WORKDIR/final_metrics.json).
"""

from __future__ import annotations

import logging

from absl import app

from launch.flags import config_from_flags, define_config_flags, fail, validated
from launch.runtime import check_distributed_flags, define_distributed_flags, init_runtime

define_config_flags()
define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  cfg = validated(config_from_flags())
  check_distributed_flags(cfg.batch_size)
  if cfg.dataset == "synthcaps":  # a foreign --data_dir fails before the workdir is made
    from mltm_jax.synthcaps import ForeignDirectoryError, check_synthcaps_dir

    try:
      check_synthcaps_dir(cfg.data_dir)
    except ForeignDirectoryError as e:
      fail(str(e))
  init_runtime()
  import jax

  if cfg.batch_size % jax.device_count():
    fail(f"--batch_size={cfg.batch_size} is not divisible by the {jax.device_count()} devices")
  from mltm_jax.evaluation.report import format_metrics_table
  from mltm_jax.train.loop import train_and_evaluate

  try:
    final = train_and_evaluate(cfg)
  except (FileNotFoundError, ValueError) as e:
    fail(str(e).splitlines()[0])
  if final and jax.process_index() == 0:
    print(
      f"\nTest split, ranked by {final['rank_by']} (best validation checkpoint, step "
      f"{final['best_step']}):"
    )
    print(format_metrics_table(final))
    other = next(k for k in final if k.startswith("by_"))
    print(
      f"\nSame checkpoint, ranked by {other[3:]} (transductive OT plan over the test split):"
      if other == "by_plan"
      else f"\nSame checkpoint, ranked by {other[3:]}:"
    )
    print(format_metrics_table({**final[other], "rank_by": other[3:]}))
    if "heldout" in final:
      print(
        f"\nHeld-out split (source pairs and wording never used in training), ranked by "
        f"{final['rank_by']}:"
      )
      print(format_metrics_table(final["heldout"]))
    print(f"wall time {final['wall_seconds']:.0f} s; results in {cfg.workdir}/final_metrics.json")
  from mltm_jax.train.preemption import ignore_sigterm_from_now

  ignore_sigterm_from_now()  # done (finished or checkpointed): exit 0 whatever comes now


if __name__ == "__main__":
  from mltm_jax.train.preemption import Preemption

  Preemption.install()  # before JAX and the data: a SIGTERM from now on exits cleanly
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
