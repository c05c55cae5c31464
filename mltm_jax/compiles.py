"""Counting XLA compilations in this process (jax.monitoring's backend-compile events; the event
wraps jax's compile-or-load, so a program loaded from the persistent compilation cache counts
too)."""

from __future__ import annotations

import threading

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
  """Counts the XLA programs compiled (or loaded from the persistent compilation cache) in this
  process while it is open (every thread).

  ``count``: compilations so far; ``names``: the jitted functions' names, in order.
  Use as a context manager, or call :meth:`close` to stop counting.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self.names: list[str] = []
    jax.monitoring.register_event_duration_secs_listener(self._on_event)
    self._open = True

  def _on_event(self, event: str, duration: float, **kwargs) -> None:
    del duration
    if event == BACKEND_COMPILE_EVENT:
      with self._lock:
        self.names.append(str(kwargs.get("fun_name", "?")))

  @property
  def count(self) -> int:
    with self._lock:
      return len(self.names)

  def close(self) -> None:
    if self._open:
      jax.monitoring.unregister_event_duration_listener(self._on_event)
      self._open = False

  def __enter__(self) -> CompileCounter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
