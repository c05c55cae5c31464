"""The tuning protocol: its configurations, the selection on validation, and the report's
numbers, on run directories written here (no training)."""

import json
import re
from pathlib import Path


from mltm_jax.config import Config
from mltm_jax.experiments import tuning
from mltm_jax.experiments.claims import LOSS_VARIANTS
from mltm_jax.experiments.tuning_report import write_tuning_report

# Each method's own hyperparameters: the only fields its configurations may set.
OWN = {
  "triplet": {"margin", "triplet_warmup_steps"},
  "ranking": {"margin"},
  "contrastive": {"temperature"},
  "entropic_contrastive": {"eps"},
  "mltm_euclidean": {"eps"},
  "mltm_full": {"eps", "metric_learning_rate"},
  "mltm_diagonal": {"eps", "metric_learning_rate"},
  "mltm_partial": {"eps", "mass", "metric_learning_rate"},
  "mltm_unbalanced": {"eps", "tau", "metric_learning_rate"},
}
METRICS = ("R@1", "R@5", "R@10", "R@50", "medR", "meanR", "mAP@10")


def test_every_method_gets_six_distinct_valid_configurations_of_its_own_hyperparameters():
  grid = tuning.tuning_grid("small")
  variants = {key: ov for key, _, ov in LOSS_VARIANTS}
  assert [k for k, _, _ in grid.methods] == list(variants)
  for key, _, cells in grid.methods:
    assert len(cells) == 6, key
    seen = set()
    for cell in cells:
      ov = dict(cell.overrides)
      assert {k: ov[k] for k in variants[key]} == variants[key]
      assert set(ov) - set(variants[key]) <= OWN[key], (key, ov)
      seen.add(tuple(sorted(ov.items())))
      cfg = Config(**{**grid.base, **ov, "workdir": "/tmp/x"})
      assert cfg.problems() == [], (cell.name, cfg.problems())
    assert len(seen) == 6, key
  assert grid.seeds == (1997, 1998, 1999)
  assert grid.base["synthcaps_sizes"].count(",") == 3  # the held-out split is evaluated
  warm = {dict(c.overrides)["triplet_warmup_steps"] for c in grid.methods[0][2]}
  assert warm == {0, grid.base["num_steps"] // 5}


def test_small_long_is_the_small_scale_at_twice_the_steps():
  """The amendment's scale: the small scale's data, towers, rate, batch and configurations
  (but the triplet warm-up, a fifth of the steps), with every run twice as long."""
  small, long = tuning.tuning_grid("small"), tuning.tuning_grid("small_long")
  assert long.base["num_steps"] == 2 * small.base["num_steps"] == 1200
  assert long.base["lr_decay_steps"] == 2 * small.base["lr_decay_steps"]
  changed = {"num_steps", "lr_decay_steps"}
  assert {k: v for k, v in long.base.items() if k not in changed} == {
    k: v for k, v in small.base.items() if k not in changed
  }
  assert long.base["data_dir"] == small.base["data_dir"] == "data/synthcaps_tuning_small"
  for (key, _, cells_s), (_, _, cells_l) in zip(small.methods, long.methods):
    for cs, cl in zip(cells_s, cells_l):
      ov_s, ov_l = dict(cs.overrides), dict(cl.overrides)
      if key == "triplet":
        assert ov_l.pop("triplet_warmup_steps") == 2 * ov_s.pop("triplet_warmup_steps")
      assert (cl.name, ov_l) == (cs.name, ov_s)
  regime_s, regime_l = tuning.REGIME["small"], tuning.REGIME["small_long"]
  assert regime_l["num_steps"] == 2 * regime_s["num_steps"]
  assert regime_l["lr_decay_steps"] == 2 * regime_s["lr_decay_steps"]
  cfg = Config(**{**long.base, **dict(long.methods[0][2][0].overrides), "workdir": "/tmp/x"})
  assert cfg.problems() == []


def _metrics(r1: float, r10: float) -> dict:
  m = {k: 0.0 for k in METRICS}
  m.update({"R@1": r1, "R@5": (r1 + r10) / 2, "R@10": r10})
  return m


def _final(r1: float, held_r1: float, r10: float = 80.0) -> dict:
  test = {"t2a": _metrics(r1, r10), "a2t": _metrics(r1 + 1, r10)}
  held = {"t2a": _metrics(held_r1, r10), "a2t": _metrics(held_r1 + 1, r10)}
  return {
    **test,
    "rank_by": "distance",
    "modality_gap": 0.1,
    "wall_seconds": 10.0,
    "best_step": 300,
    "by_plan": test,
    "heldout": {**held, "rank_by": "distance", "by_plan": held},
  }


def _write_run(out: Path, cell: str, seed: int, score: float, step: int, final: dict) -> None:
  d = out / "cells" / f"{cell}__seed{seed}"
  d.mkdir(parents=True)
  (d / "best.json").write_text(json.dumps({"score": score, "step": step, "report": None}))
  (d / "final_metrics.json").write_text(json.dumps({**final, "best_step": step}))


def test_selection_on_validation_and_the_later_stages(tmp_path):
  grid = tuning.tuning_grid("small")
  first = grid.seeds[0]
  for key, _, cells in grid.methods:
    if key == "ranking":  # one configuration unfinished: not selected yet
      cells = cells[:-1]
    for i, c in enumerate(cells):
      score = 100.0 + (10.0 if i == 4 else i)  # configuration 4 wins on validation
      _write_run(tmp_path, c.name, first, score, 300, _final(50.0 - i, 40.0))
  picked = tuning.select_configs(grid, tmp_path)
  assert "ranking" not in picked
  assert picked == {k: f"{k}__t4" for k, _, _ in grid.methods if k != "ranking"}
  stage2 = grid.stage2(picked)
  assert stage2.seeds == (1998, 1999) and [c.name for c in stage2.cells] == list(picked.values())
  stage3 = grid.stage3(picked)
  names = [c.name for c in stage3.cells]
  assert names == [
    f"{k}__t4__noise{p:g}"
    for k in ("contrastive", "mltm_full", "mltm_partial")
    for p in (0.2, 0.4, 0.6)
  ]
  for c in stage3.cells:
    base = dict(grid.cell(c.name.split("__noise")[0]).overrides)
    assert dict(c.overrides) == {**base, "noise_p": float(c.name.rsplit("noise", 1)[1])}


def test_report_tables_and_verdicts_per_split(tmp_path):
  grid = tuning.tuning_grid("small")
  r1 = {  # selected configurations' test / held-out T2A R@1
    "triplet": (30.0, 20.0),
    "ranking": (35.0, 25.0),
    "contrastive": (50.0, 40.0),
    "entropic_contrastive": (45.0, 35.0),
    "mltm_euclidean": (48.0, 42.0),
    "mltm_full": (52.0, 38.0),  # beats InfoNCE on test, not on held-out
    "mltm_diagonal": (49.0, 41.0),
    "mltm_partial": (51.0, 39.0),
    "mltm_unbalanced": (47.0, 37.0),
  }
  for key, _, cells in grid.methods:
    for i, c in enumerate(cells):
      sel = i == 2
      for seed in grid.seeds if sel else grid.seeds[:1]:
        test, held = r1[key] if sel else (5.0, 5.0)
        r10 = 1.0 if key == "triplet" else 80.0  # triplet failed: R@10 below 2 x chance
        step = 600 if (sel and key == "ranking") else 300
        _write_run(
          tmp_path,
          c.name,
          seed,
          200.0 if sel else 100.0,
          step,
          _final(test + seed - 1998, held + seed - 1998, r10),
        )
  path = write_tuning_report(grid, tmp_path, "cmd", "abc", "today")
  text = path.read_text()
  assert "Best validation step before the last step in 53 of 54 finished tuning runs." in text
  # every configuration listed with its score, the selected one marked
  assert text.count("| **selected** |") == 9 and text.count("| 100.0 |") == 45
  # selected test table: mean ± std over the 3 seeds (R@1 + seed offsets -1, 0, +1)
  assert re.search(r"\| InfoNCE \| temperature=0\.05 \| 50\.0 ± 1\.0 \|", text)

  def verdicts(a: str, b: str) -> dict:
    out = {}
    for line in text.splitlines():
      cells = [c.strip() for c in line.strip("|").split("|")]
      if len(cells) > 3 and cells[1] == f"{a} vs {b}":
        out[cells[2]] = cells[-1]
    return out

  assert verdicts("m-LTM, Mahalanobis full", "InfoNCE") == {
    "test": "holds",
    "heldout": "does not hold",
  }
  assert verdicts("m-LTM, Mahalanobis full", "triplet (hardest negative)")["test"].startswith(
    "invalid: triplet (hardest negative) failed"
  )
  assert (tmp_path / "test_vs_heldout.png").stat().st_size > 10_000


def test_regime_stage_and_its_report_section(tmp_path):
  grid = tuning.tuning_grid("small")
  picked = {k: f"{k}__t1" for k, _, _ in grid.methods}
  stage4 = grid.stage4(picked)
  assert [c.name for c in stage4.cells] == [
    f"{k}__t1__regime" for k in ("contrastive", "mltm_euclidean", "mltm_diagonal", "mltm_full")
  ]
  assert stage4.seeds == grid.seeds
  for c in stage4.cells:
    ov = dict(c.overrides)
    assert ov["freeze_text"] is False and ov["text_learning_rate"] == 5e-5
    cfg = Config(**{**grid.base, **ov, "workdir": "/tmp/x"})
    assert cfg.problems() == [] and cfg.num_steps == 300
  first = grid.seeds[0]
  for key, _, cells in grid.methods:  # stage 1: configuration 1 selected everywhere
    for i, c in enumerate(cells):
      _write_run(tmp_path, c.name, first, 200.0 if i == 1 else 100.0, 300, _final(40.0, 30.0))
  for c, r1 in zip(stage4.cells, (50.0, 45.0, 47.0, 52.0)):
    for seed in grid.seeds:
      step = 300 if (c.name, seed) == (stage4.cells[0].name, first) else 250  # one peaks last
      _write_run(tmp_path, c.name, seed, 150.0, step, _final(r1, r1 - 10))

  def log_val(cell: str, seed: int, score: float) -> None:  # the score logged at step 300
    rows = [
      {"step": 300, "kind": "train", "loss": 1.0},
      {"step": 250, "kind": "val", "score": score - 50},
      {"step": 300, "kind": "val", "score": score},
    ]
    path = tmp_path / "cells" / f"{cell}__seed{seed}" / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

  log_val("mltm_full__t1", first, 210.0)  # frozen text
  log_val("mltm_full__t1__regime", 1997, 230.0)
  log_val("mltm_full__t1__regime", 1998, 240.0)
  text = write_tuning_report(grid, tmp_path, "cmd", "abc", "today").read_text()
  section = text[text.index("## 6.") :]
  assert "| m-LTM, Mahalanobis full | 210.0 (n=1) | 235.0 ± 7.1 (n=2) |" in section
  assert "| InfoNCE | — | — |" in section
  assert "Best validation step before the last step in 11 of 12 finished runs." in section
  assert "| m-LTM, Mahalanobis full | 52.0 ± 0.0 |" in section
  assert (tmp_path / "regime_test_vs_heldout.png").stat().st_size > 10_000
  row = next(
    l
    for l in section.splitlines()
    if l.startswith("| m-LTM, Mahalanobis full vs InfoNCE | heldout")
  )
  assert row.endswith("| holds |") and "42.0 vs 40.0 (+2.0)" in row
  assert "| 12/12 |" in row  # paired: every seed, direction and ranking has the claimed sign
