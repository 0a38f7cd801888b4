"""YOLOv3 family: the loss against a float64 brute force and its gradient against darknet's
yolo-layer deltas, decoding by hand, architecture, a short train + evaluate run."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import yolo_v3 as experiment
from jaxdet import detectors
from jaxdet.train import loop
from tests.detectors import darknet_reference
from tests.detectors.test_retinanet import random_batch
from tests.train.helpers import tiny_config

SIZE = 64
STRIDES = (8, 16, 32)


def build(**loss_overrides):
  config = experiment.get_config("tiny_test")
  config.unlock()
  config.model.loss.update(loss_overrides)
  return detectors.build(config.model)


@pytest.fixture(scope="module")
def detector():
  return build()


def sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def bce(x, t):
  """Binary cross-entropy of sigma(x) with a target t in [0, 1]."""
  p = sigmoid(x)
  return -t * math.log(p) - (1 - t) * math.log(1.0 - p)


def focal(x, t, alpha, gamma):
  p_t = sigmoid(x) if t else 1.0 - sigmoid(x)
  return -(alpha if t else 1.0 - alpha) * (1.0 - p_t) ** gamma * math.log(p_t)


def iou(a, b):
  w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
  return w * h / union


def slot_list(size, masks):
  """``(stride, row, col, prior)`` of every slot: strides 8, 16, 32, then rows, columns and the
  level's priors."""
  return [(s, row, col, p) for s, mask in zip(STRIDES, masks)
          for row in range(size // s) for col in range(size // s) for p in mask]


def predicted_box(t, stride, row, col, prior):
  cx, cy = (sigmoid(t[0]) + col) * stride, (sigmoid(t[1]) + row) * stride
  w, h = prior[0] * math.exp(t[2]), prior[1] * math.exp(t[3])
  return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def responsible_slots(boxes, mask, priors, masks, slots, every_truth=None):
  """slot -> truth: the best of all priors by the IoU of the shapes, in the cell of that prior's
  map holding the centre; a later truth on the same slot replaces an earlier one. Each slot's
  truths, all of them, are appended to ``every_truth[slot]`` if given."""
  owner = {}
  for m in np.flatnonzero(mask):
    x1, y1, x2, y2 = boxes[m]
    w, h = x2 - x1, y2 - y1
    shape_ious = [min(w, pw) * min(h, ph) / (w * h + pw * ph - min(w, pw) * min(h, ph))
                  for pw, ph in priors]
    best = int(np.argmax(shape_ious))
    stride = next(s for s, mask_ in zip(STRIDES, masks) if best in mask_)
    cell = (stride, int((y1 + y2) / 2 // stride), int((x1 + x2) / 2 // stride), best)
    owner[slots.index(cell)] = m
    if every_truth is not None:
      every_truth.setdefault(slots.index(cell), []).append(m)
  return owner


def reference_loss(priors, masks, outputs, boxes, labels, mask, objectness, ignore=0.5,
                   coord_loss="darknet", positive_iou=None):
  """Sec. 2.1-2.2 with float64 loops over images, slots and truths; sums / number of images.
  Coordinates: ``"darknet"``, the cross-entropy of sigma(t_x), sigma(t_y) with the offsets and
  half squared errors of t_w, t_h; ``"sse"``, half squared errors of all four. A slot's classes
  are those of every truth assigned to it. ``positive_iou``: Sec. 5's dual thresholds, an
  unassigned slot overlapping a truth by that much has objectness target 1. Returns the terms,
  the assigned slots and the ignored ones."""
  slots = slot_list(SIZE, masks)
  sums = dict(coord_loss=0.0, object_loss=0.0, noobject_loss=0.0, class_loss=0.0)
  positives = ignored = 0
  for b in range(len(boxes)):
    every_truth = {}
    owner = responsible_slots(boxes[b], mask[b], priors, masks, slots, every_truth)
    for n, (stride, row, col, p) in enumerate(slots):
      t = outputs["box_logits"][b, n]
      t_o = outputs["objectness_logits"][b, n]
      box = predicted_box(t, stride, row, col, priors[p])
      best_iou = max([iou(box, boxes[b, m]) for m in np.flatnonzero(mask[b])], default=0.0)
      if n in owner:
        positives += 1
        x1, y1, x2, y2 = boxes[b, owner[n]]
        target = [(x1 + x2) / 2 / stride - col, (y1 + y2) / 2 / stride - row,
                  math.log((x2 - x1) / priors[p][0]), math.log((y2 - y1) / priors[p][1])]
        scale = 2.0 - (x2 - x1) * (y2 - y1) / SIZE ** 2
        if coord_loss == "darknet":
          xy = bce(t[0], target[0]) + bce(t[1], target[1])
        else:
          xy = ((sigmoid(t[0]) - target[0]) ** 2 + (sigmoid(t[1]) - target[1]) ** 2) / 2
        sums["coord_loss"] += scale * (xy + ((t[2] - target[2]) ** 2 + (t[3] - target[3]) ** 2) / 2)
        sums["object_loss"] += objectness(t_o, 1)
        classes = {labels[b, m] for m in every_truth[n]}
        sums["class_loss"] += sum(bce(x, k in classes)
                                  for k, x in enumerate(outputs["class_logits"][b, n]))
      elif positive_iou and best_iou >= positive_iou:
        sums["object_loss"] += objectness(t_o, 1)
      elif best_iou > ignore:
        ignored += 1
      else:
        sums["noobject_loss"] += objectness(t_o, 0)
  return {k: v / len(boxes) for k, v in sums.items()}, positives, ignored


def random_outputs(rng, num_slots, num_classes, batch=3):
  return {"box_logits": rng.normal(0, 1, (batch, num_slots, 4)),
          "objectness_logits": rng.normal(0, 2, (batch, num_slots)),
          "class_logits": rng.normal(0, 2, (batch, num_slots, num_classes))}


@pytest.mark.parametrize("objectness, coord_loss, dual", [
    ("bce", "darknet", False), ("focal", "sse", False), ("bce", "darknet", True)])
def test_loss_matches_float64_brute_force(objectness, coord_loss, dual):
  thresholds = dict(objectness_positive_iou=0.7, ignore_threshold=0.3) if dual else {}
  det = build(objectness_loss=objectness, focal_alpha=0.3, focal_gamma=1.5, coord_loss=coord_loss,
              **thresholds)
  priors = [tuple(map(float, p)) for p in det.config.priors]
  masks = [tuple(m) for m in det.config.priors_per_level]
  rng = np.random.default_rng(0)
  boxes, labels, mask = random_batch(rng, 3, 6, SIZE)          # image 1 has no objects
  boxes = boxes.astype(np.float32).astype(np.float64)
  slots = slot_list(SIZE, masks)
  outputs = random_outputs(rng, len(slots), det.num_classes)
  # An unassigned slot predicting truth 0 of image 0 exactly (IoU 1 > 0.5): its cell, on its
  # best prior's level, but another prior of that level. Its objectness (5) is then ignored, or
  # with dual thresholds a positive.
  owner = responsible_slots(boxes[0], mask[0], priors, masks, slots)
  stride, row, col, p = slots[next(n for n, m in owner.items() if m == 0)]
  other = next(q for q in masks[STRIDES.index(stride)] if q != p)
  n = slots.index((stride, row, col, other))
  x1, y1, x2, y2 = boxes[0, 0]
  fx, fy = (x1 + x2) / 2 / stride - col, (y1 + y2) / 2 / stride - row
  outputs["box_logits"][0, n] = [math.log(fx / (1 - fx)), math.log(fy / (1 - fy)),
                                 math.log((x2 - x1) / priors[other][0]),
                                 math.log((y2 - y1) / priors[other][1])]
  outputs["objectness_logits"][0, n] = 5.0
  outputs32 = {k: v.astype(np.float32) for k, v in outputs.items()}
  batch = {"image": np.zeros((3, SIZE, SIZE, 3), np.float32), "boxes": boxes.astype(np.float32),
           "labels": labels.astype(np.int32), "mask": mask}
  total, metrics = jax.jit(det.loss)(outputs32, batch)
  objectness_fn = bce if objectness == "bce" else (lambda x, t: focal(x, t, 0.3, 1.5))
  want, positives, ignored = reference_loss(
      priors, masks, {k: v.astype(np.float64) for k, v in outputs32.items()}, boxes, labels, mask,
      objectness_fn, coord_loss=coord_loss, **(dict(ignore=0.3, positive_iou=0.7) if dual else {}))
  assert positives == 8 and int(metrics["num_positive"]) == positives
  assert dual or ignored >= 1
  for key, value in want.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, err_msg=key)
  np.testing.assert_allclose(total, sum(want.values()), rtol=1e-5)   # all weights 1
  assert all(v.dtype == jnp.float32 for v in (total, *metrics.values()))


def yolo_scene(num_classes):
  """Truths on a 64 x 64 input for the darknet comparison: several per image on every level,
  two in one cell on different priors, two of different classes on one slot (darknet keeps both
  classes, the later box), an image without objects; raw outputs of moderate size."""
  rng = np.random.default_rng(7)
  boxes = np.zeros((3, 7, 4), np.float32)
  mask = np.zeros((3, 7), bool)
  boxes[0] = [[2, 2, 12, 16], [1, 1, 11, 15], [20, 18, 44, 52], [4, 30, 40, 62],
              [50, 40, 60, 60], [21, 19, 29, 41], [0, 2, 13, 22]]
  mask[0] = True
  boxes[2, :3] = [[30, 2, 62, 30], [10, 40, 22, 52], [0, 0, 64, 64]]
  mask[2, :3] = True
  labels = np.zeros((3, 7), np.int32)
  labels[0] = [1, 4, 2, 3, 5, 6, 0]
  labels[2, :3] = [7, 8, 9]
  batch = {"image": np.zeros((3, SIZE, SIZE, 3), np.float32), "boxes": boxes, "labels": labels,
           "mask": mask}
  outputs = {"box_logits": rng.normal(0, 0.5, (3, 252, 4)).astype(np.float32),
             "objectness_logits": rng.normal(0, 1, (3, 252)).astype(np.float32),
             "class_logits": rng.normal(0, 1, (3, 252, num_classes)).astype(np.float32)}
  return batch, outputs


@pytest.mark.parametrize("coord_loss", ["darknet", "sse"])
def test_gradient_is_darknets_yolo_layer_delta(coord_loss):
  """jax.grad of every term with respect to the raw outputs equals minus the float64 port of
  darknet's yolo layer, per image; ``"sse"`` is the same with the sigmoid's derivative on the x,
  y deltas (YOLOv2's region-layer form)."""
  det = build(coord_loss=coord_loss)
  batch, outputs = yolo_scene(det.num_classes)
  grid = det.grid((SIZE, SIZE))
  slots = slot_list(SIZE, [tuple(m) for m in det.config.priors_per_level])
  every_truth = {}
  responsible_slots(batch["boxes"][0], batch["mask"][0], grid.priors.tolist(),
                    [tuple(m) for m in det.config.priors_per_level], slots, every_truth)
  shared_slot, = (n for n, truths in every_truth.items() if len(truths) > 1)
  assert sum(slots[n][:3] == slots[shared_slot][:3] for n in every_truth) == 2   # + a prior
  truths = darknet_reference.normalised_truths(batch["boxes"], batch["labels"], batch["mask"],
                                               (SIZE, SIZE))
  delta = darknet_reference.yolo_layer_delta(
      {k: v.astype(np.float64) for k, v in outputs.items()}, (SIZE, SIZE),
      [(SIZE // s, SIZE // s) for s in STRIDES], grid.priors.astype(np.float64),
      [tuple(m) for m in det.config.priors_per_level], truths,
      ignore_thresh=det.config.loss.ignore_threshold,
      logistic_gradient_xy=coord_loss == "sse")
  assert np.count_nonzero(delta.terms["objectness_logits"] == "") >= 1     # an ignored slot
  terms = ("coord_loss", "object_loss", "noobject_loss", "class_loss")
  grads = darknet_reference.term_gradients(det.loss, outputs, batch, terms)
  darknet_reference.assert_gradients_are_deltas(grads, delta.of_terms(terms))


def test_loss_weights_are_applied():
  rng = np.random.default_rng(1)
  boxes, labels, mask = random_batch(rng, 3, 6, SIZE)
  batch = {"image": np.zeros((3, SIZE, SIZE, 3), np.float32), "boxes": boxes.astype(np.float32),
           "labels": labels.astype(np.int32), "mask": mask}
  outputs = random_outputs(rng, 252, 10)
  _, plain = jax.jit(build().loss)(outputs, batch)
  weights = dict(coord_weight=2.0, object_weight=3.0, noobject_weight=0.5, class_weight=0.25)
  total, _ = jax.jit(build(**weights).loss)(outputs, batch)
  want = sum(w * plain[k.replace("weight", "loss")] for k, w in weights.items())
  np.testing.assert_allclose(total, want, rtol=1e-6)


def test_no_objects_gives_finite_gradients_and_only_the_noobject_term(detector):
  batch = {"image": np.zeros((2, SIZE, SIZE, 3), np.float32),
           "boxes": np.zeros((2, 4, 4), np.float32), "labels": np.zeros((2, 4), np.int32),
           "mask": np.zeros((2, 4), bool)}
  outputs = {"box_logits": jnp.ones((2, 252, 4)), "objectness_logits": jnp.zeros((2, 252)),
             "class_logits": jnp.ones((2, 252, 10))}
  total, metrics = jax.jit(detector.loss)(outputs, batch)
  np.testing.assert_allclose(total, 252 * math.log(2.0), rtol=1e-6)  # per image: N log 2
  assert float(metrics["coord_loss"] + metrics["object_loss"] + metrics["class_loss"]) == 0.0
  grads = jax.jit(jax.grad(lambda o: detector.loss(o, batch)[0]))(outputs)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_decode_hand_built_outputs(detector):
  masks = [tuple(m) for m in detector.config.priors_per_level]
  slots = slot_list(SIZE, masks)
  n = slots.index((16, 2, 1, 4))               # stride 16, row 2, column 1, prior 4
  outputs = {"box_logits": np.zeros((1, len(slots), 4), np.float32),
             "objectness_logits": np.full((1, len(slots)), -20.0, np.float32),
             "class_logits": np.full((1, len(slots), 10), -20.0, np.float32)}
  outputs["box_logits"][0, n] = [0.5, -0.5, 0.2, -0.1]
  outputs["objectness_logits"][0, n] = 2.0
  outputs["class_logits"][0, n, 3] = 3.0
  dets = jax.jit(detector.decode, static_argnums=1)(outputs, (SIZE, SIZE))
  assert int(np.sum(dets.valid)) == 1
  pw, ph = detector.config.priors[4]
  cx, cy = (sigmoid(0.5) + 1) * 16, (sigmoid(-0.5) + 2) * 16
  w, h = pw * math.exp(0.2), ph * math.exp(-0.1)
  np.testing.assert_allclose(dets.boxes[0, 0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
                             rtol=1e-5)
  assert int(dets.classes[0, 0]) == 3
  np.testing.assert_allclose(dets.scores[0, 0], sigmoid(2.0) * sigmoid(3.0), rtol=1e-5)


def conv_bn(k, cin, cout):
  return k * k * cin * cout + 2 * cout         # weights + batch-norm scale and shift


def test_yolov3_416_parameter_count_by_hand():
  """cfg/yolov3.cfg with 80 classes: 61,949,149 parameters (the 61.9M usually quoted)."""
  total, channels = conv_bn(3, 3, 32), 32                     # Darknet-53 without classifier
  for width, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
    total += conv_bn(3, channels, width) + blocks * (conv_bn(1, width, width // 2)
                                                     + conv_bn(3, width // 2, width))
    channels = width
  outputs = 3 * (5 + 80)
  for cin, width in ((1024, 512), (256 + 512, 256), (128 + 256, 128)):
    total += conv_bn(1, cin, width) + 2 * (conv_bn(3, width, 2 * width)
                                           + conv_bn(1, 2 * width, width))
    total += conv_bn(3, width, 2 * width) + 2 * width * outputs + outputs   # linear 1x1 + bias
  total += conv_bn(1, 512, 256) + conv_bn(1, 256, 128)        # the two routes before upsampling
  assert total == 61_949_149
  det = detectors.build(experiment.get_config("yolov3_416_coco").model)
  shapes = jax.eval_shape(lambda: det.init(jax.random.PRNGKey(0), (416, 416)))
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == total


@pytest.mark.parametrize("size,slots", [(416, 10647), (320, 6300), (608, 22743)])
def test_output_shapes_and_slots_of_the_paper_sizes(size, slots):
  det = detectors.build(experiment.get_config(f"yolov3_{size}_coco").model)
  assert slots == 3 * sum((size // s) ** 2 for s in STRIDES)
  shapes = jax.eval_shape(lambda: det.init(jax.random.PRNGKey(0), (size, size)))
  outputs = jax.eval_shape(lambda v: det.apply(v, jnp.zeros((1, size, size, 3)))[0], shapes)
  assert outputs["box_logits"].shape == (1, slots, 4)
  assert outputs["objectness_logits"].shape == (1, slots)
  assert outputs["class_logits"].shape == (1, slots, 80)
  grid = det.grid((size, size))
  assert grid.num_anchors == slots
  # The smallest priors on the stride-8 map, the largest on the stride-32 map, in input pixels.
  np.testing.assert_array_equal(grid.prior_wh[:3], [[10, 13], [16, 30], [33, 23]])
  np.testing.assert_array_equal(grid.prior_wh[-3:], [[116, 90], [156, 198], [373, 326]])


def test_image_size_must_be_a_multiple_of_32(detector):
  with pytest.raises(ValueError, match="multiple of 32"):
    detector.grid((100, 96))


def test_outputs_are_in_slot_order(detector):
  """Zero weights and a bias per (level, prior) in the prediction convs: the outputs read back
  level-major (stride 8 first), then cell, then prior, with channels (t_x, t_y, t_w, t_h, t_o,
  classes) per prior as darknet's yolo layer."""
  shapes = jax.eval_shape(lambda: detector.init(jax.random.PRNGKey(0), (SIZE, SIZE)))
  params = jax.tree.map(lambda x: jnp.zeros(x.shape), shapes["params"])
  stats = jax.tree.map(lambda x: jnp.ones(x.shape), shapes["batch_stats"])
  for level, stride in enumerate(STRIDES):
    params[f"head{stride}"]["predict"]["bias"] = jnp.concatenate(
        [jnp.array([0.0, 1.0, 2.0, 3.0, 10.0 * (level + 1) + a, *range(100, 110)])
         for a in range(3)])
  outputs = jax.jit(detector.model.apply)({"params": params, "batch_stats": stats},
                                          jnp.zeros((2, SIZE, SIZE, 3)))
  assert all(v.dtype == jnp.float32 for v in outputs.values())
  want = np.concatenate([np.tile(10.0 * (level + 1) + np.arange(3), (SIZE // s) ** 2)
                         for level, s in enumerate(STRIDES)])
  np.testing.assert_array_equal(outputs["objectness_logits"][1], want)
  np.testing.assert_array_equal(outputs["box_logits"][1], np.tile([0.0, 1, 2, 3], (252, 1)))
  np.testing.assert_array_equal(outputs["class_logits"][1],
                                np.tile(np.arange(100.0, 110), (252, 1)))


def test_tiny_test_trains_two_steps_and_evaluates(scenes_dir, tmp_path):
  config = tiny_config(scenes_dir, experiment, total_steps=2, checkpoint_every=2)
  results = loop.train_and_evaluate(config, str(tmp_path / "yolo_v3"))   # a NaN loss raises
  assert results and all(np.isfinite(v) for v in results.values())
