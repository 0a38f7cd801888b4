"""The "cpu_fast" backend's convolution and max pooling equal XLA's own, values and gradients;
the Winograd form equals brute force; the backend is chosen by platform only when asked."""
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models import backend
from jaxdet.models import conv
from jaxdet.models import layers

# (input size, C_in, C_out, kernel, stride, dilation)
SHAPES = [(9, 3, 5, 3, 1, 1), (10, 4, 6, 3, 2, 1), (11, 2, 3, 7, 2, 1), (12, 4, 4, 3, 1, 6),
          (8, 5, 7, 1, 1, 1), (9, 6, 4, 1, 2, 1)]


def reference(x, w, stride, dilation):
  """XLA's convolution and autodiff, in float64."""
  pad = dilation * (w.shape[0] // 2)
  return lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad)] * 2,
                                  rhs_dilation=(dilation, dilation), dimension_numbers=conv.NHWC)


def ours(x, w, stride, dilation):
  pad = dilation * (w.shape[0] // 2)
  return conv.conv_general_dilated(
      x, w, (stride, stride), ((pad, pad), (pad, pad)), rhs_dilation=(dilation, dilation),
      dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape, conv.NHWC))


def inputs_and_reference(size, cin, cout, k, stride, dilation):
  """Random ``(x, w, dy)`` and XLA's convolution with its input and kernel gradients, in
  float64."""
  rng = np.random.default_rng(size)
  x = rng.normal(size=(2, size, size, cin))
  w = rng.normal(size=(k, k, cin, cout))
  dy = rng.normal(size=reference(x, w, stride, dilation).shape)
  with jax.enable_x64():
    x, w, dy = (jnp.asarray(a, jnp.float64) for a in (x, w, dy))
    want, want_vjp = jax.vjp(lambda a, b: reference(a, b, stride, dilation), x, w)
    return (x, w, dy), (want, *want_vjp(dy))


@pytest.mark.parametrize("size,cin,cout,k,stride,dilation", SHAPES)
def test_values_and_gradients_match_xla_in_float64(size, cin, cout, k, stride, dilation):
  (x, w, dy), wants = inputs_and_reference(size, cin, cout, k, stride, dilation)
  with jax.enable_x64():
    got, got_vjp = jax.vjp(lambda a, b: ours(a, b, stride, dilation), x, w)
    for g, r in zip((got, *got_vjp(dy)), wants):
      np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_bfloat16_inputs_keep_their_dtype(k):
  x = jnp.ones((1, 8, 8, 4), jnp.bfloat16)
  w = jnp.ones((k, k, 4, 2), jnp.bfloat16)
  grads = jax.grad(lambda a, b: ours(a, b, 1, 1).astype(jnp.float32).sum(), (0, 1))(x, w)
  assert ours(x, w, 1, 1).dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)


@pytest.mark.parametrize("size,cin,cout,k,stride,dilation", [SHAPES[1], SHAPES[3], SHAPES[5]])
def test_cpu_compiler_options_keep_values_and_gradients(size, cin, cout, k, stride, dilation):
  """Compiled with the "cpu_fast" compiler options (Eigen's convolutions, not YNNPACK's), the
  convolution and both its gradients still equal XLA's in float64, to float32 rounding."""
  inputs, wants = inputs_and_reference(size, cin, cout, k, stride, dilation)

  def conv_and_grads(a, b, g):
    y, vjp = jax.vjp(lambda a_, b_: ours(a_, b_, stride, dilation), a, b)
    return (y, *vjp(g))

  args = [np.float32(a) for a in inputs]
  compiled = jax.jit(conv_and_grads,
                     compiler_options=backend.compiler_options("cpu_fast")).lower(*args).compile()
  if k > 1:   # a 1x1 convolution is a matrix product, which YNNPACK keeps
    assert "__ynn_fusion" not in compiled.as_text()
  for got, ref in zip(compiled(*args), wants):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def correlation_loops(x, w, dy):
  """3x3 cross-correlation with one pixel of zero padding, its input and its kernel gradient,
  as brute-force loops in float64."""
  n, h, width, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = np.zeros((n, h, width, w.shape[3]))
  dx_padded = np.zeros(padded.shape)
  dw = np.zeros(w.shape)
  for b, i, j in np.ndindex(n, h, width):
    for a, c in np.ndindex(3, 3):
      y[b, i, j] += padded[b, i + a, j + c] @ w[a, c]
      dx_padded[b, i + a, j + c] += w[a, c] @ dy[b, i, j]
      dw[a, c] += np.outer(padded[b, i + a, j + c], dy[b, i, j])
  return y, dx_padded[:, 1:-1, 1:-1], dw


@pytest.mark.parametrize("shape", [(2, 5, 8, 3, 4), (1, 7, 7, 2, 5), (1, 1, 2, 3, 2)])
def test_winograd_convolution_equals_brute_force(shape):
  """F(2x2, 3x3) and autodiff's gradients through it equal the direct correlation: to float64
  rounding in float64 (the algebra), to ~1e-6 in float32; odd sizes cut partial tiles."""
  n, h, width, cin, cout = shape
  rng = np.random.default_rng(h * width)
  x, w = rng.normal(size=(n, h, width, cin)), rng.normal(size=(3, 3, cin, cout))
  dy = rng.normal(size=(n, h, width, cout))
  wants = correlation_loops(x, w, dy)
  with jax.enable_x64():
    got, vjp = jax.vjp(conv.winograd_conv, jnp.asarray(x), jnp.asarray(w))
    for g, r in zip((got, *vjp(jnp.asarray(dy))), wants):
      np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)
  got, vjp = jax.vjp(jax.jit(conv.winograd_conv), np.float32(x), np.float32(w))
  for g, r in zip((got, *vjp(np.float32(dy))), wants):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())


def uses_xla_convolution(x_shape, w_shape, stride=1, dilation=1, dtype=jnp.float32):
  x, w = jnp.zeros(x_shape, dtype), jnp.zeros(w_shape, dtype)
  jaxpr = jax.make_jaxpr(lambda a, b: ours(a, b, stride, dilation))(x, w)
  return "conv_general_dilated" in str(jaxpr)


def test_winograd_form_only_where_it_pays():
  """3x3, stride 1, padding 1, float32, >= 256 output tiles and >= 128 channels each side."""
  assert not uses_xla_convolution((1, 32, 32, 128), (3, 3, 128, 128))      # 16 x 16 tiles
  assert not uses_xla_convolution((4, 15, 15, 128), (3, 3, 128, 200))      # 4 x 8 x 8 tiles
  assert uses_xla_convolution((1, 30, 30, 128), (3, 3, 128, 128))          # 225 tiles
  assert uses_xla_convolution((1, 32, 32, 64), (3, 3, 64, 128))            # thin input
  assert uses_xla_convolution((1, 32, 32, 128), (3, 3, 128, 100))          # thin output
  assert uses_xla_convolution((1, 64, 64, 128), (3, 3, 128, 128), stride=2)
  assert uses_xla_convolution((1, 64, 64, 128), (3, 3, 128, 128), dilation=2)
  assert uses_xla_convolution((1, 32, 32, 128), (3, 3, 128, 128), dtype=jnp.bfloat16)
  with jax.enable_x64():
    assert uses_xla_convolution((1, 32, 32, 128), (3, 3, 128, 128), dtype=jnp.float64)


def max_pool_gradient_loop(x, grad, window, stride, padding):
  """Brute force in float64: each window's gradient to its first maximum in row-major order
  (Caffe's and PyTorch's rule), the padding never chosen."""
  (top, _), (left, _) = padding
  result = np.zeros(x.shape)
  for n, row, col, c in np.ndindex(grad.shape):
    best = None
    for i in range(window):
      for j in range(window):
        r, q = row * stride + i - top, col * stride + j - left
        inside = 0 <= r < x.shape[1] and 0 <= q < x.shape[2]
        if inside and (best is None or x[n, r, q, c] > x[n, best[0], best[1], c]):
          best = (r, q)
    result[n, best[0], best[1], c] += grad[n, row, col, c]
  return result


@pytest.mark.parametrize("window,stride,padding", [(3, 1, ((1, 1), (1, 1))),
                                                   (3, 2, ((1, 1), (1, 1))),
                                                   (2, 2, ((0, 1), (0, 1)))])
def test_max_pool_gradient_goes_to_the_first_maximum(window, stride, padding):
  """Inputs of 0, 1 and 2 (ReLU outputs are full of ties): the pooled values equal Flax's, and
  every window's gradient reaches exactly one input, its first maximum."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 3, (2, 7, 9, 3)).astype(np.float32)
  np.testing.assert_array_equal(
      layers.max_pool(x, window, stride, padding, "cpu_fast"),
      nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding))
  pooled, vjp = jax.vjp(lambda a: layers.max_pool(a, window, stride, padding, "cpu_fast"), x)
  grad = rng.normal(size=pooled.shape).astype(np.float32)
  np.testing.assert_allclose(vjp(grad)[0], max_pool_gradient_loop(x, grad, window, stride,
                                                                  padding), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 9, 12, 3), (1, 8, 8, 2)])
def test_max_pool_matches_flax_values_and_gradients(shape):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ref = lambda a: nn.max_pool(a, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # noqa: E731
  for impl in backend.BACKENDS:
    np.testing.assert_array_equal(layers.max_pool(x, 3, 2, backend=impl), ref(x))
    np.testing.assert_array_equal(
        jax.grad(lambda a, b=impl: (layers.max_pool(a, 3, 2, backend=b) ** 2).sum())(x),
        jax.grad(lambda a: (ref(a) ** 2).sum())(x))


def test_the_backend_is_explicit_and_auto_picks_by_platform():
  assert backend.resolve("auto", platform="cpu") == "cpu_fast"
  assert backend.resolve("auto", platform="gpu") == "xla"
  assert backend.resolve("auto", platform="tpu") == "xla"
  assert backend.resolve("xla", platform="cpu") == "xla"
  assert backend.compiler_options("xla") is None
  with pytest.raises(ValueError, match="model.backend 'fast'"):
    backend.resolve("fast")
  assert layers.CONV_OF_BACKEND["xla"] is lax.conv_general_dilated
  assert layers.CONV_OF_BACKEND["cpu_fast"] is conv.conv_general_dilated


def test_a_model_computes_the_same_on_both_backends():
  """A tiny ResNet's outputs and gradients under "cpu_fast" (matrix products, Winograd for wide
  3x3, first-maximum pooling gradient) equal "xla"'s to float32 rounding."""
  from jaxdet.models import resnet  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
  models = {impl: resnet.build_resnet("resnet_tiny", backend=impl, num_classes=5)
            for impl in backend.BACKENDS}
  variables = models["xla"].init(jax.random.PRNGKey(1), x)

  def loss(params, impl):
    out = models[impl].apply({**variables, "params": params}, x)
    return jnp.sum(out["logits"] ** 2)

  values = {impl: jax.value_and_grad(loss)(variables["params"], impl)
            for impl in backend.BACKENDS}
  np.testing.assert_allclose(values["cpu_fast"][0], values["xla"][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-4 * np.abs(b).max()),
               values["cpu_fast"][1], values["xla"][1])
