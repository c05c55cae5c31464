"""A search page for an index written by launch.embed, safe to leave running.

  python -m launch.serve --index=INDEX [--port=8000] [--host=127.0.0.1] [--k=10]
      [--backend=exact|flat|ivf|hnsw] [--max_k=100] [--max_batch=8] [--queue_size=256]
      [--queue_timeout=10] [--header_timeout=10] [--keep_alive_timeout=5]
      [--send_timeout=30] [--max_connections=512] [--allowed_hosts=NAME,...] [--token=SECRET]

Open http://127.0.0.1:8000/, type a description, press Enter: the nearest files by the
learned distance, each with an <audio> player. Also: GET /api/search?q=TEXT&k=K (JSON),
GET /api/stats (JSON), GET /audio/ID (the file of result ID; only files of the index inside
its audio directory are served). The ASGI app (mltm_jax/search/web.py) runs on uvicorn with
per-connection deadlines (mltm_jax/search/server.py); searches run on one worker thread fed
by a bounded queue (mltm_jax/search/service.py), every shape compiled before the first
visitor. --port=0 picks a free port (printed on start).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import sys

from absl import app, flags

from launch import search as search_cli
from launch.flags import fail
from launch.runtime import init_runtime

_LOG = logging.getLogger(__name__)
_PORT = flags.DEFINE_integer("port", 8000, "Port (0 = any free port).")
_HOST = flags.DEFINE_string(
  "host", "127.0.0.1", "Interface to listen on (a non-loopback one prints a warning)."
)
_MAX_K = flags.DEFINE_integer("max_k", 100, "Results per search at most (larger k are clamped).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 8, "Waiting searches run together at most.")
_QUEUE = flags.DEFINE_integer(
  "queue_size", 256, "Searches waiting at most; beyond, requests get 503."
)
_QUEUE_TIMEOUT = flags.DEFINE_float(
  "queue_timeout", 10.0, "Seconds a search may wait and run before its request gets 503."
)
_HEADER_TIMEOUT = flags.DEFINE_float(
  "header_timeout", 10.0, "Seconds a connection has to send a complete request head."
)
_KEEP_ALIVE = flags.DEFINE_float(
  "keep_alive_timeout", 5.0, "Seconds an idle connection stays open after a response."
)
_SEND_TIMEOUT = flags.DEFINE_float(
  "send_timeout", 30.0, "Seconds a client may stop reading a response before it is dropped."
)
_MAX_CONN = flags.DEFINE_integer(
  "max_connections", 512, "Open connections / requests at most; beyond, requests get 503."
)
_ALLOWED = flags.DEFINE_list(
  "allowed_hosts", [], "Host header names accepted besides localhost, 127.0.0.1 and [::1]."
)
_TOKEN = flags.DEFINE_string(
  "token", None, "A bearer token every request must carry (Authorization: Bearer, or ?token=)."
)
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{8,256}", re.ASCII)


def is_loopback(host: str) -> bool:
  """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
  if host.lower() == "localhost":
    return True
  try:
    return ipaddress.ip_address(host.strip("[]")).is_loopback
  except ValueError:
    return False


def exposure_warning(host: str, token: str | None) -> str | None:
  """The one warning line for a non-loopback --host (None on loopback)."""
  if is_loopback(host):
    return None
  advice = (
    "every request must carry --token"
    if token
    else "anyone who can reach it can search the index and download its audio; pass"
    " --token=SECRET to require a bearer token"
  )
  return f"warning: --host={host} is not a loopback address: {advice}"


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
  """The Host header names accepted: the loopback names, --allowed_hosts, and --host when it
  is a specific address."""
  from mltm_jax.search.web import DEFAULT_ALLOWED_HOSTS

  names = list(DEFAULT_ALLOWED_HOSTS) + list(extra)
  if host not in ("0.0.0.0", "::", ""):
    names.append(host)
  return names


def check_flags(argv) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not search_cli._INDEX.value:
    fail("--index is required")
  if not 0 <= _PORT.value <= 65535:
    fail(f"--port must be in [0, 65535], got {_PORT.value}")
  for name, flag in (("k", search_cli._K), ("max_k", _MAX_K), ("max_batch", _MAX_BATCH)):
    if flag.value < 1:
      fail(f"--{name} must be >= 1, got {flag.value}")
  if search_cli._K.value > _MAX_K.value:
    fail(f"--k={search_cli._K.value} is above --max_k={_MAX_K.value}")
  if _QUEUE.value < 1:
    fail(f"--queue_size must be >= 1, got {_QUEUE.value}")
  if not 0 < _QUEUE_TIMEOUT.value <= 30:
    fail(f"--queue_timeout must be in (0, 30] seconds, got {_QUEUE_TIMEOUT.value:g}")
  if _TOKEN.value is not None and not _TOKEN_RE.fullmatch(_TOKEN.value):
    fail("--token must be 8-256 characters of A-Z a-z 0-9 . _ ~ -")
  for name in _ALLOWED.value:
    if not re.fullmatch(r"[A-Za-z0-9.\-_]+|\[?[0-9A-Fa-f:.]+\]?", name, re.ASCII):
      fail(f"--allowed_hosts: {name!r} is not a host name or address")


def main(argv):
  check_flags(argv)
  from mltm_jax.search.server import ServerLimits, listen, make_server
  from mltm_jax.search.service import Searcher, SearchQueue
  from mltm_jax.search.web import SearchApp, WebLimits

  limits = ServerLimits(
    header_timeout_s=_HEADER_TIMEOUT.value,
    keep_alive_s=_KEEP_ALIVE.value,
    send_timeout_s=_SEND_TIMEOUT.value,
    max_connections=_MAX_CONN.value,
  )
  if limits.problems():
    fail(limits.problems()[0])
  warning = exposure_warning(_HOST.value, _TOKEN.value)
  if warning:
    print(warning, file=sys.stderr, flush=True)
  init_runtime()
  params = search_cli.ann_params()
  if params.problems():
    fail(params.problems()[0])
  library, retriever = search_cli.load_searcher(search_cli._INDEX.value, search_cli._WORKDIR.value)
  backend = search_cli._BACKEND.value
  try:
    index = library.index(backend, params, search_cli._BUDGET.value << 20)
  except ValueError as e:
    fail(str(e).splitlines()[0])
  searcher = Searcher(library, retriever, index, _MAX_K.value, _MAX_BATCH.value)
  searcher.warm_up()  # every shape compiled before the first visitor
  queue = SearchQueue(searcher.search, _QUEUE.value, _MAX_BATCH.value)
  web = SearchApp(
    library,
    searcher,
    queue,
    default_k=search_cli._K.value,
    allowed_hosts=allowed_hosts(_HOST.value, _ALLOWED.value),
    token=_TOKEN.value,
    limits=WebLimits(queue_timeout_s=_QUEUE_TIMEOUT.value),
    backend=backend,
  )
  try:
    sock = listen(_HOST.value, _PORT.value)
  except OSError as e:
    fail(f"cannot listen on {_HOST.value}:{_PORT.value} ({e.strerror or e})")
  host, port = sock.getsockname()[:2]
  shown = f"[{host}]" if ":" in host else host
  print(f"serving {library.size} files on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
  server = make_server(web, limits)
  try:
    server.run(sockets=[sock])
  except KeyboardInterrupt:
    pass
  finally:
    queue.close()
    searcher.close()
    sock.close()


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
