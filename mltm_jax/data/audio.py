"""Audio decoding: file -> mono float32 waveform at a requested sample rate.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG, MP3 where libsndfile supports it);
resampling uses ``librosa.resample`` with its default ``res_type`` (soxr, high quality).
"""

from __future__ import annotations

import os
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

__all__ = ["AudioError", "load_audio", "fix_length"]

SILENCE_THRESHOLD = 1e-6


class AudioError(Exception):
  """A file that cannot serve as an audio clip.

  Attributes:
    path: the file at fault.
    reason: short reason string: "missing", "corrupt", "empty", "silent" or "nonfinite".
  """

  def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
    self.path = str(path)
    self.reason = reason
    self.detail = detail
    msg = f"{self.path}: {reason}"
    if detail:
      msg += f" ({detail})"
    super().__init__(msg)


def load_audio(
  path: str | os.PathLike,
  sample_rate: int,
  max_seconds: float | None = None,
  reject_silent: bool = False,
) -> np.ndarray:
  """Decode an audio file to a mono waveform.

  Args:
    path: audio file.
    sample_rate: output rate in Hz; the file is resampled when its rate differs.
    max_seconds: if given, only the first ``max_seconds`` seconds are decoded and returned.
    reject_silent: raise AudioError(reason="silent") when every |sample| < 1e-6.

  Returns:
    float32 array [T], channels averaged (downmix by mean).

  Raises:
    AudioError: reason "missing" (no such file), "corrupt" (libsndfile cannot decode it),
      "empty" (zero samples), "nonfinite" (NaN/inf samples), "silent" (see reject_silent).
  """
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be positive, got {sample_rate}")
  if max_seconds is not None and max_seconds <= 0:
    raise ValueError(f"max_seconds must be positive, got {max_seconds}")
  path = Path(path)
  if not path.is_file():
    raise AudioError(path, "missing")
  try:
    with sf.SoundFile(str(path)) as f:
      file_sr = int(f.samplerate)
      frames = -1
      if max_seconds is not None:
        frames = int(np.ceil(max_seconds * file_sr))
      data = f.read(frames=frames, dtype="float32", always_2d=True)
  except (sf.SoundFileError, RuntimeError) as e:
    # soundfile raises LibsndfileError (a SoundFileError and RuntimeError) when it cannot decode.
    raise AudioError(path, "corrupt", str(e).splitlines()[0] if str(e) else "") from e
  if data.shape[0] == 0 or data.shape[1] == 0:
    raise AudioError(path, "empty")
  wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
  if not np.all(np.isfinite(wave)):
    raise AudioError(path, "nonfinite")
  if reject_silent and float(np.max(np.abs(wave))) < SILENCE_THRESHOLD:
    raise AudioError(path, "silent")
  if file_sr != sample_rate:
    wave = librosa.resample(wave, orig_sr=file_sr, target_sr=sample_rate)
  if max_seconds is not None:
    wave = wave[: int(round(max_seconds * sample_rate))]
  wave = np.ascontiguousarray(wave, dtype=np.float32)
  if wave.shape[0] == 0:
    raise AudioError(path, "empty")
  return wave


def fix_length(wave: np.ndarray, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
  """Crop or zero-pad a waveform to exactly ``length`` samples.

  Args:
    wave: [T] waveform (any float dtype; dtype is kept).
    length: output length (> 0).
    rng: if given and T > length, the crop start is drawn uniformly from [0, T - length];
      otherwise the crop starts at 0.

  Returns:
    [length] array; shorter input is zero-padded at the end.
  """
  if length <= 0:
    raise ValueError(f"length must be positive, got {length}")
  wave = np.asarray(wave)
  if wave.ndim != 1:
    raise ValueError(f"fix_length expects a 1-D waveform, got shape {wave.shape}")
  t = wave.shape[0]
  if t > length:
    start = int(rng.integers(0, t - length + 1)) if rng is not None else 0
    return wave[start : start + length]
  if t < length:
    return np.concatenate([wave, np.zeros(length - t, dtype=wave.dtype)])
  return wave
