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
  activation=leaky`` layer."""
  features: int
  kernel_size: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    x = layers.conv(self.features, self.kernel_size, self.strides, dtype=self.dtype,
                    name="conv")(x)
    x = layers.batch_norm(train, self.dtype, name="bn")(x)
    return nn.leaky_relu(x, LEAKY_SLOPE)


class Darknet19(nn.Module):
  num_classes: int = 0                 # > 0: add the ImageNet-style classifier
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    features = {}
    for stage, convs in enumerate(DARKNET19_STAGES, start=1):
      if stage > 1:
        x = layers.max_pool(x, 2, 2, padding=((0, 0), (0, 0)))
      for index, (channels, kernel) in enumerate(convs, start=1):
        x = ConvBNLeaky(channels, kernel, dtype=self.dtype, name=f"conv{stage}_{index}")(x, train)
      features[f"stage{stage}"] = x
    outputs = {"stride16": features["stage5"], "stride32": features["stage6"]}
    if self.num_classes:
      logits = layers.conv(self.num_classes, 1, use_bias=True, dtype=self.dtype,
                           name="classifier")(x)
      outputs["logits"] = jnp.mean(logits.astype(jnp.float32), axis=(1, 2))
    return outputs
