"""MIDI -> audio: renders a planned SynthCaps clip (:mod:`mltm_jax.synthcaps.events`) with the
TimGM6mb General-MIDI SoundFont that ships inside pretty_midi.

Each event becomes a standard MIDI file (pretty_midi) that ``midirenderer`` synthesises at
48 kHz stereo; events are downmixed, peak-normalised to their level, mixed, resampled (soxr
HQ) and scaled to the clip's peak. Rendering uses no randomness: the same plan gives the same
samples.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from mltm_jax.synthcaps.sources import SOURCE_BY_NAME

RENDER_SR = 48000  # midirenderer's output rate
LOUD_PEAK_DBFS = -1.0  # clip peak when it holds a loud event
FADE_S = 0.05  # fade-out at the end of each event and where the clip end cuts one


def soundfont_path() -> Path:
  """The General-MIDI SoundFont shipped inside pretty_midi."""
  import pretty_midi

  p = Path(os.path.dirname(pretty_midi.__file__)) / "TimGM6mb.sf2"
  if not p.is_file():
    raise FileNotFoundError(
      f"SoundFont not found: {p} (pretty_midi installation lacks TimGM6mb.sf2)"
    )
  return p


@lru_cache(maxsize=1)
def soundfont_bytes() -> bytes:
  """The SoundFont file's bytes, read once per process."""
  return soundfont_path().read_bytes()


def _event_midi(ev: dict, render_len: float) -> bytes:
  """Standard MIDI file bytes of one event (times relative to the event start)."""
  import pretty_midi

  pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
  inst = pretty_midi.Instrument(program=int(ev["program"]), is_drum=bool(ev["is_drum"]))
  for on, off, pitch, vel in ev["notes"]:
    inst.notes.append(
      pretty_midi.Note(velocity=int(vel), pitch=int(pitch), start=float(on), end=float(off))
    )
  # A controller event at render_len makes the file (and so the rendering) that long.
  inst.control_changes.append(
    pretty_midi.ControlChange(number=7, value=100, time=float(render_len))
  )
  pm.instruments.append(inst)
  buf = io.BytesIO()
  pm.write(buf)
  return buf.getvalue()


def _render_event(ev: dict, sf2: bytes) -> np.ndarray:
  """Mono float32 [n] at RENDER_SR, peak-normalised to 10**(level_db/20), faded out at the end."""
  import midirenderer
  import soundfile as sf

  src = SOURCE_BY_NAME[ev["source"]]
  render_len = ev["notes"][-1][1] + src.tail
  wav = midirenderer.render_wave_from(sf2, _event_midi(ev, render_len))
  pcm, sr = sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)  # the renderer writes PCM_16
  if sr != RENDER_SR:
    raise RuntimeError(f"midirenderer returned {sr} Hz, expected {RENDER_SR}")
  pcm = pcm[: int(round(render_len * RENDER_SR))]
  # downmix: mean over channels, in float32 (int16 full scale -> 1.0)
  x = pcm[:, 0].astype(np.float32)
  for c in range(1, pcm.shape[1]):
    x += pcm[:, c]
  x *= np.float32(1.0 / (32768.0 * pcm.shape[1]))
  fade = min(int(FADE_S * RENDER_SR), x.shape[0])
  x[x.shape[0] - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
  peak = float(np.max(np.abs(x))) if x.size else 0.0
  if peak < 1e-5:
    raise RuntimeError(f"source {ev['source']!r} rendered silence (notes {ev['notes'][:2]}...)")
  return (x * np.float32(10.0 ** (ev["level_db"] / 20.0) / peak)).astype(np.float32)


def render_clip(plan: dict, sample_rate: int, sf2: bytes) -> np.ndarray:
  """Render a planned clip: float32 [plan['num_samples']] at ``sample_rate``.

  Events are rendered one by one at 48 kHz, each peak-normalised to its relative level
  (0 dB loud, -20..-14 dB quiet), mixed, resampled with soxr HQ (what
  ``librosa.resample(res_type='soxr_hq')`` calls) and scaled so the clip peak is
  -1 dBFS plus the level of its loudest event: -1 dBFS with a loud event, about
  -15..-21 dBFS when all are quiet. Never clips.
  """
  import soxr

  n48 = int(round(plan["duration"] * RENDER_SR))
  mix = np.zeros(n48, dtype=np.float32)
  for ev in plan["events"]:
    x = _render_event(ev, sf2)
    o = int(round(ev["start"] * RENDER_SR))
    m = min(x.shape[0], n48 - o)
    if m <= 0:
      continue
    if m < x.shape[0]:  # cut at the clip end: fade out
      x = x[:m].copy()
      f = min(int(FADE_S * RENDER_SR), m)
      x[m - f :] *= np.linspace(1.0, 0.0, f, dtype=np.float32)
    mix[o : o + m] += x
  y = mix if sample_rate == RENDER_SR else soxr.resample(mix, RENDER_SR, sample_rate, quality="HQ")
  n = plan["num_samples"]
  y = np.asarray(y[:n], dtype=np.float32)
  if y.shape[0] < n:
    y = np.concatenate([y, np.zeros(n - y.shape[0], np.float32)])
  peak = float(np.max(np.abs(y)))
  target = 10.0 ** ((LOUD_PEAK_DBFS + max(ev["level_db"] for ev in plan["events"])) / 20.0)
  return (y * np.float32(target / peak)).astype(np.float32)
