"""PyTorch reference of the PANNs Cnn10 / Cnn14 / ResNet38 (Kong et al. 2020).

Written here from the PANNs description, with PANNs' module names so that the state dicts look
like the released checkpoints (the converter `mltm_jax.models.panns_convert` reads them). Used by
tests/test_panns.py, tests/test_towers_init.py and benchmarks/cpu/towers.py.

  RefPanns(arch).forward(mel [B, T, F]) -> (pooled embedding [B, C], relu(fc1) [B, C])

The frontend (STFT, log-mel) is not part of it: it starts from the log-mel, as our trunk does.
"""

from __future__ import annotations

import torch
import torch.nn as tnn
import torch.nn.functional as F

RESNET38_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


class RefConvBlock(tnn.Module):
  """(3x3 conv without bias, BN, ReLU) twice, then optional 2x2 average pooling."""

  def __init__(self, c_in, c_out):
    super().__init__()
    self.conv1 = tnn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    self.bn1 = tnn.BatchNorm2d(c_out)
    self.conv2 = tnn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
    self.bn2 = tnn.BatchNorm2d(c_out)

  def forward(self, x, pool=True):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.relu(self.bn2(self.conv2(x)))
    return F.avg_pool2d(x, 2) if pool else x


class RefBasicBlock(tnn.Module):
  """Residual block; when downsampling, both paths start with 2x2 average pooling."""

  def __init__(self, c_in, c_out, down, p_drop):
    super().__init__()
    self.down, self.p_drop = down, p_drop
    self.conv1 = tnn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    self.bn1 = tnn.BatchNorm2d(c_out)
    self.conv2 = tnn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
    self.bn2 = tnn.BatchNorm2d(c_out)
    if down:  # index 0 is the (parameter-free) pooling, as in PANNs' checkpoints
      self.downsample = tnn.Sequential(
        tnn.AvgPool2d(2), tnn.Conv2d(c_in, c_out, 1, bias=False), tnn.BatchNorm2d(c_out)
      )

  def forward(self, x):
    y = F.avg_pool2d(x, 2) if self.down else x
    y = F.relu(self.bn1(self.conv1(y)))
    y = F.dropout(y, self.p_drop, self.training)
    y = self.bn2(self.conv2(y))
    return F.relu(y + (self.downsample(x) if self.down else x))


class RefPanns(tnn.Module):
  """Cnn10 / Cnn14 / ResNet38: forward(mel [B, T, F]) -> (pooled embedding, relu(fc1))."""

  def __init__(self, arch, p_drop=0.2, p_block=0.1, p_fc=0.5, n_mels=64):
    super().__init__()
    self.arch, self.p_drop, self.p_fc = arch, p_drop, p_fc
    self.bn0 = tnn.BatchNorm2d(n_mels)
    if arch == "resnet38":
      self.conv_block1 = RefConvBlock(1, 64)
      self.resnet = tnn.Module()
      c_in = 64
      for s, (c, n) in enumerate(RESNET38_STAGES, start=1):
        blocks = [
          RefBasicBlock(c_in if j == 0 else c, c, s > 1 and j == 0, p_block) for j in range(n)
        ]
        setattr(self.resnet, f"layer{s}", tnn.Sequential(*blocks))
        c_in = c
      self.conv_block_after1 = RefConvBlock(512, 2048)
      width = 2048
    else:
      chans = [64, 128, 256, 512] + ([1024, 2048] if arch == "cnn14" else [])
      self.n_blocks = len(chans)
      for k, (a, b) in enumerate(zip([1] + chans[:-1], chans), start=1):
        setattr(self, f"conv_block{k}", RefConvBlock(a, b))
      width = chans[-1]
    self.fc1 = tnn.Linear(width, width)
    self.fc_audioset = tnn.Linear(width, 527)

  def forward(self, mel):
    x = mel[:, None]  # [B, 1, T, F]
    x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # per mel bin

    def drop(x):
      return F.dropout(x, self.p_drop, self.training)

    if self.arch == "resnet38":
      x = drop(self.conv_block1(x))
      for s in range(1, 5):
        x = getattr(self.resnet, f"layer{s}")(x)
      x = drop(F.avg_pool2d(x, 2))
      x = drop(self.conv_block_after1(x, pool=False))
    else:
      for k in range(1, self.n_blocks + 1):
        last_cnn14 = self.arch == "cnn14" and k == self.n_blocks
        x = drop(getattr(self, f"conv_block{k}")(x, pool=not last_cnn14))
    x = x.mean(dim=3)  # over frequency
    emb = x.max(dim=2).values + x.mean(dim=2)  # over time
    return emb, F.relu(self.fc1(F.dropout(emb, self.p_fc, self.training)))


def random_reference(arch, seed=0, frames=70, n_mels=64, **kw):
  """A randomly initialised RefPanns in eval mode with realistic but random batch-norm stats.

  BN affine params are random; running stats are measured on a calibration log-mel input
  [4, frames, n_mels] (momentum 1) and then perturbed, so eval mode differs from train mode and
  activations stay O(1) through the depth. kw: RefPanns' dropout probabilities.
  """
  torch.manual_seed(seed)
  model = RefPanns(arch, n_mels=n_mels, **kw)
  bns = [m for m in model.modules() if isinstance(m, tnn.BatchNorm2d)]
  with torch.no_grad():
    for bn in bns:
      bn.weight.uniform_(0.5, 1.5)
      bn.bias.normal_(0.0, 0.3)
      bn.momentum = 1.0
    model.train()
    model(torch.randn(4, frames, n_mels) * 12.0 - 35.0)
    for bn in bns:
      bn.running_mean.add_(0.2 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean))
      bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.6, 1.6))
      bn.momentum = 0.1
  return model.eval()


def panns_state_dict(model):
  """The reference's state dict plus the frontend tensors PANNs checkpoints carry."""
  sd = dict(model.state_dict())
  sd["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(513, 1, 1024)
  sd["spectrogram_extractor.stft.conv_imag.weight"] = torch.zeros(513, 1, 1024)
  sd["logmel_extractor.melW"] = torch.zeros(513, 64)
  return sd
