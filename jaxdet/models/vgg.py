"""SSD's feature extractor: VGG-16 (Simonyan & Zisserman 2015, configuration D) reshaped as in
Liu et al. 2016 (SSD), Sec. 3 "Base network", plus the extra feature layers of Fig. 2.

* conv1_1 .. conv5_3 of VGG-16 (3x3 convs, ReLU), 2x2 max pooling after stages 1-4 rounding
  the size up as Caffe's pooling does (it matters for SSD300's pool3: 75 -> 38);
* pool5 becomes 3x3 stride 1, fc6 a 3x3 atrous conv (dilation 6) with 1024 channels and fc7 a
  1x1 conv with 1024 channels (the subsampled fully connected layers); ``atrous=False`` is the
  full VGG-16 of Table 2's last column (Sec. 3.2, "Atrous is faster"): pool5 2x2 stride 2, fc6
  a 7x7 conv, fc7 1x1 (``fc_width`` 4096 in VGG-16), and conv5_3 also predicts; fc7 is then at
  half the resolution, so one extra layer fewer gives the same maps;
* conv4_3 is L2-normalised with a learned per-channel scale initialised to 20 (Sec. 3.1,
  after ParseNet), since its feature scale differs from the deeper layers';
* extra layers ``conv{8+i}_1`` (1x1) and ``conv{8+i}_2`` (3x3 stride 2, or valid / 4x4 at the
  end) shrink the map down to 1x1.

The feature maps the heads read are conv4_3 (normalised), fc7 and every ``conv{8+i}_2``.
``batch_norm`` (not in the paper, whose base is ImageNet-pretrained) lets the small CPU variants
train from scratch. ``freeze_at = k`` keeps conv1 .. conv{k} fixed ("no backward"): the
authors' ssd_pascal.py froze conv1_x and conv2_x in its revisions before 2016-07-02; the final
script trains every layer.
With ``num_classes`` the network ends after fc7 with global average pooling and a classifier:
"VGG-16 reduced" for ImageNet pretraining, named as in the detector.
"""
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.models import layers

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
# (1x1 channels, output channels, kernel, stride, padding) of each extra layer pair.
SSD300_EXTRAS = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0),
                 (128, 256, 3, 1, 0))                       # 19 -> 10, 5, 3, 1
SSD512_EXTRAS = ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1),
                 (128, 256, 3, 2, 1), (128, 256, 4, 1, 1))  # 32 -> 16, 8, 4, 2, 1


class L2Norm(nn.Module):
  """``x / ||x||_2`` over channels times a learned per-channel scale (ParseNet, Liu et al. 2015)."""
  scale_init: float = 20.0
  eps: float = 1e-10

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.constant(self.scale_init), (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 / norm * scale).astype(x.dtype)


class SSDFeatures(nn.Module):
  """The VGG-16 base and extra layers; returns the feature maps the SSD heads read."""
  stage_widths: Sequence[int] = VGG16_WIDTHS
  stage_depths: Sequence[int] = VGG16_DEPTHS
  fc_width: int = 1024
  fc6_dilation: int = 6
  atrous: bool = True         # False: full VGG-16 pool5 / fc6 / fc7 (the module doc)
  extras: Sequence[Sequence[int]] = SSD300_EXTRAS
  l2norm_scale: float = 20.0
  batch_norm: bool = False
  freeze_at: int = 0          # conv1 .. conv{freeze_at} frozen (the module doc)
  num_classes: int = 0        # > 0: the ImageNet classifier after fc7 (the module doc)
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  def __post_init__(self):
    check_freeze_at(self.freeze_at, len(self.stage_widths))
    super().__post_init__()

  def _conv(self, x, features, kernel, name, train, strides=1, dilation=1, padding=None,
            frozen=False):
    x = layers.conv(features, kernel, strides, dilation=dilation, padding=padding,
                    use_bias=not self.batch_norm, dtype=self.dtype,
                    backend=self.backend, name=name)(x)
    if self.batch_norm:
      x = layers.batch_norm(train, self.dtype, name=f"{name}_bn", frozen=frozen)(x)
    return nn.relu(x)

  @nn.compact
  def __call__(self, images, train=False):
    x = images.astype(self.dtype)
    maps = []
    for stage, (width, depth) in enumerate(zip(self.stage_widths, self.stage_depths), start=1):
      if stage > 1:
        x = layers.max_pool_ceil(x, backend=self.backend)  # pool1..pool4 (2x2, stride 2, ceil)
      frozen = stage <= self.freeze_at
      for i in range(1, depth + 1):
        x = self._conv(x, width, 3, f"conv{stage}_{i}", train, frozen=frozen)
      if frozen:
        x = jax.lax.stop_gradient(x)
      if stage == 4 and not self.num_classes:
        maps.append(L2Norm(self.l2norm_scale, name="conv4_3_norm")(x))
    if self.atrous:
      x = layers.max_pool(x, 3, 1, backend=self.backend)  # pool5: 3x3, stride 1
      x = self._conv(x, self.fc_width, 3, "fc6", train, dilation=self.fc6_dilation)
    else:
      if not self.num_classes:
        maps.append(x)                                   # conv5_3 predicts (Sec. 3.2)
      x = layers.max_pool_ceil(x, backend=self.backend)  # pool5: 2x2, stride 2
      x = self._conv(x, self.fc_width, 7, "fc6", train)
    x = self._conv(x, self.fc_width, 1, "fc7", train)
    if self.num_classes:
      logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(
          jnp.mean(x, axis=(1, 2)))
      return {"logits": logits.astype(jnp.float32)}
    maps.append(x)
    for i, (mid, out, kernel, stride, pad) in enumerate(self.extras):
      x = self._conv(x, mid, 1, f"conv{8 + i}_1", train)
      x = self._conv(x, out, kernel, f"conv{8 + i}_2", train, strides=stride, padding=pad)
      maps.append(x)
    return maps


def check_freeze_at(freeze_at, num_stages):
  if not 0 <= freeze_at <= num_stages:
    raise ValueError(f"base.freeze_at={freeze_at} outside 0..{num_stages} (0: train everything, "
                     f"k: freeze conv1 .. conv<k>)")


def frozen_parameters(params, freeze_at):
  """A tree of bools over :class:`SSDFeatures` ``params``: True for the layers of conv1 ..
  conv{freeze_at} (kernels, biases, batch norm), not for ``conv4_3_norm``, which reads the
  frozen conv4_3 but is trained."""
  def is_frozen(path, _):
    layer = re.fullmatch(r"conv(\d+)_\d+(_bn)?", str(path[0].key))
    return bool(layer) and int(layer.group(1)) <= freeze_at
  return jax.tree_util.tree_map_with_path(is_frozen, params)
