"""2-D convolutions shaped for XLA:CPU's fast paths (GPU/TPU keep ``lax.conv_general_dilated``).

XLA:CPU runs a forward convolution near the machine's matmul speed, but lowers the *kernel*
gradient (batch and feature dimensions swapped) to a path 2-8x slower, and 1x1 convolutions and
their input gradients to paths slower than the matrix product they are. Together they made the
R50-FPN RetinaNet train step on CPU twice as slow as its FLOPs (BENCHMARKS.md). So on CPU:

* a 1x1 convolution is the 2-D matrix product ``X[:, ::s, ::s] W`` over N H W rows (its
  gradients are 2-D products too);
* a k x k convolution with C_in * C_out >= 128 * 128, or whose kernel gradient is big work
  (N H_out W_out C_in C_out >= 2^25), keeps XLA's forward pass and input gradient, and computes
  the kernel gradient per tap (i, j) as one [C_in, N H W] x [N H W, C_out] product, the
  forward's FLOPs:

  dW[i, j] = sum over (n, y, x) of  X_pad[n, y s_h + i d_h, x s_w + j d_w, :]^T  dY[n, y, x, :].

  Measured on the 2-core CPU (kernel gradient, fwd included): 2.4x faster for 256->256 at
  64x64, 1.5x for 128->128 stride 2, and 1.4-2.0x for VGG's wide early layers (3->64 and
  64->64 at 4 x 300x300, 64->128 at 4 x 150x150); but 0.4-0.7x for thin convolutions on small
  batches (3->16, 16->16 at 16 x 64x64, 64->64 at 16 x 16x16), whose nine skinny products cost
  more than XLA's kernel, hence the two thresholds.
"""
import functools
import math

import jax
from jax import lax
import jax.numpy as jnp

NHWC = ("NHWC", "HWIO", "NHWC")

# scripts/benchmark.py --compare_xla_conv turns this off to time XLA's own convolutions.
USE_CPU_FORMS = True
# Below both thresholds the per-tap products lose to XLA's kernel gradient (module docstring).
MIN_CHANNELS_PRODUCT = 128 * 128
MIN_KERNEL_GRADIENT_WORK = 2 ** 25       # output positions x C_in x C_out
# Bytes of input plus output gradient per block of the kernel gradient (~L2 cache).
BLOCK_BYTES = 2 ** 20


def _conv(x, w, strides, padding, dilation):
  return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=NHWC)


def _tap_products(x, dy, kernel_shape, strides, dilation, out_rows, accumulate):
  """``[kh * kw, C_in, C_out]``: for each tap, ``X_pad`` rows feeding ``out_rows`` output rows
  (strided like the convolution) times those rows of ``dy``."""
  kh, kw, cin, cout = kernel_shape
  (sh, sw), (dh, dw) = strides, dilation
  n, _, out_w, _ = dy.shape
  dy = dy.reshape(-1, cout)
  taps = []
  for i in range(kh):
    for j in range(kw):
      start = (0, i * dh, j * dw, 0)
      limit = (n, i * dh + (out_rows - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, cin)
      patch = lax.slice(x, start, limit, (1, sh, sw, 1))
      # A 2-D [C_in, NHW] x [NHW, C_out] product: ~1.5x faster on XLA:CPU than the einsum
      # contracting (n, h, w) directly.
      taps.append(jnp.matmul(patch.reshape(-1, cin).T, dy, preferred_element_type=accumulate))
  return jnp.stack(taps)


def kernel_gradient(x, dy, kernel_shape, strides, padding, dilation):
  """dL/dW of ``_conv`` from its input ``x`` and output gradient ``dy`` (module docstring).

  The output rows go in blocks of ~``BLOCK_BYTES`` of input and output gradient, all taps of a
  block before the next (a ``lax.scan``): the nine products then re-read a block from cache
  instead of the whole input from memory; 1.1-1.9x faster than one product per tap over the
  whole batch (1.9x for VGG's 64->64 at 4 x 300x300).
  """
  kh, kw, cin, cout = kernel_shape
  (sh, _), (dh, _) = strides, dilation
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  n, out_h, _, _ = dy.shape
  accumulate = jnp.promote_types(x.dtype, jnp.float32)   # bf16 inputs sum in float32
  row_bytes = n * (x.shape[2] * cin * sh + dy.shape[2] * cout) * x.dtype.itemsize  # x and dy
  rows = int(min(out_h, max(1, round(BLOCK_BYTES / row_bytes))))
  blocks = -(-out_h // rows)
  in_rows = (rows - 1) * sh + (kh - 1) * dh + 1            # input rows one block reads
  dy = jnp.pad(dy, ((0, 0), (0, blocks * rows - out_h), (0, 0), (0, 0)))   # zero rows add 0
  x = jnp.pad(x, ((0, 0), (0, max(0, (blocks - 1) * rows * sh + in_rows - x.shape[1])),
                  (0, 0), (0, 0)))

  def add_block(total, block):
    x_block = lax.dynamic_slice_in_dim(x, block * rows * sh, in_rows, axis=1)
    dy_block = lax.dynamic_slice_in_dim(dy, block * rows, rows, axis=1)
    return total + _tap_products(x_block, dy_block, kernel_shape, strides, dilation, rows,
                                 accumulate), None

  total, _ = lax.scan(add_block, jnp.zeros((kh * kw, cin, cout), accumulate), jnp.arange(blocks))
  return total.reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_fast_kernel_grad(x, w, strides, padding, dilation):
  return _conv(x, w, strides, padding, dilation)


def _forward(x, w, strides, padding, dilation):
  return _conv(x, w, strides, padding, dilation), (x, w)


def _backward(strides, padding, dilation, residuals, dy):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x_: _conv(x_, w, strides, padding, dilation), x)
  (dx,) = input_vjp(dy)
  dw = kernel_gradient(x, dy, w.shape, strides, padding, dilation).astype(w.dtype)
  return dx, dw


conv_fast_kernel_grad.defvjp(_forward, _backward)


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
  on CPU, plain NHWC convolutions with explicit padding take the fast forms of the module
  docstring; anything else is XLA's convolution."""
  rhs_dilation = tuple(rhs_dilation or (1,) * (lhs.ndim - 2))
  plain = (USE_CPU_FORMS and jax.default_backend() == "cpu" and lhs.ndim == 4
           and feature_group_count == 1 and precision is None and not kwargs
           and not isinstance(padding, str) and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
  if plain and rhs.shape[:2] == (1, 1) and all(tuple(p) == (0, 0) for p in padding):
    return pointwise_conv(lhs, rhs, tuple(window_strides))
  channels = rhs.shape[2] * rhs.shape[3]
  output_positions = math.prod(lhs.shape[:3]) // math.prod(window_strides)
  if plain and (channels >= MIN_CHANNELS_PRODUCT
                or output_positions * channels >= MIN_KERNEL_GRADIENT_WORK):
    return conv_fast_kernel_grad(lhs, rhs, tuple(window_strides),
                                 tuple(tuple(p) for p in padding), rhs_dilation)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision,
                                  **kwargs)
