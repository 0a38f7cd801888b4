"""YOLOv2 family: region loss against a float64 brute force and its gradient against darknet's
region-layer deltas, passthrough, decoding by hand, the paper network's size."""
import json
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import yolo_v2 as experiment
from jaxdet import detectors
from jaxdet.detectors import yolo_slots
from jaxdet.detectors import yolo_v2
from tests.ops.test_boxes import brute_force_iou
from jaxdet.train import loop
from jaxdet.train import state as state_lib
from tests.detectors import darknet_reference
from tests.train.helpers import random_batch
from tests.train.helpers import tiny_config


@pytest.fixture(scope="module")
def detector():
  return detectors.build(experiment.get_config("tiny_test").model)


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def softmax_cross_entropy(logits, label):
  return -(logits[label] - np.log(np.sum(np.exp(logits))))


# How (t_x, t_y) place a slot's centre, by the formulas of YOLOv2 Sec. 2 ("logistic"), YOLOv3
# Sec. 5 ("linear") and the RPN offsets YOLOv2 replaced ("anchor_offset": a multiple of the
# prior's size from the cell's centre): the regressed pair, and the centre in pixels.
def xy_prediction(t, location):
  return (sigmoid(t[0]), sigmoid(t[1])) if location == "logistic" else (t[0], t[1])


def predicted_centre(t, c, r, pw, ph, location):
  if location == "anchor_offset":
    return (c + 0.5) * 32 + t[0] * pw, (r + 0.5) * 32 + t[1] * ph
  x, y = xy_prediction(t, location)
  return (x + c) * 32, (y + r) * 32


def centre_target(g, c, r, pw, ph, location):
  gx, gy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
  if location == "anchor_offset":
    return (gx - (c + 0.5) * 32) / pw, (gy - (r + 0.5) * 32) / ph
  return gx / 32 - c, gy / 32 - r


def reference_loss(priors, image_size, box_logits, obj_logits, class_logits, boxes, labels, mask,
                   cfg, class_term=softmax_cross_entropy, location="logistic"):
  """The region loss of yolo_v2's docstring (halved squared errors) with float64 loops over
  images, truths, cells and priors; returns (terms summed over the batch / B, positives,
  ignored slots). ``class_term(logits, label)`` is a positive's class loss (YOLO9000 swaps in
  its tree's); ``location`` how (t_x, t_y) place the centre (:func:`predicted_centre`)."""
  height, width = image_size
  rows, cols = height // 32, width // 32
  terms = dict(coord_loss=0.0, object_loss=0.0, noobject_loss=0.0, class_loss=0.0)
  positives = ignored = 0
  for b in range(len(boxes)):
    owner = {}
    for m in np.flatnonzero(mask[b]):                    # in order: a later truth overwrites
      x1, y1, x2, y2 = boxes[b, m]
      w, h = x2 - x1, y2 - y1
      ious = [min(w, pw) * min(h, ph) / (w * h + pw * ph - min(w, pw) * min(h, ph))
              for pw, ph in priors]
      cell = (min(int((y1 + y2) / 2 // 32), rows - 1), min(int((x1 + x2) / 2 // 32), cols - 1))
      owner[cell + (int(np.argmax(ious)),)] = m
    truths = boxes[b, mask[b]]
    for r in range(rows):
      for c in range(cols):
        for a, (pw, ph) in enumerate(priors):
          n = (r * cols + c) * len(priors) + a
          t = box_logits[b, n]
          cx, cy = predicted_centre(t, c, r, pw, ph, location)
          w, h = pw * np.exp(t[2]), ph * np.exp(t[3])
          predicted = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
          ious = brute_force_iou(predicted, truths)[0] if len(truths) else np.zeros(0)
          objectness = sigmoid(obj_logits[b, n])
          if (r, c, a) in owner:
            m = owner[(r, c, a)]
            g = boxes[b, m]
            gw, gh = g[2] - g[0], g[3] - g[1]
            target = [*centre_target(g, c, r, pw, ph, location), math.log(gw / pw),
                      math.log(gh / ph)]
            prediction = [*xy_prediction(t, location), t[2], t[3]]
            size_weight = 2 - gw * gh / (height * width) if cfg.coord_area_weight else 1
            terms["coord_loss"] += cfg.coord_weight * size_weight * sum(
                (p - q) ** 2 for p, q in zip(prediction, target)) / 2
            truth_iou = brute_force_iou(predicted, g[None])[0, 0]
            terms["object_loss"] += cfg.object_weight * (objectness - truth_iou) ** 2 / 2
            terms["class_loss"] += cfg.class_weight * class_term(class_logits[b, n], labels[b, m])
            positives += 1
          elif ious.max(initial=0.0) <= cfg.ignore_threshold:
            terms["noobject_loss"] += cfg.noobject_weight * objectness ** 2 / 2
          else:
            ignored += 1
  return {k: v / len(boxes) for k, v in terms.items()}, positives, ignored


def with_options(detector, location="logistic", **loss_options):
  config = detector.config.copy_and_resolve_references()
  config.loss.update(loss_options)
  config.location = location
  return type(detector)(config)


@pytest.mark.parametrize("area_weighted, location", [
    (False, "logistic"), (True, "logistic"), (False, "anchor_offset"), (True, "linear")])
def test_loss_matches_float64_brute_force(detector, area_weighted, location):
  detector = with_options(detector, location, coord_area_weight=area_weighted)
  cfg = detector.config
  size = (96, 64)                                          # 3 x 2 cells
  batch = random_batch(4, max_boxes=8, num_classes=cfg.num_classes, seed=1)
  batch["image"] = np.zeros((4, *size, 3), np.float32)
  batch["mask"][2] = False                                 # an image without objects
  batch["mask"][3] = np.arange(8) < 2                      # two truths on one slot: 1 wins
  batch["boxes"][3, :2] = [[4, 4, 20, 24], [6, 5, 22, 26]]
  batch["boxes"] = np.where(batch["mask"][..., None], batch["boxes"], 0).astype(np.float32)
  grid = detector.grid(size)
  rng = np.random.default_rng(0)
  n, k = grid.num_anchors, cfg.num_classes
  outputs = {"box_logits": rng.normal(0, 1, (4, n, 4)).astype(np.float32),
             "objectness_logits": rng.normal(0, 2, (4, n)).astype(np.float32),
             "class_logits": rng.normal(0, 2, (4, n, k)).astype(np.float32)}
  # Slot 1 (cell (0, 0), prior 1) predicts image 3's first truth exactly without being its
  # slot: its best IoU is 1 > 0.6, so it is ignored.
  pw, ph = grid.prior_wh[1]
  exact_centre = {"logistic": [math.log(12 / 20), math.log(14 / 18)],   # sigma^-1(12/32, 14/32)
                  "linear": [12 / 32, 14 / 32], "anchor_offset": [(12 - 16) / pw, (14 - 16) / ph]}
  outputs["box_logits"][3, 1] = [*exact_centre[location], math.log(16 / pw), math.log(20 / ph)]
  total, metrics = jax.jit(detector.loss)(outputs, batch)
  want, positives, ignored = reference_loss(
      grid.priors.astype(np.float64), size,
      *(outputs[key].astype(np.float64) for key in ("box_logits", "objectness_logits",
                                                     "class_logits")),
      batch["boxes"].astype(np.float64), batch["labels"], batch["mask"], cfg.loss,
      location=location)
  assert ignored >= 1 and metrics["num_positive"] == positives
  for name, value in want.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(total, sum(want.values()), rtol=1e-5)


def region_scene(num_classes):
  """Raw outputs of moderate size (darknet's deltas are compared to 1e-6 of each term's
  largest) and truths on a 96 x 64 input (3 x 2 cells): several per image, two in one cell on
  different priors, two on one slot (the later wins), an image without objects, a slot whose
  prediction covers a truth it is not assigned (ignored by the 0.6 threshold)."""
  rng = np.random.default_rng(5)
  boxes = np.zeros((3, 6, 4), np.float32)
  mask = np.zeros((3, 6), bool)
  boxes[0, :5] = [[4, 4, 20, 24], [6, 5, 22, 26], [2, 8, 60, 30], [40, 40, 60, 90],
                  [33, 70, 47, 80]]
  mask[0, :5] = True
  boxes[2, :3] = [[10, 50, 30, 70], [5, 45, 55, 95], [36, 2, 62, 28]]
  mask[2, :3] = True
  labels = np.where(mask, rng.integers(0, num_classes, mask.shape), 0).astype(np.int32)
  batch = {"image": np.zeros((3, 96, 64, 3), np.float32), "boxes": boxes, "labels": labels,
           "mask": mask}
  return batch, rng


def test_gradient_is_darknets_region_layer_delta(detector):
  """jax.grad of every term with respect to the raw outputs equals minus the float64 port of
  darknet's region layer (forward + GPU backward), per image, for both coordinate weightings."""
  for area_weighted in (False, True):
    det = with_options(detector, coord_area_weight=area_weighted)
    batch, rng = region_scene(det.num_classes)
    grid = det.grid((96, 64))
    n = grid.num_anchors
    outputs = {"box_logits": rng.normal(0, 0.5, (3, n, 4)).astype(np.float32),
               "objectness_logits": rng.normal(0, 1, (3, n)).astype(np.float32),
               "class_logits": rng.normal(0, 1, (3, n, det.num_classes)).astype(np.float32)}
    # Slot 1 of image 0 predicts truth 0 exactly without being its slot: ignored.
    pw, ph = grid.prior_wh[1]
    outputs["box_logits"][0, 1] = [math.log(12 / 20), math.log(14 / 18), math.log(16 / pw),
                                   math.log(20 / ph)]
    truths = darknet_reference.normalised_truths(batch["boxes"], batch["labels"], batch["mask"],
                                                 (96, 64))
    delta = darknet_reference.region_layer_delta(
        {k: v.astype(np.float64) for k, v in outputs.items()}, (3, 2),
        grid.priors.astype(np.float64) / 32, truths, area_weighted=area_weighted)
    assert np.count_nonzero(delta.terms["objectness_logits"] == "") >= 1     # an ignored slot
    terms = ("coord_loss", "object_loss", "noobject_loss", "class_loss")
    grads = darknet_reference.term_gradients(det.loss, outputs, batch, terms)
    darknet_reference.assert_gradients_are_deltas(grads, delta.of_terms(terms))


def test_two_truths_on_one_slot_keep_the_later(detector):
  batch = {"image": np.zeros((1, 64, 64, 3), np.float32),
           "boxes": np.array([[[4, 4, 20, 24], [6, 5, 22, 26]]], np.float32),
           "labels": np.array([[1, 2]], np.int32), "mask": np.array([[True, True]])}
  grid = detector.grid((64, 64))
  outputs = {"box_logits": jnp.zeros((1, grid.num_anchors, 4)),
             "objectness_logits": jnp.zeros((1, grid.num_anchors)),
             "class_logits": jnp.zeros((1, grid.num_anchors, detector.num_classes))}
  targets = yolo_slots.slot_targets(grid, outputs["box_logits"], batch)
  assert int(targets.positive.sum()) == 1 and int(targets.labels[targets.positive][0]) == 2


def test_loss_without_objects_has_finite_gradients(detector):
  grid = detector.grid((64, 64))
  batch = {"image": np.zeros((2, 64, 64, 3), np.float32), "boxes": np.zeros((2, 4, 4), np.float32),
           "labels": np.zeros((2, 4), np.int32), "mask": np.zeros((2, 4), bool)}
  outputs = {"box_logits": jnp.zeros((2, grid.num_anchors, 4)),
             "objectness_logits": jnp.zeros((2, grid.num_anchors)),
             "class_logits": jnp.zeros((2, grid.num_anchors, detector.num_classes))}
  total, metrics = detector.loss(outputs, batch)
  # Only the no-object term: sigma(0)^2 / 2 = 1/8 at every slot of an image.
  np.testing.assert_allclose(total, 0.125 * grid.num_anchors, rtol=1e-6)
  assert float(metrics["num_positive"]) == 0
  grads = jax.grad(lambda o: detector.loss(o, batch)[0])(outputs)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_space_to_depth_against_a_loop():
  x = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype(np.float32)
  y = np.asarray(yolo_v2.space_to_depth(jnp.asarray(x)))
  assert y.shape == (2, 2, 3, 12)
  for i in range(2):
    for j in range(3):
      for di in range(2):
        for dj in range(2):
          np.testing.assert_array_equal(y[:, i, j, (di * 2 + dj) * 3:(di * 2 + dj + 1) * 3],
                                        x[:, 2 * i + di, 2 * j + dj])


def test_decode_hand_built_outputs(detector):
  grid = detector.grid((64, 64))                           # 2 x 2 cells, 3 priors
  n, k = grid.num_anchors, detector.num_classes
  class_logits = np.zeros((1, n, k), np.float32)
  class_logits[0, 8, 4] = 10.0                             # cell (1, 0), prior 2: class 4
  objectness = np.full((1, n), -10.0, np.float32)
  objectness[0, 8] = 2.0
  box_logits = np.zeros((1, n, 4), np.float32)
  box_logits[0, 8] = [0.0, 0.0, math.log(0.5), 0.0]
  det = jax.jit(lambda o: detector.decode(o, (64, 64)))(
      {"box_logits": box_logits, "objectness_logits": objectness, "class_logits": class_logits})
  pw, ph = grid.prior_wh[8]
  cx, cy = (0.5 + 0) * 32, (0.5 + 1) * 32                  # sigma(0) = 0.5 in cell x 0, y 1
  want_box = [cx - pw / 4, cy - ph / 2, cx + pw / 4, cy + ph / 2]
  score = sigmoid(2.0) * math.exp(10) / (math.exp(10) + k - 1)
  np.testing.assert_allclose(det.boxes[0, 0], np.clip(want_box, 0, 64), rtol=1e-5)
  np.testing.assert_allclose(det.scores[0, 0], score, rtol=1e-5)
  assert int(det.classes[0, 0]) == 4 and bool(det.valid[0, 0])


# Darknet-19 without its classifier: (kernel, in, out) of every convolution with batch norm (no
# bias; scale and offset).
DARKNET19_CONVS = [
    (3, 3, 32), (3, 32, 64), (3, 64, 128), (1, 128, 64), (3, 64, 128), (3, 128, 256),
    (1, 256, 128), (3, 128, 256), (3, 256, 512), (1, 512, 256), (3, 256, 512), (1, 512, 256),
    (3, 256, 512), (3, 512, 1024), (1, 1024, 512), (3, 512, 1024), (1, 1024, 512),
    (3, 512, 1024)]
# The head: the paper's passthrough (26x26x512 -> 13x13x2048) and cfg/yolov2-voc.cfg's (a 1x1
# convolution to 64 first).
HEAD_CONVS = {0: [(3, 1024, 1024), (3, 1024, 1024), (3, 512 * 4 + 1024, 1024)],
              64: [(3, 1024, 1024), (3, 1024, 1024), (1, 512, 64), (3, 64 * 4 + 1024, 1024)]}


@pytest.mark.parametrize("passthrough_width, total", [(0, 67_137_565), (64, 50_655_389)])
def test_paper_network_parameter_count(passthrough_width, total):
  config = experiment.get_config("yolov2_voc_416").model
  assert config.passthrough_width == 0                     # the recipe: the paper's form
  config.unlock()
  config.passthrough_width = passthrough_width
  detector = detectors.build(config)
  variables = jax.eval_shape(lambda: detector.init(jax.random.PRNGKey(0), (416, 416)))
  count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  bn_convs = sum(k * k * i * o + 2 * o
                 for k, i, o in DARKNET19_CONVS + HEAD_CONVS[passthrough_width])
  predict = 1024 * 5 * (5 + 20) + 5 * (5 + 20)            # 1x1 conv with bias to 125 outputs
  assert count == bn_convs + predict == total
  outputs = jax.eval_shape(lambda v, x: detector.apply(v, x)[0], variables,
                           jax.ShapeDtypeStruct((1, 416, 416, 3), jnp.float32))
  assert outputs["class_logits"].shape == (1, 13 * 13 * 5, 20)   # 13x13 grid (Sec. 2)


def test_darknet19_head_predicts_from_the_last_layer():
  """cfg/yolo9000.cfg's head: the 1x1 prediction on Darknet-19's last layer, nothing added."""
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.head = "darknet19"
  detector = detectors.build(config)
  params = jax.eval_shape(lambda: detector.init(jax.random.PRNGKey(0), (64, 64)))["params"]
  assert set(params) == {"backbone", "predict"}
  last = config.backbone.stages[-1][-1][0]
  assert params["predict"]["kernel"].shape == (1, 1, last, 3 * (5 + config.num_classes))
  config.head = "yolov3"
  with pytest.raises(ValueError, match="model.head"):
    detectors.build(config).init(jax.random.PRNGKey(0), (64, 64))


def test_table2s_first_column_has_no_batch_norm_and_no_passthrough():
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.batch_norm, config.passthrough = False, False
  variables = jax.eval_shape(lambda: detectors.build(config).init(jax.random.PRNGKey(0),
                                                                   (64, 64)))
  assert "batch_stats" not in variables
  convs = {path: leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(
      variables["params"]) if path[-1].key == "kernel"}
  biases = [path for path, _ in jax.tree_util.tree_leaves_with_path(variables["params"])
            if path[-1].key == "bias"]
  assert len(biases) == len(convs)                         # biases instead of batch norm
  assert not any("passthrough" in str(path) for path in convs)
  head3 = next(shape for path, shape in convs.items() if "head3" in str(path))
  assert head3[2] == config.head_width                     # no 26x26 features concatenated


def test_multi_scale_training_compiles_each_size_once(scenes_dir, tmp_path, monkeypatch,
                                                      caplog):
  config = tiny_config(scenes_dir, experiment, total_steps=8, checkpoint_every=8, log_every=8)
  config.unlock()
  config.data.multi_scale_sizes, config.data.multi_scale_every = (64, 96), 1
  config.eval.metrics = ()
  config.lock()
  steps = []
  real_jit_train_step = state_lib.jit_train_step

  def keep_step(*args, **kwargs):
    steps.append(real_jit_train_step(*args, **kwargs))
    return steps[-1]

  monkeypatch.setattr(state_lib, "jit_train_step", keep_step)
  with caplog.at_level(logging.INFO, logger="jaxdet"):
    _, state, *_ = loop.train(config, str(tmp_path))
  assert int(state.step) == 8
  firsts = [r.getMessage() for r in caplog.records if "first batch at" in r.getMessage()]
  assert len(firsts) == 2 and {m.split(" at ")[1][:5] for m in firsts} == {"64x64", "96x96"}
  assert steps[0]._cache_size() == 2            # 8 steps over two sizes: two compilations


def test_priors_from_a_kmeans_json(tmp_path):
  written = tmp_path / "priors.json"          # the keys scripts/kmeans_anchors.py writes
  written.write_text(json.dumps({"priors_pixels": [[16, 32], [64, 48]],
                                 "priors_cells": [[0.5, 1.0], [2.0, 1.5]], "stride": 32}))
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.priors_file = str(written)
  grid = detectors.build(config).grid((64, 64))
  np.testing.assert_allclose(grid.priors, [[16, 32], [64, 48]])
  assert grid.num_anchors == 2 * 2 * 2
  written.write_text(json.dumps({"priors_pixels": [[16, 32]]}))
  with pytest.raises(ValueError, match="priors_cells"):
    detectors.build(config)
