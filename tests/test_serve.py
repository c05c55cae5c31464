"""launch.serve end to end in headless Chromium: type a query, results with players and
distances appear (those of the index's exact search), the audio is served, the screenshot is
a non-blank PNG of the window's size.

Chromium and its WebDriver are the Debian packages ``chromium`` and ``chromium-driver``; the
session fixture installs them with apt-get when they are missing (about 10 s here, as root
with the Debian mirrors reachable). The test is skipped only when that install cannot work,
with apt-get's reason.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mltm_jax.search.store import Library
from tests.search_fixtures import REPO, prepared, retriever

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

WIDTH, HEIGHT = 1024, 768


def _apt_install() -> str | None:
  """Installs chromium + chromium-driver with apt-get; returns None or why it cannot."""
  if shutil.which("apt-get") is None:
    return "no apt-get on this machine (not Debian/Ubuntu): install chromium and chromedriver"
  if os.geteuid() != 0:
    return "apt-get needs root to install chromium and chromium-driver (run the tests as root)"
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  for cmd in (
    ["apt-get", "update", "-q"],
    ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"],
  ):
    res = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
      last = (res.stderr.strip().splitlines() or ["?"])[-1]
      return f"`{' '.join(cmd[:2])}` failed (exit {res.returncode}): {last}"
  return None


@pytest.fixture(scope="session")
def chromium():
  """(chromium binary, chromedriver binary), installed with apt-get when missing."""

  def find():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if driver is None and os.path.exists("/usr/lib/chromium/chromedriver"):
      driver = "/usr/lib/chromium/chromedriver"
    return browser, driver

  browser, driver = find()
  if not (browser and driver):
    reason = _apt_install()
    if reason:
      pytest.skip(f"headless Chromium unavailable: {reason}")
    browser, driver = find()
  assert browser and driver, "apt-get succeeded but chromium/chromedriver are not on PATH"
  return browser, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_synthcaps):
  ready = prepared(tmp_path_factory, tiny_synthcaps)
  proc = subprocess.Popen(
    [sys.executable, "-m", "launch.serve", f"--index={ready['index']}", "--port=0", "--k=5"],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    line = proc.stdout.readline()  # "serving N files on http://127.0.0.1:PORT/ ..."
    assert "serving 32 files on http://" in line, (line, proc.stderr.read()[-2000:])
    url = line.split(" on ")[1].split()[0]
    yield {**ready, "url": url, "r": retriever(ready["run"]), "lib": Library.load(ready["index"])}
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def test_page_in_headless_chromium(server, chromium, tmp_path):
  from PIL import Image
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support import expected_conditions as ec
  from selenium.webdriver.support.ui import WebDriverWait

  browser, driver_path = chromium
  opts = webdriver.ChromeOptions()
  opts.binary_location = browser
  for arg in (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    f"--window-size={WIDTH},{HEIGHT}",
    "--hide-scrollbars",
  ):
    opts.add_argument(arg)
  driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
  query = "a whistle blows once while a gun fires"
  try:
    # The viewport exactly WIDTH x HEIGHT CSS pixels at scale 1 (the window size includes the
    # browser's frame).
    driver.execute_cdp_cmd(
      "Emulation.setDeviceMetricsOverride",
      {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    driver.get(server["url"])
    box = driver.find_element(By.ID, "q")
    box.send_keys(query)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "results")))
    items = driver.find_elements(By.CSS_SELECTOR, "li.result")
    shown = [
      (
        i.find_element(By.CLASS_NAME, "path").text,
        float(i.find_element(By.CLASS_NAME, "dist").text),
      )
      for i in items
    ]
    sources = [a.get_attribute("src") for a in driver.find_elements(By.TAG_NAME, "audio")]
    assert driver.find_element(By.ID, "q").get_attribute("value") == query
    png = driver.get_screenshot_as_png()
  finally:
    driver.quit()

  # The results are the index's exact search for the query (same files, same order).
  lib, r = server["lib"], server["r"]
  dist, ids = lib.index("exact").search(r.embed_text([query]) @ lib.factor, 5)
  assert [p for p, _ in shown] == [lib.rel_paths[i] for i in ids[0]]
  np.testing.assert_allclose([d for _, d in shown], dist[0], atol=1e-4)
  assert len(sources) == 5 and sources[0].endswith(f"/audio/{ids[0][0]}")
  with urllib.request.urlopen(sources[0], timeout=30) as resp:
    body = resp.read()
  assert body[:4] == b"RIFF" and body == Path(lib.paths[ids[0][0]]).read_bytes()
  with urllib.request.urlopen(server["url"] + "api/search?q=rain&k=3", timeout=30) as resp:
    api = json.loads(resp.read())
  assert len(api["results"]) == 3
  with pytest.raises(urllib.error.HTTPError):
    urllib.request.urlopen(server["url"] + "audio/../../etc/passwd", timeout=30)

  # The screenshot: a PNG of the window's size with the page drawn on it.
  (tmp_path / "page.png").write_bytes(png)
  assert png[:8] == b"\x89PNG\r\n\x1a\n"
  img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)
  assert img.shape == (HEIGHT, WIDTH, 3)
  assert img.std() > 10.0  # not a blank page
  colours = {tuple(c) for c in img[::8, ::8].reshape(-1, 3).astype(int)}
  assert len(colours) > 20
  # The result boxes' background colour (#eef2fa) covers a visible area.
  assert np.mean(np.all(np.abs(img - [238, 242, 250]) < 3, axis=-1)) > 0.05
