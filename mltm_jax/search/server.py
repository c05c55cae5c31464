"""uvicorn (h11) with per-connection deadlines: what launch.serve listens with.

uvicorn closes a keep-alive connection that stays idle ``keep_alive_s`` after a response, but
it arms that timer only after a response and any received byte cancels it: a client that
connects and sends nothing, or trickles a request head one byte at a time (slowloris), is
never closed, and one that stops reading a response holds it forever. :class:`GuardedH11`
adds two deadlines:

* a request head must be complete within ``header_timeout_s`` of the connection opening or
  of the previous response ending (received bytes do not extend it);
* a response whose writing stays paused (the client stopped reading) ``send_timeout_s``
  aborts the connection.

h11 bounds a request head to 16 KiB (``h11_max_incomplete_event_size``, 400 beyond) and
rejects non-ASCII targets; uvicorn answers new requests with 503 once ``max_connections``
connections or requests are open (``limit_concurrency``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEAD_BYTES = 16 << 10


@dataclasses.dataclass(frozen=True)
class ServerLimits:
  """Connection limits (seconds, counts); see the module docstring."""

  header_timeout_s: float = 10.0
  keep_alive_s: float = 5.0
  send_timeout_s: float = 30.0
  max_connections: int = 512

  def problems(self) -> list[str]:
    out = []
    for name in ("header_timeout_s", "keep_alive_s", "send_timeout_s"):
      value = getattr(self, name)
      if not 0 < value <= 30:
        out.append(f"--{name.removesuffix('_s')} must be in (0, 30] seconds, got {value:g}")
    if self.max_connections < 1:
      out.append(f"--max_connections must be >= 1, got {self.max_connections}")
    return out


class GuardedH11(H11Protocol):
  """uvicorn's h11 protocol with a request-head deadline and a stalled-send deadline."""

  header_timeout_s = ServerLimits.header_timeout_s
  send_timeout_s = ServerLimits.send_timeout_s

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self._head_timer: asyncio.TimerHandle | None = None
    self._send_timer: asyncio.TimerHandle | None = None
    self._timed_cycle = None

  def connection_made(self, transport) -> None:  # type: ignore[override]
    super().connection_made(transport)
    self._arm_head()

  def connection_lost(self, exc) -> None:
    self._cancel("_head_timer")
    self._cancel("_send_timer")
    super().connection_lost(exc)

  def handle_events(self) -> None:
    super().handle_events()
    if self.cycle is not None and self.cycle is not self._timed_cycle:
      self._timed_cycle = self.cycle  # a request head arrived in time
      self._cancel("_head_timer")

  def on_response_complete(self) -> None:
    if not self.transport.is_closing():
      self._arm_head()  # the next request head has its own deadline (a pipelined one
    super().on_response_complete()  # already received cancels it at once)

  def pause_writing(self) -> None:
    super().pause_writing()
    if self._send_timer is None:
      self._send_timer = self.loop.call_later(self.send_timeout_s, self._abort)

  def resume_writing(self) -> None:
    super().resume_writing()
    self._cancel("_send_timer")

  def _arm_head(self) -> None:
    self._cancel("_head_timer")
    self._head_timer = self.loop.call_later(self.header_timeout_s, self._abort)

  def _cancel(self, name: str) -> None:
    timer = getattr(self, name)
    if timer is not None:
      timer.cancel()
      setattr(self, name, None)

  def _abort(self) -> None:
    self._head_timer = self._send_timer = None
    if not self.transport.is_closing():
      self.transport.abort()


def guarded_protocol(limits: ServerLimits) -> type[GuardedH11]:
  """A GuardedH11 subclass with these limits' deadlines."""
  return type(
    "GuardedH11Limited",
    (GuardedH11,),
    {"header_timeout_s": limits.header_timeout_s, "send_timeout_s": limits.send_timeout_s},
  )


def listen(host: str, port: int) -> socket.socket:
  """A listening TCP socket on host:port (IPv4 or IPv6 by the address; port 0 = any free)."""
  infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
  family, kind, proto, _, addr = infos[0]
  sock = socket.socket(family, kind, proto)
  try:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(2048)
  except OSError:
    sock.close()
    raise
  sock.set_inheritable(True)
  return sock


def make_server(app: Any, limits: ServerLimits) -> uvicorn.Server:
  """A uvicorn server for ``app`` with these limits (no access log, asyncio loop, h11)."""
  config = uvicorn.Config(
    app,
    http=guarded_protocol(limits),
    loop="asyncio",
    ws="none",
    lifespan="off",
    interface="asgi3",
    access_log=False,
    log_level="error",
    server_header=False,
    timeout_keep_alive=limits.keep_alive_s,
    limit_concurrency=limits.max_connections,
    h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    timeout_graceful_shutdown=5,
  )
  return uvicorn.Server(config)
