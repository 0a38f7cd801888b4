"""2-D convolutions shaped for XLA:CPU's fast paths: the "cpu_fast" backend's
(``jaxdet.models.backend``; the "xla" backend keeps ``lax.conv_general_dilated``).

By default XLA:CPU hands convolutions to YNNPACK, whose kernel gradient (batch and feature
dimensions swapped) is 2-8x slower than the forward pass, and runs 1x1 convolutions and their
input gradients slower than the matrix products they are (docs/benchmark_history.md). So here:

* a 1x1 convolution is the 2-D matrix product ``X[:, ::s, ::s] W`` over N H W rows (its
  gradients are 2-D products too);
* a 3x3 stride-1 convolution with one pixel of padding, in float32, on at least
  ``WINOGRAD_MIN_TILES`` output tiles and ``WINOGRAD_MIN_CHANNELS`` channels either side, is
  Winograd's minimal filtering F(2x2, 3x3) (:func:`winograd_conv`): 16 multiplications per 2x2
  output tile where direct convolution needs 36;
* other k x k convolutions stay XLA's, compiled with ``backend.compiler_options``.
"""
from jax import lax
import jax.numpy as jnp
import numpy as np

NHWC = ("NHWC", "HWIO", "NHWC")


def pointwise_conv(x, w, strides):
  """A 1x1 convolution without padding: a matrix product over the channels."""
  if any(s > 1 for s in strides):
    x = lax.slice(x, (0, 0, 0, 0), x.shape, (1, *strides, 1))
  # As a 2-D [N H W, C_in] x [C_in, C_out] product, so that its kernel gradient is a 2-D
  # product too, which XLA:CPU runs faster than a 4-D matmul's (docs/benchmark_history.md).
  n, height, width, cin = x.shape
  y = jnp.matmul(x.reshape(-1, cin), w.reshape(w.shape[2:]))
  return y.reshape(n, height, width, w.shape[3])


# Lavin & Gray 2016 ("Fast Algorithms for Convolutional Neural Networks", Sec. 4.1), F(2x2, 3x3):
# a 4x4 input tile d and a 3x3 kernel g give the 2x2 output tile A^T [(G g G^T) * (B^T d B)] A.
WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
WINOGRAD_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
# Below these the 16 products are too thin to repay the transforms (small maps and 64-channel
# layers ran slower in Winograd form: docs/benchmark_history.md).
WINOGRAD_MIN_TILES = 256
WINOGRAD_MIN_CHANNELS = 128


def _linear_combination(coefficients, terms):
  """``sum_i coefficients[i] * terms[i]``, skipping zeros and multiplying by +-1 as sign flips."""
  total = None
  for c, term in zip(coefficients, terms):
    if c == 0:
      continue
    term = term if c == 1 else -term if c == -1 else c * term
    total = term if total is None else total + term
  return total


def winograd_conv(x, w):
  """3x3 convolution, stride 1, one pixel of zero padding (NHWC, HWIO), as Winograd's F(2x2, 3x3).

  The output is cut into 2x2 tiles, each read from a 4x4 input tile ``d``. The transformed
  tiles ``V = B^T d B`` (16 values per channel) and kernels ``U = G g G^T`` turn the
  convolution into 16 matrix products ``M_k = V_k U_k`` (``[tiles, C_in] x [C_in, C_out]``),
  2.25x fewer multiplications than direct convolution; ``A^T M A`` gives the 2x2 outputs. The
  gradients are autodiff's of this composition, so they too are 16 products per tile
  (``dV_k = dM_k U_k^T``, ``dU_k = V_k^T dM_k``). The transforms hold only 0, +-1 and +-1/2:
  relative error ~1e-6 in float32 (tests/models/test_layers.py).
  """
  n, height, width, c = x.shape
  tiles_h, tiles_w = -(-height // 2), -(-width // 2)
  x = jnp.pad(x, ((0, 0), (1, 2 * tiles_h + 1 - height), (1, 2 * tiles_w + 1 - width), (0, 0)))
  # B^T d B, rows then columns: tile (i, j) starts at input row 2 i, column 2 j.
  rows = [x[:, r:r + 2 * tiles_h:2] for r in range(4)]
  row_transformed = [_linear_combination(b, rows) for b in WINOGRAD_BT]
  transformed = [_linear_combination(b, [t[:, :, q:q + 2 * tiles_w:2] for q in range(4)])
                 .reshape(-1, c)
                 for t in row_transformed for b in WINOGRAD_BT]
  kernels = jnp.einsum("ai,bj,ijco->abco", WINOGRAD_G, WINOGRAD_G, w).reshape(16, c, -1)
  products = [jnp.matmul(v, u).reshape(n, tiles_h, tiles_w, -1)
              for v, u in zip(transformed, kernels)]
  # A^T M A: output row r of a tile from the 4x4 products, then column s.
  out_rows = [[_linear_combination(a, products[q::4]) for q in range(4)] for a in WINOGRAD_AT]
  y = jnp.stack([jnp.stack([_linear_combination(a, row) for a in WINOGRAD_AT], axis=3)
                 for row in out_rows], axis=2)          # [N, tiles_h, 2, tiles_w, 2, C_out]
  return y.reshape(n, 2 * tiles_h, 2 * tiles_w, -1)[:, :height, :width]


def winograd_pays(x_shape, w_shape, dtype):
  """Whether :func:`winograd_conv` beats XLA's convolution for these shapes on CPU."""
  n, height, width, _ = x_shape
  return (dtype == jnp.float32 and n * -(-height // 2) * -(-width // 2) >= WINOGRAD_MIN_TILES
          and min(w_shape[2:]) >= WINOGRAD_MIN_CHANNELS)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """Drop-in for ``lax.conv_general_dilated`` (``flax.linen.Conv(conv_general_dilated=...)``):
  an unpadded NHWC 1x1 convolution is a matrix product and a padded 3x3 one at stride 1
  Winograd's F(2x2, 3x3) where that pays; anything else is XLA's convolution."""
  cpu_nhwc = (lhs.ndim == 4
              and feature_group_count == 1 and precision is None and not kwargs
              and not isinstance(padding, str)
              and all(d == 1 for d in (lhs_dilation or (1, 1)))
              and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
              == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
  if cpu_nhwc and rhs.shape[:2] == (1, 1) and all(tuple(p) == (0, 0) for p in padding):
    return pointwise_conv(lhs, rhs, tuple(window_strides))
  if (cpu_nhwc and rhs.shape[:2] == (3, 3) and tuple(window_strides) == (1, 1)
      and all(tuple(p) == (1, 1) for p in padding)
      and all(d == 1 for d in (rhs_dilation or (1, 1)))
      and lhs.dtype == rhs.dtype and winograd_pays(lhs.shape, rhs.shape, lhs.dtype)):
    return winograd_conv(lhs, rhs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision,
                                  **kwargs)
