"""Darknet-19 against darknet's cfg/darknet19.cfg and the YOLO9000 paper's operation count."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models import conv
from jaxdet.models import darknet

# darknet's cfg/darknet19.cfg, layer by layer: ("conv", filters, size) or ("max",).
CFG = [("conv", 32, 3), ("max",), ("conv", 64, 3), ("max",),
       ("conv", 128, 3), ("conv", 64, 1), ("conv", 128, 3), ("max",),
       ("conv", 256, 3), ("conv", 128, 1), ("conv", 256, 3), ("max",),
       ("conv", 512, 3), ("conv", 256, 1), ("conv", 512, 3), ("conv", 256, 1),
       ("conv", 512, 3), ("max",),
       ("conv", 1024, 3), ("conv", 512, 1), ("conv", 1024, 3), ("conv", 512, 1),
       ("conv", 1024, 3)]


def cfg_parameters(num_classes=1000):
  """Weights + batch-norm scale and shift of each conv, then the classifier's weights + bias."""
  total, channels = 0, 3
  for layer in CFG:
    if layer[0] == "conv":
      _, filters, size = layer
      total += size * size * channels * filters + 2 * filters
      channels = filters
  return total + channels * num_classes + num_classes


def cfg_operations(size=224, num_classes=1000, skip_padding=False):
  """Darknet's count: 2 x multiply-adds of every convolution (pooling and the rest free),
  each output counting all k x k taps; with ``skip_padding`` only the taps inside the image (a
  3x3 window at the border reads 2 rows or columns of it), as XLA counts."""
  total, channels = 0, 3
  for layer in CFG:
    if layer[0] == "max":
      size //= 2
    else:
      _, filters, kernel = layer
      half = kernel // 2
      taps_per_axis = kernel * size - (half * (half + 1) if skip_padding else 0)
      total += 2 * channels * filters * taps_per_axis ** 2
      channels = filters
  return total + 2 * channels * num_classes * size * size


def test_nineteen_convolutions_and_five_pools():
  assert sum(layer[0] == "conv" for layer in CFG) + 1 == 19  # + the classifier
  assert sum(layer[0] == "max" for layer in CFG) == 5


def test_parameter_count_matches_the_cfg():
  model = darknet.Darknet19(num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert count == cfg_parameters() == 20_842_376


def test_operations_at_224_are_the_papers_5_58_billion():
  assert cfg_operations() / 1e9 == pytest.approx(5.58, abs=0.005)  # YOLO9000, Sec. 3
  model = darknet.Darknet19(num_classes=1000)
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  conv.USE_CPU_FORMS = False  # XLA's convolutions, which its cost analysis counts exactly
  try:
    flops = jax.jit(model.apply).lower(variables, x).cost_analysis()["flops"]
  finally:
    conv.USE_CPU_FORMS = True
  # XLA counts the taps inside the image only, plus batch norm, leaky ReLU, pooling and the mean
  # (~1% on top).
  assert cfg_operations(skip_padding=True) <= flops <= 1.02 * cfg_operations(skip_padding=True)


def test_feature_strides_channels_and_leaky_slope():
  model = darknet.Darknet19()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  outputs = model.apply(variables, jnp.zeros((2, 416, 416, 3)))
  assert outputs["stride16"].shape == (2, 26, 26, 512)  # YOLOv2's passthrough source
  assert outputs["stride32"].shape == (2, 13, 13, 1024)
  assert "logits" not in outputs
  x = jnp.array([-2.0, 3.0])
  np.testing.assert_allclose(jax.nn.leaky_relu(x, darknet.LEAKY_SLOPE), [-0.2, 3.0])
