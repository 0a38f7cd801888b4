"""ResNet backbones (He et al. 2016) returning the C3, C4, C5 feature maps for FPN.

Layouts follow Table 1 of the paper: ResNet-50 = bottleneck blocks [3, 4, 6, 3], ResNet-101 =
[3, 4, 23, 3], widths 64-128-256-512 with expansion 4. The stride of a stage sits on the 3x3
conv of its first block ("ResNet v1.5", torchvision). ``resnet_tiny`` is a 4-stage basic-block
net for CPU tests and the default dataset.
"""
import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.models import layers


class BasicBlock(nn.Module):
  """Two 3x3 convs (He et al. 2016, Fig. 5 left)."""
  width: int
  strides: int = 1
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend
  frozen_norm: bool = False     # layers.FrozenBatchNorm instead of batch norm
  expansion = 1

  def norm(self, name):
    return layers.batch_norm(self.train, self.dtype, name=name, frozen=self.frozen_norm)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = layers.conv(self.width, 3, self.strides, dtype=self.dtype, backend=self.backend)(x)
    y = nn.relu(self.norm("BatchNorm_0")(y))
    y = layers.conv(self.width, 3, dtype=self.dtype, backend=self.backend)(y)
    y = self.norm("BatchNorm_1")(y)
    return nn.relu(y + self.shortcut(residual))

  def shortcut(self, x):
    out = self.width * self.expansion
    if x.shape[-1] == out and self.strides == 1:
      return x
    x = layers.conv(out, 1, self.strides, dtype=self.dtype,
                    backend=self.backend, name="proj_conv")(x)
    return self.norm("proj_bn")(x)


class BottleneckBlock(BasicBlock):
  """1x1 reduce, 3x3, 1x1 expand x4 (He et al. 2016, Fig. 5 right)."""
  expansion = 4

  @nn.compact
  def __call__(self, x):
    residual = x
    y = layers.conv(self.width, 1, dtype=self.dtype, backend=self.backend)(x)
    y = nn.relu(self.norm("BatchNorm_0")(y))
    y = layers.conv(self.width, 3, self.strides, dtype=self.dtype, backend=self.backend)(y)
    y = nn.relu(self.norm("BatchNorm_1")(y))
    y = layers.conv(self.width * 4, 1, dtype=self.dtype, backend=self.backend)(y)
    y = self.norm("BatchNorm_2")(y)
    return nn.relu(y + self.shortcut(residual))


NORMS = ("batch_norm", "frozen_batch_norm")


class ResNet(nn.Module):
  """Returns ``{"C2": ..., "C5": ...}``: C_l has stride 2^l (and ``logits`` with
  ``num_classes``).

  ``norm``: ``"batch_norm"`` (global batch statistics) or ``"frozen_batch_norm"``
  (:class:`layers.FrozenBatchNorm` everywhere, the detectors' fine-tuning of an ImageNet
  backbone). ``freeze_at``: Detectron2's ``FREEZE_AT``; 0 trains everything, 1 freezes the stem,
  k >= 2 the stem and stages C2..Ck (Detectron's recipes: 2). A frozen part has frozen batch
  norm and passes no gradient back, so its backward pass is never computed; the optimizer
  leaves its parameters alone (:func:`frozen_parameters`).
  """
  stage_sizes: Sequence[int]
  block: type = BottleneckBlock
  stem_width: int = 64
  widths: Sequence[int] = (64, 128, 256, 512)
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend
  norm: str = "batch_norm"
  freeze_at: int = 0
  num_classes: int = 0     # > 0: add the ImageNet classifier (Table 1: average pool, fc)

  def __post_init__(self):
    check_freezing(self.norm, self.freeze_at, len(self.stage_sizes))
    super().__post_init__()

  @nn.compact
  def __call__(self, images, train=False):
    frozen_norm = self.norm == "frozen_batch_norm"
    x = layers.conv(self.stem_width, 7, 2, dtype=self.dtype,
                    backend=self.backend, name="stem_conv")(images)
    x = layers.batch_norm(train, self.dtype, name="stem_bn",
                          frozen=frozen_norm or self.freeze_at >= 1)(x)
    x = layers.max_pool(nn.relu(x), 3, 2, backend=self.backend)
    if self.freeze_at >= 1:
      x = jax.lax.stop_gradient(x)
    features = {}
    for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      level = stage + 2
      frozen = level <= self.freeze_at
      for i in range(num_blocks):
        strides = 2 if (i == 0 and stage > 0) else 1
        x = self.block(width, strides, train, self.dtype, backend=self.backend,
                       frozen_norm=frozen_norm or frozen, name=f"stage{level}_block{i}")(x)
      if frozen:
        x = jax.lax.stop_gradient(x)
      features[f"C{level}"] = x
    if self.num_classes:
      pooled = jnp.mean(x, axis=(1, 2))
      logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(pooled)
      features["logits"] = logits.astype(jnp.float32)
    return features


def check_freezing(norm, freeze_at, num_stages):
  if norm not in NORMS:
    raise ValueError(f"unknown backbone norm {norm!r}; choose one of {NORMS}")
  if not 0 <= freeze_at <= num_stages + 1:
    raise ValueError(f"freeze_at={freeze_at} outside 0..{num_stages + 1} (0: train everything, "
                     f"1: freeze the stem, k: the stem and stages C2..Ck)")


def frozen_parameters(params, norm, freeze_at):
  """A tree of bools over a :class:`ResNet`'s ``params``: True where the optimizer must leave
  the parameter alone (frozen stem and stages; every batch-norm scale and bias with
  ``norm="frozen_batch_norm"``)."""
  frozen_modules = ({"stem_conv", "stem_bn"} if freeze_at >= 1 else set()) | {
      f"stage{level}" for level in range(2, freeze_at + 1)}

  def is_frozen(path, _):
    names = [str(getattr(k, "key", k)) for k in path]
    in_frozen_part = names[0] in frozen_modules or names[0].split("_block")[0] in frozen_modules
    is_norm = names[-2].startswith("BatchNorm_") or names[-2].endswith("_bn")
    return in_frozen_part or (norm == "frozen_batch_norm" and is_norm)
  return jax.tree_util.tree_map_with_path(is_frozen, params)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
  stage_sizes: tuple
  block: type
  widths: tuple = (64, 128, 256, 512)
  stem_width: int = 64


RESNETS = {
    "resnet18": ResNetSpec((2, 2, 2, 2), BasicBlock),
    "resnet50": ResNetSpec((3, 4, 6, 3), BottleneckBlock),
    "resnet101": ResNetSpec((3, 4, 23, 3), BottleneckBlock),
    "resnet152": ResNetSpec((3, 8, 36, 3), BottleneckBlock),
    "resnet_tiny": ResNetSpec((1, 1, 1, 1), BasicBlock, widths=(16, 32, 64, 128), stem_width=16),
}


def build_resnet(architecture, dtype=jnp.float32, norm="batch_norm", freeze_at=0, **module_args):
  """The ``RESNETS[architecture]`` network; ``module_args``: further :class:`ResNet` fields
  (``num_classes``) and Flax's ``name``."""
  if architecture not in RESNETS:
    raise ValueError(f"unknown backbone {architecture!r}; choose one of {sorted(RESNETS)}")
  spec = RESNETS[architecture]
  return ResNet(stage_sizes=spec.stage_sizes, block=spec.block, stem_width=spec.stem_width,
                widths=spec.widths, dtype=dtype, norm=norm, freeze_at=freeze_at, **module_args)
