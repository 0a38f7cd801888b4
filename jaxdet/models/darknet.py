"""Darknet-19, YOLOv2's backbone (Redmon & Farhadi 2017, "YOLO9000", Sec. 3 "Faster", Table 6).

19 convolutions and 5 max-pools: mostly 3x3 filters, doubling the channels after every pooling
step, with 1x1 filters between the 3x3 ones to compress the features (as in Network in
Network); batch normalization and leaky ReLU (slope 0.1) after every convolution but the
classifier. The classifier is a 1x1 convolution to the classes followed by global average
pooling. At 224x224 the network costs 5.58 billion operations (the paper; tested).

``Darknet19`` returns the stride-16 map of the fifth stage (512 channels, 26x26 at 416: the
source of YOLOv2's passthrough layer) and the stride-32 map of the last one (1024 channels,
13x13 at 416), plus the classifier's logits when ``num_classes`` is set.
"""
import flax.linen as nn
import jax.numpy as jnp

from jaxdet.models import layers

# (output channels, kernel size) of each convolution, stage by stage (darknet's
# cfg/darknet19.cfg); a 2x2 stride-2 max-pool precedes every stage but the first.
DARKNET19_STAGES = (
    ((32, 3),),
    ((64, 3),),
    ((128, 3), (64, 1), (128, 3)),
    ((256, 3), (128, 1), (256, 3)),
    ((512, 3), (256, 1), (512, 3), (256, 1), (512, 3)),
    ((1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)),
)
LEAKY_SLOPE = 0.1  # darknet's "leaky" activation


class ConvBNLeaky(nn.Module):
  """Convolution without bias, batch norm, leaky ReLU: darknet's ``batch_normalize=1,
  activation=leaky`` layer; with ``batch_norm=False`` its ``batch_normalize=0`` layer, a
  convolution with bias then leaky ReLU (YOLOv1's, which predates batch norm)."""
  features: int
  kernel_size: int
  strides: int = 1
  batch_norm: bool = True
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  @nn.compact
  def __call__(self, x, train):
    x = layers.conv(self.features, self.kernel_size, self.strides, use_bias=not self.batch_norm,
                    dtype=self.dtype, backend=self.backend, name="conv")(x)
    if self.batch_norm:
      x = layers.batch_norm(train, self.dtype, name="bn")(x)
    return nn.leaky_relu(x, LEAKY_SLOPE)


class Darknet19(nn.Module):
  num_classes: int = 0                 # > 0: add the ImageNet-style classifier
  stages: tuple = DARKNET19_STAGES     # narrower or shallower for CPU variants
  batch_norm: bool = True              # False: YOLOv2 Table 2's first column (biases instead)
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  @nn.compact
  def __call__(self, x, train=False):
    features = {}
    for stage, convs in enumerate(self.stages, start=1):
      if stage > 1:
        x = layers.max_pool(x, 2, 2, padding=((0, 0), (0, 0)), backend=self.backend)
      for index, (channels, kernel) in enumerate(convs, start=1):
        x = ConvBNLeaky(channels, kernel, batch_norm=self.batch_norm, dtype=self.dtype,
                        backend=self.backend, name=f"conv{stage}_{index}")(x, train)
      features[f"stage{stage}"] = x
    outputs = {"stride16": features["stage5"], "stride32": features["stage6"]}
    if self.num_classes:
      logits = layers.conv(self.num_classes, 1, use_bias=True, dtype=self.dtype,
                           backend=self.backend,
                           name="classifier")(x)
      outputs["logits"] = jnp.mean(logits.astype(jnp.float32), axis=(1, 2))
    return outputs


# Darknet-53 (Redmon & Farhadi 2018, "YOLOv3", Sec. 2.4, Table 1; darknet's cfg/darknet53.cfg):
# a 3x3/32 convolution, then five stages of a 3x3 stride-2 convolution and residual blocks.
DARKNET53_STEM = 32
DARKNET53_WIDTHS = (64, 128, 256, 512, 1024)
DARKNET53_BLOCKS = (1, 2, 8, 8, 4)


class ResidualBlock(nn.Module):
  """Table 1's residual unit: 1x1 conv to half the channels, 3x3 conv back, added to the input
  (darknet's ``[shortcut] from=-3 activation=linear``)."""
  features: int
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  @nn.compact
  def __call__(self, x, train):
    y = ConvBNLeaky(self.features // 2, 1, dtype=self.dtype,
                    backend=self.backend, name="conv1")(x, train)
    y = ConvBNLeaky(self.features, 3, dtype=self.dtype,
                    backend=self.backend, name="conv2")(y, train)
    return x + y


class Darknet53(nn.Module):
  """Darknet-53 (YOLOv3 Sec. 2.4, Table 1): 52 convolutions with batch norm and leaky ReLU, plus
  the classifier (global average pooling, then a 1x1 convolution to the classes, as
  cfg/darknet53.cfg) when ``num_classes`` is set.

  Returns the last maps of the stride-8, 16 and 32 stages (256, 512 and 1024 channels: the
  sources of YOLOv3's three scales, Sec. 2.3) as ``stride8``, ``stride16``, ``stride32``.
  Stride-2 convolutions pad 1 on every side, as darknet's ``pad=1``.
  """
  num_classes: int = 0                      # > 0: add the ImageNet classifier
  stem_width: int = DARKNET53_STEM
  stage_widths: tuple = DARKNET53_WIDTHS    # narrower or shallower for CPU variants
  blocks: tuple = DARKNET53_BLOCKS
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  @nn.compact
  def __call__(self, x, train=False):
    if len(self.stage_widths) != 5 or len(self.blocks) != 5:
      raise ValueError(f"Darknet-53 has 5 stages; got widths {self.stage_widths} and blocks "
                       f"{self.blocks}")
    x = ConvBNLeaky(self.stem_width, 3, dtype=self.dtype,
                    backend=self.backend, name="stem")(x, train)
    maps = []
    for stage, (width, depth) in enumerate(zip(self.stage_widths, self.blocks), start=1):
      x = ConvBNLeaky(width, 3, strides=2, dtype=self.dtype,
                      backend=self.backend, name=f"down{stage}")(x, train)
      for block in range(1, depth + 1):
        x = ResidualBlock(width, dtype=self.dtype,
                          backend=self.backend, name=f"stage{stage}_block{block}")(x, train)
      maps.append(x)
    outputs = {"stride8": maps[2], "stride16": maps[3], "stride32": maps[4]}
    if self.num_classes:
      pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
      logits = layers.conv(self.num_classes, 1, use_bias=True, dtype=self.dtype,
                           backend=self.backend,
                           name="classifier")(pooled)
      outputs["logits"] = logits[:, 0, 0].astype(jnp.float32)
    return outputs
