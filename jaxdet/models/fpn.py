"""Feature Pyramid Network (Lin et al., CVPR 2017) in the RetinaNet form (Lin et al. 2017, Sec. 4).

P3-P5 from C3-C5: 1x1 lateral convs, nearest 2x upsampling, element-wise addition, then a 3x3
conv on each merged map (FPN Sec. 3, Fig. 3). P6 is a 3x3 stride-2 conv on C5 and P7 applies a
ReLU then a 3x3 stride-2 conv on P6 (RetinaNet, Sec. 4 "Feature Pyramid Network Backbone").
``p6_input="P5"`` builds P6 from P5 instead, as torchvision's ``retinanet_resnet50_fpn`` does.

The FPN paper's ablations (Sec. 5.1, Table 1 d and e) as options: ``top_down=False`` is the
bottom-up pyramid (each level its own lateral conv, nothing from the coarser levels) and
``lateral=False`` the top-down pyramid without lateral connections (each level the upsampled
coarser one, C3-C4 unused); ``single_level=True`` returns P_min alone, still built top-down
from the top backbone level (Table 1 f: "only finest level", every anchor on it).
"""
import flax.linen as nn
import jax.numpy as jnp

from jaxdet.models import layers

# Detectron's "c2_xavier_fill" for FPN convs: uniform, variance 1 / fan_in.
xavier_fill = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")

# Levels the ResNet backbone provides directly (C2..C5); coarser ones are extra convs.
LAST_BACKBONE_LEVEL = 5


class FPN(nn.Module):
  """Returns the pyramid as a list ``[P_min_level, ..., P_max_level]``."""
  width: int = 256
  min_level: int = 3
  max_level: int = 7
  p6_input: str = "C5"
  top_down: bool = True         # the top-down pathway (FPN Sec. 3)
  lateral: bool = True          # the lateral 1x1 connections below the top level
  single_level: bool = False    # only P_min (FPN Table 1 f)
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  def _conv(self, kernel_size, strides=1, name=None):
    return layers.conv(self.width, kernel_size, strides, use_bias=True, dtype=self.dtype,
                       backend=self.backend,
                       kernel_init=xavier_fill, name=name)

  @nn.compact
  def __call__(self, features):
    if self.p6_input not in ("C5", "P5"):
      raise ValueError(f"p6_input must be 'C5' or 'P5', got {self.p6_input!r}")
    if not (self.top_down or self.lateral):
      raise ValueError("an FPN needs its top-down pathway or its lateral connections")
    top_level = min(self.max_level, LAST_BACKBONE_LEVEL)
    merged = {top_level: self._conv(1, name=f"lateral{top_level}")(features[f"C{top_level}"])}
    for level in range(top_level - 1, self.min_level - 1, -1):
      from_above = layers.upsample_nearest_2x(merged[level + 1]) if self.top_down else 0.0
      lateral = (self._conv(1, name=f"lateral{level}")(features[f"C{level}"]) if self.lateral
                 else 0.0)
      merged[level] = lateral + from_above
    last_output = self.min_level if self.single_level else top_level
    pyramid = [self._conv(3, name=f"output{level}")(merged[level])
               for level in range(self.min_level, last_output + 1)]
    if self.max_level > LAST_BACKBONE_LEVEL and not self.single_level:
      x = features["C5"] if self.p6_input == "C5" else pyramid[-1]
      for level in range(LAST_BACKBONE_LEVEL + 1, self.max_level + 1):
        if level > LAST_BACKBONE_LEVEL + 1:
          x = nn.relu(x)
        x = self._conv(3, 2, name=f"extra{level}")(x)
        pyramid.append(x)
    return pyramid
