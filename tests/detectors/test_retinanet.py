"""RetinaNet family: loss against a float64 brute force, decoding by hand, initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import retinanet as experiment
from jaxdet import detectors
from jaxdet.detectors import retinanet
from tests.ops.test_boxes import brute_force_iou


@pytest.fixture(scope="module")
def detector():
  return detectors.build(experiment.get_config("tiny_test").model)


def reference_loss(anchors, logits, deltas, boxes, labels, mask, cfg):
  """Sec. 3-4 of the paper written out per anchor and per class with float64 loops."""
  alpha, gamma, beta = cfg.loss.focal_alpha, cfg.loss.focal_gamma, cfg.loss.smooth_l1_beta
  batch, num_anchors, num_classes = logits.shape
  class_total = box_total = 0.0
  positives = 0
  for b in range(batch):
    real = np.flatnonzero(mask[b])
    iou = brute_force_iou(anchors, boxes[b, real]) if real.size else np.zeros((num_anchors, 0))
    best_for_gt = iou.max(axis=0) if real.size else np.zeros(0)
    for a in range(num_anchors):
      best = int(np.argmax(iou[a])) if real.size else -1
      best_iou = iou[a, best] if real.size else -1.0
      state = "pos" if best_iou >= 0.5 else ("neg" if best_iou < 0.4 else "ignore")
      if real.size and any(iou[a, g] == best_for_gt[g] and best_for_gt[g] > 0
                           for g in range(real.size)):
        state = "pos"                                   # low-quality match
      if state == "ignore":
        continue
      target_class = labels[b, real[best]] if state == "pos" else -1
      for k in range(num_classes):
        p = 1 / (1 + np.exp(-logits[b, a, k]))
        if k == target_class:
          class_total += -alpha * (1 - p) ** gamma * np.log(p)
        else:
          class_total += -(1 - alpha) * p ** gamma * np.log(1 - p)
      if state == "pos":
        positives += 1
        ax1, ay1, ax2, ay2 = anchors[a]
        gx1, gy1, gx2, gy2 = boxes[b, real[best]]
        aw, ah, gw, gh = ax2 - ax1, ay2 - ay1, gx2 - gx1, gy2 - gy1
        target = [((gx1 + gx2) / 2 - (ax1 + ax2) / 2) / aw,
                  ((gy1 + gy2) / 2 - (ay1 + ay2) / 2) / ah,
                  np.log(gw / aw), np.log(gh / ah)]
        for d, t in zip(deltas[b, a], target):
          x = abs(d - t)
          box_total += 0.5 * x * x / beta if x < beta else x - 0.5 * beta
  n = max(positives, 1)
  return class_total / n, box_total / n, positives


def random_batch(rng, batch, max_boxes, image_size):
  xy = rng.uniform(0, image_size - 8, (batch, max_boxes, 2))
  wh = rng.uniform(4, 40, (batch, max_boxes, 2))
  boxes = np.concatenate([xy, np.minimum(xy + wh, image_size)], axis=-1)
  labels = rng.integers(0, 10, (batch, max_boxes))
  mask = np.zeros((batch, max_boxes), bool)
  mask[0, :3] = True                 # image 0: 3 boxes; image 1: none; image 2: 5
  mask[2, :5] = True
  boxes[~mask] = 0.0
  labels[~mask] = 0
  return boxes, labels, mask


def test_loss_matches_float64_brute_force(detector):
  rng = np.random.default_rng(0)
  size = 64
  anchors = detector.anchors((size, size)).boxes.astype(np.float64)
  n = len(anchors)
  logits = rng.normal(-2, 2, (3, n, 10))
  deltas = rng.normal(0, 0.5, (3, n, 4))
  boxes, labels, mask = random_batch(rng, 3, 6, size)
  batch = {"image": jnp.zeros((3, size, size, 3)), "boxes": jnp.asarray(boxes, jnp.float32),
           "labels": jnp.asarray(labels, jnp.int32), "mask": jnp.asarray(mask)}
  outputs = {"class_logits": jnp.asarray(logits, jnp.float32),
             "box_deltas": jnp.asarray(deltas, jnp.float32)}
  total, metrics = jax.jit(detector.loss)(outputs, batch)
  want_class, want_box, want_pos = reference_loss(
      anchors, logits, deltas, boxes.astype(np.float32).astype(np.float64), labels, mask,
      detector.config)
  assert metrics["num_positive"] == want_pos
  np.testing.assert_allclose(metrics["class_loss"], want_class, rtol=1e-4)
  np.testing.assert_allclose(metrics["box_loss"], want_box, rtol=1e-4)
  np.testing.assert_allclose(total, want_class + want_box, rtol=1e-4)


def test_loss_without_any_box_is_the_focal_sum_and_has_finite_gradients(detector):
  size = 64
  n = detector.anchors((size, size)).num_anchors
  logits = jnp.full((2, n, 10), -1.0)
  batch = {"image": jnp.zeros((2, size, size, 3)), "boxes": jnp.zeros((2, 4, 4)),
           "labels": jnp.zeros((2, 4), jnp.int32), "mask": jnp.zeros((2, 4), bool)}

  def loss(lg, dl):
    return detector.loss({"class_logits": lg, "box_deltas": dl}, batch)

  (total, metrics), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      logits, jnp.zeros((2, n, 4)))
  p = 1 / (1 + np.exp(1.0))
  expected = 2 * n * 10 * -(1 - 0.25) * p ** 2 * np.log(1 - p)   # every anchor negative, N -> 1
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert metrics["num_positive"] == 0 and metrics["box_loss"] == 0
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_decode_hand_built_outputs():
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.anchors.size = 4.0                    # the paper's 32x32 anchors on P3
  detector = detectors.build(config)
  size = 64
  grid = detector.anchors((size, size))
  n = grid.num_anchors
  logits = np.full((1, n, 10), -10.0, np.float32)
  # Anchor 1 of P3 cell (0, 0) is the square 32x32 centred at (4, 4); anchor 9 + 1 is the same
  # square one cell (8 px) right; clipped to the image they are [0, 0, 20, 20] and
  # [0, 0, 28, 20]: IoU 400 / 560 = 0.71 > 0.5 -> suppressed if same class. Anchor 9 * 40 + 1
  # (P3 cell row 5, column 0) is the square centred at (4, 44): no overlap.
  logits[0, 1, 3] = 3.0
  logits[0, 10, 3] = 2.0
  logits[0, 10, 7] = 1.0                       # other class: kept despite the overlap
  logits[0, 9 * 40 + 1, 5] = 2.5
  outputs = {"class_logits": jnp.asarray(logits), "box_deltas": jnp.zeros((1, n, 4))}
  dets = jax.jit(detector.decode, static_argnums=1)(outputs, (size, size))
  valid = np.asarray(dets.valid[0])
  assert valid.sum() == 3
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  np.testing.assert_allclose(dets.scores[0, :3], [sig(3.0), sig(2.5), sig(1.0)], rtol=1e-6)
  np.testing.assert_array_equal(dets.classes[0, :3], [3, 5, 7])
  clip = lambda b: np.clip(b, 0, size)  # noqa: E731
  np.testing.assert_allclose(dets.boxes[0, 0], clip(grid.boxes[1]), atol=1e-4)
  np.testing.assert_allclose(dets.boxes[0, 1], clip(grid.boxes[9 * 40 + 1]), atol=1e-4)
  np.testing.assert_allclose(dets.boxes[0, 2], clip(grid.boxes[10]), atol=1e-4)


def test_decode_keeps_the_top_k_per_level_before_nms():
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.decode.pre_nms_topk = 2
  detector = detectors.build(config)
  grid = detector.anchors((64, 64))
  n = grid.num_anchors
  p3 = grid.level_sizes[0]
  # Four well-separated P3 candidates (0.9 > 0.8 > 0.7 > 0.6) and one P4 candidate (0.5):
  # the per-level cut keeps only the best two of P3, so 0.7 and 0.6 never reach NMS.
  logits = np.full((1, n, 10), -10.0, np.float32)
  logit = lambda p: np.log(p / (1 - p))  # noqa: E731
  picks = {0: 0.9, 9 * 7 + 4: 0.8, 9 * 56 + 4: 0.7, 9 * 63 + 4: 0.6, p3 + 9 * 15 + 4: 0.5}
  for anchor, score in picks.items():
    logits[0, anchor, 2] = logit(score)
  outputs = {"class_logits": jnp.asarray(logits), "box_deltas": jnp.zeros((1, n, 4))}
  dets = detector.decode(outputs, (64, 64))
  kept = np.sort(np.asarray(dets.scores[0][np.asarray(dets.valid[0])]))[::-1]
  np.testing.assert_allclose(kept, [0.9, 0.8, 0.5], rtol=1e-5)


def test_prior_probability_initialisation(detector):
  variables = detector.init(jax.random.PRNGKey(0), (64, 64))
  bias = variables["params"]["head"]["cls_output"]["bias"]
  np.testing.assert_allclose(bias, -np.log(0.99 / 0.01), rtol=1e-6)   # pi = 0.01
  outputs, _ = jax.jit(detector.apply)(variables,
                                       jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3)))
  np.testing.assert_allclose(jax.nn.sigmoid(outputs["class_logits"]).mean(), 0.01, rtol=0.2)


def test_a_single_level_detector_predicts_every_anchor_of_its_grid():
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.fpn_single_level = True
  det = detectors.build(config)
  variables = jax.eval_shape(lambda: det.init(jax.random.PRNGKey(0), (64, 64)))
  outputs = jax.eval_shape(lambda v: det.apply(v, jnp.zeros((1, 64, 64, 3)))[0], variables)
  grid = det.anchors((64, 64))
  levels = config.max_level - config.min_level + 1
  assert grid.num_anchors == (64 // 2 ** config.min_level) ** 2 * 9 * levels
  assert outputs["class_logits"].shape == (1, grid.num_anchors, config.num_classes)
  assert outputs["box_deltas"].shape == (1, grid.num_anchors, 4)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.dtype = "bfloat16"
  det = detectors.build(config)
  variables = det.init(jax.random.PRNGKey(0), (64, 64))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))
  outputs, _ = det.apply(variables, jnp.zeros((1, 64, 64, 3)))
  assert outputs["class_logits"].dtype == jnp.float32


def test_prior_bias_value():
  assert retinanet.prior_bias(0.01) == pytest.approx(-4.59511985, rel=1e-8)
