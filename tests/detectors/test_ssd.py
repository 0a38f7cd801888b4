"""SSD family: MultiBox loss against a float64 brute force, decoding by hand, architecture."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import ssd as experiment
from jaxdet import detectors
from jaxdet.detectors import ssd
from jaxdet.models import vgg
from tests.detectors.test_retinanet import random_batch
from tests.ops.test_ssd_ops import brute_force_ssd_match


@pytest.fixture(scope="module")
def detector():
  return detectors.build(experiment.get_config("tiny_test").model)


def reference_loss(default_boxes, logits, deltas, boxes, labels, mask, variances=(0.1, 0.2)):
  """Eq. 1-3 of the paper with float64 loops: matching, hard negatives by sorting, softmax."""
  class_total = box_total = 0.0
  positives = 0
  for b in range(len(logits)):
    matched, state = brute_force_ssd_match(default_boxes, boxes[b], mask[b])
    log_softmax = logits[b] - np.log(np.exp(logits[b]).sum(-1, keepdims=True))
    background_loss = -log_softmax[:, 0]
    negatives = sorted(np.flatnonzero(state == 0), key=lambda a: -background_loss[a])
    num_positive = int(state.sum())
    class_total += sum(background_loss[a] for a in negatives[:3 * num_positive])
    for a in np.flatnonzero(state == 1):
      positives += 1
      class_total += -log_softmax[a, labels[b, matched[a]] + 1]
      dx1, dy1, dx2, dy2 = default_boxes[a]
      gx1, gy1, gx2, gy2 = boxes[b, matched[a]]
      dw, dh = dx2 - dx1, dy2 - dy1
      target = [((gx1 + gx2) / 2 - (dx1 + dx2) / 2) / (variances[0] * dw),
                ((gy1 + gy2) / 2 - (dy1 + dy2) / 2) / (variances[0] * dh),
                np.log((gx2 - gx1) / dw) / variances[1], np.log((gy2 - gy1) / dh) / variances[1]]
      for d, t in zip(deltas[b, a], target):
        x = abs(d - t)
        box_total += 0.5 * x * x if x < 1 else x - 0.5
  n = max(positives, 1)
  return class_total / n, box_total / n, positives


def test_loss_matches_float64_brute_force(detector):
  rng = np.random.default_rng(0)
  boxes, labels, mask = random_batch(rng, 3, 6, 64)           # image 1 has no objects
  default_boxes = detector.default_boxes((64, 64)).boxes
  n = len(default_boxes)
  logits = rng.normal(0, 2, (3, n, detector.num_classes + 1)).astype(np.float32)
  deltas = rng.normal(0, 1, (3, n, 4)).astype(np.float32)
  batch = {"image": np.zeros((3, 64, 64, 3), np.float32), "boxes": boxes.astype(np.float32),
           "labels": labels.astype(np.int32), "mask": mask}
  total, metrics = jax.jit(detector.loss)({"class_logits": logits, "box_deltas": deltas}, batch)
  want_cls, want_box, want_pos = reference_loss(
      default_boxes.astype(np.float64), logits.astype(np.float64), deltas.astype(np.float64),
      boxes.astype(np.float32).astype(np.float64), labels, mask)
  assert want_pos > 0 and metrics["num_positive"] == want_pos
  np.testing.assert_allclose(metrics["class_loss"], want_cls, rtol=1e-4)
  np.testing.assert_allclose(metrics["box_loss"], want_box, rtol=1e-4)
  np.testing.assert_allclose(total, want_cls + want_box, rtol=1e-4)   # alpha = 1


def test_loss_is_zero_without_objects_and_has_finite_gradients(detector):
  n = detector.default_boxes((64, 64)).num_anchors
  batch = {"image": np.zeros((2, 64, 64, 3), np.float32), "boxes": np.zeros((2, 4, 4), np.float32),
           "labels": np.zeros((2, 4), np.int32), "mask": np.zeros((2, 4), bool)}
  outputs = {"class_logits": jnp.ones((2, n, detector.num_classes + 1)),
             "box_deltas": jnp.ones((2, n, 4))}
  total, metrics = detector.loss(outputs, batch)
  assert float(total) == 0.0 and float(metrics["num_positive"]) == 0.0
  grads = jax.grad(lambda o: detector.loss(o, batch)[0])(outputs)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_decode_hand_built_outputs(detector):
  grid = detector.default_boxes((64, 64))
  n, k = grid.num_anchors, detector.num_classes
  logits = np.zeros((1, n, k + 1), np.float32)
  logits[..., 0] = 10.0                        # background everywhere: object scores ~ e^-10
  logits[0, 5] = 0.0
  logits[0, 5, 3] = 10.0                       # box 5 is dataset class 2 (output 3)
  deltas = np.zeros((1, n, 4), np.float32)
  deltas[0, 5] = [1.0, -2.0, 0.0, 0.5]         # offsets in units of variance x size
  dets = detector.decode({"class_logits": logits, "box_deltas": deltas}, (64, 64))
  assert int(np.sum(dets.valid)) == 1
  x1, y1, x2, y2 = grid.boxes[5].astype(np.float64)
  cx, cy, w, h = (x1 + x2) / 2 + 0.1 * (x2 - x1), (y1 + y2) / 2 - 0.2 * (y2 - y1), x2 - x1, \
      (y2 - y1) * np.exp(0.2 * 0.5)
  want = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 64)
  np.testing.assert_allclose(dets.boxes[0, 0], want, rtol=1e-5, atol=1e-4)
  assert int(dets.classes[0, 0]) == 2
  np.testing.assert_allclose(dets.scores[0, 0], np.exp(10) / (np.exp(10) + k), rtol=1e-5)


def conv_params(k, cin, cout):
  return k * k * cin * cout + cout


def test_ssd300_vgg16_parameter_count_by_hand():
  """21 outputs (20 VOC classes + background): 26,285,486, the Caffe SSD300's ~26.3M."""
  vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
         (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
  total = sum(conv_params(3, cin, cout) for cin, cout in vgg)
  total += conv_params(3, 512, 1024) + conv_params(1, 1024, 1024)      # fc6 (atrous), fc7
  total += 512                                                         # conv4_3 L2Norm scale
  extras = [(1024, 256, 512), (512, 128, 256), (256, 128, 256), (256, 128, 256)]
  total += sum(conv_params(1, cin, mid) + conv_params(3, mid, out) for cin, mid, out in extras)
  sources = [(512, 4), (1024, 6), (512, 6), (256, 6), (256, 4), (256, 4)]
  total += sum(conv_params(3, c, a * 21) + conv_params(3, c, a * 4) for c, a in sources)
  assert total == 26_285_486
  det = detectors.build(experiment.get_config("ssd300_voc").model)
  shapes = jax.eval_shape(lambda: det.init(jax.random.PRNGKey(0), (300, 300)))
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == total


def test_the_full_vgg16_of_table2_by_hand():
  """Table 2's last column (Sec. 3.2): pool5 2x2-s2, fc6 7x7 and fc7 1x1 of 4096 (VGG-16's own
  fully connected layers as convolutions), conv5_3 predicting, one extra layer fewer: the same
  six maps and 8,732 default boxes."""
  convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
  total = sum(conv_params(3, cin, cout) for cin, cout in convs) + 512    # + L2Norm scale
  total += conv_params(7, 512, 4096) + conv_params(1, 4096, 4096)      # fc6, fc7
  extras = [(4096, 256, 512), (512, 128, 256), (256, 128, 256)]
  total += sum(conv_params(1, cin, mid) + conv_params(3, mid, out) for cin, mid, out in extras)
  sources = [(512, 4), (512, 6), (4096, 6), (512, 6), (256, 4), (256, 4)]   # conv4_3, conv5_3..
  total += sum(conv_params(3, c, a * 21) + conv_params(3, c, a * 4) for c, a in sources)
  config = experiment.get_config("ssd300_voc").model.unlock()
  config.base.update(atrous=False, fc_width=4096, extras=vgg.SSD300_EXTRAS[:3])
  det = detectors.build(config)
  assert det.feature_sizes((300, 300)) == tuple((m, m) for m in (38, 19, 10, 5, 3, 1))
  assert det.default_boxes((300, 300)).num_anchors == 8732
  shapes = jax.eval_shape(lambda: det.init(jax.random.PRNGKey(0), (300, 300)))
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == total
  assert shapes["params"]["features"]["fc6"]["kernel"].shape == (7, 7, 512, 4096)


@pytest.mark.parametrize("variant,size,maps", [
    ("ssd300_voc", 300, (38, 19, 10, 5, 3, 1)),
    ("ssd512_coco", 512, (64, 32, 16, 8, 4, 2, 1)),
])
def test_feature_maps_and_default_boxes_of_the_paper_variants(variant, size, maps):
  det = detectors.build(experiment.get_config(variant).model)
  assert det.feature_sizes((size, size)) == tuple((m, m) for m in maps)
  assert det.default_boxes((size, size)).num_anchors == {300: 8732, 512: 24564}[size]
  shapes = jax.eval_shape(lambda: det.init(jax.random.PRNGKey(0), (size, size)))
  assert "batch_stats" not in shapes                # the paper's VGG has no batch norm


def test_recipes_follow_the_final_caffe_scripts():
  """ssd_pascal.py / ssd_coco.py at their final revision: no frozen layers, 120k (VOC) and
  400k (COCO) steps, the released models' default boxes, DetectionOutput's decoding."""
  voc, coco = experiment.get_config("ssd300_voc"), experiment.get_config("ssd300_coco")
  for c in (voc, coco, experiment.get_config("ssd512_voc")):
    assert c.model.base.freeze_at == 0
    assert (c.model.decode.per_class_topk, c.model.decode.score_threshold,
            c.model.decode.nms_iou_threshold, c.model.decode.max_detections) == (400, 0.01, 0.45,
                                                                                200)
  assert (voc.train.total_steps, tuple(voc.train.schedule.decay_steps)) == (120_000,
                                                                            (80_000, 100_000))
  assert (coco.train.total_steps, tuple(coco.train.schedule.decay_steps)) == (400_000,
                                                                              (280_000, 360_000))
  boxes = {v: experiment.get_config(v).model.default_boxes
           for v in ("ssd300_voc", "ssd300_coco", "ssd512_voc", "ssd512_coco")}
  assert tuple(boxes["ssd300_voc"].min_sizes) == (30, 60, 111, 162, 213, 264)
  assert tuple(boxes["ssd300_voc"].max_sizes) == (60, 111, 162, 213, 264, 315)
  assert tuple(boxes["ssd300_voc"].steps) == (8, 16, 32, 64, 100, 300)
  assert tuple(boxes["ssd300_coco"].min_sizes) == (21, 45, 99, 153, 207, 261)
  assert tuple(boxes["ssd300_coco"].max_sizes) == (45, 99, 153, 207, 261, 315)
  # The released SSD512 prototxt: 35.84, 76.8, ... 460.8 / 76.8, ... 537.6, truncated by
  # PriorBox to integers.
  assert tuple(boxes["ssd512_voc"].min_sizes) == (35, 76, 153, 230, 307, 384, 460)
  assert tuple(boxes["ssd512_voc"].max_sizes) == (76, 153, 230, 307, 384, 460, 537)
  assert tuple(boxes["ssd512_voc"].steps) == (8, 16, 32, 64, 128, 256, 512)
  assert tuple(boxes["ssd512_coco"].min_sizes) == (20, 51, 133, 215, 296, 378, 460)


def test_conv4_3_scale_starts_at_20(detector):
  variables = detector.init(jax.random.PRNGKey(0), (64, 64))
  np.testing.assert_array_equal(variables["params"]["features"]["conv4_3_norm"]["scale"], 20.0)


def test_l2norm_by_hand():
  x = jnp.array([[[[3.0, 4.0]]]])
  y = vgg.L2Norm().apply({"params": {"scale": jnp.array([20.0, 10.0])}}, x)
  np.testing.assert_allclose(y, [[[[20 * 0.6, 10 * 0.8]]]], rtol=1e-6)


def test_train_mode_forward_shapes(detector):
  variables = detector.init(jax.random.PRNGKey(0), (64, 64))
  outputs, updates = detector.apply(variables, jnp.zeros((2, 64, 64, 3)), train=True)
  n = detector.default_boxes((64, 64)).num_anchors
  assert outputs["class_logits"].shape == (2, n, detector.num_classes + 1)
  assert outputs["box_deltas"].shape == (2, n, 4)
  assert "batch_stats" in updates


def test_head_predictors_are_per_map_3x3_convolutions():
  """Each map's class and box predictors (run as one convolution) against float64 numpy: a 3x3
  correlation with zero padding, then cells, then default boxes, then outputs (Sec. 2.1)."""
  head = ssd.SSDHead(num_classes=2, boxes_per_cell=(4, 6))
  rng = np.random.default_rng(0)
  maps = [rng.normal(size=(2, 4, 5, 3)).astype(np.float32),
          rng.normal(size=(2, 2, 2, 5)).astype(np.float32)]
  params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32),
                        head.init(jax.random.PRNGKey(0), maps)["params"])
  outputs = head.apply({"params": params}, maps)

  def predictor(x, weights, outputs_per_box):
    x = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = x.shape[1] - 2, x.shape[2] - 2
    y = np.zeros((x.shape[0], height, width, weights["kernel"].shape[-1])) + weights["bias"]
    for i in range(3):
      for j in range(3):
        y += np.einsum("nhwc,cd->nhwd", x[:, i:i + height, j:j + width], weights["kernel"][i, j])
    return y.reshape(x.shape[0], -1, outputs_per_box)
  want_logits = np.concatenate([predictor(x, params[f"cls_{i}"], 3) for i, x in enumerate(maps)], 1)
  want_deltas = np.concatenate([predictor(x, params[f"box_{i}"], 4) for i, x in enumerate(maps)], 1)
  assert params["cls_1"]["kernel"].shape == (3, 3, 5, 6 * 3)
  np.testing.assert_allclose(outputs["class_logits"], want_logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(outputs["box_deltas"], want_deltas, rtol=1e-4, atol=1e-4)


def test_ratio_lists_for_another_number_of_maps_are_refused_with_the_reason():
  from jaxdet import errors  # pylint: disable=import-outside-toplevel
  from jaxdet.train import loop  # pylint: disable=import-outside-toplevel
  config = experiment.get_config("tiny_test").unlock()
  config.model.default_boxes.aspect_ratios = ((2,),) * 2
  with pytest.raises(errors.InvalidSetupError, match=r"does not fit the ssd network \(3 feature "
                                                     r"maps but default boxes for 2\)$"):
    loop.check_input_sizes(detectors.build(config.model), config)
