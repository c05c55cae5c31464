"""DIR/REPORT.md and its PNG plots from a grid's finished runs (mean +- std over seeds).

Reads only what the runs left on disk (DIR/cells/*/final_metrics.json, cell.json,
embeddings.npz), so it can be regenerated at any time (``--report_only``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mltm_jax.experiments.claims import Grid, run_name
from mltm_jax.experiments.verdicts import _agreeing, _verdict, chance_r10
from mltm_jax.experiments.plots import plot_embeddings, plot_gap, plot_r1_lines
from mltm_jax.experiments.runner import CELL_INFO, EMBEDDINGS, FINAL

DIRECTIONS = ("t2a", "a2t")
KEYS = ("R@1", "R@5", "R@10", "mAP@10")
METHODS = ("distance", "plan")
PLOTS = ("r1_vs_noise.png", "r1_vs_eps.png", "modality_gap.png", "embeddings_pca.png")
_SEED_DIR = re.compile(r"^(?P<cell>.+)__seed(?P<seed>\d+)$")


def by_method(final: dict, method: str) -> dict:
  """{"t2a": {...}, "a2t": {...}} of a final_metrics.json ranked by ``method``."""
  if final.get("rank_by") == method:
    return final
  sub = final.get(f"by_{method}")
  if sub is None:
    raise KeyError(f"final metrics have no ranking by {method} (keys: {sorted(final)})")
  return sub


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean and sample standard deviation (ddof 1; None for one value) of n values."""

  mean: float
  std: float | None
  n: int

  @classmethod
  def of(cls, values: Iterable[float]) -> Stat | None:
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
      return None
    return cls(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None, int(v.size))

  def fmt(self, digits: int = 1, n_expected: int | None = None) -> str:
    s = f"{self.mean:.{digits}f}"
    if self.std is not None:
      s += f" ± {self.std:.{digits}f}"
    if n_expected is not None and self.n != n_expected:
      s += f" (n={self.n})"
    return s


def fmt(stat: Stat | None, digits: int = 1, n_expected: int | None = None) -> str:
  return "—" if stat is None else stat.fmt(digits, n_expected)


@dataclasses.dataclass
class Results:
  """The finished runs of a grid directory: per cell name, {seed: final metrics}."""

  finals: dict[str, dict[int, dict]]
  infos: dict[str, dict[int, dict]]

  @classmethod
  def load(cls, out: Path) -> Results:
    finals: dict[str, dict[int, dict]] = {}
    infos: dict[str, dict[int, dict]] = {}
    for path in sorted((out / "cells").glob(f"*/{FINAL}")):
      m = _SEED_DIR.match(path.parent.name)
      if not m:
        continue
      cell, seed = m["cell"], int(m["seed"])
      finals.setdefault(cell, {})[seed] = json.loads(path.read_text())
      info = path.parent / CELL_INFO
      if info.is_file():
        infos.setdefault(cell, {})[seed] = json.loads(info.read_text())
    return cls(finals, infos)

  @property
  def seeds(self) -> list[int]:
    return sorted({s for per in self.finals.values() for s in per})

  def stat(self, cell: str, method: str, direction: str, key: str) -> Stat | None:
    per = self.finals.get(cell, {})
    return Stat.of(by_method(per[s], method)[direction][key] for s in sorted(per))

  def gap(self, cell: str) -> Stat | None:
    per = self.finals.get(cell, {})
    return Stat.of(per[s]["modality_gap"] for s in sorted(per))


def method_text(grid: Grid, method: str) -> str:
  if method == "distance":
    return "ranked by distance (learned c_M for m-LTM / entropic InfoNCE; cosine for the others)"
  b = grid.base
  eps, iters = b.get("plan_eps", 0.03), b.get("plan_iterations", 10)
  return (
    f"ranked by plan (entropic OT plan over the whole split evaluated, eps {eps:g}, "
    f"{iters} Sinkhorn iterations: transductive)"
  )


# ----------------------------------------------------------------------------- tables
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(r) + " |" for r in rows]
  return out


def losses_table(grid: Grid, res: Results, method: str, n: int) -> list[str]:
  header = ["loss", *(f"{d.upper()} {k}" for d in DIRECTIONS for k in KEYS), "modality gap"]
  rows = []
  for label, cell in grid.losses:
    row = [label]
    row += [fmt(res.stat(cell, method, d, k), 1, n) for d in DIRECTIONS for k in KEYS]
    row.append(fmt(res.gap(cell), 3, n))
    rows.append(row)
  return _table(header, rows)


def noise_table(grid: Grid, res: Results, method: str, direction: str, n: int) -> list[str]:
  ps = [p for p, _ in grid.noise[0][1]] if grid.noise else []
  header = ["loss", *(f"p={p:g}" for p in ps), f"drop p=0→{ps[-1]:g}" if ps else "drop"]
  rows = []
  for label, cells in grid.noise:
    stats = [res.stat(cell, method, direction, "R@1") for _, cell in cells]
    drop = f"{stats[0].mean - stats[-1].mean:+.1f}" if stats[0] is not None and stats[-1] else "—"
    rows.append([label, *(fmt(s, 1, n) for s in stats), drop])
  return _table(header, rows)


def eps_table(grid: Grid, res: Results, method: str, n: int) -> list[str]:
  header = ["eps", "T2A R@1", "T2A R@10", "A2T R@1", "A2T R@10", "modality gap"]
  rows = []
  for eps, cell in grid.eps:
    row = [f"{eps:g}"]
    row += [fmt(res.stat(cell, method, d, k), 1, n) for d in DIRECTIONS for k in ("R@1", "R@10")]
    row.append(fmt(res.gap(cell), 3, n))
    rows.append(row)
  return _table(header, rows)


# ----------------------------------------------------------------------------- claims
def _r1_diffs(res: Results, a: str, b: str) -> tuple[list[str], list[float]]:
  """Cells "a - b" of mean R@1 for (distance, plan) x (t2a, a2t), and the numbers."""
  texts, nums = [], []
  for method in METHODS:
    for d in DIRECTIONS:
      sa, sb = res.stat(a, method, d, "R@1"), res.stat(b, method, d, "R@1")
      if sa is None or sb is None:
        texts.append("—")
        continue
      diff = sa.mean - sb.mean
      texts.append(f"{sa.mean:.1f} vs {sb.mean:.1f} ({diff:+.1f})")
      nums.append(diff)
  return texts, nums


def r1_samples(res: Results, a: str, b: str) -> list[tuple[list[float], list[float]]]:
  """Per (distance, plan) x (t2a, a2t): (R@1 of a per seed, R@1 of b per seed); pairs where
  either cell has no finished seed are left out."""
  fa, fb = res.finals.get(a, {}), res.finals.get(b, {})
  if not fa or not fb:
    return []
  return [
    (
      [by_method(fa[s], m)[d]["R@1"] for s in sorted(fa)],
      [by_method(fb[s], m)[d]["R@1"] for s in sorted(fb)],
    )
    for m in METHODS
    for d in DIRECTIONS
  ]


def paired_r1_diffs(
  res: Results, a: str, b: str, seeds: Iterable[int] | None = None
) -> list[float]:
  """R@1(a) - R@1(b) per seed (``seeds``, default every seed both cells finished) x
  (distance, plan) x (t2a, a2t): the same seed means the same initialisation and batch order,
  so each difference is a paired one."""
  fa, fb = res.finals.get(a, {}), res.finals.get(b, {})
  common = set(fa) & set(fb) if seeds is None else set(seeds)
  return [
    by_method(fa[s], m)[d]["R@1"] - by_method(fb[s], m)[d]["R@1"]
    for s in sorted(common)
    for m in METHODS
    for d in DIRECTIONS
  ]


def failed_cells(grid: Grid, res: Results, split_index: int = 2) -> dict[str, str]:
  """Cells whose mean R@10 (by distance) on the split of --synthcaps_sizes position
  ``split_index`` (2: test, 3: held-out) is below 2x chance in a direction: a failed run,
  which cannot make a claim hold. {cell: reason}."""
  sizes = str(grid.base.get("synthcaps_sizes", "")).split(",")
  if len(sizes) <= split_index or int(sizes[split_index]) < 1:
    return {}
  chance = chance_r10(int(sizes[split_index]))
  out = {}
  for cell in res.finals:
    for d in DIRECTIONS:
      st = res.stat(cell, "distance", d, "R@10")
      if st is not None and st.mean < 2 * chance[d]:
        out[cell] = f"{d.upper()} R@10 {st.mean:.1f} < 2 x chance {chance[d]:.1f}"
        break
  return out


def claims_section(grid: Grid, res: Results) -> list[str]:
  name = {cell: label for label, cell in grid.losses}  # loss cells are named by variant key

  def cell_of(key: str) -> str | None:
    return key if any(c == key for _, c in grid.losses) else None

  out = [
    (
      "Each comparison: mean R@1 of the first loss vs the second (difference in points), for "
      "T2A and A2T, ranked by distance and by plan. Verdict: *holds* when every difference "
      "has the claimed sign, *does not hold* when none has, else *mixed*. 'Paired' counts "
      "the per-seed differences (same seed = same initialisation and batch order; x 2 "
      "directions x 2 rankings) that have the claimed sign: a verdict on means that not "
      "every seed shares is weaker. With one seed a difference of a few points is within "
      "seed-to-seed variation (see the std columns of the tables above). A run whose mean "
      "test R@10 (by distance) is below twice chance in a direction has failed (collapsed, "
      "diverged): a comparison with it is *invalid*, it cannot make a claim hold."
    ),
    "",
  ]
  failed = failed_cells(grid, res)
  header = [
    "claim (docs/method.md section 8)",
    "comparison",
    "T2A R@1 (distance)",
    "A2T R@1 (distance)",
    "T2A R@1 (plan)",
    "A2T R@1 (plan)",
    "paired",
    "verdict",
  ]
  pairs = [
    ("m-LTM beats triplet and contrastive", "mltm_full", "triplet"),
    ("m-LTM beats triplet and contrastive", "mltm_full", "contrastive"),
    ("m-LTM beats triplet and contrastive", "mltm_diagonal", "contrastive"),
    ("Mahalanobis beats Euclidean", "mltm_full", "mltm_euclidean"),
    ("Mahalanobis beats Euclidean", "mltm_diagonal", "mltm_euclidean"),
    ("partial OT adds small, consistent gains", "mltm_partial", "mltm_full"),
  ]
  rows = []
  for claim, a, b in pairs:
    ca, cb = cell_of(a), cell_of(b)
    if ca is None or cb is None:
      continue
    texts, nums = _r1_diffs(res, ca, cb)
    paired = _agreeing(paired_r1_diffs(res, ca, cb))
    bad = [f"{name[c]} failed ({failed[c]})" for c in (ca, cb) if c in failed]
    verdict = "invalid: " + "; ".join(bad) if bad else _verdict(nums)
    rows.append([claim, f"{name[ca]} vs {name[cb]}", *texts, paired, verdict])
  out += _table(header, rows)

  # Modality gap: smaller is the claim.
  out += ["", "Modality gap (smaller is the claim; test split, mean over seeds):", ""]
  gap_rows = []
  for other in ("triplet", "contrastive"):
    a, b = cell_of("mltm_full"), cell_of(other)
    if a is None or b is None:
      continue
    ga, gb = res.gap(a), res.gap(b)
    if ga is None or gb is None:
      gap_rows.append([f"{name[a]} vs {name[b]}", "—", "not measured"])
      continue
    verdict = "holds" if ga.mean < gb.mean else "does not hold"
    gap_rows.append(
      [f"{name[a]} vs {name[b]}", f"{ga.mean:.3f} vs {gb.mean:.3f}", f"narrower: {verdict}"]
    )
  out += _table(["comparison", "gap", "verdict"], gap_rows)
  out += [
    "",
    "Zero-shot ESC-50 classification is not measured here (ESC-50 is not available offline).",
    "",
  ]

  # Noise: partial OT degrades less than contrastive.
  noise = {label: cells for label, cells in grid.noise}
  partial = next((c for lab, c in noise.items() if "partial" in lab), None)
  contrastive = next((c for lab, c in noise.items() if lab == "InfoNCE"), None)
  out += [
    (
      "Noisy pairs (claim: partial-OT m-LTM is more robust to noisy pairs than InfoNCE). Drop "
      "= R@1 at p = 0 minus R@1 at p (means over seeds); relative drop = drop / R@1 at p = 0. "
      "The verdict is on the absolute R@1 at p: the claim holds at p when partial OT's R@1 is "
      "the higher one in every direction and ranking (a smaller drop from a lower start is "
      "not robustness), does not hold when it is lower in all, else mixed. 'Paired': per "
      "seed, partial OT's drop smaller than InfoNCE's, over seeds x directions x rankings."
    ),
    "",
  ]
  hdr = ["p", *(f"{d.upper()} drop ({m}): partial vs InfoNCE" for m in METHODS for d in DIRECTIONS)]
  hdr += ["R@1 at p, partial - InfoNCE (dist T2A, A2T; plan T2A, A2T)", "relative drop (dist T2A)"]
  nrows = []
  if partial and contrastive:
    cp0, cc0 = partial[0][1], contrastive[0][1]  # p = 0
    for (p, cp), (_, cc) in zip(partial[1:], contrastive[1:]):
      row, absolute, rel = [f"{p:g}"], [], "—"
      for m in METHODS:
        for d in DIRECTIONS:
          s = [res.stat(c, m, d, "R@1") for c in (cp0, cp, cc0, cc)]
          if any(x is None for x in s):
            row.append("—")
            continue
          dp, dc = s[0].mean - s[1].mean, s[2].mean - s[3].mean
          row.append(f"{dp:+.1f} vs {dc:+.1f}")
          absolute.append(s[1].mean - s[3].mean)
          if (m, d) == ("distance", "t2a") and s[0].mean > 0 and s[2].mean > 0:
            rel = f"{100 * dp / s[0].mean:.0f} % vs {100 * dc / s[2].mean:.0f} %"
      row += [", ".join(f"{x:+.1f}" for x in absolute) or "—", rel]
      seeds = set.intersection(*(set(res.finals.get(c, {})) for c in (cp0, cp, cc0, cc)))
      drops_c, drops_p = (paired_r1_diffs(res, x, y, seeds) for x, y in ((cc0, cc), (cp0, cp)))
      paired = [dc - dp for dc, dp in zip(drops_c, drops_p, strict=True)]
      bad = [c for c in (cp0, cp, cc0, cc) if c in failed]
      verdict = "invalid: failed run(s) " + ", ".join(bad) if bad else _verdict(absolute)
      nrows.append(row + [_agreeing(paired), verdict])
  out += _table(hdr + ["paired", "verdict"], nrows)
  return out


def _setup_lines(grid: Grid) -> list[str]:
  b = grid.base
  sizes = b.get("synthcaps_sizes", "3000,400,400").split(",")
  test_clips = int(sizes[2])
  return [
    (
      f"- Data: SynthCaps {'/'.join(sizes)} clips (train/val/test; rendering seed "
      f"{b.get('synthcaps_seed', 0)}, {b.get('sample_rate', 16000)} Hz, "
      f"{b.get('clip_seconds', 10.0):g} s clips). Test split: {test_clips} clips x "
      f"{5 * test_clips} captions (chance T2A R@1 = {100 / test_clips:.2f}%)."
    ),
    f"- Towers: {b.get('audio_encoder', 'temporal_cnn')} [{b.get('cnn_channels')}] audio, frozen "
    f"MiniLM-L6 text features, projection MLPs {b.get('head_hidden')} -> D = "
    f"{b.get('embed_dim')}. Training: batch {b.get('batch_size')}, {b.get('num_steps')} steps, "
    f"Adam lr {b.get('learning_rate'):g}"
    + (
      f" (x{b.get('lr_decay_factor', 0.1):g} every {b['lr_decay_steps']} steps)"
      if b.get("lr_decay_steps")
      else ""
    )
    + f", eps {b.get('eps', 0.05):g} unless varied, validation every {b.get('eval_every')} steps.",
    (
      "- Every cell: the same towers, data, steps and seeds; only the loss (transport, metric, "
      "eps) or the training-pair noise p differs. Baselines (triplet, ranking, InfoNCE) score "
      "by cosine; m-LTM and entropic InfoNCE by the learned metric (full M unless stated). "
      "Partial OT: mass 0.95; unbalanced: tau 0.9."
    ),
    (
      "- Numbers: test split, best validation checkpoint (validation R@1+R@5+R@10 of both "
      "directions, ranked by distance), in %, mean ± sample std (ddof 1) over the seeds; "
      "a single seed has no std; '(n=k)' marks a cell with fewer finished seeds; '—' = not run."
    ),
  ]


def _provenance_lines(res: Results) -> list[str]:
  groups: dict[tuple[str, str], int] = {}
  for per in res.infos.values():
    for info in per.values():
      k = (info.get("commit", "?"), info.get("command", "?"))
      groups[k] = groups.get(k, 0) + 1
  return [f"- {n} run(s) trained at commit `{c}` by `{cmd}`" for (c, cmd), n in groups.items()]


def _wall_line(res: Results) -> str:
  walls = [f["wall_seconds"] for per in res.finals.values() for f in per.values()]
  if not walls:
    return "- No finished runs."
  w = np.asarray(walls)
  return (
    f"- Wall time per run (train_and_evaluate, as measured): median {np.median(w):.0f} s, "
    f"min {w.min():.0f} s, max {w.max():.0f} s, total {w.sum() / 60:.1f} min over {len(w)} runs."
  )


def write_report(grid: Grid, out: Path, command: str, commit: str, date: str) -> Path:
  """Writes DIR/REPORT.md and DIR/*.png from the finished runs under DIR/cells/."""
  out = Path(out)
  res = Results.load(out)
  seeds = res.seeds
  n = len(seeds)
  seeds_text = f"seeds {', '.join(map(str, seeds))} (n={n})" if seeds else "no seeds finished"
  unique = {c.name for c in grid.cells}
  finished = sum(len(res.finals.get(c, {})) for c in unique)
  lines = [
    f"# The paper's claims on SynthCaps (scale: {grid.scale})",
    "",
    f"- Command: `{command}`",
    f"- Commit: `{commit}`; report written {date}",
    *_provenance_lines(res),
    (
      f"- Runs finished: {finished} of {len(unique) * max(n, 1)} ({len(unique)} unique cells x "
      f"{seeds_text})."
    ),
    _wall_line(res),
    *_setup_lines(grid),
    "",
    "## 1. Losses",
    "",
  ]
  for method in METHODS:
    lines += [f"### Losses, {method_text(grid, method)}; {seeds_text}", ""]
    lines += losses_table(grid, res, method, n) + [""]
  lines += [
    (
      "The modality gap ||mean_i f(x_i) - mean_j g(y_j)|| (test split) does not depend on the "
      "ranking; it is repeated in both tables."
    ),
    "",
    "## 2. Noisy training pairs",
    "",
    (
      "A fraction p of the training pairs has its captions shuffled among themselves before "
      "training (validation and test stay clean)."
    ),
    "",
  ]
  for method in METHODS:
    for d in DIRECTIONS:
      lines += [f"### {d.upper()} R@1 vs noise p, {method_text(grid, method)}; {seeds_text}", ""]
      lines += noise_table(grid, res, method, d, n) + [""]
  lines += ["![R@1 vs noise ratio](r1_vs_noise.png)", "", "## 3. eps of m-LTM (full M)", ""]
  for method in METHODS:
    lines += [f"### m-LTM eps, {method_text(grid, method)}; {seeds_text}", ""]
    lines += eps_table(grid, res, method, n) + [""]
  lines += [
    "![R@1 vs eps](r1_vs_eps.png)",
    "",
    "## 4. Modality gap per loss",
    "",
    f"Test split, {seeds_text}; bars: mean, whiskers: std.",
    "",
    "![modality gap](modality_gap.png)",
    "",
    "## 5. Test embeddings, InfoNCE vs m-LTM",
    "",
  ]
  first = seeds[0] if seeds else None
  panels = []
  for label, cell in grid.embeddings:
    npz = out / "cells" / run_name(cell, first) / EMBEDDINGS if first is not None else None
    gap = res.finals.get(cell, {}).get(first, {}).get("modality_gap")
    panels.append((label, npz if npz is not None and npz.is_file() else None, gap))
  lines += [
    (
      f"2-D PCA of the test embeddings (seed {first}; best checkpoint; the L2-normalised tower "
      "outputs, PCA fit per model on clips and captions together)."
    ),
    "",
    "![PCA of test embeddings](embeddings_pca.png)",
    "",
    "## 6. The claims, as measured here",
    "",
    *claims_section(grid, res),
    "",
  ]
  # Plots.
  d_ranks = "solid: ranked by distance, dashed: ranked by plan"
  ps = [p for p, _ in grid.noise[0][1]] if grid.noise else []
  plot_r1_lines(
    out / "r1_vs_noise.png",
    f"Test R@1 vs noise ratio p ({d_ranks}; {seeds_text}, mean ± std)",
    "noise ratio p",
    ps,
    [(label, [c for _, c in cells]) for label, cells in grid.noise],
    res,
  )
  plot_r1_lines(
    out / "r1_vs_eps.png",
    f"m-LTM test R@1 vs eps ({d_ranks}; {seeds_text}, mean ± std)",
    "eps",
    [e for e, _ in grid.eps],
    [("m-LTM, full M", [c for _, c in grid.eps])],
    res,
    logx=True,
  )
  plot_gap(out / "modality_gap.png", grid, res, f"Modality gap, test split ({seeds_text})")
  plot_embeddings(
    out / "embeddings_pca.png",
    panels,
    f"PCA of test embeddings (seed {first}): clips vs captions",
  )
  path = out / "REPORT.md"
  path.write_text("\n".join(lines))
  return path
