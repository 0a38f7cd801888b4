"""Box ops against hand-computed values and a float64 brute force."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.ops import boxes as box_ops


def brute_force_iou(a, b):
  out = np.zeros((len(a), len(b)))
  for i, p in enumerate(a):
    for j, q in enumerate(b):
      iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
      ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
      area_p = max(0.0, p[2] - p[0]) * max(0.0, p[3] - p[1])
      area_q = max(0.0, q[2] - q[0]) * max(0.0, q[3] - q[1])
      union = area_p + area_q - iw * ih
      out[i, j] = iw * ih / union if union > 0 else 0.0
  return out


def random_boxes(rng, n, size=100.0):
  xy = rng.uniform(-20, size, (n, 2))
  wh = rng.uniform(0, 60, (n, 2))
  return np.concatenate([xy, xy + wh], axis=1)


def test_iou_hand_values():
  a = np.array([[0, 0, 10, 10]], np.float32)
  b = np.array([[5, 0, 15, 10],     # overlap 5x10 = 50; union 150 -> 1/3
                [0, 0, 10, 10],     # identical -> 1
                [10, 10, 20, 20],   # touching corner -> 0
                [2, 2, 4, 4]],      # inside: 4 / 100
               np.float32)
  np.testing.assert_allclose(box_ops.pairwise_iou(a, b), [[1 / 3, 1.0, 0.0, 0.04]], rtol=1e-6)


def test_iou_matches_brute_force_with_batch_dims():
  rng = np.random.default_rng(0)
  a = random_boxes(rng, 2 * 13).reshape(2, 13, 4)
  b = random_boxes(rng, 2 * 7).reshape(2, 7, 4)
  got = box_ops.pairwise_iou(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  for i in range(2):
    np.testing.assert_allclose(got[i], brute_force_iou(a[i], b[i]), atol=1e-6)


def test_iou_degenerate_and_padding_boxes_are_zero_and_have_finite_gradients():
  a = jnp.array([[0, 0, 0, 0], [3, 3, 3, 8], [0, 0, 10, 10]], jnp.float32)
  b = jnp.zeros((2, 4), jnp.float32)   # padded ground truth
  iou = box_ops.pairwise_iou(a, b)
  np.testing.assert_array_equal(iou, np.zeros((3, 2)))
  grad = jax.grad(lambda x: box_ops.pairwise_iou(x, b).sum())(a)
  assert np.all(np.isfinite(grad))


def test_encode_hand_values_and_decode_inverts():
  anchor = np.array([[0, 0, 10, 20]], np.float32)   # centre (5, 10), w 10, h 20
  box = np.array([[2, 4, 22, 24]], np.float32)      # centre (12, 14), w 20, h 20
  weights = (10.0, 10.0, 5.0, 5.0)
  expected = [10 * 7 / 10, 10 * 4 / 20, 5 * np.log(2.0), 5 * np.log(1.0)]
  deltas = box_ops.encode_deltas(anchor, box, weights)
  np.testing.assert_allclose(deltas, [expected], rtol=1e-6)
  np.testing.assert_allclose(box_ops.decode_deltas(anchor, deltas, weights), box, atol=1e-5)


def test_encode_decode_round_trip_random():
  rng = np.random.default_rng(1)
  anchors = random_boxes(rng, 50) + np.array([0, 0, 1, 1])   # positive size
  gt = random_boxes(rng, 50) + np.array([0, 0, 1, 1])
  deltas = box_ops.encode_deltas(jnp.asarray(anchors, jnp.float32), jnp.asarray(gt, jnp.float32))
  np.testing.assert_allclose(box_ops.decode_deltas(jnp.asarray(anchors, jnp.float32), deltas),
                             gt, atol=2e-3)


def test_encode_of_padding_is_finite():
  anchors = jnp.array([[0, 0, 10, 10]], jnp.float32)
  assert np.all(np.isfinite(box_ops.encode_deltas(anchors, jnp.zeros((1, 4)))))


def test_decode_clamps_scale():
  anchor = jnp.array([[0, 0, 16, 16]], jnp.float32)
  decoded = box_ops.decode_deltas(anchor, jnp.array([[0, 0, 100.0, 100.0]]))
  np.testing.assert_allclose(decoded[0, 2] - decoded[0, 0], 1000.0, rtol=1e-4)  # 16 * 1000/16


def test_format_conversions_and_clip():
  xyxy = jnp.array([[1, 2, 5, 10]], jnp.float32)
  np.testing.assert_allclose(box_ops.xyxy_to_cxcywh(xyxy), [[3, 6, 4, 8]])
  np.testing.assert_allclose(box_ops.cxcywh_to_xyxy(box_ops.xyxy_to_cxcywh(xyxy)), xyxy)
  np.testing.assert_allclose(box_ops.clip_boxes(jnp.array([[-5, 3, 50, 70.0]]), 60, 40),
                             [[0, 3, 40, 60]])
