"""notebooks/colab_reproduce.ipynb runs top to bottom (nbclient, tiny config) and its outputs
show the run's metrics and plots."""

import json
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.cli_runs import Shared

import pytest  # noqa: E402

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "colab_reproduce.ipynb"


def _text(cell) -> str:
  out = []
  for o in cell.get("outputs", []):
    if o.get("output_type") == "stream":
      out.append(o["text"])
    elif "data" in o:
      out.append(o["data"].get("text/markdown", "") + o["data"].get("text/plain", ""))
    elif o.get("output_type") == "error":
      out.append("\n".join(o.get("traceback", [])))
  return "".join(out)


def test_notebook_executes_and_shows_metrics(
  tiny_synthcaps, tmp_path, monkeypatch, tmp_path_factory
):
  shared = Shared(tmp_path_factory)
  workdir = tmp_path / "run"
  shared.seed(workdir)  # caption features of an earlier tiny run, if any
  env = shared.env(
    MLTM_NOTEBOOK_TINY="1",
    MLTM_NOTEBOOK_DATA=str(tiny_synthcaps),
    MLTM_NOTEBOOK_WORKDIR=str(workdir),
    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
  )
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
  )
  client.execute()

  texts = [_text(c) for c in nb.cells if c.cell_type == "code"]
  assert not any("Traceback" in t or "Error" in t.split("\n")[0] for t in texts), texts
  everything = "\n".join(texts)
  assert "all pinned requirements already installed: skipping pip" in everything
  # The metrics table shows the numbers of the run's final_metrics.json.
  final = json.loads((workdir / "final_metrics.json").read_text())
  table = next(t for t in texts if "| split: test |" in t)
  for d in ("t2a", "a2t"):
    row = next(l for l in table.splitlines() if l.startswith(f"| {d} (distance)"))
    assert f"{final[d]['R@1']:.2f}" in row and f"{final[d]['mAP@10']:.2f}" in row
  assert f"T2A R@10 = {final['t2a']['R@10']}" in everything
  # Plots: one PNG with the loss curve, the validation score and the R@k bars.
  pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(pngs) == 1
  assert "plotted 20 training and 2 validation records" in everything
  # The real-dataset cells wait for their files.
  assert everything.count("skipped:") == 3
