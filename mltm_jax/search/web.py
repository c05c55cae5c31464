"""The search page and its JSON API: a small ASGI application (launch.serve runs it on uvicorn).

Routes, GET and HEAD only:

  /             the page; ``?q=TEXT&k=K`` adds the results, each with an <audio> player
  /api/search   ``?q=TEXT&k=K`` -> {"query", "k", "results": [{"id", "path", "distance"}]}
  /api/stats    {"files", "max_k", "pending", "queue_size", "served", "rejected", "failed",
                "compiles", "compiles_after_warm_up"}
  /audio/ID     the file of result ID (a library row), streamed in chunks; one byte range
                (206), an unsatisfiable or malformed one 416

Every request is checked before any work: the Host header must name an allowed host (DNS
rebinding), no request body, a bearer token when one is configured (``Authorization: Bearer
TOKEN``, or ``?token=TOKEN`` once, which sets an HttpOnly cookie for the page and its audio),
``k`` ASCII digits (clamped to ``max_k``), ``q`` at most ``max_query_chars`` characters, the
request head at most ``max_head_bytes``. A bad request gets a 4xx status and a one-line
reason; a full search queue or a search waiting longer than ``queue_timeout_s`` a 503. Audio is
served only for library rows whose file resolves (symlinks followed) inside the library root.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import html
import json
import mimetypes
import os
import re
import stat
import urllib.parse
from collections.abc import Iterable
from typing import Any

from mltm_jax.search.service import QueueFull

DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")
TOKEN_COOKIE = "mltm_token"
_DIGITS = re.compile(r"[0-9]{1,9}", re.ASCII)
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.ASCII)

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
<input type="text" name="q" id="q" value="{query}" placeholder="describe a sound" autofocus
 maxlength="{max_chars}">
<input type="hidden" name="k" value="{k}">
<button type="submit">Search</button>
</form>
<p class="meta">{meta}</p>
{results}
</body></html>
"""

_COMMON_HEADERS = [
  (b"x-content-type-options", b"nosniff"),
  (b"referrer-policy", b"no-referrer"),
  (b"x-frame-options", b"DENY"),
]
_PAGE_CSP = (
  b"default-src 'none'; style-src 'unsafe-inline'; media-src 'self'; form-action 'self';"
  b" frame-ancestors 'none'"
)


@dataclasses.dataclass(frozen=True)
class WebLimits:
  """Per-request bounds of the app (the server's connection limits are elsewhere)."""

  max_query_chars: int = 1000
  queue_timeout_s: float = 10.0
  chunk_bytes: int = 64 << 10
  max_query_fields: int = 16
  max_head_bytes: int = 16 << 10


class HTTPError(Exception):
  """A response with a one-line reason: ``status``, ``reason``, extra ``headers``."""

  def __init__(self, status: int, reason: str, headers: Iterable[tuple[bytes, bytes]] = ()):
    super().__init__(reason)
    self.status = status
    self.reason = reason
    self.headers = list(headers)


def host_name(value: str) -> str | None:
  """The host of a Host header value ("name", "name:port", "[v6]:port"), lower case; None when
  it is not one."""
  value = value.strip().lower()
  if value.startswith("["):
    end = value.find("]")
    if end < 0 or (value[end + 1 :] and not re.fullmatch(r":[0-9]{1,5}", value[end + 1 :])):
      return None
    return value[1:end] or None
  name, _, port = value.partition(":")
  if port and not re.fullmatch(r"[0-9]{1,5}", port, re.ASCII):
    return None
  if not name or not re.fullmatch(r"[a-z0-9.\-_]+", name, re.ASCII):
    return None
  return name


def normalise_hosts(hosts: Iterable[str]) -> frozenset[str]:
  """Allowed host names, lower case, IPv6 literals without brackets."""
  return frozenset(h.strip().lower().strip("[]") for h in hosts if h.strip())


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
  """(start, stop) of a Range header's one byte range in a file of ``size`` bytes; None to
  send the whole file (no header, another unit, several ranges). Raises HTTPError(416) for an
  unsatisfiable or malformed byte range."""
  if header is None:
    return None
  header = header.strip()
  if not header.lower().startswith("bytes="):
    return None
  if "," in header:
    return None  # several ranges: the whole file (a server may ignore Range)
  m = _RANGE.fullmatch("bytes=" + header[6:].strip())
  bad = HTTPError(
    416,
    f"range {header[:60]!r} not satisfiable for {size} bytes",
    [(b"content-range", f"bytes */{size}".encode())],
  )
  if m is None:
    raise bad
  first, last = m.group(1), m.group(2)
  if not first and not last:
    raise bad
  if not first:  # suffix: the last n bytes
    n = int(last)
    if n == 0 or size == 0:
      raise bad
    return max(0, size - n), size
  start = int(first)
  stop = size if not last else int(last) + 1
  if start >= size or stop <= start:
    raise bad
  return start, min(stop, size)


def _headers(scope: dict) -> dict[str, list[str]]:
  out: dict[str, list[str]] = {}
  for k, v in scope.get("headers", []):
    out.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
  return out


class SearchApp:
  """The ASGI application (see the module docstring).

  Args:
    library: a ``store.Library`` (paths, rel_paths, settings, size).
    searcher: a ``service.Searcher`` (clamp_k, max_k, compile counts).
    queue: a ``service.SearchQueue`` running ``searcher.search``.
    default_k: results per page search without k.
    allowed_hosts: host names accepted in the Host header.
    token: the bearer token every request needs (None: none).
    limits: :class:`WebLimits`.
    backend: search backend name (shown on the page).
  """

  def __init__(
    self,
    library: Any,
    searcher: Any,
    queue: Any,
    *,
    default_k: int = 10,
    allowed_hosts: Iterable[str] = DEFAULT_ALLOWED_HOSTS,
    token: str | None = None,
    limits: WebLimits = WebLimits(),
    backend: str = "exact",
  ):
    self.library = library
    self.searcher = searcher
    self.queue = queue
    self.default_k = searcher.clamp_k(default_k)
    self.allowed_hosts = normalise_hosts(allowed_hosts)
    self.token = token.encode() if token else None
    self.limits = limits
    self.backend = backend
    self.root = os.path.realpath(library.settings["audio_dir"])

  # ------------------------------------------------------------------ ASGI entry
  async def __call__(self, scope: dict, receive, send) -> None:
    if scope["type"] == "lifespan":
      while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
          await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
          await send({"type": "lifespan.shutdown.complete"})
          return
    if scope["type"] != "http":
      return
    head = scope["method"] == "HEAD"
    try:
      await self._handle(scope, receive, send, head)
    except HTTPError as e:
      close = e.status in (400, 405, 431)
      await self._text(send, e.status, e.reason, e.headers, head, close)

  async def _handle(self, scope: dict, receive, send, head: bool) -> None:
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
    size += sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
    if size > self.limits.max_head_bytes:  # h11 bounds only heads that arrive in pieces
      raise HTTPError(431, f"request head larger than {self.limits.max_head_bytes} bytes")
    headers = _headers(scope)
    hosts = headers.get("host", [])
    if len(hosts) != 1:
      raise HTTPError(400, "exactly one Host header is required")
    name = host_name(hosts[0])
    if name is None or name not in self.allowed_hosts:
      raise HTTPError(
        400,
        f"Host {hosts[0][:80]!r} is not allowed (allowed: {', '.join(sorted(self.allowed_hosts))})",
      )
    if scope["method"] not in ("GET", "HEAD"):
      raise HTTPError(405, f"method {scope['method'][:20]} not allowed", [(b"allow", b"GET, HEAD")])
    length = headers.get("content-length", ["0"])
    if "transfer-encoding" in headers or any(v.strip() not in ("", "0") for v in length):
      raise HTTPError(400, "requests to this server have no body")
    params = self._query(scope)
    set_cookie = self._check_token(headers, params)
    path = scope["path"]
    extra = [(b"set-cookie", set_cookie)] if set_cookie else []
    if path == "/":
      return await self._page(send, params, head, extra)
    if path == "/api/search":
      return await self._api_search(send, params, head)
    if path == "/api/stats":
      return await self._json(send, self.stats(), head)
    if path.startswith("/audio/"):
      return await self._audio(scope, receive, send, path[len("/audio/") :], headers, head)
    raise HTTPError(404, "not found")

  # ------------------------------------------------------------------ request checks
  def _query(self, scope: dict) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    try:
      pairs = urllib.parse.parse_qsl(
        raw,
        keep_blank_values=True,
        errors="strict",
        max_num_fields=self.limits.max_query_fields,
      )
    except UnicodeDecodeError:
      raise HTTPError(400, "the query string is not valid UTF-8") from None
    except ValueError:
      raise HTTPError(400, f"more than {self.limits.max_query_fields} query parameters") from None
    out: dict[str, str] = {}
    for k, v in pairs:
      out.setdefault(k, v)
    return out

  def _check_token(self, headers: dict, params: dict) -> bytes | None:
    """None when the request carries the token (or none is needed); a Set-Cookie value when
    it came as ?token=; raises 401 otherwise."""
    if self.token is None:
      return None
    given = []
    for value in headers.get("authorization", []):
      scheme, _, cred = value.partition(" ")
      if scheme.lower() == "bearer":
        given.append(cred.strip())
    for value in headers.get("cookie", []):
      for part in value.split(";"):
        name, _, v = part.strip().partition("=")
        if name == TOKEN_COOKIE:
          given.append(v)
    if any(hmac.compare_digest(g.encode("latin-1"), self.token) for g in given):
      return None
    if "token" in params and hmac.compare_digest(params["token"].encode(), self.token):
      return f"{TOKEN_COOKIE}={params['token']}; HttpOnly; SameSite=Strict; Path=/".encode()
    raise HTTPError(
      401,
      "a token is required: send 'Authorization: Bearer TOKEN' or open /?token=TOKEN",
      [(b"www-authenticate", b'Bearer realm="mltm-search"')],
    )

  def _k(self, params: dict) -> int:
    if "k" not in params:
      return self.default_k
    value = params["k"].strip()
    if not _DIGITS.fullmatch(value) or int(value) == 0:
      raise HTTPError(
        400, f"k must be a whole number >= 1 (at most {self.searcher.max_k} results are returned)"
      )
    return self.searcher.clamp_k(int(value))

  def _q(self, params: dict) -> str:
    q = params.get("q", "").strip()
    if len(q) > self.limits.max_query_chars:
      raise HTTPError(400, f"q is longer than {self.limits.max_query_chars} characters")
    return q

  # ------------------------------------------------------------------ search
  async def _search(self, q: str, k: int) -> list:
    try:
      fut = self.queue.submit(q, k)
    except QueueFull:
      raise HTTPError(
        503, f"busy: {self.queue.maxsize} searches are waiting; retry", [(b"retry-after", b"1")]
      ) from None
    try:
      return await asyncio.wait_for(asyncio.wrap_future(fut), self.limits.queue_timeout_s)
    except TimeoutError:
      fut.cancel()
      raise HTTPError(
        503,
        f"busy: the search did not finish within {self.limits.queue_timeout_s:g} s; retry",
        [(b"retry-after", b"1")],
      ) from None

  async def _api_search(self, send, params: dict, head: bool) -> None:
    q, k = self._q(params), self._k(params)
    if not q:
      raise HTTPError(400, "missing q (the text to search for)")
    hits = await self._search(q, k)
    await self._json(send, {"query": q, "k": k, "results": [h.to_json() for h in hits]}, head)

  async def _page(self, send, params: dict, head: bool, extra: list) -> None:
    q, k = self._q(params), self._k(params)
    results = ""
    if q:
      hits = await self._search(q, k)
      items = "".join(
        f'<li class="result"><span class="dist">{h.distance:.4f}</span>'
        f'<span class="path">{html.escape(h.path)}</span>'
        f'<audio controls preload="none" src="/audio/{h.id}"></audio></li>'
        for h in hits
      )
      results = f'<ol id="results">{items}</ol>'
    lib = self.library
    meta = (
      f"{lib.size} files, run {html.escape(str(lib.settings['workdir']))} step "
      f"{lib.settings['checkpoint_step']}, {html.escape(self.backend)} search; distance ="
      f" learned c_M; at most {self.searcher.max_k} results"
    )
    body = PAGE.format(
      title="Audio search" + (f": {html.escape(q)}" if q else ""),
      query=html.escape(q, quote=True),
      k=k,
      max_chars=self.limits.max_query_chars,
      meta=meta,
      results=results,
    ).encode()
    headers = [(b"content-security-policy", _PAGE_CSP), (b"cache-control", b"no-store"), *extra]
    await self._respond(send, 200, body, b"text/html; charset=utf-8", headers, head)

  def stats(self) -> dict:
    s, q = self.searcher, self.queue
    return {
      "files": self.library.size,
      "max_k": s.max_k,
      "pending": q.pending,
      "queue_size": q.maxsize,
      "served": q.served,
      "rejected": q.rejected,
      "failed": q.failed,
      "compiles": s.compiles.count,
      "compiles_after_warm_up": s.compiles_after_warm_up,
    }

  # ------------------------------------------------------------------ audio
  async def _audio(self, scope, receive, send, ident: str, headers: dict, head: bool) -> None:
    if not _DIGITS.fullmatch(ident) or int(ident) >= self.library.size:
      raise HTTPError(404, "no such file")
    real = os.path.realpath(self.library.paths[int(ident)])
    if os.path.commonpath([real, self.root]) != self.root:
      raise HTTPError(404, "file outside the library root")
    try:
      f = open(real, "rb")  # noqa: SIM115 -- closed in the finally below
    except OSError:
      raise HTTPError(404, "file unreadable") from None
    try:
      info = os.fstat(f.fileno())
      if not stat.S_ISREG(info.st_mode):
        raise HTTPError(404, "not a regular file")
      size = info.st_size
      ranges = headers.get("range", [])
      rng = byte_range(ranges[0] if len(ranges) == 1 else None, size)
      start, stop = rng if rng else (0, size)
      ctype = (mimetypes.guess_type(real)[0] or "application/octet-stream").encode()
      out = [(b"accept-ranges", b"bytes"), (b"cache-control", b"private")]
      if rng:
        out.append((b"content-range", f"bytes {start}-{stop - 1}/{size}".encode()))
      await self._start(send, 206 if rng else 200, ctype, stop - start, out)
      if head or stop == start:
        await send({"type": "http.response.body", "body": b""})
        return
      await self._stream(f, start, stop, receive, send)
    finally:
      f.close()

  async def _stream(self, f, start: int, stop: int, receive, send) -> None:
    """Sends bytes [start, stop) of f in chunks; stops when the client goes away."""
    await receive()  # the (empty) request body; the next receive reports a disconnect
    gone = asyncio.ensure_future(receive())
    try:
      f.seek(start)
      pos = start
      while pos < stop and not gone.done():
        chunk = f.read(min(self.limits.chunk_bytes, stop - pos))
        if not chunk:  # the file shrank: end the response short (the client sees it)
          raise OSError("file shrank")
        pos += len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": pos < stop})
    finally:
      gone.cancel()

  # ------------------------------------------------------------------ responses
  async def _start(self, send, status: int, ctype: bytes, length: int, headers: list) -> None:
    await send(
      {
        "type": "http.response.start",
        "status": status,
        "headers": [
          (b"content-type", ctype),
          (b"content-length", str(length).encode()),
          *_COMMON_HEADERS,
          *headers,
        ],
      }
    )

  async def _respond(self, send, status, body: bytes, ctype: bytes, headers, head) -> None:
    await self._start(send, status, ctype, len(body), list(headers))
    await send({"type": "http.response.body", "body": b"" if head else body})

  async def _json(self, send, obj: Any, head: bool) -> None:
    body = json.dumps(obj).encode()
    await self._respond(
      send, 200, body, b"application/json", [(b"cache-control", b"no-store")], head
    )

  async def _text(self, send, status: int, reason: str, headers, head: bool, close: bool) -> None:
    extra = list(headers) + [(b"cache-control", b"no-store")]
    if close:
      extra.append((b"connection", b"close"))
    body = (reason.replace("\n", " ") + "\n").encode()
    await self._respond(send, status, body, b"text/plain; charset=utf-8", extra, head)
