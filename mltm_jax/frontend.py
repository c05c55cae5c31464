"""Audio frontend in JAX: log-mel spectrogram and SpecAugment stripe dropping.

`log_mel` reproduces

    librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop,
            win_length=win, window="hann", center=True, pad_mode="reflect",
            power=2.0, n_mels=n_mels, fmin=fmin, fmax=fmax),
        ref=ref, amin=amin, top_db=top_db).T

which is also what torchlibrosa's `Spectrogram` + `LogmelFilterBank` (the PANNs
frontend) computes: periodic Hann window zero-padded to n_fft, reflect padding of
n_fft // 2 on both sides, power spectrogram, slaney mel filterbank
(`librosa.filters.mel(htk=False, norm="slaney")`), 10 * log10(max(amin, x)) minus
10 * log10(max(amin, ref)).

`spec_augment` reproduces torchlibrosa's `SpecAugmentation` / `DropStripes`: per
example and per stripe, width ~ U{0, ..., width - 1}, start ~ U{0, ..., total - width - 1},
masked values set to 0. PANNs applies it AFTER its input BatchNorm (bn0), where 0 is
the per-mel-bin mean; on raw dB values 0 is not "silence", see `spec_augment`.

Everything is static-shape and jit-able; `MelConfig` is hashable, so pass it as a
static argument (or close over it) when jitting.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MelConfig:
  """Log-mel settings. Defaults are the PANNs (AudioSet, 32 kHz) settings.

  Attributes:
      sample_rate: Hz.
      n_fft: FFT size (samples).
      win_length: Hann window length (samples), <= n_fft; centred zero-padded to n_fft.
      hop_length: frame hop (samples).
      n_mels: number of mel bins.
      fmin, fmax: mel filterbank edges (Hz); fmax None means sample_rate / 2.
      amin: floor on the power before log10.
      ref: reference power (0 dB), ref 1.0 = absolute scale.
      top_db: if not None, clip to max - top_db per example (librosa clips over the
          whole array it is given; here the max is taken per example).
  """

  sample_rate: int = 32000
  n_fft: int = 1024
  win_length: int = 1024
  hop_length: int = 320
  n_mels: int = 64
  fmin: float = 50.0
  fmax: Optional[float] = 14000.0
  amin: float = 1e-10
  ref: float = 1.0
  top_db: Optional[float] = None

  def __post_init__(self):
    if not 0 < self.win_length <= self.n_fft:
      raise ValueError(
        f"MelConfig: win_length={self.win_length} must be in (0, n_fft={self.n_fft}]"
      )
    if self.hop_length <= 0:
      raise ValueError(f"MelConfig: hop_length={self.hop_length} must be positive")
    fmax = self.sample_rate / 2 if self.fmax is None else self.fmax
    if not 0 <= self.fmin < fmax <= self.sample_rate / 2:
      raise ValueError(f"MelConfig: need 0 <= fmin={self.fmin} < fmax={fmax} <= sample_rate/2")
    if self.top_db is not None and self.top_db < 0:
      raise ValueError(f"MelConfig: top_db={self.top_db} must be non-negative or None")

  def num_frames(self, num_samples: int) -> int:
    """Frames produced by `log_mel` for `num_samples` samples (center=True)."""
    return 1 + num_samples // self.hop_length


# Slaney's mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above.
_MEL_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
  f = np.asarray(f, np.float64)
  mels = f / _MEL_F_SP
  log = f >= _MEL_MIN_LOG_HZ
  mels[log] = _MEL_MIN_LOG_MEL + np.log(f[log] / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
  return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
  m = np.asarray(m, np.float64)
  freqs = _MEL_F_SP * m
  log = m >= _MEL_MIN_LOG_MEL
  freqs[log] = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (m[log] - _MEL_MIN_LOG_MEL))
  return freqs


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
  """Slaney mel filterbank as librosa/torchlibrosa build it: triangles between n_mels + 2
  frequencies equally spaced in Slaney mels over [fmin, fmax], each scaled by 2 / its width
  in Hz (area normalisation), computed in float64 and stored in float32 as librosa does.

  Returns: float32 [n_fft // 2 + 1, n_mels], equal to `librosa.filters.mel(...).T` with
  htk=False, norm="slaney" (librosa's defaults and what torchlibrosa uses; tested), without
  importing librosa (its import compiles numba kernels in every process).
  """
  fft_freqs = np.fft.rfftfreq(n=cfg.n_fft, d=1.0 / cfg.sample_rate)
  lo, hi = _hz_to_mel(np.array([cfg.fmin, cfg.fmax]))
  mel_f = _mel_to_hz(np.linspace(lo, hi, cfg.n_mels + 2))
  fdiff = np.diff(mel_f)
  ramps = np.subtract.outer(mel_f, fft_freqs)
  weights = np.zeros((cfg.n_mels, fft_freqs.size), np.float32)
  for i in range(cfg.n_mels):
    weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
  weights *= (2.0 / (mel_f[2 : cfg.n_mels + 2] - mel_f[: cfg.n_mels]))[:, None]
  return np.ascontiguousarray(weights.T)


def _window(cfg: MelConfig) -> np.ndarray:
  """Periodic Hann of win_length, centred and zero-padded to n_fft: float32 [n_fft]."""
  import scipy.signal

  win = scipy.signal.get_window("hann", cfg.win_length, fftbins=True)
  left = (cfg.n_fft - cfg.win_length) // 2
  win = np.pad(win, (left, cfg.n_fft - cfg.win_length - left))
  return win.astype(np.float32)


def _frames(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """Overlapping frames without a gather.

  Args: x [B, L] float32 (already padded), n_fft <= L.
  Returns: [B, 1 + (L - n_fft) // hop, n_fft]; frame i is x[:, i*hop : i*hop + n_fft].

  The signal is cut into hop-sized chunks [B, n_chunks, hop]; frame i is chunks
  i .. i + k - 2 followed by the first n_fft - (k - 1) * hop samples of chunk
  i + k - 1 (k = ceil(n_fft / hop)). k static slices and one concat, no gather
  (why: WORKSPACE.md, Input pipeline).
  """
  b, length = x.shape
  n_frames = 1 + (length - n_fft) // hop
  k = -(-n_fft // hop)
  n_chunks = n_frames + k - 1
  need = n_chunks * hop
  if need > length:  # zeros past the end never fall inside a frame
    x = jnp.pad(x, ((0, 0), (0, need - length)))
  chunks = x[:, :need].reshape(b, n_chunks, hop)
  parts = [chunks[:, j : j + n_frames] for j in range(k - 1)]
  parts.append(chunks[:, k - 1 : k - 1 + n_frames, : n_fft - (k - 1) * hop])
  return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def power_spectrogram(waveforms: jax.Array, cfg: MelConfig) -> jax.Array:
  """|STFT|^2 with librosa's center=True, reflect padding, periodic Hann.

  Args: waveforms float32 [B, T], T > n_fft // 2 (reflect padding needs it).
  Returns: float32 [B, 1 + T // hop_length, n_fft // 2 + 1].
  """
  if waveforms.ndim != 2:
    raise ValueError(f"frontend: waveforms must be [B, T], got shape {waveforms.shape}")
  pad = cfg.n_fft // 2
  if waveforms.shape[1] <= pad:
    raise ValueError(
      f"frontend: clip of {waveforms.shape[1]} samples is too short for "
      f"reflect padding of n_fft // 2 = {pad}"
    )
  x = jnp.pad(waveforms.astype(jnp.float32), ((0, 0), (pad, pad)), mode="reflect")
  frames = _frames(x, cfg.n_fft, cfg.hop_length) * jnp.asarray(_window(cfg))
  spec = jnp.fft.rfft(frames, n=cfg.n_fft, axis=-1)
  return jnp.square(spec.real) + jnp.square(spec.imag)


def power_to_db(power: jax.Array, cfg: MelConfig) -> jax.Array:
  """10 log10(max(amin, p)) - 10 log10(max(amin, ref)); optional per-example top_db.

  Args: power float32 [B, ...] (non-negative). Returns: float32, same shape.
  """
  db = 10.0 * jnp.log10(jnp.maximum(power, cfg.amin))
  db = db - 10.0 * float(np.log10(max(cfg.amin, cfg.ref)))
  if cfg.top_db is not None:
    peak = jnp.max(db, axis=tuple(range(1, db.ndim)), keepdims=True)
    db = jnp.maximum(db, peak - cfg.top_db)
  return db


def log_mel(waveforms: jax.Array, cfg: MelConfig = MelConfig()) -> jax.Array:
  """Log-mel spectrogram in dB, matching librosa (see module docstring).

  Args:
      waveforms: float32 [B, T] mono audio in [-1, 1] at cfg.sample_rate.
      cfg: MelConfig (static).
  Returns:
      float32 [B, frames, n_mels], frames = 1 + T // hop_length.
  """
  power = power_spectrogram(waveforms, cfg)
  mel = jnp.matmul(power, jnp.asarray(mel_filterbank(cfg)), precision=jax.lax.Precision.HIGHEST)
  return power_to_db(mel, cfg)


def _stripe_mask(rng: jax.Array, batch: int, total: int, num: int, width: int) -> jax.Array:
  """Boolean [batch, total]: union of `num` stripes per row, torchlibrosa-style.

  Each stripe: w ~ U{0..width-1}, start ~ U{0..total-w-1} (torchlibrosa's
  randint(0, total - w), so the last position is never masked), covering
  [start, start + w). Needs width <= total.
  """
  if num == 0 or width <= 1:
    return jnp.zeros((batch, total), dtype=bool)
  k_w, k_s = jax.random.split(rng)
  w = jax.random.randint(k_w, (batch, num, 1), 0, width)
  start = jax.random.randint(k_s, (batch, num, 1), 0, total - w)
  pos = jax.lax.broadcasted_iota(jnp.int32, (batch, num, total), 2)
  return jnp.any((pos >= start) & (pos < start + w), axis=1)


def spec_augment(
  rng: jax.Array,
  mel: jax.Array,
  *,
  time_masks: int = 2,
  time_width: int = 64,
  freq_masks: int = 2,
  freq_width: int = 8,
  fill_value: float = 0.0,
) -> jax.Array:
  """SpecAugment stripe dropping as torchlibrosa's SpecAugmentation (PANNs).

  Per example: `time_masks` time stripes of width uniform in [0, time_width) and
  `freq_masks` frequency stripes of width uniform in [0, freq_width), each at a
  uniform start with the stripe inside the array; stripes may overlap. Masked
  entries become `fill_value` (torchlibrosa: 0; PANNs applies it after bn0, so 0 is
  the per-bin mean; on raw dB log-mel 0 dB is a loud value, not silence).

  Widths are in frames / mel bins: PANNs' 64 frames are 0.64 s at 100 frames/s;
  scale time_width to the frame rate in use (e.g. 16 at 16 kHz with hop 640).

  Args:
    rng: PRNG key.
    mel: [B, F, M] (frames, mel bins), any float dtype; F >= time_width and
      M >= freq_width (as torchlibrosa needs; checked, ValueError otherwise).
  Returns: same shape and dtype as `mel`.
  """
  if mel.ndim != 3:
    raise ValueError(f"spec_augment: mel must be [B, frames, mels], got shape {mel.shape}")
  b, f, m = mel.shape
  if time_masks and time_width > f:
    raise ValueError(
      f"spec_augment: time_width={time_width} exceeds the {f} frames of the input; lower time_width"
    )
  if freq_masks and freq_width > m:
    raise ValueError(
      f"spec_augment: freq_width={freq_width} exceeds the {m} mel bins "
      "of the input; lower freq_width"
    )
  k_t, k_f = jax.random.split(rng)
  t_mask = _stripe_mask(k_t, b, f, time_masks, time_width)  # [B, F]
  f_mask = _stripe_mask(k_f, b, m, freq_masks, freq_width)  # [B, M]
  mask = t_mask[:, :, None] | f_mask[:, None, :]
  return jnp.where(mask, jnp.asarray(fill_value, mel.dtype), mel)
