"""The claims report's PNG plots: R@1 against a swept setting, the modality gap, and a 2-D PCA
of test embeddings (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  from mltm_jax.experiments.claims import Grid
  from mltm_jax.experiments.report import Results

DIRECTIONS = ("t2a", "a2t")
METHODS = ("distance", "plan")


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _series(res: Results, cells: list[str], method: str, direction: str):
  xs_idx, means, stds = [], [], []
  for i, cell in enumerate(cells):
    s = res.stat(cell, method, direction, "R@1")
    if s is not None:
      xs_idx.append(i)
      means.append(s.mean)
      stds.append(s.std or 0.0)
  return xs_idx, np.asarray(means), np.asarray(stds)


def plot_r1_lines(path: Path, title: str, xlabel: str, xs: list[float], lines, res, logx=False):
  """lines: [(label, [cell per x])]; 2 panels (T2A, A2T); solid distance, dashed plan."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  any_data = False
  for ax, d in zip(axes, DIRECTIONS):
    for k, (label, cells) in enumerate(lines):
      for method, style, marker, face in zip(METHODS, ("-", "--"), ("o", "s"), ("full", "none")):
        idx, mean, std = _series(res, cells, method, d)
        if not idx:
          continue
        any_data = True
        x = np.asarray([xs[i] for i in idx])
        color = colors[k % len(colors)]
        ax.errorbar(
          x,
          mean,
          yerr=std,
          fmt=marker + style,
          color=color,
          mfc=color if face == "full" else "none",
          capsize=3,
          label=f"{label} ({method})",
        )
    if logx:
      ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_title(f"{d.upper()} R@1")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("R@1 (%)")
  if any_data:
    axes[1].legend(fontsize=7, loc="best")
  else:
    fig.text(0.5, 0.5, "no finished cells", ha="center")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_gap(path: Path, grid: Grid, res: Results, title: str) -> None:
  plt = _pyplot()
  labels, means, stds = [], [], []
  for label, cell in grid.losses:
    s = res.gap(cell)
    if s is not None:
      labels.append(label)
      means.append(s.mean)
      stds.append(s.std or 0.0)
  fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(labels), 2) + 1.2))
  if labels:
    y = np.arange(len(labels))
    ax.barh(y, means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
  else:
    ax.text(0.5, 0.5, "no finished cells", ha="center", transform=ax.transAxes)
  ax.set_xlabel("modality gap ||mean audio - mean text||")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3, axis="x")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def pca_2d(x: np.ndarray) -> np.ndarray:
  """[N, D] -> [N, 2]: projection on the top two principal axes (centered SVD)."""
  xc = x - x.mean(axis=0, keepdims=True)
  _, _, vt = np.linalg.svd(xc, full_matrices=False)
  return xc @ vt[:2].T


def plot_embeddings(path: Path, panels: list[tuple[str, Path | None, float | None]], title: str):
  """panels: (label, embeddings.npz or None, modality gap); PCA per panel on audio+text."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5.2 * max(len(panels), 1), 4.6))
  axes = np.atleast_1d(axes)
  for ax, (label, npz, gap) in zip(axes, panels):
    if npz is None:
      ax.text(0.5, 0.5, f"{label}: no embeddings", ha="center", transform=ax.transAxes)
      ax.set_axis_off()
      continue
    with np.load(npz) as z:
      audio, text = z["audio"], z["text"]
    p = pca_2d(np.concatenate([audio, text]))
    pa, pt = p[: len(audio)], p[len(audio) :]
    ax.scatter(pt[:, 0], pt[:, 1], s=4, alpha=0.35, c="tab:orange", label=f"captions ({len(pt)})")
    ax.scatter(pa[:, 0], pa[:, 1], s=6, alpha=0.6, c="tab:blue", label=f"clips ({len(pa)})")
    gap_text = "" if gap is None else f", modality gap {gap:.3f}"
    ax.set_title(f"{label}{gap_text}", fontsize=9)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, markerscale=2)
    ax.grid(alpha=0.3)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ----------------------------------------------------------------------------- report
