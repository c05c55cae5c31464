"""Preemption: SIGTERM -> the loop checkpoints the step it reached and returns cleanly.

A preempted machine gets SIGTERM at any moment: while Python starts, while data loads or
XLA compiles, in the middle of a step, while a checkpoint or a persistent-compilation-cache
entry is written, while the input threads make a batch. The handler therefore only sets a
flag; the training loop reads it between steps (``Preemption.stop``) and then
``Preemption.shutdown``: stops its input threads, writes the checkpoint, waits for it and
returns ``{}``. What makes that safe whenever the signal comes:

* One process-wide handler, installed once and early (``Preemption.install``):
  ``launch.train`` installs it before it parses flags or imports JAX,
  ``train_and_evaluate`` as its first line. Before it, SIGTERM's default action kills the
  process (return code -15); a per-run handler would also forget a SIGTERM that came
  between two runs of one process (``experiments`` runs several). A SIGTERM before the
  first step makes the loop return before it: nothing new to save, nothing written.
  When the run is over, ``launch.train`` ignores SIGTERM (``ignore_sigterm_from_now``):
  Python restores the default action while it finalizes, which would turn a SIGTERM in
  the last milliseconds of a completed run into return code -15.
* Restarted system calls (SA_RESTART, ``signal.siginterrupt(SIGTERM, False)``). Python
  installs its handlers without it, so the kernel fails any system call that the signal
  interrupts, in whichever thread it lands, with EINTR. Python's own calls retry
  (PEP 475); with SA_RESTART no thread of a C/C++ library (XLA, tensorstore under orbax,
  tokenizers, OpenMP/OpenBLAS) sees an EINTR that it may not expect. The flag is still
  set before the loop next reads it (the main thread runs the handler on its way back to
  Python).
* No daemon thread is left running at exit (``quiesce``): Python joins its non-daemon
  threads before it finalizes, but a daemon thread that is inside C++ code with the GIL
  released when finalization starts is ended by ``pthread_exit`` when it wants the GIL
  back, and that unwinding through a ``noexcept`` C++ frame (jaxlib's bindings) calls
  ``std::terminate``: "Fatal Python error: Aborted", return code -6. (A daemon thread
  that runs ``jax.device_put`` in a loop while the main thread returns aborts the
  interpreter this way every time with this project's jaxlib and Python 3.11.)
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

__all__ = ["Preemption", "ignore_sigterm_from_now", "quiesce"]


class Preemption:
  """The process's SIGTERM flag (``Preemption.install()``; one per process).

  With several processes they must stop at the same step (checkpoint saves are
  collective): every ``sync_every`` steps they all-gather their flags and stop if any
  process got SIGTERM.
  """

  _installed: Preemption | None = None
  _lock = threading.Lock()

  def __init__(self, sync_every: int = 10):
    self.requested = False
    self.sync_every = sync_every

  @classmethod
  def install(cls, sync_every: int = 10) -> Preemption:
    """The process-wide instance. From the main thread, also (re)installs its SIGTERM
    handler if SIGTERM has another one (from another thread: the flag only)."""
    with cls._lock:
      if cls._installed is None:
        cls._installed = cls(sync_every)
      inst = cls._installed
      if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) != inst._handle:
          _install_handler(inst._handle)
      return inst

  def _handle(self, signum, frame):
    """Async-signal context: only sets the flag (no logging, no I/O, no locks)."""
    del signum, frame
    self.requested = True

  def stop(self, done: int, last: int) -> bool:
    """Whether to checkpoint and return after step ``done`` (``last``: the final step).

    Called with ``done`` = the first step before the loop runs one, so a SIGTERM during
    start-up ends the run before any step."""
    import jax

    if jax.process_count() == 1:
      return self.requested
    if done % self.sync_every and done != last:
      return False
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))

  def shutdown(self, ckpts, step: int, state, *closables) -> dict:
    """The stop after ``stop`` said so: closes ``closables`` in order (the batch iterator
    first: its threads stop making batches before anything else happens), saves ``state``
    as the checkpoint of ``step`` (``state`` None: before the first step, nothing new to
    save), waits until it is on disk, closes ``ckpts``, waits for the other threads
    (``quiesce``); returns ``{}`` (the loop's result when stopped)."""
    for c in closables:
      c.close()
    if state is not None:
      ckpts.save_latest(step, state, force=True)  # no-op if this step was just saved
    ckpts.wait()
    ckpts.close()
    quiesce()
    if state is None:
      logging.warning("SIGTERM before step %d: nothing new to save; exiting", step + 1)
    else:
      logging.warning("SIGTERM: checkpoint saved at step %d; exiting", step)
    return {}


def ignore_sigterm_from_now() -> None:
  """For a process whose run is over (finished, or stopped with its checkpoint on disk):
  SIGTERM is ignored from now on. Python resets the signals it handles to their default
  action when it finalizes, so a SIGTERM in the last milliseconds of its exit would still
  kill it (return code -15 for a run that completed); an ignored signal stays ignored."""
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _install_handler(handler) -> None:
  try:
    signal.signal(signal.SIGTERM, handler)
    signal.siginterrupt(signal.SIGTERM, False)  # SA_RESTART: no EINTR in other threads
  except (ValueError, OSError):  # no signals here (e.g. an embedded interpreter)
    pass


def quiesce(timeout: float = 10.0) -> list[str]:
  """Waits (up to ``timeout`` s in all) until no daemon thread is running code; returns the
  names of those still running then (and logs them).

  Python joins its non-daemon threads before it finalizes, but not the daemon ones: one
  that is inside C/C++ code with the GIL released when finalization starts is ended by
  ``pthread_exit`` as soon as it wants the GIL back, and that unwinding through a
  ``noexcept`` C++ frame (jaxlib's bindings release the GIL in one) calls
  ``std::terminate``: "Fatal Python error: Aborted", return code -6. A daemon thread
  parked in ``threading``/``queue``/``selectors`` (orbax's event loop, tqdm's monitor,
  an idle executor worker) counts as idle: it does not wake up on its own."""
  me = threading.current_thread()
  deadline = time.monotonic() + timeout
  while True:
    busy = [
      t for t in threading.enumerate() if t is not me and t.daemon and t.is_alive() and not _idle(t)
    ]
    if not busy or time.monotonic() >= deadline:
      break
    busy[0].join(min(0.05, max(0.0, deadline - time.monotonic())))
  if busy:
    logging.warning(
      "preemption: %d daemon thread(s) still running after %.0f s: %s",
      len(busy),
      timeout,
      ", ".join(t.name for t in busy),
    )
  return [t.name for t in busy]


_IDLE_FUNCS = {
  ("threading.py", "wait"),
  ("threading.py", "_wait_for_tstate_lock"),
  ("threading.py", "join"),
  ("queue.py", "get"),
  ("queue.py", "put"),
  ("selectors.py", "select"),
  ("thread.py", "_worker"),  # a concurrent.futures worker waiting on its work queue
}


def _idle(t: threading.Thread) -> bool:
  frame = sys._current_frames().get(t.ident)  # noqa: SLF001
  if frame is None:
    return True  # not started or already gone
  name = frame.f_code.co_filename.rsplit("/", 1)[-1]
  return (name, frame.f_code.co_name) in _IDLE_FUNCS
