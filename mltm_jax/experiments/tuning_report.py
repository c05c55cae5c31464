"""DIR/REPORT.md of the tuning suite (mltm_jax.experiments.tuning) and its plots.

Reads only what the runs left on disk (cells/*/final_metrics.json, best.json, cell.json):
every configuration with its validation score, the selected configuration of each method on
the test and held-out splits (mean +- std over seeds), the claims under this protocol, the
noisy-pairs comparison and the paper's regime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mltm_jax.experiments.claims import LOSS_VARIANTS, run_name
from mltm_jax.experiments.plots import _pyplot, plot_r1_lines
from mltm_jax.experiments.report import (
  DIRECTIONS,
  METHODS,
  Results,
  _provenance_lines,
  _r1_diffs,
  _table,
  _wall_line,
  failed_cells,
  fmt,
  method_text,
  paired_r1_diffs,
  r1_samples,
)
from mltm_jax.experiments.tuning import (
  REGIME,
  REGIME_METHODS,
  TuningGrid,
  select_configs,
  validation_of,
  validation_score_at,
)
from mltm_jax.experiments.verdicts import _agreeing, _verdict, resolved

SPLITS = ("test", "heldout")
KEYS = ("R@1", "R@5", "R@10")
CLAIMS = (
  ("m-LTM beats triplet", "mltm_full", "triplet"),
  ("m-LTM beats contrastive", "mltm_full", "contrastive"),
  ("m-LTM beats contrastive", "mltm_diagonal", "contrastive"),
  ("m-LTM beats contrastive", "mltm_euclidean", "contrastive"),
  ("Mahalanobis beats Euclidean", "mltm_full", "mltm_euclidean"),
  ("Mahalanobis beats Euclidean", "mltm_diagonal", "mltm_euclidean"),
  ("partial OT adds small, consistent gains", "mltm_partial", "mltm_full"),
)
_VARIANT_OVERRIDES = {key: ov for key, _, ov in LOSS_VARIANTS}


def heldout_view(res: Results) -> Results:
  """The same runs with their held-out metrics in place of the test metrics."""
  finals = {
    c: {s: f["heldout"] for s, f in per.items() if "heldout" in f} for c, per in res.finals.items()
  }
  return Results({c: per for c, per in finals.items() if per}, res.infos)


def hyperparameters(key: str, cell) -> str:
  """The overrides of ``cell`` that the tuning chose (the method's own hyperparameters)."""
  fixed = _VARIANT_OVERRIDES[key]
  hp = [(k, v) for k, v in cell.overrides if fixed.get(k, object()) != v and k != "noise_p"]
  return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp)


def tuning_table(grid: TuningGrid, out: Path, picked: dict[str, str]) -> tuple[list[str], int, int]:
  """Every configuration's validation score; (lines, runs with the best step before the
  last, finished runs)."""
  rows, early, done = [], 0, 0
  first = grid.seeds[0]
  for key, label, cells in grid.methods:
    for c in cells:
      v = validation_of(out / "cells" / c.run_name(first))
      mark = "**selected**" if picked.get(key) == c.name else ""
      if v is None:
        rows.append([label, hyperparameters(key, c), "—", "—", mark])
        continue
      done += 1
      early += v["step"] < int(grid.base["num_steps"])
      rows.append([label, hyperparameters(key, c), f"{v['score']:.1f}", str(v["step"]), mark])
  header = ["method", "configuration", "validation score", "best step", ""]
  return _table(header, rows), early, done


def selected_table(grid, res: Results, picked: dict[str, str], method: str, n: int) -> list[str]:
  header = ["method", "configuration", *(f"{d.upper()} {k}" for d in DIRECTIONS for k in KEYS)]
  rows = []
  for key, label, _ in grid.methods:
    if key not in picked:
      rows.append([label, "not selected yet", *("—" for _ in DIRECTIONS for _ in KEYS)])
      continue
    cell = picked[key]
    row = [label, hyperparameters(key, grid.cell(cell))]
    row += [fmt(res.stat(cell, method, d, k), 1, n) for d in DIRECTIONS for k in KEYS]
    rows.append(row)
  return _table(header, rows)


def regime_cells(picked: dict[str, str]) -> dict[str, str]:
  """{method key: cell name} of the paper's regime (stage 4) for the selected methods."""
  return {k: f"{picked[k]}__regime" for k in REGIME_METHODS if k in picked}


def _run_dir(out: Path, cell: str, seed: int) -> Path:
  """The run directory of ``cell`` (a name) at ``seed``."""
  return out / "cells" / run_name(cell, seed)


def _same_step_lines(grid, out: Path, picked, regime: dict[str, str], step: int) -> list[str]:
  """Validation score at the regime's last step: the frozen-text run of the same
  configuration (its longer schedule read at that step) beside the fine-tuned one."""
  rows = []
  for key, cell in regime.items():
    texts = []
    for c in (picked[key], cell):
      v = [validation_score_at(_run_dir(out, c, s), step) for s in grid.seeds]
      v = [x for x in v if x is not None]
      sd = f" ± {np.std(v, ddof=1):.1f}" if len(v) > 1 else ""
      texts.append(f"{np.mean(v):.1f}{sd} (n={len(v)})" if v else "—")
    rows.append([grid.label(key), *texts])
  decay = grid.base.get("lr_decay_steps")
  return [
    f"Validation score (R@1 + R@5 + R@10, both directions) at step {step}, the regime's last: "
    f"the frozen-text runs above (learning rate still undecayed there: x0.1 at step {decay}) "
    "against the fine-tuned ones. The test tables below compare methods within the regime; "
    "against the frozen tables above, the regime has half the steps.",
    "",
    *_table(["method", f"frozen text, step {step}", f"fine-tuned, step {step}"], rows),
  ]


def regime_section(
  grid: TuningGrid, out: Path, views: dict[str, Results], picked, fails
) -> list[str]:
  """The paper's regime (stage 4): the selected configurations with the text encoder
  fine-tuned; tables per split, the claims among these methods and their plot."""
  regime = regime_cells(picked)
  settings = ", ".join(f"{k}={v}" for k, v in REGIME[grid.scale].items())
  steps = int(REGIME[grid.scale].get("num_steps", grid.base["num_steps"]))
  early, done = 0, 0
  for c in regime.values():
    for seed in grid.seeds:
      v = validation_of(_run_dir(out, c, seed))
      done += v is not None
      early += v is not None and v["step"] < steps
  lines = [
    f"Text encoder fine-tuned ({settings}); the audio tower is still trained from scratch "
    "(no AudioSet-pretrained PANNs here, unlike the paper), so this is the paper's regime for "
    "the text side only. Configurations: each method's selection above. Best validation step "
    f"before the last step in {early} of {done} finished runs.",
    "",
  ]
  n = len(grid.seeds)
  lines += _same_step_lines(grid, out, picked, regime, steps) + [""]
  for split, res in views.items():
    header = ["method", *(f"{d.upper()} {k}" for d in DIRECTIONS for k in KEYS)]
    rows = [
      [grid.label(k), *(fmt(res.stat(c, "distance", d, m), 1, n) for d in DIRECTIONS for m in KEYS)]
      for k, c in regime.items()
    ]
    lines += [f"{split} split, ranked by distance:", ""] + _table(header, rows) + [""]
  pairs = [(a, b) for _, a, b in CLAIMS if a in regime and b in regime]
  header = ["comparison", "split", *(f"{d.upper()} R@1 ({m})" for m in METHODS for d in DIRECTIONS)]
  rows = []
  for a, b in pairs:
    for split, res in views.items():
      texts, nums = _r1_diffs(res, regime[a], regime[b])
      bad = [c for c in (regime[a], regime[b]) if c in fails[split]]
      verdict = "invalid: failed run(s) " + ", ".join(bad) if bad else _verdict(nums)
      paired = _agreeing(paired_r1_diffs(res, regime[a], regime[b]))
      sig = resolved(r1_samples(res, regime[a], regime[b]))
      rows.append([f"{grid.label(a)} vs {grid.label(b)}", split, *texts, paired, sig, verdict])
  lines += _table(header + ["paired", "resolved", "verdict"], rows)
  return lines + ["", "![paper regime: test vs held-out](regime_test_vs_heldout.png)"]


def claims_rows(grid, views: dict[str, Results], picked: dict[str, str], fails) -> list[str]:
  header = ["claim", "comparison", "split"]
  header += [f"{d.upper()} R@1 ({m})" for m in METHODS for d in DIRECTIONS]
  header += ["paired", "resolved", "verdict"]
  rows = []
  for claim, a, b in CLAIMS:
    if a not in picked or b not in picked:
      continue
    ca, cb = picked[a], picked[b]
    for split, res in views.items():
      texts, nums = _r1_diffs(res, ca, cb)
      bad = [
        f"{grid.label(k)} failed ({fails[split][c]})"
        for k, c in ((a, ca), (b, cb))
        if c in fails[split]
      ]
      verdict = "invalid: " + "; ".join(bad) if bad else _verdict(nums)
      paired = _agreeing(paired_r1_diffs(res, ca, cb))
      sig = resolved(r1_samples(res, ca, cb))
      rows.append(
        [claim, f"{grid.label(a)} vs {grid.label(b)}", split, *texts, paired, sig, verdict]
      )
  return _table(header, rows)


def noise_rows(grid, res: Results, picked, fails) -> tuple[list[str], list]:
  """Partial-OT m-LTM vs InfoNCE at each p (test split): R@1 at p, drops, verdict on the
  absolute R@1 at p (every direction and ranking)."""
  rows_by_key = dict(grid.noise_cells(picked))
  lines = []
  header = ["method", *(f"p={p:g}" for p, _ in next(iter(rows_by_key.values()), []))]
  table = []
  for key, row in rows_by_key.items():
    stats = [res.stat(c, "distance", "t2a", "R@1") for _, c in row]
    table.append([grid.label(key), *(fmt(s) for s in stats)])
  lines += ["T2A R@1 (test, ranked by distance) vs noise p:", ""]
  lines += _table(header, table) + [""]
  part, cont = rows_by_key.get("mltm_partial"), rows_by_key.get("contrastive")
  if not (part and cont):
    return lines, list(rows_by_key.items())
  vhead = ["p", "R@1 at p, partial - InfoNCE (dist T2A, A2T; plan T2A, A2T)"]
  vhead += ["relative drop (dist T2A), partial vs InfoNCE", "verdict"]
  vrows = []
  for (p, cp), (_, cc) in zip(part[1:], cont[1:]):
    diffs, rel = [], "—"
    for m in METHODS:
      for d in DIRECTIONS:
        sp, sc = res.stat(cp, m, d, "R@1"), res.stat(cc, m, d, "R@1")
        if sp is not None and sc is not None:
          diffs.append(sp.mean - sc.mean)
    s = [res.stat(c, "distance", "t2a", "R@1") for c in (part[0][1], cp, cont[0][1], cc)]
    if all(x is not None and x.mean > 0 for x in (s[0], s[2])) and s[1] and s[3]:
      rel = (
        f"{100 * (s[0].mean - s[1].mean) / s[0].mean:.0f} % vs "
        f"{100 * (s[2].mean - s[3].mean) / s[2].mean:.0f} %"
      )
    bad = [c for c in (part[0][1], cp, cont[0][1], cc) if c in fails]
    verdict = "invalid: failed run(s) " + ", ".join(bad) if bad else _verdict(diffs)
    vrows.append([f"{p:g}", ", ".join(f"{x:+.1f}" for x in diffs) or "—", rel, verdict])
  lines += [
    "Claim: partial-OT m-LTM is more robust to noisy pairs than InfoNCE. It holds at p when "
    "partial OT's R@1 at p is the higher one in every direction and ranking (a smaller drop "
    "from a lower start is not robustness), does not hold when it is lower in all, else mixed.",
    "",
  ]
  lines += _table(vhead, vrows)
  return lines, list(rows_by_key.items())


def plot_test_vs_heldout(path: Path, grid, views: dict[str, Results], picked, title: str) -> None:
  """Grouped bars: per method, R@1 (by distance) on test and held-out, T2A and A2T panels."""
  plt = _pyplot()
  keys = [k for k, _, _ in grid.methods if k in picked]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  x = np.arange(len(keys))
  for ax, d in zip(axes, DIRECTIONS):
    for j, (split, res) in enumerate(views.items()):
      stats = [res.stat(picked[k], "distance", d, "R@1") for k in keys]
      mean = [s.mean if s else 0.0 for s in stats]
      std = [s.std or 0.0 if s else 0.0 for s in stats]
      ax.bar(x + (j - 0.5) * 0.4, mean, 0.4, yerr=std, capsize=3, label=split)
    ax.set_xticks(x, [grid.label(k) for k in keys], rotation=35, ha="right", fontsize=7)
    ax.set_title(f"{d.upper()} R@1 (ranked by distance)")
    ax.grid(axis="y", alpha=0.3)
  axes[0].set_ylabel("R@1 (%)")
  axes[1].legend()
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_tuning_report(grid: TuningGrid, out: Path, command: str, commit: str, date: str) -> Path:
  """Writes DIR/REPORT.md, DIR/test_vs_heldout.png, DIR/regime_test_vs_heldout.png and
  DIR/r1_vs_noise.png."""
  out = Path(out)
  res = Results.load(out)
  views = {"test": res, "heldout": heldout_view(res)}
  picked = select_configs(grid, out)
  n = len(grid.seeds)
  fails = {split: failed_cells(grid, v, 2 if split == "test" else 3) for split, v in views.items()}
  table, early, done = tuning_table(grid, out, picked)
  b = grid.base
  sizes = str(b["synthcaps_sizes"]).split(",")
  lines = [
    f"# Tuned comparison on SynthCaps (scale: {grid.scale})",
    "",
    f"- Command: `{command}`",
    f"- Commit: `{commit}`; report written {date}",
    *_provenance_lines(res),
    _wall_line(res),
    (
      f"- Data: SynthCaps {'/'.join(sizes)} clips (train/val/test/held-out; rendering seed "
      f"{b.get('synthcaps_seed', 0)}, {b.get('sample_rate')} Hz). Held-out: clips whose "
      "source pairs and captions whose wording never occur in training (see docs/method.md)."
    ),
    (
      f"- Training: batch {b.get('batch_size')}, {b.get('num_steps')} steps, Adam lr "
      f"{b.get('learning_rate'):g}, validation every {b.get('eval_every')} steps; towers "
      f"{b.get('audio_encoder', 'temporal_cnn')} [{b.get('cnn_channels')}] + frozen MiniLM-L6, "
      f"D = {b.get('embed_dim')}. Seeds {', '.join(map(str, grid.seeds))}."
    ),
    (
      "- Protocol (WORKSPACE.md, 'Tuning protocol', fixed before any result): six "
      "configurations of each method's own hyperparameters, one run each (first seed); the "
      "configuration with the best validation score (R@1+R@5+R@10, both directions) is "
      "selected; it is then trained with the other seeds. Test and held-out numbers: mean ± "
      "sample std over the seeds of the selected configuration, best validation checkpoint."
    ),
    "",
    "## 1. Tuning (validation split only)",
    "",
    f"Best validation step before the last step in {early} of {done} finished tuning runs.",
    "",
    *table,
    "",
  ]
  for split, view in views.items():
    lines += [f"## {2 if split == 'test' else 3}. Selected configurations, {split} split", ""]
    for method in METHODS:
      lines += [f"### {split}, {method_text(grid, method)}", ""]
      lines += selected_table(grid, view, picked, method, n) + [""]
  lines += ["![test vs held-out](test_vs_heldout.png)", "", "## 4. The claims", ""]
  lines += [
    "Mean R@1 of the first method vs the second (difference in points). Verdict: *holds* when "
    "every difference has the claimed sign, *does not hold* when none has, else *mixed*; "
    "*invalid* when a run failed (mean R@10 below twice chance). 'Paired': per-seed "
    "differences with the claimed sign. 'Resolved': differences in the claimed direction that "
    "the seeds resolve (Welch's t-test over the seeds, two-sided p < 0.05); an addition to the "
    "verdict rule, which stays as fixed before the results.",
    "",
  ]
  lines += claims_rows(grid, views, picked, fails) + ["", "## 5. Noisy training pairs", ""]
  noise_lines, noise_cells = noise_rows(grid, res, picked, fails["test"])
  lines += noise_lines + ["", "![R@1 vs noise](r1_vs_noise.png)", ""]
  lines += ["## 6. The paper's regime: the text encoder fine-tuned", ""]
  lines += regime_section(grid, out, views, picked, fails) + [""]
  seeds_text = f"seeds {', '.join(map(str, grid.seeds))}"
  plot_test_vs_heldout(
    out / "test_vs_heldout.png", grid, views, picked, f"Selected configurations ({seeds_text})"
  )
  regime_steps = REGIME[grid.scale].get("num_steps", grid.base["num_steps"])
  plot_test_vs_heldout(
    out / "regime_test_vs_heldout.png",
    grid,
    views,
    regime_cells(picked),
    f"Paper regime: MiniLM fine-tuned, {regime_steps} steps ({seeds_text})",
  )
  if noise_cells:
    ps = [p for p, _ in noise_cells[0][1]]
    plot_r1_lines(
      out / "r1_vs_noise.png",
      f"Test R@1 vs noise p (solid: distance, dashed: plan; {seeds_text}, mean ± std)",
      "noise ratio p",
      ps,
      [(grid.label(k), [c for _, c in row]) for k, row in noise_cells],
      res,
    )
  path = out / "REPORT.md"
  path.write_text("\n".join(lines))
  return path
