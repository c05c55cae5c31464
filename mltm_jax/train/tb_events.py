"""TensorBoard scalar event files, written without a TensorBoard library.

An event file is a sequence of TFRecords (uint64 length, masked CRC-32C of the length, the
bytes, masked CRC-32C of the bytes; little endian), each holding one serialised `Event`
protocol buffer (tensorboard/compat/proto/event.proto): first one with file_version
"brain.Event:2", then one per scalar: wall_time (field 1, double), step (2, int64) and a
`Summary` (5) of one `Value` with tag (1, string) and simple_value (2, float). Only these
fields are written, so the encoding is a few lines; the writers that ship with TensorBoard
adapters import torch or TensorFlow when present, seconds at every start of a run.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of ``data``."""
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
  crc = crc32c(data)
  return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # int64 as protobuf encodes it (two's complement for negatives)
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
  return _varint(number << 3 | wire) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
  return _field(number, 2, _varint(len(data)) + data)


def event_bytes(wall_time: float, step: int, *, file_version: str = "", scalar=None) -> bytes:
  """One serialised Event: file_version, or scalar = (tag, value)."""
  out = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(int(step)))
  if file_version:
    out += _bytes_field(3, file_version.encode())
  if scalar is not None:
    tag, value = scalar
    val = _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(value)))
    out += _bytes_field(5, _bytes_field(1, val))
  return out


def record(data: bytes) -> bytes:
  """One TFRecord framing ``data``."""
  length = struct.pack("<Q", len(data))
  return length + _masked_crc(length) + data + _masked_crc(data)


class ScalarEventWriter:
  """Writes scalars to ``logdir/events.out.tfevents.<time>.<host>`` (created with the first
  event); ``flush`` pushes them to disk."""

  def __init__(self, logdir: str | Path):
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    self.path = logdir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
    self._file = self.path.open("ab")
    self._file.write(record(event_bytes(now, 0, file_version="brain.Event:2")))

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._file.write(record(event_bytes(time.time(), step, scalar=(tag, value))))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()
