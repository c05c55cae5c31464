"""The training loop, top to bottom: workdir, data, model, resume, steps, eval, final test."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from mltm_jax.config import Config
from mltm_jax.data.pipeline import PairSampler, crop_batch, crop_mel_batch, host_slice, prefetch
from mltm_jax.evaluation.evaluate import retrieval_report, selection_score
from mltm_jax.train.checkpoint import Checkpoints
from mltm_jax.train.metrics_writer import MetricsWriter
from mltm_jax.train.setup import build_run, load
from mltm_jax.train.step import make_train_step, to_global


def write_run_config(cfg: Config, workdir: Path) -> None:
  """WORKDIR/config.json (resolved flags) and WORKDIR/flags.txt (a flagfile to rerun)."""
  path = workdir / "config.json"
  if path.is_file():
    old = json.loads(path.read_text())
    new = json.loads(cfg.to_json())
    changed = sorted(k for k in new if old.get(k) != new[k] and k not in ("num_steps", "progress"))
    if changed:
      logging.warning("resuming %s with changed flags: %s", workdir, ", ".join(changed))
  path.write_text(cfg.to_json())
  (workdir / "flags.txt").write_text(
    "".join(f"--{k}={v}\n" for k, v in json.loads(cfg.to_json()).items())
  )


class _Preemption:
  """SIGTERM sets a flag; the loop then saves a checkpoint and returns cleanly."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not in the main thread
      pass

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


def train_and_evaluate(cfg: Config) -> dict:
  """Trains, keeps the best validation checkpoint, evaluates it on the test split.

  Returns the final metrics (also written to WORKDIR/final_metrics.json).
  """
  t_start = time.time()
  workdir = Path(cfg.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  main_process = jax.process_index() == 0
  if main_process:
    write_run_config(cfg, workdir)

  # Data: splits in memory, caption inputs (frozen-encoder features are cached).
  train, val = load(cfg, "train", cfg.progress), load(cfg, "val", cfg.progress)
  run = build_run(cfg)
  cache = workdir / "cache"
  run.prepare_audio(train, cfg.progress)
  run.prepare_audio(val, cfg.progress)
  train_text = run.text_inputs(train, cache, cfg.progress)
  val_text = run.text_inputs(val, cache, cfg.progress)
  logging.info(
    "train: %d clips / %d captions (%d skipped); val: %d clips",
    train.num_clips,
    len(train.captions),
    len(train.skipped),
    val.num_clips,
  )

  # Model state, resumed from the newest readable checkpoint.
  ckpts = Checkpoints(workdir, cfg.keep_checkpoints)
  state = run.init_state()
  restored = ckpts.restore_latest(state)
  if restored is not None:
    state = restored
  start = int(state.step)
  best_path = workdir / "best.json"
  best = json.loads(best_path.read_text()) if best_path.is_file() else {"score": -1.0}

  # Batches: a pure function of the step (exact resume), this host's rows only.
  sampler = PairSampler(train.clip_captions, cfg.batch_size, cfg.seed)
  rows = host_slice(cfg.batch_size, jax.process_index(), jax.process_count())

  def make_batch(step: int) -> dict:
    clips, caps = sampler.global_batch(step)
    clips, caps = clips[rows], caps[rows]
    text = jax.tree.map(lambda x: x[caps], train_text)
    audio = (
      crop_mel_batch(train.mels, clips, run.clip_frames, cfg.seed, step)
      if train.mels is not None
      else crop_batch(train.waves, clips, cfg.clip_samples, cfg.seed, step)
    )
    return {"audio": audio, "text": text}

  train_step = make_train_step(cfg, run.audio_tower, run.text_tower, run.tx, run.mesh)
  writer = MetricsWriter(workdir)
  preempt = _Preemption()

  def validate(step: int) -> None:
    nonlocal best
    audio, text = run.embed_split(state, val, val_text)
    report = retrieval_report(
      cfg, audio, text, val.caption_to_clip, state.params["metric"], "distance"
    )
    score = selection_score(report)
    writer.write(step, "val", {**report, "score": score})
    if score > best["score"]:
      best = {"score": score, "step": step, "report": report}
      ckpts.save_best(step, state, score)
      if main_process:
        best_path.write_text(json.dumps(best, indent=2))
    tqdm.write(
      f"step {step}: val R@1 t2a {report['t2a']['R@1']:.1f} a2t "
      f"{report['a2t']['R@1']:.1f}  R@10 t2a {report['t2a']['R@10']:.1f} a2t "
      f"{report['a2t']['R@10']:.1f}  (best score {best['score']:.1f} @ {best['step']})"
    )

  bar = tqdm(
    total=cfg.num_steps,
    initial=start,
    desc="train",
    unit="step",
    disable=not cfg.progress or not main_process,
  )
  t_log = time.time()
  batches = prefetch(lambda s: to_global(run.mesh, make_batch(s)), range(start, cfg.num_steps))
  for step in range(start, cfg.num_steps):
    state, metrics = train_step(state, next(batches))
    bar.update(1)
    done = step + 1
    if done % cfg.log_every == 0 or done == cfg.num_steps:
      m = jax.device_get(metrics)
      elapsed = time.time() - t_log
      t_log = time.time()
      writer.write(
        done,
        "train",
        {
          **m,
          "steps_per_s": cfg.log_every / max(elapsed, 1e-9),
          "epoch": done / sampler.steps_per_epoch,
        },
      )
      bar.set_postfix(loss=f"{float(m['loss']):.4f}", skipped=int(m["skipped"]))
      if not np.isfinite(m["loss"]):
        logging.warning(
          "step %d: non-finite loss, update skipped (%d so far)", done, int(m["skipped"])
        )
    if done % cfg.eval_every == 0 or done == cfg.num_steps:
      validate(done)
      ckpts.save_latest(done, state, force=True)
    if preempt.requested:
      ckpts.save_latest(done, state, force=True)
      ckpts.wait()
      bar.close()
      logging.warning("SIGTERM: checkpoint saved at step %d; exiting", done)
      return {}
  bar.close()
  if start >= cfg.num_steps and best["score"] < 0:
    validate(start)
  ckpts.wait()

  # Final: the best validation checkpoint on the test split, both ranking scores.
  best_state = ckpts.restore_best(state) or state
  test = load(cfg, "test", cfg.progress)
  run.prepare_audio(test, cfg.progress)
  test_text = run.text_inputs(test, cache, cfg.progress)
  audio, text = run.embed_split(best_state, test, test_text)
  reports = {
    r: retrieval_report(cfg, audio, text, test.caption_to_clip, best_state.params["metric"], r)
    for r in ("distance", "plan")
  }
  final = dict(reports[cfg.rank_by])
  other = "plan" if cfg.rank_by == "distance" else "distance"
  final["wall_seconds"] = round(time.time() - t_start, 1)
  final["best_step"] = best.get("step")
  final["skipped_steps"] = int(state.skipped)
  final[f"by_{other}"] = {k: reports[other][k] for k in ("t2a", "a2t")}
  if main_process:
    (workdir / "final_metrics.json").write_text(json.dumps(final, indent=2))
  writer.write(cfg.num_steps, "test", final)
  writer.close()
  ckpts.close()
  return final
