"""A small search page on localhost for an index written by launch.embed.

  python -m launch.serve --index=INDEX [--port=8000] [--host=127.0.0.1] [--k=10]
      [--backend=exact|flat|ivf|hnsw]

Open http://127.0.0.1:8000/, type a description, press Enter: the nearest files by the
learned distance, each with an <audio> player. Also: GET /api/search?q=TEXT&k=K (JSON),
GET /audio/ID (the file of result ID; only files in the index are served).
Standard library http.server; --port=0 picks a free port (printed on start).
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from absl import app, flags

from launch import search as search_cli
from launch.flags import fail
from launch.runtime import init_runtime

_LOG = logging.getLogger(__name__)
_PORT = flags.DEFINE_integer("port", 8000, "Port (0 = any free port).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on.")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 52em; color: #222; }}
form {{ display: flex; gap: .5em; margin-bottom: 1em; }}
input[type=text] {{ flex: 1; font-size: 1.2em; padding: .4em; }}
button {{ font-size: 1.2em; padding: .4em 1em; background: #2860c8; color: white; border: 0; }}
ol {{ padding-left: 1.5em; }}
li.result {{ margin: .6em 0; padding: .4em; background: #eef2fa; border-radius: 4px; }}
.dist {{ font-family: monospace; color: #2860c8; margin-right: 1em; }}
.path {{ font-family: monospace; }}
audio {{ display: block; width: 100%; margin-top: .3em; }}
.meta {{ color: #777; font-size: .9em; }}
</style></head><body>
<h1>Audio search</h1>
<form action="/" method="get" id="search">
<input type="text" name="q" id="q" value="{query}" placeholder="describe a sound" autofocus>
<input type="hidden" name="k" value="{k}">
<button type="submit">Search</button>
</form>
<p class="meta">{meta}</p>
{results}
</body></html>
"""


class SearchService:
  """The loaded index, model and search backend; thread-safe ``search(text, k)``."""

  def __init__(self, library, retriever, index, backend: str, default_k: int):
    self.library = library
    self.retriever = retriever
    self.index = index
    self.backend = backend
    self.default_k = default_k
    self.lock = threading.Lock()

  def search(self, text: str, k: int) -> list[dict]:
    k = max(1, min(k, self.library.size))
    with self.lock:
      emb = self.retriever.embed_text([text])
      dist, ids = self.index.search(emb @ self.library.factor, k)
    return [
      {"id": int(i), "path": self.library.rel_paths[i], "distance": float(d)}
      for d, i in zip(dist[0], ids[0])
      if i >= 0
    ]

  def page(self, query: str, k: int) -> str:
    lib = self.library
    meta = (
      f"{lib.size} files, run {html.escape(lib.settings['workdir'])} step "
      f"{lib.settings['checkpoint_step']}, {self.backend} search; distance = learned c_M"
    )
    results = ""
    if query:
      hits = self.search(query, k)
      items = "".join(
        f'<li class="result"><span class="dist">{h["distance"]:.4f}</span>'
        f'<span class="path">{html.escape(h["path"])}</span>'
        f'<audio controls preload="none" src="/audio/{h["id"]}"></audio></li>'
        for h in hits
      )
      results = f'<ol id="results">{items}</ol>'
    return PAGE.format(
      title="Audio search" + (f": {html.escape(query)}" if query else ""),
      query=html.escape(query, quote=True),
      k=k,
      meta=meta,
      results=results,
    )


def make_handler(service: SearchService):
  class Handler(BaseHTTPRequestHandler):
    server_version = "mltm-search/1"

    def log_message(self, fmt, *args):  # quiet: one debug line per request
      _LOG.debug("%s - " + fmt, self.address_string(), *args)

    def do_GET(self):
      url = urllib.parse.urlsplit(self.path)
      qs = urllib.parse.parse_qs(url.query)
      query = qs.get("q", [""])[0].strip()[:500]
      try:
        k = int(qs.get("k", [service.default_k])[0])
      except ValueError:
        return self._send(HTTPStatus.BAD_REQUEST, b"k must be an integer\n", "text/plain")
      if url.path == "/":
        body = service.page(query, k).encode()
        return self._send(HTTPStatus.OK, body, "text/html; charset=utf-8")
      if url.path == "/api/search":
        if not query:
          return self._send(HTTPStatus.BAD_REQUEST, b"missing q\n", "text/plain")
        body = json.dumps({"query": query, "results": service.search(query, k)}).encode()
        return self._send(HTTPStatus.OK, body, "application/json")
      if url.path.startswith("/audio/"):
        return self._audio(url.path[len("/audio/") :])
      self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _audio(self, ident: str):
      if not ident.isdigit() or int(ident) >= service.library.size:
        return self._send(HTTPStatus.NOT_FOUND, b"no such file\n", "text/plain")
      path = Path(service.library.paths[int(ident)])
      try:
        data = path.read_bytes()
      except OSError:
        return self._send(HTTPStatus.NOT_FOUND, b"file unreadable\n", "text/plain")
      ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
      rng = self.headers.get("Range", "")
      if rng.startswith("bytes=") and "," not in rng:
        first, _, last = rng[6:].partition("-")
        try:
          start = int(first) if first else max(0, len(data) - int(last))
          stop = min(int(last) + 1, len(data)) if (first and last) else len(data)
        except ValueError:
          start, stop = 0, len(data)
        if start < stop:
          self.send_response(HTTPStatus.PARTIAL_CONTENT)
          self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
          return self._body(data[start:stop], ctype)
      self.send_response(HTTPStatus.OK)
      self._body(data, ctype)

    def _send(self, status, body: bytes, ctype: str):
      self.send_response(status)
      self._body(body, ctype)

    def _body(self, body: bytes, ctype: str):
      self.send_header("Content-Type", ctype)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Accept-Ranges", "bytes")
      self.end_headers()
      self.wfile.write(body)

  return Handler


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not search_cli._INDEX.value:
    fail("--index is required")
  if not 0 <= _PORT.value <= 65535:
    fail(f"--port must be in [0, 65535], got {_PORT.value}")
  if search_cli._K.value < 1:
    fail(f"--k must be >= 1, got {search_cli._K.value}")
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
  service = SearchService(library, retriever, index, backend, search_cli._K.value)
  service.search("warm-up", 1)  # compile before the first visitor
  try:
    server = ThreadingHTTPServer((_HOST.value, _PORT.value), make_handler(service))
  except OSError as e:
    fail(f"cannot listen on {_HOST.value}:{_PORT.value} ({e.strerror or e})")
  host, port = server.server_address[:2]
  print(f"serving {library.size} files on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == "__main__":
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)
