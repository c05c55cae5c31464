"""GPU probe: where BERT-base's forward + backward time goes at B=128, by embedding lookup.

`python -m benchmarks.device.bert_probe [--tiny] [--out=FILE]`. For each lookup of
`mltm_jax.models.bert.BertEmbeddings` ("gather": take, scatter-add gradient; "onehot_types":
token types by a one-hot matrix product; "onehot": words too) and batch (128, then 32), one jitted
value_and_grad of sum([CLS] * probe) over BERT-base (random weights, [B, 32] tokens, varied
lengths, dropout off), in bfloat16 compute; at B=128 also float32 for gather and the fastest bf16
lookup. Median of 10 synchronised calls after 2 warm-ups; JSON written after every row. Ours only
(the torch reference is `benchmarks.device.bench`'s towers_text row,
`benchmarks.device.towers.TextTower`).
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.cpu.towers import TINY_BERT, caption_tokens
from mltm_jax.models.bert import LOOKUPS, BertConfig, BertEncoder


def time_row(cfg: BertConfig, lookup: str, batch: int, dtype, length: int, runs: int) -> dict:
  ids, mask, _ = caption_tokens(batch, length, cfg.vocab_size)
  model = BertEncoder(cfg, dtype=dtype, lookup=lookup)
  params = model.init(jax.random.PRNGKey(0), ids, mask)
  probe = jax.random.normal(jax.random.PRNGKey(1), (batch, cfg.hidden_size))

  @jax.jit
  def step(p):
    return jax.value_and_grad(lambda q: jnp.sum(model.apply(q, ids, mask)[:, 0] * probe))(p)

  t0 = time.perf_counter()
  jax.block_until_ready(step(params))
  first = time.perf_counter() - t0
  jax.block_until_ready(step(params))
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(step(params))
    times.append(time.perf_counter() - t0)
  loss = float(step(params)[0])
  return {
    "lookup": lookup,
    "batch": batch,
    "dtype": jnp.dtype(dtype).name,
    "median_s": float(np.median(times)),
    "min_s": float(np.min(times)),
    "max_s": float(np.max(times)),
    "first_call_s": first,
    "loss": loss,
  }


def main(argv: list[str]) -> int:
  tiny = "--tiny" in argv
  out = next((a.split("=", 1)[1] for a in argv if a.startswith("--out=")), None)
  if not tiny and jax.default_backend() == "cpu":
    print("error: a GPU probe; use --tiny on CPU", file=sys.stderr)
    return 2
  cfg = BertConfig(**TINY_BERT) if tiny else BertConfig()  # BertConfig() = BERT-base
  length, runs = (8, 2) if tiny else (32, 10)
  batches = (4,) if tiny else (128, 32)
  rows: list[dict] = []

  def record(row: dict) -> None:
    rows.append(row)
    print(
      f"{row['dtype']:8s} B={row['batch']:<4d} {row['lookup']:13s} "
      f"{row['median_s'] * 1e3:8.2f} ms [{row['min_s'] * 1e3:.2f}-{row['max_s'] * 1e3:.2f}] "
      f"first {row['first_call_s']:.1f} s loss {row['loss']:.6g}",
      flush=True,
    )
    if out:
      with open(out, "w") as f:
        json.dump({"jax": jax.__version__, "device": str(jax.devices()[0]), "rows": rows}, f)

  with jax.default_matmul_precision("float32"):
    for i, batch in enumerate(batches):
      for lookup in LOOKUPS:
        record(time_row(cfg, lookup, batch, jnp.bfloat16, length, runs))
      if i == 0:  # float32 at the first batch: gather and the fastest bf16 lookup
        best = min(rows, key=lambda r: r["median_s"])
        for lookup in dict.fromkeys(("gather", best["lookup"])):
          record(time_row(cfg, lookup, batch, jnp.float32, length, runs))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
