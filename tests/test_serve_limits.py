"""launch.serve as a hostile client and a crowd see it, on loopback: a load test (100
concurrent clients x 10 searches, random text and k in [1, 1000], a 4000-file index), hostile
requests each with its expected status, idle / slowloris / non-reading connections closed
within the limits, and no compilation after warm-up (the server's own XLA compile counter).

The server runs a run directory with random weights (tests/serve_fixtures.py: no training)
and short limits (--header_timeout=2 --keep_alive_timeout=1 --send_timeout=2) so that the
timeouts are observed within seconds.
"""

import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.search_fixtures import REPO
from tests.serve_fixtures import random_run, synthetic_index

pytestmark = pytest.mark.slow  # runs CLI subprocesses

N_FILES = 4000
CLIENTS, QUERIES = 100, 10
BIG = 4  # row whose file is 16 MiB (the non-reading client's)
LIMITS = ["--header_timeout=2", "--keep_alive_timeout=1", "--send_timeout=2"]
WORDS = (
  "a dog barks twice while rain falls on a tin roof the engine of an old car starts"
  " birds sing water drips piano plays softly crowd cheers loudly wind howls"
).split()


def _proc_status(pid: int) -> dict:
  out = {}
  for line in Path(f"/proc/{pid}/status").read_text().splitlines():
    key, _, value = line.partition(":")
    out[key] = value.strip()
  return {"threads": int(out["Threads"]), "rss_mb": int(out["VmRSS"].split()[0]) / 1024}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve_limits")
  run = random_run(root / "run")
  index = synthetic_index(run, root / "index", N_FILES, n_audio=4)
  lib_audio = root / "index_audio"
  (lib_audio / f"clip_{BIG:05d}.wav").write_bytes(np.random.default_rng(1).bytes(16 << 20))
  proc = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "launch.serve",
      f"--index={index}",
      "--port=0",
      "--queue_timeout=30",
      *LIMITS,
    ],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    line = proc.stdout.readline()
    assert f"serving {N_FILES} files on http://127.0.0.1:" in line, (line, proc.stderr.read())
    port = int(line.split("127.0.0.1:")[1].split("/")[0])
    yield {"port": port, "pid": proc.pid, "audio": lib_audio, "run": run}
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
  try:
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()
  finally:
    conn.close()


def stats(port: int) -> dict:
  status, body = get(port, "/api/stats")
  assert status == 200
  return json.loads(body)


def raw(port: int, request: bytes, timeout: float = 30) -> int:
  """The status code the server answers a raw request with."""
  with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
    s.sendall(request)
    data = b""
    while b"\r\n" not in data:
      chunk = s.recv(4096)
      if not chunk:
        break
      data += chunk
  assert data.startswith(b"HTTP/1.1 "), data[:200]
  return int(data.split()[1])


def random_query(rng: np.random.Generator) -> str:
  """Words, punctuation and random code points, 1 to 1000 characters."""
  n = int(rng.integers(1, 12))
  text = " ".join(rng.choice(WORDS, n))
  if rng.random() < 0.3:
    text += "".join(chr(int(c)) for c in rng.integers(0x21, 0x2FFF, int(rng.integers(1, 40))))
  if rng.random() < 0.1:
    text = (text + " ") * 200
  return text[: int(rng.integers(1, 1001))].strip() or "x"


def test_load_100_clients_no_compile_threads_and_rss_back(server):
  import urllib.parse

  port, pid = server["port"], server["pid"]
  for i in range(16):  # the allocator's steady state before the baseline
    assert get(port, f"/api/search?q=warm+{i}&k={1 + i * 7}")[0] == 200
  time.sleep(1.5)  # keep-alive (1 s) closes those connections
  base = _proc_status(pid)
  before = stats(port)
  assert before["compiles_after_warm_up"] == 0

  results: list = []
  lock = threading.Lock()
  barrier = threading.Barrier(CLIENTS)

  def client(seed: int):
    rng = np.random.default_rng(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    barrier.wait(60)
    try:
      for _ in range(QUERIES):
        q, k = random_query(rng), int(rng.integers(1, 1001))
        path = "/api/search?" + urllib.parse.urlencode({"q": q, "k": k})
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        row = (resp.status, time.perf_counter() - t0, k, body)
        with lock:
          results.append(row)
    finally:
      conn.close()

  peak = dict(base)
  done = threading.Event()

  def monitor():  # the server's thread count and RSS while the clients run
    while not done.wait(0.2):
      now = _proc_status(pid)
      peak.update({key: max(peak[key], now[key]) for key in now})

  watcher = threading.Thread(target=monitor)
  watcher.start()
  t0 = time.perf_counter()
  threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(300)
  wall = time.perf_counter() - t0
  done.set()
  watcher.join()
  assert not any(t.is_alive() for t in threads)
  assert len(results) == CLIENTS * QUERIES
  assert [r[0] for r in results] == [200] * len(results), {r[0] for r in results}
  for _, _, k, body in results:
    assert len(json.loads(body)["results"]) == min(k, 100)
  after = stats(port)
  assert after["compiles_after_warm_up"] == 0, after  # no client input compiled anything
  assert after["served"] - before["served"] == CLIENTS * QUERIES and after["rejected"] == 0
  time.sleep(1.5)  # idle connections closed by the keep-alive limit
  end = _proc_status(pid)
  lat = sorted(r[1] for r in results)
  print(
    f"\nload: {len(results)} requests in {wall:.1f} s = {len(results) / wall:.1f} req/s;"
    f" latency p50 {1e3 * statistics.median(lat):.0f} ms,"
    f" p99 {1e3 * lat[int(0.99 * len(lat)) - 1]:.0f} ms; threads {base['threads']} (peak"
    f" {peak['threads']}) -> {end['threads']}, RSS {base['rss_mb']:.0f} (peak"
    f" {peak['rss_mb']:.0f}) -> {end['rss_mb']:.0f} MB"
  )
  assert peak["threads"] <= base["threads"]  # no thread per connection or request
  assert end["threads"] <= base["threads"]
  assert end["rss_mb"] <= base["rss_mb"] + 64, (base, end)


@pytest.mark.parametrize(
  "request_bytes,status",
  [
    (b"GET /api/search?q=rain HTTP/1.1\r\nHost: attacker.example\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: attacker.example:80\r\n\r\n", 400),
    (b"GET /audio/0 HTTP/1.1\r\nHost: 127.0.0.1.nip.io\r\n\r\n", 400),
    (b"GET /audio/%C2%B2 HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"GET /audio/" + b"7" * 5000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"GET /audio/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"GET /audio/%2e%2e%2f HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"GET //etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"GET /audio/0%00 HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"GET /audio/0 HTTP/1.1\r\nHost: localhost\r\nRange: bytes=5-2\r\n\r\n", 416),
    (b"GET /audio/0 HTTP/1.1\r\nHost: localhost\r\nRange: bytes=999999999-\r\n\r\n", 416),
    (b"GET /audio/0 HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-3\r\n\r\n", 206),
    (b"GET /audio/10 HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),  # listed, not on disk
    (b"GET /api/search?q=x&k=%D9%A3 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    (b"GET /api/search?q=x&k=1000000 HTTP/1.1\r\nHost: localhost\r\n\r\n", 200),
    (b"GET /api/search?q=%FF HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    (b"POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc", 405),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (h11)
    (b"GET / HTTP/1.0\r\n\r\n", 400),  # HTTP/1.0 without Host (the app)
    (b"GET /\xff HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),  # non-ASCII target
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\r\n\r\n", 400),  # TLS
    (b"BREW / HTCPCP/1.0\r\n\r\n", 400),
  ],
)
def test_hostile_requests(server, request_bytes, status):
  assert raw(server["port"], request_bytes) == status


def test_new_k_and_lengths_compile_nothing(server):
  port = server["port"]
  for k in range(1, 130):
    q = " ".join(["word"] * (k % 40 + 1))
    status, body = get(port, f"/api/search?q={q.replace(' ', '+')}&k={k}")
    assert status == 200 and len(json.loads(body)["results"]) == min(k, 100)
  assert stats(port)["compiles_after_warm_up"] == 0


def _closed_within(sock: socket.socket, limit: float) -> float:
  """Seconds until the server closes sock (reads and discards what arrives)."""
  sock.settimeout(limit)
  t0 = time.monotonic()
  try:
    while sock.recv(65536):
      pass
  except ConnectionResetError:
    pass
  return time.monotonic() - t0


def test_idle_and_slowloris_connections_are_closed(server):
  port, pid = server["port"], server["pid"]
  threads0 = _proc_status(pid)["threads"]
  idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
  slow = socket.create_connection(("127.0.0.1", port), timeout=10)
  t0 = time.monotonic()
  try:
    assert _proc_status(pid)["threads"] == threads0  # no thread per connection
    slow.sendall(b"GET / HTTP/1.1\r\n")
    sent = 0
    while time.monotonic() - t0 < 6:  # one header byte every 0.2 s: never a complete head
      try:
        slow.sendall(b"X")
      except (BrokenPipeError, ConnectionResetError):
        break
      sent += 1
      time.sleep(0.2)
    slow_closed = time.monotonic() - t0
    assert slow_closed < 4.0, slow_closed  # --header_timeout=2, whatever trickles in
    for s in idle:
      assert _closed_within(s, 10) < 10
    assert time.monotonic() - t0 < 5.0
  finally:
    for s in idle + [slow]:
      s.close()
  # An idle keep-alive connection after a response: closed after --keep_alive_timeout=1.
  with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(b"GET /api/stats HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert s.recv(12).startswith(b"HTTP/1.1 200")
    assert _closed_within(s, 10) < 4.0


def test_client_that_stops_reading_is_dropped(server):
  port = server["port"]
  s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
  s.connect(("127.0.0.1", port))
  try:
    s.sendall(f"GET /audio/{BIG} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    time.sleep(5)  # not reading: the server's writes stall, --send_timeout=2 drops it
    got = 0
    s.settimeout(10)
    try:
      while chunk := s.recv(1 << 16):
        got += len(chunk)
    except ConnectionResetError:
      pass
    assert got < (16 << 20)  # the connection ended before the file did
  finally:
    s.close()
  assert get(port, "/api/stats")[0] == 200  # and the server carries on


def test_exposed_host_warns_in_one_line_and_bad_flags_fail():
  res = subprocess.run(
    [sys.executable, "-m", "launch.serve", "--host=0.0.0.0", "--index=/nonexistent_index"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  lines = [line for line in res.stderr.splitlines() if line.strip()]
  assert res.returncode == 2
  assert lines[0].startswith("warning: --host=0.0.0.0 is not a loopback address")
  assert "--token" in lines[0] and "no manifest.json" in lines[-1]
  for args, needle in (
    (["--index=x", "--token=short"], "--token must be"),
    (["--index=x", "--k=200"], "--k=200 is above --max_k=100"),
    (["--index=x", "--header_timeout=60"], "--header_timeout must be in (0, 30]"),
    (["--index=x", "--queue_size=0"], "--queue_size must be >= 1"),
  ):
    res = subprocess.run(
      [sys.executable, "-m", "launch.serve", *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert res.returncode == 2 and needle in res.stderr.strip().splitlines()[-1], res.stderr
