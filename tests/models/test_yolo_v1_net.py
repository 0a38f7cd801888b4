"""YOLOv1 and Fast YOLO networks: parameter counts from the cfg layer lists by hand, output shape,
a forward pass against numpy, dropout only in training."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.models import yolo_v1_net


def conv_params(k, cin, cout):
  return k * k * cin * cout + cout          # conv with bias (no batch norm, as the paper)


def dense_params(cin, cout):
  return cin * cout + cout


def count(module, size):
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                              jnp.zeros((1, size, size, 3)), train=False))
  return shapes, sum(x.size for x in jax.tree.leaves(shapes["params"]))


def test_yolo_parameter_count_by_hand_and_output_shape():
  """Fig. 3 / darknet cfg/yolo.cfg (2015): 24 convs, FC 4096, FC 7 x 7 x 30 at 448x448."""
  convs = [(7, 3, 64), (3, 64, 192),                                  # 448 -> 224 -> 112
           (1, 192, 128), (3, 128, 256), (1, 256, 256), (3, 256, 512)]  # 56
  convs += [(1, 512, 256), (3, 256, 512)] * 4 + [(1, 512, 512), (3, 512, 1024)]  # 28
  convs += [(1, 1024, 512), (3, 512, 1024)] * 2 + [(3, 1024, 1024)] * 4  # 14, stride 2 -> 7
  assert len(convs) == 24
  total = sum(conv_params(*c) for c in convs)
  total += dense_params(7 * 7 * 1024, 4096) + dense_params(4096, 7 * 7 * (5 * 2 + 20))
  assert total == 271_703_550
  net = yolo_v1_net.YOLOv1Net(grid_size=7, outputs_per_cell=30)
  shapes, got = count(net, 448)
  assert got == total and "batch_stats" not in shapes
  out = jax.eval_shape(lambda v: net.apply(v, jnp.zeros((2, 448, 448, 3))), shapes)
  assert out.shape == (2, 7, 7, 30) and out.dtype == jnp.float32


def test_fast_yolo_parameter_count_by_hand_and_output_shape():
  """Fast YOLO (Sec. 2), darknet cfg/yolo-tiny.cfg (2015): 9 convs, FC 256, 4096, 7 x 7 x 30."""
  channels = [3, 16, 32, 64, 128, 256, 512, 1024, 1024, 1024]
  convs = [(3, cin, cout) for cin, cout in zip(channels[:-1], channels[1:])]
  assert len(convs) == 9
  total = sum(conv_params(*c) for c in convs)
  total += (dense_params(7 * 7 * 1024, 256) + dense_params(256, 4096)
            + dense_params(4096, 7 * 7 * 30))
  assert total == 45_089_374
  net = yolo_v1_net.YOLOv1Net(grid_size=7, outputs_per_cell=30,
                              stages=yolo_v1_net.FAST_YOLO_STAGES,
                              fc_layers=yolo_v1_net.FAST_YOLO_FC)
  shapes, got = count(net, 448)
  assert got == total
  out = jax.eval_shape(lambda v: net.apply(v, jnp.zeros((1, 448, 448, 3))), shapes)
  assert out.shape == (1, 7, 7, 30)


def leaky(x):
  return np.where(x > 0, x, 0.1 * x)


def test_forward_matches_numpy():
  """conv 3x3 (pad 1) + leaky, 2x2 max-pool, conv 1x1 + leaky, flatten (row-major H, W, C),
  FC + leaky, FC; written out with numpy loops."""
  net = yolo_v1_net.YOLOv1Net(grid_size=2, outputs_per_cell=3, stages=(((4, 3, 1),), ((2, 1, 1),)),
                              fc_layers=((5, "leaky"),))
  x = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype(np.float32)
  variables = net.init(jax.random.PRNGKey(1), x)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  out = np.asarray(net.apply(variables, x))

  k1, b1 = p["conv1_1"]["conv"]["kernel"], p["conv1_1"]["conv"]["bias"]
  padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = np.zeros((2, 4, 6, 4))
  for i in range(4):
    for j in range(6):
      y[:, i, j] = np.einsum("bhwc,hwco->bo", padded[:, i:i + 3, j:j + 3], k1) + b1
  y = leaky(y)
  y = y.reshape(2, 2, 2, 3, 2, 4).max(axis=(2, 4))                 # 2x2 stride-2 pool
  y = leaky(y @ p["conv2_1"]["conv"]["kernel"][0, 0] + p["conv2_1"]["conv"]["bias"])
  y = leaky(y.reshape(2, -1) @ p["fc1"]["kernel"] + p["fc1"]["bias"])
  y = y @ p["output"]["kernel"] + p["output"]["bias"]
  np.testing.assert_allclose(out, y.reshape(2, 2, 2, 3), rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training():
  def net(rate):
    return yolo_v1_net.YOLOv1Net(grid_size=2, outputs_per_cell=3, stages=(((4, 3, 1),),),
                                 fc_layers=((64, "leaky"),), dropout_rate=rate)

  x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
  variables = net(0.5).init(jax.random.PRNGKey(0), x)

  def train(seed):
    out, _ = net(0.5).apply(variables, x, train=True, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.PRNGKey(seed)})
    return np.asarray(out)

  without_dropout = np.asarray(net(0.0).apply(variables, x, train=True))
  np.testing.assert_array_equal(np.asarray(net(0.5).apply(variables, x, train=False)),
                                without_dropout)           # evaluation: no rng, no dropout
  np.testing.assert_array_equal(train(1), train(1))
  assert not np.allclose(train(1), train(2))
  assert not np.allclose(train(1), without_dropout)


def test_batch_norm_option_uses_darknets_conv_bn_leaky():
  net = yolo_v1_net.YOLOv1Net(grid_size=2, outputs_per_cell=3, stages=(((4, 3, 1),),),
                              fc_layers=((8, "leaky"),), batch_norm=True)
  variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  assert set(variables["params"]["conv1_1"]) == {"conv", "bn"}
  assert "bias" not in variables["params"]["conv1_1"]["conv"]
  assert "batch_stats" in variables
