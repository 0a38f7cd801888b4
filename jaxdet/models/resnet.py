"""ResNet backbones (He et al. 2016) returning the C3, C4, C5 feature maps for FPN.

Layouts follow Table 1 of the paper: ResNet-50 = bottleneck blocks [3, 4, 6, 3], ResNet-101 =
[3, 4, 23, 3], widths 64-128-256-512 with expansion 4. The stride of a stage sits on the 3x3
conv of its first block ("ResNet v1.5", torchvision). ``resnet_tiny`` is a 4-stage basic-block
net for CPU tests and the default dataset.
"""
import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.models import layers


class BasicBlock(nn.Module):
  """Two 3x3 convs (He et al. 2016, Fig. 5 left)."""
  width: int
  strides: int = 1
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x):
    residual = x
    y = layers.conv(self.width, 3, self.strides, dtype=self.dtype)(x)
    y = nn.relu(layers.batch_norm(self.train, self.dtype)(y))
    y = layers.conv(self.width, 3, dtype=self.dtype)(y)
    y = layers.batch_norm(self.train, self.dtype)(y)
    return nn.relu(y + self.shortcut(residual))

  def shortcut(self, x):
    out = self.width * self.expansion
    if x.shape[-1] == out and self.strides == 1:
      return x
    x = layers.conv(out, 1, self.strides, dtype=self.dtype, name="proj_conv")(x)
    return layers.batch_norm(self.train, self.dtype, name="proj_bn")(x)


class BottleneckBlock(BasicBlock):
  """1x1 reduce, 3x3, 1x1 expand x4 (He et al. 2016, Fig. 5 right)."""
  expansion = 4

  @nn.compact
  def __call__(self, x):
    residual = x
    y = layers.conv(self.width, 1, dtype=self.dtype)(x)
    y = nn.relu(layers.batch_norm(self.train, self.dtype)(y))
    y = layers.conv(self.width, 3, self.strides, dtype=self.dtype)(y)
    y = nn.relu(layers.batch_norm(self.train, self.dtype)(y))
    y = layers.conv(self.width * 4, 1, dtype=self.dtype)(y)
    y = layers.batch_norm(self.train, self.dtype)(y)
    return nn.relu(y + self.shortcut(residual))


class ResNet(nn.Module):
  """Returns ``{"C2": ..., "C5": ...}``: C_l has stride 2^l."""
  stage_sizes: Sequence[int]
  block: type = BottleneckBlock
  stem_width: int = 64
  widths: Sequence[int] = (64, 128, 256, 512)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    x = layers.conv(self.stem_width, 7, 2, dtype=self.dtype, name="stem_conv")(images)
    x = nn.relu(layers.batch_norm(train, self.dtype, name="stem_bn")(x))
    x = layers.max_pool(x, 3, 2)
    features = {}
    for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for i in range(num_blocks):
        strides = 2 if (i == 0 and stage > 0) else 1
        x = self.block(width, strides, train, self.dtype, name=f"stage{stage + 2}_block{i}")(x)
      features[f"C{stage + 2}"] = x
    return features


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


def build_resnet(name, dtype=jnp.float32):
  if name not in RESNETS:
    raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(RESNETS)}")
  spec = RESNETS[name]
  return ResNet(stage_sizes=spec.stage_sizes, block=spec.block, stem_width=spec.stem_width,
                widths=spec.widths, dtype=dtype)
