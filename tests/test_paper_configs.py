"""The paper's flagfiles (configs/audiocaps_mltm.flags, configs/clotho_mltm.flags) end to end,
without the paper's weights or data.

Stand-ins written here: a random PANNs ResNet38 PyTorch checkpoint (benchmarks/references/
torch_panns.py, PANNs' tensor names) converted by `launch.convert_panns`, and a tiny random
BERT directory (hidden 32, 2 layers, 2 heads; the tokenizer files of the bundled MiniLM, whose
vocabulary is bert-base-uncased's). Each flagfile's data layout is a small fixture folder
prepared by `launch.prepare --config=<flagfile>`. `launch.train --flagfile=<flagfile>` then
runs with overrides only for paths and size/time (data, weights, workdir, batch sizes, 2 steps,
0.64 s clips; plus log/progress output), so the flagfile's model, loss, frontend and optimiser
settings are the ones exercised; `launch.evaluate` on the Clotho run must reproduce its final
test metrics. The second flagfile's run and the evaluations load the first run's compiled programs
(one compilation cache for the whole test run).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_runs import REPO, Shared
from tests.test_prepare import make_audiocaps, make_clotho, read_jsonl

pytestmark = pytest.mark.slow  # trains, renders or runs CLI subprocesses

STEPS = 2
# Only paths and size/time differ from the flagfile (plus log/progress output).
SIZE_TIME = [
  "--batch_size=4",
  "--num_epochs=0",  # the flagfile's 50 epochs would override --num_steps
  f"--num_steps={STEPS}",
  f"--eval_every={STEPS}",
  "--eval_batch_size=4",
  "--clip_seconds=0.64",  # 65 frames: the least the flagfile's --spec_time_width=64 allows
  "--log_every=1",
  "--progress=false",
]
TINY_BERT = dict(
  vocab_size=30522,  # bert-base-uncased's vocabulary (the MiniLM tokenizer files)
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=64,
  max_position_embeddings=64,
  type_vocab_size=2,
)
TOKENIZER_FILES = (
  "vocab.txt",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
)


def flagfile_values(path: Path) -> dict[str, str]:
  """--name=value lines of a flagfile (comments skipped)."""
  out = {}
  for line in path.read_text(encoding="utf-8").splitlines():
    m = re.match(r"^\s*--([a-z_0-9]+)=(.*?)\s*$", line)
    if m:
      out[m.group(1)] = m.group(2)
  return out


def cli(shared: Shared, module: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
  res = subprocess.run(
    [sys.executable, "-m", module, *args],
    check=False,
    cwd=REPO,
    env=shared.env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert res.returncode == 0, f"{module} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
  return res


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  return Shared(tmp_path_factory)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, shared):
  """(converted ResNet38 dir, its trunk params as converted, tiny BERT dir)."""
  import torch
  import transformers

  from benchmarks.references.torch_panns import panns_state_dict, random_reference
  from mltm_jax.models.hf_bert import minilm_dir
  from mltm_jax.models.panns_convert import convert_state_dict

  tmp = tmp_path_factory.mktemp("weights")
  ref = random_reference("resnet38", seed=5, frames=65, n_mels=64)
  sd = panns_state_dict(ref)
  pth = tmp / "ResNet38_random.pth"
  torch.save({"model": sd, "iteration": 0}, pth)
  panns = tmp / "ResNet38_flax"
  res = cli(shared, "launch.convert_panns", f"--input={pth}", f"--output={panns}")
  assert res.stdout.startswith("resnet38: "), res.stdout
  want, _ = convert_state_dict(sd, "resnet38")
  want.pop("fc1")  # the run's trunk has no AudioSet classifier

  bert = tmp / "bert-tiny"
  torch.manual_seed(6)
  model = transformers.BertModel(transformers.BertConfig(**TINY_BERT, hidden_act="gelu"))
  with torch.no_grad():  # no tensor left at a default init (LayerNorm 1/0, zero biases)
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(bert)
  for name in TOKENIZER_FILES:
    if (minilm_dir() / name).is_file():
      shutil.copy(minilm_dir() / name, bert / name)
  assert (bert / "model.safetensors").is_file() and (bert / "vocab.txt").is_file()
  return panns, want, bert


def restore_params(workdir: Path, step: int) -> dict:
  """params/audio/cnn and params/text/encoder of the run's latest checkpoint at ``step``, as
  numpy arrays (a partial restore: the optimiser state is not read)."""
  import jax
  import orbax.checkpoint as ocp

  path = (workdir / "checkpoints" / "latest" / str(step) / "default").absolute()
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  meta = getattr(meta, "item_metadata", meta)
  meta = getattr(meta, "tree", meta)
  item = {
    "params": {
      "audio": {"cnn": meta["params"]["audio"]["cnn"]},
      "text": {"encoder": meta["params"]["text"]["encoder"]},
    }
  }
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
  return ckptr.restore(path, args=args)["params"]


def _max_abs_diff(a, b) -> float:
  import jax

  assert jax.tree.structure(a) == jax.tree.structure(b)
  return max(
    float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


@pytest.mark.parametrize("name", ["audiocaps", "clotho"])
def test_paper_flagfile_trains_and_evaluates(name, weights, shared, tmp_path):
  panns, want_trunk, bert = weights
  flagfile = REPO / "configs" / f"{name}_mltm.flags"
  paper = flagfile_values(flagfile)
  if name == "audiocaps":
    src = make_audiocaps(tmp_path / "src", sr=44100)
  else:
    src = make_clotho(tmp_path / "src", n_train=8, n_val=4, n_test=4, bad=False)
  data, work = tmp_path / "prepared", tmp_path / "run"
  cli(
    shared,
    "launch.prepare",
    "--progress=false",
    f"--dataset={name}",
    f"--src={src}",
    f"--out={data}",
    f"--config={flagfile}",
    "--workers=1",
  )
  # prepared at the flagfile's rate (so the run reads it without resampling)
  summary = json.loads((data / "summary.json").read_text())
  assert summary["sample_rate"] == int(paper["sample_rate"])

  cli(
    shared,
    "launch.train",
    f"--flagfile={flagfile}",
    f"--data_dir={data}",
    f"--audio_init={panns}",
    f"--text_encoder_dir={bert}",
    f"--workdir={work}",
    *SIZE_TIME,
  )

  # 1. the run's resolved config holds the flagfile's settings (only paths/size/time changed)
  cfg = json.loads((work / "config.json").read_text())
  overridden = {"data_dir", "audio_init", "text_encoder_dir", "workdir"} | {
    f.split("=")[0][2:] for f in SIZE_TIME
  }
  for key, value in paper.items():
    if key in overridden:
      continue
    got = cfg[key]
    if isinstance(got, bool):
      assert got == (value == "true"), (key, got, value)
    elif isinstance(got, (int, float)):
      assert got == pytest.approx(float(value)), (key, got, value)
    else:
      assert str(got) == value, (key, got, value)
  assert cfg["audio_encoder"] == "resnet38" and cfg["text_pooling"] == "cls"
  assert cfg["freeze_text"] is False and cfg["metric"] == "full" and cfg["loss"] == "mltm"
  assert cfg["sample_rate"] == 32000 and cfg["ot"] == "balanced" and cfg["spec_augment"] is True
  assert cfg["audio_init"] == str(panns) and cfg["text_encoder_dir"] == str(bert)

  # 2. STEPS finite training steps, none skipped; finite test metrics
  records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if r["kind"] == "train"]
  assert [r["step"] for r in train] == list(range(1, STEPS + 1))
  assert all(np.isfinite(r["loss"]) for r in train), train
  final = json.loads((work / "final_metrics.json").read_text())
  assert final["best_step"] == STEPS and final["skipped_steps"] == 0
  values = [v for d in ("t2a", "a2t") for v in final[d].values()]
  values += [v for d in ("t2a", "a2t") for v in final["by_plan"][d].values()]
  assert values and all(np.isfinite(v) for v in values), final

  # 3. the converted ResNet38 trunk started the run: after STEPS Adam steps of the flagfile's
  # learning rate every trunk parameter is within a few steps' size of the converted tensor
  # (Adam moves a parameter by about lr per step; a trunk left at its random init would be
  # O(0.1) away: e.g. the converted batch-norm scales are drawn from U(0.5, 1.5), flax's are
  # 1), and training moved it
  params = restore_params(work, STEPS)
  trunk = params["audio"]["cnn"]
  lr = float(paper["learning_rate"])
  diff = _max_abs_diff(trunk, want_trunk)
  print(f"trunk max |trained - converted| = {diff:.2e}")
  assert 0.0 < diff <= 4 * STEPS * lr, diff
  # and the tiny BERT started the text tower (fine-tuned: --freeze_text=false)
  from mltm_jax.models.hf_bert import load_bert_checkpoint

  bert_cfg, bert_params = load_bert_checkpoint(bert)
  assert bert_cfg.hidden_size == TINY_BERT["hidden_size"]
  text_diff = _max_abs_diff(params["text"]["encoder"], bert_params)
  print(f"text encoder max |trained - tiny BERT| = {text_diff:.2e}")
  assert 0.0 < text_diff <= 4 * STEPS * lr, text_diff

  # 4. launch.evaluate on the run's best checkpoint reproduces the final test metrics (on the
  # Clotho run only: it reads any prepared layout the same way, and each run costs ~20 s)
  if name == "clotho":
    check_evaluate(shared, work, data, final)
  shutil.rmtree(work / "checkpoints")  # ~1.6 GB (ResNet38 + Adam state, latest and best)


def check_evaluate(shared: Shared, work: Path, data: Path, final: dict) -> None:
  """launch.evaluate on the run reproduces its final test metrics, both rankings."""
  cli(shared, "launch.evaluate", f"--workdir={work}", "--split=test")
  ev = json.loads((work / "eval_test.json").read_text())
  test_items = read_jsonl(data / "test.jsonl")
  assert ev["checkpoint_step"] == STEPS and ev["num_clips"] == len(test_items)
  assert ev["num_captions"] == sum(len(it["captions"]) for it in test_items)
  rank_by = final["rank_by"]
  other = "plan" if rank_by == "distance" else "distance"
  for d in ("t2a", "a2t"):
    for k, v in final[d].items():
      assert ev[rank_by][d][k] == pytest.approx(v, abs=1e-6), (rank_by, d, k)
    for k, v in final[f"by_{other}"][d].items():
      assert ev[other][d][k] == pytest.approx(v, abs=1e-6), (other, d, k)
