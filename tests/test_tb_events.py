"""Our TensorBoard event files, read back with tensorboardX's protocol buffers and CRC-32C (the
format TensorBoard reads)."""

import struct

import numpy as np
import pytest

from mltm_jax.train.metrics_writer import MetricsWriter
from mltm_jax.train.tb_events import crc32c

tbx_crc = pytest.importorskip("tensorboardX.crc32c")
event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def _masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
  """Every Event of a TFRecord file, each record's two masked CRCs checked."""
  data, pos, events = path.read_bytes(), 0, []
  while pos < len(data):
    header = data[pos : pos + 8]
    (length,) = struct.unpack("<Q", header)
    (crc_len,) = struct.unpack("<I", data[pos + 8 : pos + 12])
    body = data[pos + 12 : pos + 12 + length]
    (crc_body,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
    assert crc_len == _masked(tbx_crc.crc32c(header))
    assert crc_body == _masked(tbx_crc.crc32c(body))
    events.append(event_pb2.Event.FromString(body))
    pos += 16 + length
  return events


def test_crc32c_check_value_and_tensorboardx():
  assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
  rng = np.random.default_rng(0)
  for n in (0, 1, 7, 100, 1000):
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c(data) == tbx_crc.crc32c(data)


def test_metrics_writer_events_decode(tmp_path):
  writer = MetricsWriter(tmp_path)
  writer.write(1, "train", {"loss": 2.5, "steps_per_s": 3.25, "note": "text is skipped"})
  writer.write(10, "val", {"t2a": {"R@1": 12.5, "R@10": float("nan")}, "score": 101.0})
  writer.write(2**40, "train", {"loss": -1e-3})
  writer.close()
  (path,) = (tmp_path / "tensorboard").iterdir()
  assert path.name.startswith("events.out.tfevents.")
  events = read_events(path)
  assert events[0].file_version == "brain.Event:2"
  got = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
  assert got == [
    (1, "train/loss", 2.5),
    (1, "train/steps_per_s", 3.25),
    (10, "val/t2a/R_at_1", 12.5),
    (10, "val/score", 101.0),
    (2**40, "train/loss", pytest.approx(-1e-3, rel=1e-7)),
  ]
  assert all(e.wall_time > 1.6e9 for e in events)
