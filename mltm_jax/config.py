"""The training configuration: one frozen dataclass, validated before any work.

Every field is an absl flag of the same name (``launch/flags.py`` derives the
flags from this dataclass), so a flagfile is simply a list of field values.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

LOSSES = ("mltm", "triplet", "ranking", "contrastive", "entropic_contrastive")
OT_VARIANTS = ("balanced", "partial", "unbalanced")
OT_SOLVERS = ("ott", "native")
PARTIAL_OT_SOLVERS = ("native",)  # ott-jax has no partial-OT solver
# --ot_solver: "auto" = ott for balanced and unbalanced OT, native for partial OT.
OT_SOLVER_CHOICES = ("auto",) + OT_SOLVERS
# --ot_differentiation: "auto" = envelope for balanced OT, unroll for partial and unbalanced OT.
OT_DIFFERENTIATIONS = ("envelope", "unroll")
OT_DIFFERENTIATION_CHOICES = ("auto",) + OT_DIFFERENTIATIONS
METRICS = ("full", "diagonal", "identity", "lowrank")
METRIC_INITS = ("identity", "official")
DATASETS = ("synthcaps", "clotho", "prepared")
AUDIO_ENCODERS = ("temporal_cnn", "small_cnn", "cnn10", "cnn14", "resnet38")
PANNS_ENCODERS = ("cnn10", "cnn14", "resnet38")
POOLINGS = ("mean", "cls")
RANK_BY = ("distance", "plan")
PRECISIONS = ("float32", "bfloat16")


SYNTHCAPS_SIZE_KEYS = ("development", "validation", "evaluation", "heldout")


def parse_synthcaps_sizes(text: str) -> dict[str, int]:
  """``"train,val,test[,heldout]"`` -> SynthCaps clips per split (Clotho split names).

  Raises:
    ValueError (one line): not 3 or 4 integers, train/val/test not positive, heldout negative.
  """
  try:
    values = [int(x) for x in str(text).split(",")]
  except ValueError:
    values = []
  if len(values) not in (3, 4) or min(values[:3]) < 1 or min(values) < 0:
    raise ValueError(
      "expected three positive integers train,val,test and an optional fourth, the held-out "
      f"split's size (>= 0), got {text!r}"
    )
  return {k: v for k, v in zip(SYNTHCAPS_SIZE_KEYS, values) if k != "heldout" or v > 0}


def upgrade_saved(raw: dict[str, Any]) -> dict[str, Any]:
  """A saved config.json's values as a run of this version reads them.

  Runs written before --ot_solver applied to partial OT hold ot_solver='ott' with
  ot='partial'; they ran the native solver (the only partial one), which this records.
  Runs written before --metric_learning_rate existed ran one Adam rate for everything (0).
  Runs written before --ot_differentiation existed differentiated through the iterations.
  """
  raw = {"metric_learning_rate": 0.0, "ot_differentiation": "unroll", **raw}
  if raw.get("ot") == "partial" and raw.get("ot_solver") == "ott":
    return {**raw, "ot_solver": PARTIAL_OT_SOLVERS[0]}
  return raw


def _f(default: Any, help_text: str, choices: tuple[str, ...] | None = None):
  return dataclasses.field(default=default, metadata={"help": help_text, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Config:
  """All settings of a training / evaluation run (defaults = the demo)."""

  # Data.
  dataset: str = _f(
    "synthcaps",
    "Dataset under --data_dir: synthcaps or clotho (the Clotho layout), or prepared (written "
    "by launch.prepare; splits train/val/test).",
    DATASETS,
  )
  data_dir: str = _f("data/synthcaps", "Dataset root (SynthCaps is rendered here if absent).")
  synthcaps_sizes: str = _f(
    "3000,400,400,400",
    "SynthCaps clips per split: train,val,test[,heldout] (heldout: unseen source pairs and "
    "wording; 0 or absent: none).",
  )
  synthcaps_seed: int = _f(0, "Seed of the SynthCaps rendering.")
  noise_p: float = _f(
    0.0,
    "Noisy correspondence: the captions of this seeded fraction of the training (clip, caption) "
    "pairs are shuffled among themselves (record: WORKDIR/noisy_pairs.json); val/test clean.",
  )
  sample_rate: int = _f(16000, "Model sample rate in Hz (audio is resampled to it).")
  clip_seconds: float = _f(
    10.0,
    "Fixed clip length: random crop/zero-pad in training, "
    "crop from the start/zero-pad at evaluation.",
  )
  max_text_length: int = _f(32, "Caption length in tokens (padded/truncated).")
  # Frontend.
  n_fft: int = _f(1024, "STFT size (= window length).")
  hop_length: int = _f(640, "STFT hop in samples.")
  n_mels: int = _f(64, "Mel bins.")
  fmin: float = _f(50.0, "Lowest mel frequency (Hz).")
  fmax: float = _f(8000.0, "Highest mel frequency (Hz).")
  spec_augment: bool = _f(True, "SpecAugment in training (after the input batch norm, as PANNs).")
  spec_time_width: int = _f(
    16, "SpecAugment: 2 time stripes of width < k frames (PANNs: 64 at 100 frames/s)."
  )
  spec_freq_width: int = _f(8, "SpecAugment: 2 frequency stripes of width < k mel bins (PANNs: 8).")
  # Model.
  audio_encoder: str = _f(
    "temporal_cnn",
    "Audio tower: temporal_cnn (1-D convs over time, fast on "
    "CPU), small_cnn (2-D PANNs-style blocks) or the PANNs cnn10, cnn14, resnet38.",
    AUDIO_ENCODERS,
  )
  cnn_channels: str = _f(
    "128,256,256", "Channels of the CNN blocks, comma separated (small_cnn: e.g. 16,32,64,128)."
  )
  cnn_double_conv: bool = _f(False, "small_cnn: two 3x3 convs per block (PANNs) instead of one.")
  cnn_strided_stem: bool = _f(True, "small_cnn: first block downsamples by a stride-2 conv.")
  precompute_mel: bool = _f(
    True,
    "Compute each clip's log-mel once (in JAX) at load time instead "
    "of in every train step; crops then cut frames.",
  )
  audio_init: str = _f(
    "",
    "Orbax dir written by launch.convert_panns: its PANNs params and batch stats start the "
    "audio trunk (arch and shapes must match --audio_encoder, fc1 is dropped); empty = random.",
  )
  text_encoder_dir: str = _f(
    "", "HF BERT-architecture checkpoint dir; empty = the bundled MiniLM-L6."
  )
  text_pooling: str = _f(
    "mean", "Text pooling: 'cls' (paper) or 'mean' (MiniLM's training).", POOLINGS
  )
  freeze_text: bool = _f(
    True, "Freeze the text encoder (its pooled outputs are computed once and cached)."
  )
  embed_dim: int = _f(256, "Joint embedding dimension D.")
  head_hidden: int = _f(512, "Hidden width of the projection MLPs.")
  dropout: float = _f(
    0.2,
    "Dropout in the projection MLPs and after every audio CNN block / stage; ResNet38's "
    "dropout inside each BasicBlock stays at PANNs' fixed 0.1 (and fc1's at 0.5).",
  )
  # Metric.
  metric: str = _f(
    "full", "Ground metric M: full, diagonal (official code), identity, lowrank.", METRICS
  )
  metric_rank: int = _f(0, "Rank r of M = L L^T for --metric=lowrank (0 = D).")
  metric_init: str = _f(
    "identity",
    "Start of M: identity or official ((A+A^T)/2+I, projected).",
    METRIC_INITS,
  )
  psd_every: int = _f(1, "Project M onto the PSD cone every k optimizer updates.")
  # Loss.
  loss: str = _f("mltm", "Training loss.", LOSSES)
  ot: str = _f(
    "balanced", "m-LTM transport: balanced, partial (mass --mass), unbalanced (--tau).", OT_VARIANTS
  )
  eps: float = _f(0.05, "Entropic regularisation of the OT plan (on the max-normalised cost).")
  mass: float = _f(0.95, "Transported mass s of partial OT.")
  tau: float = _f(0.9, "Marginal relaxation tau of unbalanced OT (1 = balanced).")
  ot_solver: str = _f(
    "auto",
    "OT solver of m-LTM: ott (ott-jax's Sinkhorn; balanced and unbalanced only: ott-jax has "
    "no partial OT), native (ours, hand-written backward pass; faster when unrolled) "
    "or auto (ott, and native for --ot=partial).",
    OT_SOLVER_CHOICES,
  )
  ot_momentum: float = _f(
    1.0,
    "ott solver only: over-relaxation weight w in [1, 2) of each Sinkhorn update "
    "((1 - w) old + w new; same fixed point, fewer iterations: WORKSPACE.md, Benchmarks). "
    "1 = plain Sinkhorn.",
  )
  ot_differentiation: str = _f(
    "auto",
    "Gradient of the m-LTM loss: envelope (balanced OT only: (I/B - P)/eps, the solver runs "
    "forward only; exact at convergence), unroll (through the Sinkhorn iterations, as the "
    "official code) or auto (envelope for balanced OT, unroll otherwise).",
    OT_DIFFERENTIATION_CHOICES,
  )
  normalize_cost: bool = _f(True, "Divide the batch cost by its maximum (official code).")
  margin: float = _f(0.2, "Margin of the triplet and ranking losses.")
  triplet_warmup_steps: int = _f(
    0,
    "Triplet loss: every negative (the ranking loss) for the first k steps, then the hardest "
    "one (VSE++ trainers' warm-up against collapse; 0 = hardest from the start).",
  )
  temperature: float = _f(0.07, "InfoNCE temperature (initial value if learned).")
  learn_temperature: bool = _f(False, "Learn the InfoNCE temperature.")
  # Optimisation.
  batch_size: int = _f(128, "GLOBAL batch size (split over devices and hosts).")
  num_steps: int = _f(1500, "Training steps.")
  num_epochs: int = _f(
    0,
    "Training epochs (passes over the training clip-caption pairs, batch_size per step, "
    "last partial batch dropped); overrides --num_steps when > 0.",
  )
  learning_rate: float = _f(1e-3, "Adam learning rate.")
  metric_learning_rate: float = _f(
    0.0,
    "Adam learning rate of the metric M alone (own Adam, same warm-up and decay shape); 0 = "
    "--learning_rate for everything (the official single rate). Default 0: the tuning "
    "protocol's full and diagonal M selections did not agree on a rate (WORKSPACE.md).",
  )
  text_learning_rate: float = _f(
    0.0,
    "Adam learning rate of the pretrained text encoder (not its projection head) when it is "
    "fine-tuned (--freeze_text=false), own Adam, same warm-up and decay shape; 0 = "
    "--learning_rate.",
  )
  lr_decay_steps: int = _f(
    0, "Multiply the learning rate by --lr_decay_factor every k steps (0 = off)."
  )
  lr_decay_epochs: int = _f(
    0, "Step decay every k epochs (as --num_epochs counts them); overrides --lr_decay_steps."
  )
  lr_decay_factor: float = _f(0.1, "Step-decay factor.")
  warmup_steps: int = _f(0, "Linear warm-up steps.")
  grad_clip: float = _f(2.0, "Gradient global-norm clipping (0 = off).")
  seed: int = _f(1997, "Seed of initialisation, data order and augmentation.")
  precision: str = _f(
    "float32", "Compute dtype of the towers (bfloat16 on accelerators).", PRECISIONS
  )
  # Run directory, evaluation, logging.
  workdir: str = _f("runs/demo", "Run directory: flags, checkpoints, metrics, TensorBoard.")
  eval_every: int = _f(250, "Validate every k steps (and at the end).")
  keep_checkpoints: int = _f(2, "Latest checkpoints to keep (the best one is kept separately).")
  log_every: int = _f(25, "Log training metrics every k steps.")
  eval_batch_size: int = _f(256, "Batch size when embedding for evaluation.")
  long_audio: str = _f(
    "crop",
    "Evaluation/inference of clips longer than --clip_seconds: crop (the first clip length) or "
    "chunk (windows of --clip_seconds every --chunk_hop_seconds, last one zero-padded, chunk "
    "embeddings mean-pooled and re-normalised).",
    ("crop", "chunk"),
  )
  chunk_hop_seconds: float = _f(
    0.0, "Hop between the chunks of --long_audio=chunk in seconds (0 = half of --clip_seconds)."
  )
  rank_by: str = _f(
    "distance", "Ranking score of the reported metrics: learned distance or OT plan.", RANK_BY
  )
  plan_eps: float = _f(0.03, "eps of rank-by-plan (official evaluation: 0.03).")
  plan_iterations: int = _f(10, "Sinkhorn iterations of rank-by-plan (official evaluation: 10).")
  progress: bool = _f(True, "Show progress bars.")

  # ---------------------------------------------------------------- helpers
  @property
  def channels(self) -> tuple[int, ...]:
    return tuple(int(c) for c in self.cnn_channels.split(","))

  @property
  def sizes(self) -> dict[str, int]:
    """SynthCaps clips per split (raises ValueError on a malformed --synthcaps_sizes)."""
    return parse_synthcaps_sizes(self.synthcaps_sizes)

  @property
  def has_heldout(self) -> bool:
    """Whether the run's data has SynthCaps' held-out split (evaluated after the test split)."""
    return self.dataset == "synthcaps" and self.sizes.get("heldout", 0) > 0

  @property
  def clip_samples(self) -> int:
    return int(round(self.clip_seconds * self.sample_rate))

  @property
  def resolved_ot_solver(self) -> str:
    """The solver --ot_solver names for this --ot (auto: ott, native for partial OT)."""
    if self.ot_solver != "auto":
      return self.ot_solver
    return PARTIAL_OT_SOLVERS[0] if self.ot == "partial" else "ott"

  @property
  def resolved_ot_differentiation(self) -> str:
    """The m-LTM loss's gradient --ot_differentiation names (auto: envelope for balanced OT)."""
    if self.ot_differentiation != "auto":
      return self.ot_differentiation
    return "envelope" if self.ot == "balanced" else "unroll"

  @property
  def effective_metric(self) -> str:
    """Baselines compare embeddings by cosine, i.e. the Euclidean metric."""
    return self.metric if self.loss in ("mltm", "entropic_contrastive") else "identity"

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, path: str | Path) -> "Config":
    raw = json.loads(Path(path).read_text())
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in upgrade_saved(raw).items() if k in known})

  def with_epochs(self, num_pairs: int) -> "Config":
    """--num_epochs / --lr_decay_epochs turned into steps, for num_pairs training pairs.

    An epoch is num_pairs // batch_size steps (a loader over the (clip, caption) pairs that
    drops the last partial batch: Clotho's 5 captions per clip make an epoch 5 passes over
    the clips). Fields left at 0 keep their step counts.
    """
    per_epoch = max(1, num_pairs // self.batch_size)
    kw = {}
    if self.num_epochs:
      kw["num_steps"] = self.num_epochs * per_epoch
    if self.lr_decay_epochs:
      kw["lr_decay_steps"] = self.lr_decay_epochs * per_epoch
    return self.replace(**kw)

  def replace(self, **kw) -> "Config":
    return dataclasses.replace(self, **kw)

  def problems(self) -> list[str]:
    """Invalid values and combinations, each as one line naming the flag."""
    out = []
    for f in dataclasses.fields(self):
      choices = f.metadata.get("choices")
      if choices and getattr(self, f.name) not in choices:
        out.append(f"--{f.name}={getattr(self, f.name)!r} is not one of {', '.join(choices)}")
    positive = (
      "sample_rate",
      "clip_seconds",
      "max_text_length",
      "n_fft",
      "hop_length",
      "n_mels",
      "embed_dim",
      "head_hidden",
      "batch_size",
      "num_steps",
      "eval_every",
      "keep_checkpoints",
      "log_every",
      "eval_batch_size",
      "plan_iterations",
      "psd_every",
      "temperature",
      "learning_rate",
      "plan_eps",
    )
    for name in positive:
      if not getattr(self, name) > 0:
        out.append(f"--{name} must be > 0, got {getattr(self, name)}")
    if not 0.001 <= self.eps <= 10.0:
      out.append(f"--eps must be in [0.001, 10], got {self.eps}")
    if not 0.0 < self.mass <= 1.0:
      out.append(f"--mass must be in (0, 1], got {self.mass}")
    if not 0.0 < self.tau <= 1.0:
      out.append(f"--tau must be in (0, 1], got {self.tau}")
    if not 0.0 <= self.dropout < 1.0:
      out.append(f"--dropout must be in [0, 1), got {self.dropout}")
    if not 0.0 < self.fmin < self.fmax <= self.sample_rate / 2:
      out.append(
        f"--fmin/--fmax must satisfy 0 < fmin < fmax <= sample_rate/2 "
        f"({self.fmin}, {self.fmax}, {self.sample_rate})"
      )
    if self.batch_size < 2:
      out.append(f"--batch_size must be >= 2 (the loss contrasts pairs), got {self.batch_size}")
    try:
      ch = self.channels
      if not ch or min(ch) < 1:
        raise ValueError
    except ValueError:
      out.append(
        f"--cnn_channels must be comma-separated positive integers, got {self.cnn_channels!r}"
      )
    try:
      self.sizes
    except ValueError as e:
      out.append(f"--synthcaps_sizes: {e}")
    if self.metric == "lowrank" and not 0 <= self.metric_rank <= self.embed_dim:
      out.append(
        f"--metric_rank must be in [0, --embed_dim={self.embed_dim}], got {self.metric_rank}"
      )
    if self.num_epochs < 0 or self.lr_decay_epochs < 0:
      out.append("--num_epochs and --lr_decay_epochs must be >= 0")
    if self.audio_init and self.audio_encoder not in PANNS_ENCODERS:
      out.append(
        f"--audio_init needs a PANNs --audio_encoder ({', '.join(PANNS_ENCODERS)}), "
        f"got {self.audio_encoder!r}"
      )
    if not 0.0 <= self.chunk_hop_seconds <= self.clip_seconds:
      out.append(
        f"--chunk_hop_seconds must be in [0, --clip_seconds={self.clip_seconds}], "
        f"got {self.chunk_hop_seconds}"
      )
    if not 0.0 <= self.noise_p < 1.0:
      out.append(f"--noise_p must be in [0, 1), got {self.noise_p}")
    if self.triplet_warmup_steps < 0:
      out.append(f"--triplet_warmup_steps must be >= 0, got {self.triplet_warmup_steps}")
    if self.metric_learning_rate < 0 or self.text_learning_rate < 0:
      out.append("--metric_learning_rate and --text_learning_rate must be >= 0")
    if self.lr_decay_steps < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
      out.append("--lr_decay_steps, --warmup_steps and --grad_clip must be >= 0")
    out.extend(self._combination_problems())
    return out

  def _combination_problems(self) -> list[str]:
    """Values that are fine alone but cannot work together (or would be silently ignored)."""
    out = []
    if not 0.0 < self.lr_decay_factor <= 1.0:
      out.append(f"--lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}")
    if not 0.001 <= self.plan_eps <= 10.0:
      out.append(f"--plan_eps must be in [0.001, 10], got {self.plan_eps}")
    if self.max_text_length > 512:
      out.append(f"--max_text_length must be <= 512 (BERT positions), got {self.max_text_length}")
    if not self.workdir.strip():
      out.append("--workdir must not be empty")
    if self.metric_rank and self.metric != "lowrank":
      out.append(f"--metric_rank={self.metric_rank} needs --metric=lowrank, got {self.metric!r}")
    if self.loss == "mltm" and self.ot == "partial" and self.resolved_ot_solver == "ott":
      out.append(
        f"--ot_solver={self.ot_solver} has no partial OT (ott-jax has none); --ot=partial "
        f"needs --ot_solver={' or '.join(PARTIAL_OT_SOLVERS)}"
      )
    if not 1.0 <= self.ot_momentum < 2.0:
      out.append(f"--ot_momentum must be in [1, 2), got {self.ot_momentum}")
    elif self.ot_momentum != 1.0 and (self.loss != "mltm" or self.resolved_ot_solver != "ott"):
      out.append(
        f"--ot_momentum={self.ot_momentum} needs --loss=mltm with the ott solver, got "
        f"--loss={self.loss} --ot={self.ot} --ot_solver={self.ot_solver}"
      )
    if self.ot_differentiation == "envelope" and (self.loss != "mltm" or self.ot != "balanced"):
      out.append(
        "--ot_differentiation=envelope needs --loss=mltm with --ot=balanced (the envelope "
        f"gradient is that of balanced OT), got --loss={self.loss} --ot={self.ot}"
      )
    if self.learn_temperature and self.loss != "contrastive":
      out.append(f"--learn_temperature needs --loss=contrastive, got {self.loss!r}")
    if self.clip_samples < self.n_fft > 0:
      out.append(
        f"--clip_seconds={self.clip_seconds} gives {self.clip_samples} samples, fewer than "
        f"--n_fft={self.n_fft}"
      )
    if self.spec_augment and self.hop_length > 0 and self.n_mels > 0:
      frames = 1 + self.clip_samples // self.hop_length
      if not 1 <= self.spec_time_width <= frames:
        out.append(
          f"--spec_time_width must be in [1, {frames}] (the frames of a clip), got "
          f"{self.spec_time_width}"
        )
      if not 1 <= self.spec_freq_width <= self.n_mels:
        out.append(
          f"--spec_freq_width must be in [1, --n_mels={self.n_mels}], got {self.spec_freq_width}"
        )
    if self.dataset == "synthcaps":
      try:
        train = self.sizes["development"]
      except ValueError:
        train = None  # reported above
      if train is not None and self.batch_size > train:
        out.append(
          f"--batch_size={self.batch_size} exceeds the {train} SynthCaps training clips "
          "(--synthcaps_sizes)"
        )
    return out
