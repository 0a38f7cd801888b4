"""YOLOv1 family: the loss (half of Eq. 3) against a float64 brute force over images, cells and
boxes, its gradient against darknet's detection-layer deltas; the same-cell rule; decoding by
hand; a short training run."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import yolo_v1 as experiment
from jaxdet import detectors
from jaxdet.detectors import yolo_v1
from jaxdet.train import loop
from tests.detectors import darknet_reference
from tests.ops.test_boxes import brute_force_iou
from tests.train.helpers import tiny_config

SIZE = (48, 64)                       # (height, width): a non-square input
S, NB, K = 4, 2, 3


@pytest.fixture(scope="module")
def detector():
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.num_classes = K
  return detectors.build(config)


def with_loss_option(detector, confidence_per_cell):
  config = detector.config.copy_and_resolve_references()
  config.loss.confidence_per_cell = confidence_per_cell
  return yolo_v1.YOLOv1(config)


def reference_loss(grid, boxes, labels, mask, per_cell, lambda_coord=5.0, lambda_noobj=0.5):
  """Eq. 3 with float64 loops. Returns the four terms (divided by the number of images), the
  responsible boxes, the slot each cell took, and how often the IoU choice and the nearest-box
  fallback decided."""
  height, width = SIZE
  batch = len(grid)
  terms = dict(coord_loss=0.0, object_loss=0.0, noobject_loss=0.0, class_loss=0.0)
  positives, owners, decided = 0, {}, {"iou": 0, "nearest": 0}
  for b in range(batch):
    for m in np.flatnonzero(mask[b]):                 # the cell of each truth's centre
      x1, y1, x2, y2 = boxes[b, m]
      col = min(max(math.floor((x1 + x2) / 2 / width * S), 0), S - 1)
      row = min(max(math.floor((y1 + y2) / 2 / height * S), 0), S - 1)
      area = (x2 - x1) * (y2 - y1)
      other = owners.get((b, row, col))
      if other is None or area > (boxes[b, other, 2] - boxes[b, other, 0]) * (
          boxes[b, other, 3] - boxes[b, other, 1]):   # larger wins; equal: the earlier slot
        owners[b, row, col] = m
    for row in range(S):
      for col in range(S):
        cell = grid[b, row, col]
        preds = []
        for j in range(NB):
          x, y, sqrt_w, sqrt_h = cell[5 * j:5 * j + 4]
          cx, cy, w, h = (col + x) / S, (row + y) / S, sqrt_w ** 2, sqrt_h ** 2
          preds.append((cx, cy, w, h))
        confidences = [cell[5 * j + 4] for j in range(NB)]
        m = owners.get((b, row, col))
        if m is None:
          terms["noobject_loss"] += lambda_noobj * sum(c * c for c in confidences)
          continue
        x1, y1, x2, y2 = boxes[b, m]
        truth = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                 (y2 - y1) / height)
        ious = [brute_force_iou(np.array([[(cx - w / 2) * width, (cy - h / 2) * height,
                                           (cx + w / 2) * width, (cy + h / 2) * height]]),
                                boxes[b, m][None])[0, 0] for cx, cy, w, h in preds]
        if max(ious) > 0:
          r = int(np.argmax(ious))
          decided["iou"] += 1
        else:
          r = int(np.argmin([sum((p - t) ** 2 for p, t in zip(pred, truth)) for pred in preds]))
          decided["nearest"] += 1
        x, y, sqrt_w, sqrt_h = cell[5 * r:5 * r + 4]
        terms["coord_loss"] += lambda_coord * (
            (x - (truth[0] * S - col)) ** 2 + (y - (truth[1] * S - row)) ** 2
            + (sqrt_w - math.sqrt(truth[2])) ** 2 + (sqrt_h - math.sqrt(truth[3])) ** 2)
        terms["object_loss"] += (confidences[r] - ious[r]) ** 2
        if not per_cell:
          terms["noobject_loss"] += lambda_noobj * sum(
              confidences[j] ** 2 for j in range(NB) if j != r)
        terms["class_loss"] += sum((cell[5 * NB + k] - (k == labels[b, m])) ** 2
                                   for k in range(K))
        positives += 1
  return {k: v / batch for k, v in terms.items()}, positives, owners, decided


def scene(rng):
  """Three images, M = 7: image 0 with a padded slot between its boxes, two truths in one cell
  (the later, larger one wins) and two of equal area in another (the earlier wins); image 1 with
  no boxes; image 2 with random boxes, one touching the right and bottom edges."""
  boxes = np.zeros((3, 7, 4), np.float32)
  mask = np.zeros((3, 7), bool)
  labels = rng.integers(0, K, (3, 7)).astype(np.int32)
  # Cells are 16 px wide, 12 px high. Cell (row 1, col 1): centres (20, 16) and (22, 17).
  boxes[0, 0] = [16, 12, 24, 20]          # area 64
  boxes[0, 2] = [6, 3, 38, 31]            # area 896: wins cell (1, 1) from the earlier slot
  boxes[0, 3] = [36, 26, 44, 34]          # cell (2, 2), area 64
  boxes[0, 4] = [40, 28, 48, 36]          # cell (2, 2), area 64: slot 3 keeps the cell
  boxes[0, 5] = [50, 2, 63, 9]
  mask[0, [0, 2, 3, 4, 5]] = True         # slot 1 is padding between real boxes
  xy = rng.uniform(0, [56, 40], (5, 2))
  boxes[2, :5] = np.concatenate([xy, np.minimum(xy + rng.uniform(3, 40, (5, 2)), [64, 48])], 1)
  boxes[2, 4] = [30, 20, 64, 48]
  mask[2, :5] = True
  labels[~mask] = 0
  return boxes, labels, mask


def random_grid(rng, batch=3):
  grid = np.zeros((batch, S, S, 5 * NB + K), np.float32)
  for j in range(NB):
    grid[..., 5 * j:5 * j + 2] = rng.uniform(-0.2, 1.2, (batch, S, S, 2))     # x, y
    grid[..., 5 * j + 2:5 * j + 4] = rng.uniform(0.05, 0.6, (batch, S, S, 2))  # sqrt w, h
    grid[..., 5 * j + 4] = rng.normal(0.3, 0.5, (batch, S, S))                 # C
  grid[..., 5 * NB:] = rng.uniform(-0.2, 1.0, (batch, S, S, K))
  return grid


def as_batch(boxes, labels, mask):
  return {"image": np.zeros((len(boxes), *SIZE, 3), np.float32), "boxes": boxes,
          "labels": labels, "mask": mask}


@pytest.mark.parametrize("per_cell", [False, True])
def test_loss_matches_float64_brute_force(detector, per_cell):
  rng = np.random.default_rng(0)
  boxes, labels, mask = scene(rng)
  grid = random_grid(rng)
  det = with_loss_option(detector, per_cell)
  total, metrics = jax.jit(det.loss)({"grid": grid}, as_batch(boxes, labels, mask))
  want, positives, owners, decided = reference_loss(grid.astype(np.float64),
                                                    boxes.astype(np.float64), labels, mask,
                                                    per_cell)
  assert owners[0, 1, 1] == 2 and owners[0, 2, 2] == 3          # the documented same-cell rule
  assert not any(b == 1 for b, _, _ in owners)                  # image 1: no objects
  assert decided["iou"] > 0 and decided["nearest"] > 0          # both choices exercised
  assert float(metrics["num_positive"]) == positives == len(owners)
  for key, value in want.items():                  # half of Eq. 3 (darknet's gradient)
    np.testing.assert_allclose(metrics[key], value / 2, rtol=1e-5, err_msg=key)
  np.testing.assert_allclose(total, sum(want.values()) / 2, rtol=1e-5)


def test_gradient_is_darknets_detection_layer_delta(detector):
  """jax.grad of every term with respect to the raw outputs equals minus darknet's delta
  (src/detection_layer.c, ported in float64), per image, with lambda 5 / 0.5 as yolov1.cfg."""
  rng = np.random.default_rng(3)
  boxes, labels, mask = scene(rng)
  boxes[0, 4], mask[0, 0] = 0, False      # one truth per cell: darknet's loader keeps one
  mask[0, 4] = False
  grid = random_grid(rng)
  batch = as_batch(boxes, labels, mask)
  owners = {}
  for b, m in zip(*np.nonzero(mask)):
    x1, y1, x2, y2 = boxes[b, m].astype(np.float64)
    col, row = int((x1 + x2) / 2 / SIZE[1] * S), int((y1 + y2) / 2 / SIZE[0] * S)
    owners[b, row, col] = ((x1 + x2) / 2 / SIZE[1] * S - col, (y1 + y2) / 2 / SIZE[0] * S - row,
                           (x2 - x1) / SIZE[1], (y2 - y1) / SIZE[0], labels[b, m])
  delta = darknet_reference.detection_layer_delta(grid.astype(np.float64), owners, NB, K,
                                                  coord_scale=5.0, noobject_scale=0.5)
  grads = darknet_reference.term_gradients(detector.loss, {"grid": grid}, batch, tuple(delta))
  darknet_reference.assert_gradients_are_deltas(grads, delta)


def test_same_cell_rule_ignores_slot_order():
  boxes = np.zeros((1, 4, 4), np.float32)
  boxes[0, 0] = [16, 12, 24, 20]          # centre in cell (1, 1), small
  boxes[0, 1] = [6, 3, 38, 31]            # centre in cell (1, 1), large
  mask = np.array([[True, True, False, False]])
  assign = jax.jit(yolo_v1.assign_cells, static_argnums=(2, 3))
  for order in ([0, 1, 2, 3], [1, 0, 2, 3], [2, 1, 3, 0]):
    has_object, slot = assign(boxes[:, order], mask[:, order], SIZE, S)
    assert int(np.sum(has_object)) == 1 and bool(has_object[0, 1, 1])
    assert order[int(slot[0, 1, 1])] == 1                      # the larger box, wherever it is
  equal = np.float32([[[16, 12, 24, 20], [18, 14, 26, 22]]])    # same area, same cell
  _, slot = assign(equal, np.ones((1, 2), bool), SIZE, S)
  assert int(slot[0, 1, 1]) == 0                                # tie: the lower slot


def test_loss_is_independent_of_padding_order_and_budget(detector):
  rng = np.random.default_rng(1)
  boxes, labels, mask = scene(rng)
  grid = {"grid": random_grid(rng)}
  loss = jax.jit(detector.loss)
  total, metrics = loss(grid, as_batch(boxes, labels, mask))
  order = rng.permutation(7)
  pad = lambda a: np.concatenate([a[:, order], np.zeros((3, 5, *a.shape[2:]), a.dtype)], 1)  # noqa: E731
  total2, metrics2 = loss(grid, as_batch(pad(boxes), pad(labels), pad(mask)))
  np.testing.assert_allclose(total2, total, rtol=1e-6)
  for key in metrics:
    np.testing.assert_allclose(metrics2[key], metrics[key], rtol=1e-6)


def test_gradients_finite_and_iou_target_stopped(detector):
  rng = np.random.default_rng(2)
  grad = jax.jit(jax.value_and_grad(lambda g, batch: detector.loss({"grid": g}, batch)[0]))
  empty = as_batch(np.zeros((2, 3, 4), np.float32), np.zeros((2, 3), np.int32),
                   np.zeros((2, 3), bool))
  for grid in (jnp.zeros((2, S, S, 5 * NB + K)), jnp.asarray(random_grid(rng, 2))):
    value, grads = grad(grid, empty)
    assert np.isfinite(value) and np.all(np.isfinite(grads))
  # Degenerate (all-zero) predictions against real boxes: IoU 0 everywhere, gradients finite.
  boxes, labels, mask = scene(rng)
  _, grads = grad(jnp.zeros((3, S, S, 5 * NB + K)), as_batch(boxes, labels, mask))
  assert np.all(np.isfinite(grads))
  # The confidence target IoU(pred, truth) is stop-gradient: the gradient on the responsible
  # box's x is that of lambda_coord (x - x^)^2 / 2 alone, divided by the 3 images.
  grid = random_grid(rng)
  one = np.zeros((1, 7, 4), np.float32)
  one[0, 0] = [22, 14, 40, 30]            # centre (31, 22): cell (1, 1), offsets (0.9375, 0.8333)
  batch = as_batch(np.repeat(one, 3, 0), np.zeros((3, 7), np.int32),
                   np.repeat(np.arange(7)[None] == 0, 3, 0))
  grid[:, 1, 1, 0:4] = [0.5, 0.5, 0.5, 0.6]            # box 0 overlaps the truth, box 1 not
  grid[:, 1, 1, 5:9] = [0.0, 0.0, 0.05, 0.05]
  grads = np.asarray(grad(jnp.asarray(grid), batch)[1])
  np.testing.assert_allclose(grads[:, 1, 1, 0], 5.0 * (0.5 - 31 / 16 + 1) / 3, rtol=1e-5)
  np.testing.assert_allclose(grads[:, 1, 1, 1], 5.0 * (0.5 - 22 / 12 + 1) / 3, rtol=1e-5)
  np.testing.assert_allclose(grads[:, 1, 1, 5:9], 0.0)    # box 1 not responsible: C only
  np.testing.assert_allclose(grads[:, 1, 1, 9], 0.5 * grid[:, 1, 1, 9] / 3, rtol=1e-5)


def test_decode_hand_built_outputs(detector):
  grid = np.zeros((1, S, S, 5 * NB + K), np.float32)
  # Cell (row 1, col 2) of the 48x64 input (cells 16 x 12 px): box 1 centred at
  # ((2 + 0.5) / 4 * 64, (1 + 0.25) / 4 * 48) = (40, 15), w = 0.25 * 64 = 16, h = 0.5 * 48 = 24.
  grid[0, 1, 2, 5:10] = [0.5, 0.25, 0.5, math.sqrt(0.5), 0.8]
  grid[0, 1, 2, 0:5] = [0.52, 0.25, 0.5, math.sqrt(0.5), 0.5]  # nearly the same box, lower C
  grid[0, 1, 2, 10:13] = [0.0, 0.9, 0.5]                       # Pr(class | object)
  decode = jax.jit(detector.decode, static_argnums=1)
  dets = decode({"grid": grid}, SIZE)
  assert int(np.sum(dets.valid)) == 2     # box 0 suppressed in both classes (NMS per class)
  for index, (score, cls) in enumerate([(0.8 * 0.9, 1), (0.8 * 0.5, 2)]):
    np.testing.assert_allclose(dets.boxes[0, index], [32, 3, 48, 27], rtol=1e-5)
    np.testing.assert_allclose(dets.scores[0, index], score, rtol=1e-6)
    assert int(dets.classes[0, index]) == cls
  # A box past the image is clipped to it.
  grid[0, 3, 3, 5:10] = [0.9, 0.9, 0.5, 0.5, 1.0]              # centre (62.4, 46.8), 16 x 12
  grid[0, 3, 3, 10:13] = [1.0, 0.0, 0.0]
  dets = decode({"grid": grid}, SIZE)
  np.testing.assert_allclose(dets.boxes[0, 0], [54.4, 40.8, 64, 48], rtol=1e-5)
  assert int(dets.classes[0, 0]) == 0 and float(dets.scores[0, 0]) == 1.0


def test_two_training_steps_and_evaluation(scenes_dir, tmp_path):
  config = tiny_config(scenes_dir, experiment, total_steps=2, checkpoint_every=2, log_every=1)
  assert config.data.augment.name == "yolo"
  results = loop.train_and_evaluate(config, str(tmp_path))      # raises on a non-finite loss
  assert results and all(np.isfinite(v) for v in results.values())


def test_paper_recipe():
  """Sec. 2.2: 135 epochs of VOC07+12 trainval (5,011 + 11,540 images) at batch 64, rate 1e-2
  (the loss's gradient is darknet's) after a warmup from 1e-3, divided by 10 after epochs 75
  and 105; 448x448, S = 7, B = 2, dropout 0.5, lambdas 5 and 0.5."""
  c = experiment.get_config("yolo_v1_voc")
  epoch = (5011 + 11540) / 64
  assert c.train.batch_size == 64 and c.train.total_steps == round(135 * epoch) == 34912
  s = c.train.schedule
  assert s.name == "step" and s.base_lr == 1e-2 and s.base_lr * s.warmup_factor == 1e-3
  assert tuple(s.decay_steps) == (round(75 * epoch), round(105 * epoch)) and s.decay_factor == 0.1
  assert c.train.optimizer.momentum == 0.9 and c.train.optimizer.weight_decay == 5e-4
  assert tuple(c.data.image_size) == (448, 448) and not c.data.keep_aspect_ratio
  assert c.data.augment.to_dict() == dict(name="yolo", jitter=0.2, saturation=1.5,
                                         exposure=1.5, hue=0.0)
  m = c.model
  assert (m.grid_size, m.boxes_per_cell, m.num_classes, m.net.dropout_rate) == (7, 2, 20, 0.5)
  assert (m.loss.lambda_coord, m.loss.lambda_noobj) == (5.0, 0.5)
  assert c.eval.metrics == ("voc07",)
  fast = experiment.get_config("fast_yolo_voc").model.net
  assert sum(len(stage) for stage in fast.stages) == 9
  assert sum(len(stage) for stage in m.net.stages) == 24
  with pytest.raises(ValueError, match="unknown YOLOv1 variant"):
    experiment.get_config("yolo_v9")
