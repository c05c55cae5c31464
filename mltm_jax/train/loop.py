"""The training loop, top to bottom: workdir, data, model, resume, steps, eval, final test."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from mltm_jax.config import Config
from mltm_jax.data.noise import apply_noise
from mltm_jax.data.input_pipeline import TrainBatches
from mltm_jax.evaluation.evaluate import retrieval_report, selection_score
from mltm_jax.train.checkpoint import Checkpoints
from mltm_jax.train.metrics_writer import MetricsWriter
from mltm_jax.train.preemption import Preemption
from mltm_jax.data.splits import load
from mltm_jax.model import build_model, check_audio_init
from mltm_jax.run_dir import RunDir
from mltm_jax.sharding import to_global
from mltm_jax.train.state import init_state, make_optimizer
from mltm_jax.train.step import make_train_step


def log_skipped(step: int, skipped: int, logged: int) -> int:
  """Warns once about the updates the NaN guard skipped since the last log; returns the new
  logged count (skipped: the state's running count)."""
  if skipped > logged:
    logging.warning(
      "step %d: %d update(s) skipped since the last log (non-finite loss or gradient; %d in total)",
      step,
      skipped - logged,
      skipped,
    )
  return skipped


def _resumed_best(ckpts: Checkpoints, best_path: Path, write: bool) -> dict:
  """The best validation so far. The best checkpoint on disk decides (best.json is written
  after it, so a run killed in between leaves best.json one best behind; it is rewritten)."""
  on_disk = ckpts.best_so_far()
  if on_disk is None:
    return {"score": -1.0}
  step, score = on_disk
  written = json.loads(best_path.read_text()) if best_path.is_file() else {}
  if written.get("step") == step:
    return written
  best = {"score": score, "step": step, "report": None}
  if write:
    best_path.write_text(json.dumps(best, indent=2))
  return best


def train_and_evaluate(cfg: Config) -> dict:
  """Trains, keeps the best validation checkpoint, evaluates it on the test split (and, for
  SynthCaps with a held-out split, on that split too: key ``heldout``).

  Returns the final metrics (also written to WORKDIR/final_metrics.json).
  """
  t_start = time.time()
  preempt = Preemption.install()  # SIGTERM from here on: stop cleanly (see preemption.py)
  check_audio_init(cfg)  # a mismatched --audio_init fails before any file or data work
  run_dir = RunDir(cfg.workdir)
  workdir = run_dir.path
  workdir.mkdir(parents=True, exist_ok=True)
  main_process = jax.process_index() == 0
  if main_process:
    run_dir.write_config(cfg)

  # Data: splits in memory, caption inputs (frozen-encoder features are cached).
  train, val = load(cfg, "train", cfg.progress), load(cfg, "val", cfg.progress)
  train = apply_noise(cfg, train, workdir, write=main_process)  # --noise_p: training pairs only
  cfg = cfg.with_epochs(len(train.captions))  # --num_epochs / --lr_decay_epochs -> steps
  model = build_model(cfg)
  tx = make_optimizer(cfg)
  cache = run_dir.cache
  model.prepare_audio(train, cfg.progress, cache)  # --precompute_mel: log-mels on first use
  model.prepare_audio(val, cfg.progress, cache)
  train_text = model.text_inputs(train, cache, cfg.progress)
  val_text = model.text_inputs(val, cache, cfg.progress)
  logging.info(
    "train: %d clips / %d captions (%d skipped); val: %d clips",
    train.num_clips,
    len(train.captions),
    len(train.skipped),
    val.num_clips,
  )

  # Model state, resumed from the newest readable checkpoint.
  ckpts = Checkpoints(workdir, cfg.keep_checkpoints)
  state = init_state(model, tx)
  restored = ckpts.restore_latest(state)
  if restored is not None:
    state = restored
  start = int(state.step)
  best_path = run_dir.best_file
  best = _resumed_best(ckpts, best_path, main_process)
  skipped_logged = int(state.skipped)

  # Batches: a pure function of the step (exact resume), this process's rows only, read from
  # the clip store per batch.
  batches_of = TrainBatches(
    train,
    train_text,
    cfg.batch_size,
    cfg.seed,
    cfg.clip_samples,
    model.clip_frames,
    jax.process_index(),
    jax.process_count(),
  )

  train_step = make_train_step(cfg, model.audio_tower, model.text_tower, tx, model.mesh)
  writer = MetricsWriter(workdir)

  def validate(step: int) -> None:
    nonlocal best
    audio, text = model.embed_split(state, val, val_text)
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
  if start < cfg.num_steps and preempt.stop(start, cfg.num_steps):  # SIGTERM in start-up
    return preempt.shutdown(ckpts, start, None, writer, bar)  # nothing new to save
  batches = batches_of.iterate(start, cfg.num_steps, put=lambda b: to_global(model.mesh, b))
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
          "epoch": done / batches_of.steps_per_epoch,
        },
      )
      bar.set_postfix(loss=f"{float(m['loss']):.4f}", skipped=int(m["skipped"]))
      skipped_logged = log_skipped(done, int(m["skipped"]), skipped_logged)
    if done % cfg.eval_every == 0 or done == cfg.num_steps:
      validate(done)
      ckpts.save_latest(done, state, force=True)
    if preempt.stop(done, cfg.num_steps):  # checkpoint of this step, then return {}
      return preempt.shutdown(ckpts, done, state, batches, writer, bar)
  bar.close()
  if start >= cfg.num_steps and best["score"] < 0:
    validate(start)
  ckpts.wait()

  # Final: the best validation checkpoint on the test split (and SynthCaps' held-out split),
  # both ranking scores.
  best_state = ckpts.restore_best(state) or state
  batches.close()

  def final_reports(which: str) -> dict[str, dict]:
    split = load(cfg, which, cfg.progress)
    model.prepare_audio(split, cfg.progress, cache)
    text_inputs = model.text_inputs(split, cache, cfg.progress)
    audio, text = model.embed_split(best_state, split, text_inputs)
    metric = best_state.params["metric"]
    return {
      r: retrieval_report(cfg, audio, text, split.caption_to_clip, metric, r)
      for r in ("distance", "plan")
    }

  reports = final_reports("test")
  final = dict(reports[cfg.rank_by])
  other = "plan" if cfg.rank_by == "distance" else "distance"
  final["wall_seconds"] = round(time.time() - t_start, 1)
  final["best_step"] = best.get("step")
  final["skipped_steps"] = int(state.skipped)
  final[f"by_{other}"] = {k: reports[other][k] for k in ("t2a", "a2t")}
  if cfg.has_heldout:
    held = final_reports("heldout")
    by_other = {k: held[other][k] for k in ("t2a", "a2t")}
    final["heldout"] = {**held[cfg.rank_by], f"by_{other}": by_other}
    final["wall_seconds"] = round(time.time() - t_start, 1)
  if main_process:
    run_dir.final_file.write_text(json.dumps(final, indent=2))
  writer.write(cfg.num_steps, "test", final)
  writer.close()
  ckpts.close()
  return final
