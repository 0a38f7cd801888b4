"""Darknet-19 against darknet's cfg/darknet19.cfg and the YOLO9000 paper's operation count."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
  # XLA's own convolutions (the default backend): the CPU's Winograd form does fewer
  # multiplications than the paper.
  model = darknet.Darknet19(num_classes=1000)
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  flops = jax.jit(model.apply).lower(variables, x).cost_analysis()["flops"]
  # XLA counts the taps inside the image only, plus batch norm, leaky ReLU, pooling and the mean
  # (~1% on top).
  assert cfg_operations(skip_padding=True) <= flops <= 1.02 * cfg_operations(skip_padding=True)


def test_feature_strides_channels_and_leaky_slope():
  model = darknet.Darknet19()                 # shapes only: nothing is computed
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  outputs = jax.eval_shape(model.apply, variables, jnp.zeros((2, 416, 416, 3)))
  assert outputs["stride16"].shape == (2, 26, 26, 512)  # YOLOv2's passthrough source
  assert outputs["stride32"].shape == (2, 13, 13, 1024)
  assert "logits" not in outputs
  x = jnp.array([-2.0, 3.0])
  np.testing.assert_allclose(jax.nn.leaky_relu(x, darknet.LEAKY_SLOPE), [-0.2, 3.0])


# darknet's cfg/darknet53.cfg (YOLOv3 Table 1): the 3x3/32 stem, then per stage a 3x3 stride-2
# conv to C and N residual blocks of 1x1 C/2 + 3x3 C.
DARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))


def darknet53_convs():
  """(kernel, in, out) of the 52 convolutions, in cfg order."""
  convs, channels = [(3, 3, 32)], 32
  for width, blocks in DARKNET53_STAGES:
    convs.append((3, channels, width))
    convs += [(1, width, width // 2), (3, width // 2, width)] * blocks
    channels = width
  return convs


def test_darknet53_has_52_convolutions_and_the_cfg_parameter_count():
  convs = darknet53_convs()
  assert len(convs) + 1 == 53                  # + the classifier
  # Each conv: weights + batch-norm scale and shift; the classifier 1x1 conv: weights + bias.
  total = sum(k * k * cin * cout + 2 * cout for k, cin, cout in convs) + 1024 * 1000 + 1000
  assert total == 41_609_928            # the 41.6M often quoted for Darknet-53
  model = darknet.Darknet53(num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == total


def test_darknet53_feature_strides_and_channels():
  model = darknet.Darknet53(num_classes=7)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  outputs = jax.eval_shape(model.apply, variables, jnp.zeros((2, 416, 416, 3)))
  assert outputs["stride8"].shape == (2, 52, 52, 256)
  assert outputs["stride16"].shape == (2, 26, 26, 512)
  assert outputs["stride32"].shape == (2, 13, 13, 1024)
  assert outputs["logits"].shape == (2, 7)


def test_darknet53_residual_block_adds_its_input():
  """With the 3x3 conv's batch-norm scale and shift at 0 the branch is leaky(0) = 0: the block
  is the identity (the shortcut of Table 1)."""
  block = darknet.ResidualBlock(4)
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 5, 4))
  variables = jax.jit(functools.partial(block.init, train=False))(jax.random.PRNGKey(0), x)
  params = jax.tree.map(lambda v: v, variables["params"])         # a copy to edit
  params["conv2"]["bn"] = {"scale": jnp.zeros(4), "bias": jnp.zeros(4)}
  apply = jax.jit(functools.partial(block.apply, train=False))
  y = apply({**variables, "params": params}, x)
  np.testing.assert_allclose(y, x, rtol=1e-6)
  params["conv2"]["bn"]["bias"] = jnp.full(4, 2.0)   # the branch now adds leaky(2) = 2
  y = apply({**variables, "params": params}, x)
  np.testing.assert_allclose(y, x + 2.0, rtol=1e-6)


def test_tiny_darknet53_stride_outputs():
  model = darknet.Darknet53(stem_width=4, stage_widths=(8, 8, 16, 16, 32), blocks=(1,) * 5)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  outputs = jax.eval_shape(model.apply, variables, jnp.ones((1, 64, 96, 3)))
  assert [outputs[f"stride{s}"].shape for s in (8, 16, 32)] == [
      (1, 8, 12, 16), (1, 4, 6, 16), (1, 2, 3, 32)]
  with pytest.raises(ValueError, match="5 stages"):
    darknet.Darknet53(blocks=(1, 2)).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
