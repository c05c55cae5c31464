"""Python API: load a trained run once, then embed audio and text and compare them.

  from mltm_jax.api import Retriever
  r = Retriever.from_run("runs/demo")
  a = r.embed_audio(["dog.wav", "rain.flac"])          # [2, D], files of any length
  t = r.embed_text(["a dog barks twice", "rain falls"])  # [2, D]
  d = r.distance(a, t)                                   # [2, 2] learned c_M(audio, text)

Audio of any length is cut into windows of the training clip length and the window
embeddings are pooled (``mltm_jax.inference.chunking``); everything runs batched through
the run's jit-compiled, mesh-sharded embedders (``Model.embed_audio`` / ``Model.embed_text``),
so the embeddings are those of ``launch.evaluate`` for a run evaluated with
``--long_audio=chunk`` (and, for clips no longer than the clip length, any run).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mltm_jax import metric as metric_lib
from mltm_jax.config import Config
from mltm_jax.data.audio import load_audio


class Retriever:
  """A trained run's two towers and learned metric, restored once.

  Attributes:
    cfg: the run's Config (as trained; ``chunk_hop_seconds`` may be overridden).
    step, checkpoint: the restored checkpoint's step and kind ("best" or "latest").
    factor: W [D, r] float32 with M = W W^T, so c_M(u, v) = ||u W - v W||.
  """

  def __init__(self, model: Any, state: Any, workdir: Path, checkpoint: str = "best"):
    self.model = model
    self.checkpoint = checkpoint
    self.state = state
    self.workdir = workdir
    self.cfg: Config = model.cfg
    self.step = int(state.step)
    self.metric_kind = self.cfg.effective_metric
    self.metric_params = jax.tree.map(np.asarray, state.params["metric"])
    self.factor = metric_lib.metric_factor(self.metric_kind, self.metric_params, self.cfg.embed_dim)

  @classmethod
  def from_run(
    cls,
    workdir: str | os.PathLike,
    checkpoint: str = "best",
    chunk_hop_seconds: float | None = None,
    batch_size: int | None = None,
  ) -> Retriever:
    """Restores a run directory written by launch.train.

    Args:
      workdir: the run directory (its config.json and checkpoints/).
      checkpoint: "best" (validation) or "latest".
      chunk_hop_seconds: hop between the windows of long audio (default: the run's
        --chunk_hop_seconds, 0 = half a clip).
      batch_size: windows / captions per compiled batch (default: the run's
        --eval_batch_size).
    Raises:
      FileNotFoundError: no config.json or no such checkpoint.
    """
    from mltm_jax.run_dir import RunDir

    run_dir = RunDir(workdir)
    if checkpoint not in ("best", "latest"):
      raise ValueError(f"checkpoint must be 'best' or 'latest', got {checkpoint!r}")
    overrides: dict[str, Any] = {"progress": False}
    if chunk_hop_seconds is not None:
      overrides["chunk_hop_seconds"] = float(chunk_hop_seconds)
    if batch_size is not None:
      overrides["eval_batch_size"] = int(batch_size)
    cfg = run_dir.config(**overrides)
    problems = cfg.problems()
    if problems:
      raise ValueError(problems[0])
    # Only the params and batch stats are restored (never the optimizer state), into an
    # abstract target: no initialisation run, no pretrained trunk weights read again.
    model, state = run_dir.load(cfg, checkpoint)
    return cls(model, state, run_dir.path, checkpoint)

  # ------------------------------------------------------------------ embeddings
  @property
  def dim(self) -> int:
    return self.cfg.embed_dim

  @property
  def sample_rate(self) -> int:
    return self.cfg.sample_rate

  def load_audio(self, path: str | os.PathLike) -> np.ndarray:
    """A file decoded to the model rate, float32 [T] (raises data.audio.AudioError)."""
    return load_audio(path, self.cfg.sample_rate)

  def embed_waves(self, waves: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
    """[N, D] unit embeddings of waves at the model rate (float32 [T_i], any length)."""
    return self.model.embed_waves(self.state, waves, progress)

  def embed_audio(
    self,
    items: Sequence[str | os.PathLike | np.ndarray],
    sample_rate: int | None = None,
    progress: bool = False,
  ) -> np.ndarray:
    """[N, D] embeddings of audio files (paths) and/or waves (1-D arrays).

    Args:
      items: paths (decoded, downmixed, resampled to the model rate) or float [T] arrays.
      sample_rate: rate of the arrays (default: the model rate); files carry their own.
    """
    if isinstance(items, (str, os.PathLike, np.ndarray)) and not (
      isinstance(items, np.ndarray) and items.ndim == 2
    ):
      items = [items]
    return self.embed_waves(_Waves(items, self, sample_rate), progress)

  def embed_text(self, captions: Sequence[str], progress: bool = False) -> np.ndarray:
    """[N, D] unit embeddings of captions (a batch of n runs padded to 1, 8, 32 or the
    batch size rows: ``mltm_jax.inference.query``)."""
    from mltm_jax.inference.query import embed_captions

    if isinstance(captions, str):
      captions = [captions]
    return embed_captions(
      self.model, self.state.params, captions, self.cfg.eval_batch_size, progress
    )

  def warm_up_text(self, max_batch: int = 1) -> int:
    """Compiles every shape ``embed_text`` runs for up to ``max_batch`` captions (every token
    width), so that later calls of that size compile nothing; returns the shapes run."""
    from mltm_jax.inference.query import warm_up_text

    return warm_up_text(self.model, self.state.params, max_batch, self.cfg.eval_batch_size)

  # ------------------------------------------------------------------ the metric
  def distance(self, a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[N, K] learned distances c_M(a_i, t_j) between embeddings a [N, D] and t [K, D]."""
    a = np.atleast_2d(np.asarray(a, np.float32))
    t = np.atleast_2d(np.asarray(t, np.float32))
    return np.asarray(_distance_fn(self.metric_kind)(a, t, self.metric_params))

  def transform(self, x: np.ndarray) -> np.ndarray:
    """[N, D] -> [N, r] = x W: Euclidean distances between transformed rows are c_M."""
    return np.asarray(x, np.float32) @ self.factor


@functools.cache
def _distance_fn(kind: str):
  return jax.jit(lambda a, t, p: metric_lib.mahalanobis(a, t, p, kind))


class _Waves:
  """Lazy sequence of waves: paths are decoded when the embedder reaches them."""

  def __init__(self, items, retriever: Retriever, sample_rate: int | None):
    self.items = list(items)
    self.retriever = retriever
    self.sample_rate = sample_rate

  def __len__(self) -> int:
    return len(self.items)

  def __iter__(self):
    for item in self.items:
      yield self._wave(item)

  def _wave(self, item) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
      return self.retriever.load_audio(item)
    wave = np.asarray(item, np.float32)
    if wave.ndim != 1 or wave.shape[0] == 0:
      raise ValueError(f"audio arrays must be 1-D and non-empty, got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
      raise ValueError("audio array contains NaN or inf")
    rate = self.retriever.sample_rate
    if self.sample_rate is not None and self.sample_rate != rate:
      import librosa

      wave = librosa.resample(wave, orig_sr=self.sample_rate, target_sr=rate).astype(np.float32)
    return wave
