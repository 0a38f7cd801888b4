"""Layers shared by the backbones and heads."""
import functools

import flax.linen as nn
from jax import lax
import jax.numpy as jnp

from jaxdet.models import conv as conv_lib

# He et al. 2015 ("Delving deep into rectifiers") fan-out normal init, as torchvision's ResNet.
he_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(features, kernel_size, strides=1, *, dilation=1, padding=None, use_bias=False,
         dtype=jnp.float32, kernel_init=he_fan_out, bias_init=nn.initializers.zeros, name=None):
  """Conv with symmetric padding, ``dilation * (k // 2)`` unless ``padding`` is given (the
  Caffe/PyTorch convention).

  Flax's "SAME" pads asymmetrically for even inputs at stride 2; symmetric padding keeps
  feature maps aligned with the anchor centres and with the reference implementations.
  """
  pad = dilation * (kernel_size // 2) if padding is None else padding
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                 use_bias=use_bias, dtype=dtype, kernel_init=kernel_init, bias_init=bias_init,
                 conv_general_dilated=conv_lib.conv_general_dilated, name=name)


class FrozenBatchNorm(nn.Module):
  """Batch norm as a fixed per-channel affine map, ``x * s + (beta - mean * s)`` with
  ``s = gamma / sqrt(var + eps)``: the statistics are never updated and no gradient reaches
  ``gamma``, ``beta`` (Detectron's "AffineChannel", Detectron2's ``FrozenBatchNorm2d``; the
  detectors fine-tune an ImageNet backbone with it because 2 images per device estimate batch
  statistics badly). Its variables are named and shaped as ``nn.BatchNorm``'s, so weights move
  between the two (``train.init_from``)."""
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  scale_init: nn.initializers.Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x):
    channels = (x.shape[-1],)
    scale = self.param("scale", self.scale_init, channels)
    bias = self.param("bias", nn.initializers.zeros, channels)
    mean = self.variable("batch_stats", "mean", jnp.zeros, channels).value
    var = self.variable("batch_stats", "var", jnp.ones, channels).value
    multiplier = lax.stop_gradient(scale * lax.rsqrt(var + self.epsilon))
    shift = lax.stop_gradient(bias - mean * multiplier)
    return (x * multiplier.astype(self.dtype) + shift.astype(self.dtype)).astype(self.dtype)


def batch_norm(train, dtype=jnp.float32, name=None, scale_init=nn.initializers.ones,
               frozen=False):
  """Batch norm whose statistics are global: under jit with a sharded batch the mean and
  variance reduce over the whole global batch (DESIGN.md, "Batch norm statistics are global").
  ``frozen``: a :class:`FrozenBatchNorm` instead, whatever ``train`` says."""
  if frozen:
    return FrozenBatchNorm(epsilon=1e-5, dtype=dtype, scale_init=scale_init, name=name)
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      scale_init=scale_init, name=name)


def max_pool(x, window, stride, padding=None):
  """Max pooling, as the element-wise maximum of the ``window^2`` strided shifts of the input.

  ``padding`` is ``((top, bottom), (left, right))``, symmetric ``window // 2`` by default. Same
  values as ``nn.max_pool``; its gradient is a chain of selects instead of XLA's
  select-and-scatter, which is ~20x slower on CPU."""
  if padding is None:
    padding = ((window // 2,) * 2,) * 2
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
  out_h = (x.shape[1] - window) // stride + 1
  out_w = (x.shape[2] - window) // stride + 1
  shifts = [x[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride]
            for i in range(window) for j in range(window)]
  return functools.reduce(jnp.maximum, shifts)


def max_pool_ceil(x, window=2, stride=2):
  """Pooling with Caffe's rounding up of the output size ("ceil mode"): the bottom and right
  are padded just enough for a last, partial window (SSD300's pool3: 75 -> 38)."""
  extra = [(-(size - window) % stride) for size in x.shape[1:3]]
  return max_pool(x, window, stride, ((0, extra[0]), (0, extra[1])))


def upsample_nearest_2x(x):
  """Nearest-neighbour 2x upsampling of NHWC features (FPN top-down pathway)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)

