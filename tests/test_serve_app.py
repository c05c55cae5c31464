"""The search app's request checks, driven in-process through its ASGI interface (no server,
no model): Host allow-list, token, bad requests (each a 4xx with a one-line reason), k
clamped, byte ranges (206 / 416) streamed in chunks, files only inside the library root, a
full queue and a slow search answered 503; the queue's micro-batches."""

import asyncio
import os
import threading
import time
import types
import urllib.parse

import numpy as np
import pytest

from mltm_jax.search.service import Hit, QueueFull, SearchQueue
from mltm_jax.search.web import SearchApp, WebLimits, byte_range, host_name

N_FILES = 5


class FakeSearcher:
  """Stands in for service.Searcher: hit i of a query is file i at distance i."""

  max_k = 100

  def __init__(self):
    self.compiles = types.SimpleNamespace(count=3)
    self.compiles_after_warm_up = 0

  def clamp_k(self, k):
    return max(1, min(int(k), self.max_k))

  def search(self, texts, ks):
    return [[Hit(i % N_FILES, f"f{i}.wav", float(i)) for i in range(k)] for k in ks]


@pytest.fixture
def library(tmp_path):
  root = tmp_path / "audio"
  root.mkdir()
  data = bytes(range(256)) * 4  # 1024 bytes
  (root / "a.wav").write_bytes(data)
  (root / "b.wav").write_bytes(b"RIFF" + bytes(100))
  secret = tmp_path / "secret.wav"
  secret.write_bytes(b"not yours")
  os.symlink(secret, root / "link_out.wav")
  os.symlink(root / "b.wav", root / "link_in.wav")
  rel = ["a.wav", "b.wav", "link_out.wav", "link_in.wav", "missing.wav"]
  return types.SimpleNamespace(
    size=len(rel),
    rel_paths=rel,
    paths=[str(root / r) for r in rel],
    settings={"audio_dir": str(root), "workdir": "runs/<x>", "checkpoint_step": 7},
    data=data,
  )


@pytest.fixture
def make_app(library):
  made = []

  def make(search_fn=None, maxsize=8, max_batch=4, **kw):
    searcher = FakeSearcher()
    queue = SearchQueue(search_fn or searcher.search, maxsize, max_batch)
    made.append(queue)
    return SearchApp(library, searcher, queue, **kw)

  yield make
  for q in made:
    q.close()


async def _call(app, path="/", query="", headers=None, method="GET"):
  """(status, headers {name: value}, body, body messages) of one request."""
  headers = [("host", "127.0.0.1:8000")] if headers is None else headers
  done = asyncio.Event()
  first = True
  messages = []

  async def receive():
    nonlocal first
    if first:
      first = False
      return {"type": "http.request", "body": b"", "more_body": False}
    await done.wait()
    return {"type": "http.disconnect"}

  async def send(message):
    messages.append(message)
    if message["type"] == "http.response.body" and not message.get("more_body"):
      done.set()

  scope = {
    "type": "http",
    "method": method,
    "path": urllib.parse.unquote(path),
    "raw_path": path.encode(),
    "query_string": query.encode(),
    "headers": [(k.encode(), v.encode()) for k, v in headers],
  }
  await app(scope, receive, send)
  start = messages[0]
  assert start["type"] == "http.response.start"
  bodies = [m["body"] for m in messages[1:]]
  return (
    start["status"],
    {k.decode(): v.decode() for k, v in start["headers"]},
    b"".join(bodies),
    bodies,
  )


def call(app, *args, **kw):
  return asyncio.run(_call(app, *args, **kw))


def one_line(body: bytes) -> str:
  text = body.decode()
  assert text.endswith("\n") and text.count("\n") == 1, text
  return text


@pytest.mark.parametrize(
  "value,expected",
  [
    ("127.0.0.1:8000", "127.0.0.1"),
    ("LocalHost", "localhost"),
    ("[::1]:80", "::1"),
    ("[::1]", "::1"),
    ("attacker.example:8000", "attacker.example"),
    ("localhost:abc", None),
    ("[::1", None),
    ("a b", None),
    ("", None),
    ("x@localhost", None),
  ],
)
def test_host_name(value, expected):
  assert host_name(value) == expected


@pytest.mark.parametrize(
  "header,expected",
  [
    (None, None),
    ("bytes=0-9", (0, 10)),
    ("bytes=10-", (10, 100)),
    ("bytes=-5", (95, 100)),
    ("bytes=-500", (0, 100)),
    ("bytes=90-5000", (90, 100)),
    ("bytes=99-99", (99, 100)),
    ("items=0-5", None),
    ("bytes=0-1,5-6", None),
    ("bytes=5-2", 416),
    ("bytes=100-", 416),
    ("bytes=-0", 416),
    ("bytes=-", 416),
    ("bytes=a-b", 416),
    ("bytes=0-" + "9" * 5000, 416),
    ("bytes=²-", 416),
  ],
)
def test_byte_range(header, expected):
  if expected == 416:
    with pytest.raises(Exception) as e:
      byte_range(header, 100)
    assert e.value.status == 416 and ("content-range", "bytes */100") in [
      (k.decode(), v.decode()) for k, v in e.value.headers
    ]
  else:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize(
  "host,status",
  [
    ("127.0.0.1:8000", 200),
    ("localhost", 200),
    ("LOCALHOST:1", 200),
    ("[::1]:9", 200),
    ("my.box:8000", 200),
    ("attacker.example", 400),
    ("attacker.example:8000", 400),
    ("127.0.0.1.nip.io", 400),
    ("localhost.attacker.example", 400),
    ("", 400),
  ],
)
def test_host_allow_list(make_app, host, status):
  app = make_app(allowed_hosts=["localhost", "127.0.0.1", "::1", "my.box"])
  got, _, body, _ = call(app, "/api/search", "q=rain&k=2", [("host", host)])
  assert got == status, body
  if status == 400:
    assert "is not allowed" in one_line(body)


def test_missing_or_repeated_host_is_refused(make_app):
  app = make_app()
  for headers in ([], [("host", "localhost"), ("host", "localhost")]):
    status, _, body, _ = call(app, "/", headers=headers)
    assert status == 400 and "Host header" in one_line(body)


def test_token(make_app):
  app = make_app(token="s3cret-token")
  status, headers, body, _ = call(app, "/api/search", "q=rain")
  assert status == 401 and headers["www-authenticate"].startswith("Bearer")
  assert "token is required" in one_line(body)
  host = ("host", "localhost")
  assert call(app, "/", headers=[host, ("authorization", "Bearer wrong-token")])[0] == 401
  assert call(app, "/audio/0", headers=[host])[0] == 401  # audio too
  assert call(app, "/api/stats", headers=[host, ("authorization", "Bearer s3cret-token")])[0] == 200
  status, headers, _, _ = call(app, "/", "token=s3cret-token&q=rain", [host])
  assert status == 200 and headers["set-cookie"].startswith("mltm_token=s3cret-token;")
  assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
  cookie = ("cookie", "other=1; mltm_token=s3cret-token")
  assert call(app, "/audio/0", headers=[host, cookie])[0] == 200
  assert call(app, "/", "token=nope", [host])[0] == 401


@pytest.mark.parametrize(
  "method,path,query,headers,status,reason",
  [
    ("POST", "/api/search", "q=x", [], 405, "not allowed"),
    ("DELETE", "/audio/0", "", [], 405, "not allowed"),
    ("GET", "/api/search", "q=x", [("content-length", "5")], 400, "no body"),
    ("GET", "/", "", [("transfer-encoding", "chunked")], 400, "no body"),
    ("GET", "/api/search", "", [], 400, "missing q"),
    ("GET", "/api/search", "q=%20%20", [], 400, "missing q"),
    ("GET", "/api/search", "q=x&k=abc", [], 400, "k must be"),
    ("GET", "/api/search", "q=x&k=0", [], 400, "k must be"),
    ("GET", "/api/search", "q=x&k=-1", [], 400, "k must be"),
    ("GET", "/api/search", "q=x&k=1e3", [], 400, "k must be"),
    ("GET", "/api/search", "q=x&k=%C2%B2", [], 400, "k must be"),  # superscript two
    ("GET", "/api/search", "q=x&k=%D9%A3", [], 400, "k must be"),  # Arabic-Indic three
    ("GET", "/api/search", "q=x&k=" + "9" * 5000, [], 400, "k must be"),
    ("GET", "/", "k=%00", [], 400, "k must be"),
    ("GET", "/api/search", "q=" + "a" * 1001, [], 400, "longer than 1000"),
    ("GET", "/api/search", "q=%FF%FE", [], 400, "UTF-8"),
    ("GET", "/api/search", "&".join(f"p{i}=1" for i in range(17)), [], 400, "query parameters"),
    ("GET", "/audio/%C2%B2", "", [], 404, "no such file"),
    ("GET", "/audio/%D9%A3", "", [], 404, "no such file"),
    ("GET", "/audio/" + "1" * 5000, "", [], 404, "no such file"),
    ("GET", "/audio/5", "", [], 404, "no such file"),
    ("GET", "/audio/-1", "", [], 404, "no such file"),
    ("GET", "/audio/1.0", "", [], 404, "no such file"),
    ("GET", "/audio/0%00", "", [], 404, "no such file"),
    ("GET", "/audio/", "", [], 404, "no such file"),
    ("GET", "/audio/../../etc/passwd", "", [], 404, "no such file"),
    ("GET", "/audio/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "", [], 404, "no such file"),
    ("GET", "//etc/passwd", "", [], 404, "not found"),
    ("GET", "/audio/2", "", [], 404, "outside the library root"),  # symlink to outside
    ("GET", "/audio/4", "", [], 404, "unreadable"),  # listed, but gone from disk
    ("GET", "/nope", "", [], 404, "not found"),
    ("GET", "/", "", [("x-big", "a" * 17000)], 431, "larger than 16384 bytes"),
    ("GET", "/", "", [("x-many", "a" * 100)] * 200, 431, "larger than 16384 bytes"),
  ],
)
def test_bad_requests_get_4xx_and_one_line(make_app, method, path, query, headers, status, reason):
  app = make_app()
  got, out, body, _ = call(app, path, query, [("host", "localhost"), *headers], method)
  assert got == status, body
  assert reason in one_line(body)
  if status == 405:
    assert out["allow"] == "GET, HEAD"
  if status in (400, 405, 431):
    assert out["connection"] == "close"


def test_k_is_clamped_and_page_escapes(make_app):
  app = make_app(default_k=3)
  status, headers, body, _ = call(app, "/api/search", "q=rain&k=1000")
  assert status == 200 and headers["content-type"] == "application/json"
  import json

  got = json.loads(body)
  assert got["k"] == 100 and len(got["results"]) == 100
  assert len(json.loads(call(app, "/api/search", "q=rain")[2])["results"]) == 3
  status, headers, body, _ = call(app, "/", "q=%3Cscript%3Ealert(1)%3C/script%3E&k=2")
  page = body.decode()
  assert status == 200 and "<script>" not in page and "&lt;script&gt;" in page
  assert (
    page.count('class="result"') == 2 and "default-src 'none'" in headers["content-security-policy"]
  )
  stats = json.loads(call(app, "/api/stats")[2])
  assert stats["served"] == 3 and stats["compiles_after_warm_up"] == 0 and stats["max_k"] == 100


def test_audio_ranges_streamed_in_chunks(make_app, library):
  app = make_app(limits=WebLimits(chunk_bytes=100))
  data = library.data
  status, headers, body, parts = call(app, "/audio/0")
  assert status == 200 and body == data and headers["content-length"] == str(len(data))
  assert headers["accept-ranges"] == "bytes" and max(len(p) for p in parts) == 100
  assert len(parts) == 11
  cases = {"bytes=0-9": (0, 10), "bytes=1000-": (1000, 1024), "bytes=-24": (1000, 1024)}
  for header, (a, b) in cases.items():
    status, headers, body, _ = call(
      app, "/audio/0", headers=[("host", "localhost"), ("range", header)]
    )
    assert status == 206 and body == data[a:b], header
    assert headers["content-range"] == f"bytes {a}-{b - 1}/1024"
  for header in ("bytes=5-2", "bytes=1024-", "bytes=-0", "bytes=x-"):
    status, headers, body, _ = call(
      app, "/audio/0", headers=[("host", "localhost"), ("range", header)]
    )
    assert status == 416 and headers["content-range"] == "bytes */1024", header
    assert "not satisfiable" in one_line(body)
  status, headers, body, _ = call(app, "/audio/0", method="HEAD")
  assert status == 200 and body == b"" and headers["content-length"] == "1024"
  # A symlink inside the root is served (its real file is inside).
  assert call(app, "/audio/3")[2] == (library.data and b"RIFF" + bytes(100))


def test_streaming_stops_when_the_client_goes_away(make_app):
  app = make_app(limits=WebLimits(chunk_bytes=10))
  sent = []

  async def run():
    gone = asyncio.Event()
    first = True

    async def receive():
      nonlocal first
      if first:
        first = False
        return {"type": "http.request", "body": b"", "more_body": False}
      await gone.wait()
      return {"type": "http.disconnect"}

    async def send(message):
      sent.append(message)
      if len(sent) == 4:
        gone.set()  # the client leaves after three chunks
      await asyncio.sleep(0)

    scope = {
      "type": "http",
      "method": "GET",
      "path": "/audio/0",
      "query_string": b"",
      "headers": [(b"host", b"localhost")],
    }
    await app(scope, receive, send)

  asyncio.run(run())
  assert 4 <= len(sent) <= 6  # not the 103 chunks of the whole file


def test_full_queue_and_slow_search_get_503(make_app):
  started, release = threading.Event(), threading.Event()
  fake = FakeSearcher()

  def slow(texts, ks):
    started.set()
    release.wait(30)
    return fake.search(texts, ks)

  app = make_app(search_fn=slow, maxsize=2, max_batch=1, limits=WebLimits(queue_timeout_s=1.0))

  async def run():
    first = asyncio.create_task(_call(app, "/api/search", "q=a"))
    while not started.is_set():
      await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(_call(app, "/api/search", f"q=b{i}")) for i in range(2)]
    await asyncio.sleep(0.05)
    full = await _call(app, "/api/search", "q=c")  # two wait already: refused at once
    return full, await first, [await w for w in waiting]

  t0 = time.monotonic()
  full, first, waiting = asyncio.run(run())
  release.set()
  assert full[0] == 503 and "searches are waiting" in one_line(full[2])
  assert full[1]["retry-after"] == "1"
  for status, _, body, _ in [first, *waiting]:
    assert status == 503 and "did not finish within 1 s" in one_line(body)
  assert time.monotonic() - t0 < 10
  assert call(app, "/api/search", "q=again&k=2")[0] == 200  # the worker carries on


def test_queue_takes_micro_batches_and_skips_cancelled():
  started, release = threading.Event(), threading.Event()
  batches = []

  def search(texts, ks):
    batches.append(list(texts))
    started.set()
    release.wait(30)
    return [f"{t}:{k}" for t, k in zip(texts, ks)]

  queue = SearchQueue(search, maxsize=20, max_batch=4)
  try:
    first = queue.submit("t0", 1)
    started.wait(10)
    futs = [queue.submit(f"t{i}", i) for i in range(1, 11)]
    futs[2].cancel()
    more = []
    with pytest.raises(QueueFull):  # 10 waiting, 1 of them cancelled: 11 more fit in 20
      for _ in range(20):
        more.append(queue.submit(f"m{len(more)}", 2))
    assert len(more) == 11 and queue.rejected == 1 and queue.pending == 20
    release.set()
    assert first.result(10) == "t0:1"
    for i, f in enumerate(futs, 1):
      if i != 3:
        assert f.result(10) == f"t{i}:{i}"
    assert [f.result(10) for f in more] == [f"m{i}:2" for i in range(11)]
    assert [len(b) for b in batches] == [1, 4, 4, 4, 4, 4]  # 20 waiting, 4 at a time
    assert "t3" not in [t for b in batches for t in b] and queue.served == 21
  finally:
    release.set()
    queue.close()


def test_searcher_clamps_k_and_compiles_nothing_new():
  """service.Searcher over an ExactIndex with a stand-in embedder: k clamped to max_k, and
  after warm_up no k in [1, 1000] and no batch of <= max_batch queries compiles anything."""
  from mltm_jax.search.exact import ExactIndex
  from mltm_jax.search.service import Searcher

  rng = np.random.default_rng(0)
  emb = rng.normal(size=(300, 8)).astype(np.float32)
  lib = types.SimpleNamespace(
    size=300, rel_paths=[f"{i}.wav" for i in range(300)], factor=np.eye(8, dtype=np.float32)
  )

  class Embedder:
    def embed_text(self, texts):
      return np.stack([np.cos(np.arange(8) * len(t)) for t in texts]).astype(np.float32)

    def warm_up_text(self, max_batch):
      return 0

  searcher = Searcher(lib, Embedder(), ExactIndex(emb), max_k=50, max_batch=8)
  try:
    searcher.warm_up()
    assert searcher.compiles_after_warm_up == 0
    for k in list(range(1, 60)) + [1000, 10**6]:
      n = 1 + k % 8
      hits = searcher.search([f"q{j}" * (j + 1) for j in range(n)], [k] * n)
      assert [len(h) for h in hits] == [min(k, 50)] * n
    assert searcher.compiles_after_warm_up == 0
    q = Embedder().embed_text(["abc"])[0]
    order = np.argsort(np.linalg.norm(emb - q, axis=1))[:50]
    assert [h.id for h in searcher.search(["abc"], [50])[0]] == order.tolist()
  finally:
    searcher.close()
