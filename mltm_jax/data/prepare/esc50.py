"""ESC-50 release layout -> entries (labels, no captions: it serves zero-shot evaluation).

Under ``src``: ``meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take)
and ``audio/{filename}``. Every clip goes to the single prepared split ``all`` with its fold
(1-5), target (0-49), category (e.g. "chirping_birds"), esc10, src_file and take.
Skip reasons: "no file name", "duplicate row", "bad metadata row" (fold/target not integers,
empty category), "missing audio".
"""

from __future__ import annotations

from pathlib import Path

from mltm_jax.data.prepare.common import (
  Entry,
  Listing,
  Skip,
  csv_cell,
  csv_columns,
  read_csv,
  relative,
  resolve_name,
)

__all__ = ["ESC50_SPLIT", "class_names", "esc50_csv", "load_esc50", "read_esc50"]

ESC50_SPLIT = "all"
REQUIRED = ("filename", "fold", "target", "category")


def esc50_csv(src: str | Path) -> Path:
  return Path(src) / "meta" / "esc50.csv"


def read_esc50(src: str | Path) -> Listing:
  """Entries of ESC-50 under ``src``.

  Raises:
    FileNotFoundError: no meta/esc50.csv. ValueError: a header lacking a required column.
  """
  src = Path(src).absolute()
  path = esc50_csv(src)
  if not path.is_file():
    raise FileNotFoundError(f"{src}: no meta/esc50.csv (not the ESC-50 release layout)")
  header, rows, utf8 = read_csv(path)
  out = Listing()
  out.note_utf8(path.name, utf8)
  col = csv_columns(path, header, REQUIRED)
  dirs = [d for d in (src / "audio",) if d.is_dir()]
  skipped = out.skipped
  seen: set[str] = set()
  for row in rows:

    def cell(name, row=row):
      return csv_cell(row, col, name)

    name = cell("filename")
    if not name:
      skipped.append(Skip(ESC50_SPLIT, "", "", "no file name"))
      continue
    if name in seen:
      skipped.append(Skip(ESC50_SPLIT, name, f"audio/{name}", "duplicate row"))
      continue
    seen.add(name)
    try:
      fold, target = int(cell("fold")), int(cell("target"))
      category = cell("category")
      if not category:
        raise ValueError("empty category")
    except ValueError as e:
      skipped.append(Skip(ESC50_SPLIT, name, f"audio/{name}", "bad metadata row", str(e)))
      continue
    p = resolve_name(dirs, name)
    if p is None:
      skipped.append(Skip(ESC50_SPLIT, name, f"audio/{name}", "missing audio"))
      continue
    extra = {
      "fold": fold,
      "target": target,
      "category": category,
      "esc10": cell("esc10").lower() == "true",
      "src_file": cell("src_file"),
      "take": cell("take"),
    }
    out.entries.append(Entry(ESC50_SPLIT, name, relative(p, src), str(p), (), extra))
  return out


def class_names(records) -> dict[int, str]:
  """{target: category} (sorted by target) from entries or item records; underscores kept.

  Raises:
    ValueError: a target with two categories.
  """
  by_target: dict[int, str] = {}
  for r in records:
    d = r.extra if isinstance(r, Entry) else r
    t, c = int(d["target"]), d["category"]
    if by_target.setdefault(t, c) != c:
      raise ValueError(f"ESC-50 target {t} has two categories: {by_target[t]!r} and {c!r}")
  return dict(sorted(by_target.items()))


def load_esc50(
  root: str | Path, sample_rate: int, progress: bool = True, workers: int = 4
) -> tuple[list[dict], list, dict[int, str], list[Skip]]:
  """ESC-50 in memory for zero-shot evaluation, from the release layout or its prepared form.

  Args:
    root: the release folder (meta/esc50.csv + audio/) or a folder written by
      ``launch.prepare --dataset=esc50``.
    sample_rate: the model rate (clips are decoded / resampled to it).

  Returns:
    (records, waves, class_names, skipped): per clip {"id", "fold", "target", "category"} and
    float32 [T] mono; {target: category} (underscores kept); clips left out with reasons
    (release layout: decoded here, silent clips kept; prepared: skipped at prepare time).
  """
  from concurrent import futures

  from tqdm.auto import tqdm

  from mltm_jax.data.audio import AudioError
  from mltm_jax.data.prepared import SUMMARY, item_waves, read_items, read_summary

  root = Path(root)
  if (root / SUMMARY).is_file() or (root / "prepared.json").is_file():
    summary = read_summary(root)
    if summary.get("dataset") != "esc50":
      raise ValueError(f"{root}: prepared {summary.get('dataset')!r} data, not esc50")
    items = read_items(root, ESC50_SPLIT)
    waves = item_waves(root, ESC50_SPLIT, items)
    if int(summary["sample_rate"]) != sample_rate:
      import librosa

      waves = [
        librosa.resample(w, orig_sr=int(summary["sample_rate"]), target_sr=sample_rate)
        for w in tqdm(waves, desc="resample esc50", disable=not progress, leave=False)
      ]
    skipped = [Skip(**r) for r in summary.get("skipped_items", [])]
    records = [{k: it[k] for k in ("id", "fold", "target", "category")} for it in items]
    return records, waves, class_names(items), skipped

  from mltm_jax.data.prepare.writer import Settings, decode_clip

  listing = read_esc50(root)
  names = class_names(listing.entries)
  settings = Settings(sample_rate=sample_rate, max_seconds=0.0, keep_silent=True)
  results: list = [None] * len(listing.entries)

  def decode(i: int) -> None:
    try:
      results[i] = decode_clip(listing.entries[i].path, settings)[0]
    except AudioError as e:
      results[i] = e

  with futures.ThreadPoolExecutor(max(1, workers)) as pool:
    list(
      tqdm(
        pool.map(decode, range(len(results))),
        total=len(results),
        desc="decode esc50",
        unit="clip",
        disable=not progress,
        leave=False,
      )
    )
  records, waves, skipped = [], [], list(listing.skipped)
  for e, res in zip(listing.entries, results):
    if isinstance(res, AudioError):
      skipped.append(Skip(e.split, e.id, e.file, res.reason, res.detail))
      continue
    records.append({"id": e.id, **{k: e.extra[k] for k in ("fold", "target", "category")}})
    waves.append(res)
  return records, waves, names, skipped
