"""Layers shared by the backbones and heads."""
import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from jaxdet.models import conv as conv_lib

# He et al. 2015 ("Delving deep into rectifiers") fan-out normal init, as torchvision's ResNet.
he_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


CONV_OF_BACKEND = {"xla": lax.conv_general_dilated,
                   "cpu_fast": conv_lib.conv_general_dilated}


def conv(features, kernel_size, strides=1, *, dilation=1, padding=None, use_bias=False,
         dtype=jnp.float32, backend="xla", kernel_init=he_fan_out,
         bias_init=nn.initializers.zeros, name=None):
  """Conv with symmetric padding, ``dilation * (k // 2)`` unless ``padding`` is given (the
  Caffe/PyTorch convention), computed as ``backend`` says (``jaxdet.models.backend``).

  Flax's "SAME" pads asymmetrically for even inputs at stride 2; symmetric padding keeps
  feature maps aligned with the anchor centres and with the reference implementations.
  """
  pad = dilation * (kernel_size // 2) if padding is None else padding
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                 use_bias=use_bias, dtype=dtype, kernel_init=kernel_init, bias_init=bias_init,
                 conv_general_dilated=CONV_OF_BACKEND[backend], name=name)


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
    # In float32 whatever ``dtype`` (as nn.BatchNorm normalises): in bfloat16, ``x * s`` and
    # ``shift`` cancel badly for channels whose mean is large against their deviation.
    return (x.astype(jnp.float32) * multiplier + shift).astype(self.dtype)


def batch_norm(train, dtype=jnp.float32, name=None, scale_init=nn.initializers.ones,
               frozen=False):
  """Batch norm whose statistics are global: under jit with a sharded batch the mean and
  variance reduce over the whole global batch (docs/design.md, "Batch norm statistics are global").
  ``frozen``: a :class:`FrozenBatchNorm` instead, whatever ``train`` says."""
  if frozen:
    return FrozenBatchNorm(epsilon=1e-5, dtype=dtype, scale_init=scale_init, name=name)
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      scale_init=scale_init, name=name)


def max_pool(x, window, stride, padding=None, backend="xla"):
  """Max pooling; ``padding`` is ``((top, bottom), (left, right))``, symmetric ``window // 2``
  by default. "xla": flax's ``nn.max_pool``. "cpu_fast": the same values as the element-wise
  maximum of the ``window^2`` strided shifts of the input, whose gradient goes to the first
  maximum of each window in row-major order, as in Caffe and PyTorch
  (:func:`_max_pool_backward`), not through XLA's select-and-scatter, ~20x slower on CPU."""
  if padding is None:
    padding = ((window // 2,) * 2,) * 2
  padding = tuple(map(tuple, padding))
  if backend == "xla":
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding)
  return _max_pool(x, window, stride, padding, x.shape[1:3])


def _window_shifts(x, window, stride, padding):
  """The ``window^2`` strided shifts of the input padded with -inf: shift ``t = i * window +
  j`` holds the window element at row ``i``, column ``j`` of every output position."""
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
  out_h = (x.shape[1] - window) // stride + 1
  out_w = (x.shape[2] - window) // stride + 1
  return [x[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride]
          for i in range(window) for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool(x, window, stride, padding, input_size):
  del input_size   # for the backward pass
  return functools.reduce(jnp.maximum, _window_shifts(x, window, stride, padding))


def _max_pool_forward(x, window, stride, padding, input_size):
  """The pooled values and, as the residual, which shift holds each window's first maximum.

  The index comes from its own running comparison, never from equality with ``pooled``: XLA
  may recompute either inside other fusions, rounded differently, and an equality test would
  then drop the window's gradient."""
  del input_size
  shifts = _window_shifts(x, window, stride, padding)
  dtype = jnp.int8 if len(shifts) < 128 else jnp.int32
  best, first_max = shifts[0], jnp.zeros(shifts[0].shape, dtype)
  for t, shift in enumerate(shifts[1:], start=1):
    later_is_larger = shift > best
    best = jnp.where(later_is_larger, shift, best)
    first_max = jnp.where(later_is_larger, jnp.asarray(t, dtype), first_max)
  return functools.reduce(jnp.maximum, shifts), first_max


def _max_pool_backward(window, stride, padding, input_size, first_max, grad):
  """Each window's gradient goes to its first maximum: shift ``t``'s share, spread back to
  the input positions it read (stride - 1 zeros between rows and columns), summed over ``t``.
  One pass over the input, where autodiff of the maxima chain splits ties and re-evaluates the
  chain per shift."""
  padded_h = input_size[0] + sum(padding[0])
  padded_w = input_size[1] + sum(padding[1])
  out_h, out_w = grad.shape[1:3]
  zero = jnp.zeros((), grad.dtype)
  total = None
  for t in range(window * window):
    i, j = divmod(t, window)
    share = jnp.where(first_max == t, grad, zero)
    spread = lax.pad(share, zero, ((0, 0, 0),
                                   (i, padded_h - i - (out_h - 1) * stride - 1, stride - 1),
                                   (j, padded_w - j - (out_w - 1) * stride - 1, stride - 1),
                                   (0, 0, 0)))
    total = spread if total is None else total + spread
  (top, _), (left, _) = padding
  return (total[:, top:top + input_size[0], left:left + input_size[1]],)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def max_pool_ceil(x, window=2, stride=2, backend="xla"):
  """Pooling with Caffe's rounding up of the output size ("ceil mode"): the bottom and right
  are padded just enough for a last, partial window (SSD300's pool3: 75 -> 38)."""
  extra = [(-(size - window) % stride) for size in x.shape[1:3]]
  return max_pool(x, window, stride, ((0, extra[0]), (0, extra[1])), backend)


def upsample_nearest_2x(x):
  """Nearest-neighbour 2x upsampling of NHWC features (FPN top-down pathway)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)

