"""2-D convolutions shaped for XLA:CPU's fast paths (GPU/TPU keep ``lax.conv_general_dilated``).

By default XLA:CPU hands convolutions to YNNPACK, whose kernel gradient (batch and feature
dimensions swapped) is 2-8x slower than the forward pass, and runs 1x1 convolutions and their
input gradients slower than the matrix products they are. Together they made the R50-FPN
RetinaNet train step on CPU twice as slow as its FLOPs (BENCHMARKS.md). So on CPU:

* a 1x1 convolution is the 2-D matrix product ``X[:, ::s, ::s] W`` over N H W rows (its
  gradients are 2-D products too), which YNNPACK runs near the machine's peak;
* the train and predict steps are compiled with :func:`cpu_compiler_options`, which leave the
  k x k convolutions (forward, input and kernel gradients) to XLA's built-in Eigen convolution.
"""
import jax
from jax import lax
import jax.numpy as jnp

NHWC = ("NHWC", "HWIO", "NHWC")

# scripts/benchmark.py --compare_xla_conv turns this off to time XLA's default convolutions.
USE_CPU_FORMS = True
# XLA:CPU's default YNNPACK fusions less its convolutions (``cpu_compiler_options``).
CPU_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def cpu_compiler_options():
  """``jax.jit(..., compiler_options=...)`` for the train and predict steps: on CPU, XLA's
  Eigen convolution instead of YNNPACK's; YNNPACK keeps the matrix products (the 1x1
  convolutions) and the reductions. ``None`` elsewhere, and with ``USE_CPU_FORMS`` off.

  Measured on the 2-core CPU against YNNPACK's convolutions, each invocation right after the
  other (BENCHMARKS.md): the kernel gradient of a 256->256 3x3 convolution at 2 x 64x64 in
  51 ms against 240 ms, and of VGG's 64->64 at 4 x 300x300 in 254 ms against 1,172 ms; against
  YNNPACK's convolutions with the hand-written per-tap kernel gradients this replaced, the train
  steps of RetinaNet R50-FPN 512 1.12x faster, SSD300 1.21x, YOLOv3-416 1.10x, and their
  inference 1.20x, 1.15x and 1.3x.
  """
  if not (USE_CPU_FORMS and jax.default_backend() == "cpu"):
    return None
  return {"xla_cpu_experimental_ynn_fusion_type": CPU_YNN_FUSIONS}


def pointwise_conv(x, w, strides):
  """A 1x1 convolution without padding: a matrix product over the channels."""
  if any(s > 1 for s in strides):
    x = lax.slice(x, (0, 0, 0, 0), x.shape, (1, *strides, 1))
  # As a 2-D [N H W, C_in] x [C_in, C_out] product: its kernel gradient is then a 2-D product
  # too, 1.3-2.2x faster on XLA:CPU than the one contracting (n, h, w) that a 4-D matmul's
  # gradient gives (bottleneck 1x1 convolutions with batch norm around them, forward + backward).
  n, height, width, cin = x.shape
  y = jnp.matmul(x.reshape(-1, cin), w.reshape(w.shape[2:]))
  return y.reshape(n, height, width, w.shape[3])


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """Drop-in for ``lax.conv_general_dilated`` (``flax.linen.Conv(conv_general_dilated=...)``):
  on CPU, an unpadded NHWC 1x1 convolution is a matrix product; anything else is
  XLA's convolution."""
  pointwise = (USE_CPU_FORMS and jax.default_backend() == "cpu" and lhs.ndim == 4
               and rhs.shape[:2] == (1, 1) and feature_group_count == 1 and precision is None
               and not kwargs and not isinstance(padding, str)
               and all(tuple(p) == (0, 0) for p in padding)
               and all(d == 1 for d in (lhs_dilation or (1, 1)))
               and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
  if pointwise:
    return pointwise_conv(lhs, rhs, tuple(window_strides))
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision,
                                  **kwargs)
