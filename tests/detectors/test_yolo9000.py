"""YOLO9000: the tree's class term inside the region loss, classification images at their best
box, scores and the top-down path, labels meeting the tree, and joint training end to end.
References are float64 loops (tests/detectors/test_yolo_v2.py, tests/ops/test_wordtree.py)."""
import math

import jax
import numpy as np
import pytest
from PIL import Image

from experiments import yolo9000 as experiment
from jaxdet import detectors
from jaxdet import runtime
from jaxdet.data import sanitize
from jaxdet.data import sources
from jaxdet.evaluation import evaluator
from jaxdet.train import loop
from jaxdet.train import state as state_lib
from tests.detectors import darknet_reference
from tests.detectors.test_yolo_v2 import reference_loss
from tests.detectors.test_yolo_v2 import sigmoid
from tests.ops.test_wordtree import ref_conditional
from tests.ops.test_wordtree import ref_nll
from tests.ops.test_wordtree import ref_path
from tests.train.helpers import random_batch
from tests.train.helpers import tiny_config

# The digit parity tree of experiments/yolo9000.py: nodes even, odd, then the digits 0-9.
EVEN, ODD = 0, 1
DIGIT = {d: 2 + d for d in range(10)}


@pytest.fixture(scope="module")
def detector():
  return detectors.build(experiment.get_config("tiny_test").model)


def parents(detector):
  return np.asarray(detector.tree.parents)


def random_outputs(detector, batch_size, size, seed=0):
  rng = np.random.default_rng(seed)
  n, k = detector.grid(size).num_anchors, len(detector.tree.names)
  return {"box_logits": rng.normal(0, 1, (batch_size, n, 4)).astype(np.float32),
          "objectness_logits": rng.normal(0, 2, (batch_size, n)).astype(np.float32),
          "class_logits": rng.normal(0, 2, (batch_size, n, k)).astype(np.float32)}


def tree_class_term(detector):
  return lambda logits, label: ref_nll(logits[None], np.array([label]), parents(detector))[0]


def test_parity_tree_and_label_nodes(detector):
  assert detector.tree.names == ("even", "odd") + tuple(str(d) for d in range(10))
  assert [int(p) for p in detector.tree.parents] == [-1, -1] + [d % 2 for d in range(10)]
  np.testing.assert_array_equal(detector.class_nodes, [DIGIT[d] for d in range(10)])
  # Detection boxes of 5-9 train as their parent (experiments/yolo9000.py).
  np.testing.assert_array_equal(detector.detection_label_nodes,
                                [DIGIT[d] for d in range(5)] + [ODD, EVEN, ODD, EVEN, ODD])


def test_detection_loss_matches_float64_brute_force(detector):
  """Every YOLOv2 term, the class term the tree's: labels include coarse nodes."""
  cfg = detector.config
  size = (96, 64)
  batch = random_batch(3, max_boxes=6, num_classes=12, seed=2)
  batch["image"] = np.zeros((3, *size, 3), np.float32)
  batch["mask"][2] = False                                  # an image without objects
  batch["labels"][0, :3] = [ODD, EVEN, DIGIT[7]]
  batch["mask"][0, :3] = True
  outputs = random_outputs(detector, 3, size)
  total, metrics = jax.jit(detector.loss)(outputs, batch)
  want, positives, _ = reference_loss(
      detector.grid(size).priors.astype(np.float64), size,
      *(outputs[key].astype(np.float64) for key in ("box_logits", "objectness_logits",
                                                     "class_logits")),
      batch["boxes"].astype(np.float64), batch["labels"], batch["mask"], cfg.loss,
      class_term=tree_class_term(detector))
  assert metrics["num_positive"] == positives >= 3
  for name, value in want.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(total, sum(want.values()), rtol=1e-5)


def test_classification_images_train_only_their_best_box(detector):
  """Image 0 is a detection image; images 1 and 2 classification images labelled "7" and (a
  coarse label) "odd": only the class term at the slot of highest Pr(object) Pr(label) and its
  objectness pulled up to 0.3 (weight 5), nothing else of theirs."""
  cfg = detector.config.loss
  size = (64, 64)
  batch = random_batch(3, max_boxes=4, num_classes=12, seed=3)
  batch["image"] = np.zeros((3, *size, 3), np.float32)
  batch["mask"][0, :2] = True
  batch["mask"][1:] = False
  batch["image_label"] = np.array([-1, DIGIT[7], ODD], np.int32)
  outputs = random_outputs(detector, 3, size, seed=4)
  outputs["objectness_logits"][1] = np.linspace(-3, -1, outputs["objectness_logits"].shape[1])
  _, metrics = jax.jit(detector.loss)(outputs, batch)

  detection_only = {k: v[:1] for k, v in batch.items() if k != "image_label"}
  want, _, _ = reference_loss(
      detector.grid(size).priors.astype(np.float64), size,
      *(outputs[key][:1].astype(np.float64) for key in ("box_logits", "objectness_logits",
                                                         "class_logits")),
      detection_only["boxes"].astype(np.float64), detection_only["labels"],
      detection_only["mask"], cfg, class_term=tree_class_term(detector))
  for name, value in want.items():                          # per image of 3, not of 1
    np.testing.assert_allclose(metrics[name], value / 3, rtol=1e-5, err_msg=name)

  image_class = image_object = 0.0
  for b in (1, 2):
    logits = outputs["class_logits"][b].astype(np.float64)
    label = int(batch["image_label"][b])
    objectness = sigmoid(outputs["objectness_logits"][b].astype(np.float64))
    label_prob = np.exp(ref_path(ref_conditional(logits, parents(detector)),
                                 parents(detector))[:, label])
    best = int(np.argmax(objectness * label_prob))
    image_class += ref_nll(logits[best][None], np.array([label]), parents(detector))[0]
    image_object += cfg.object_weight * max(0.0, 0.3 - objectness[best]) ** 2 / 2
  assert image_object > 0                                   # image 1's objectness is below 0.3
  np.testing.assert_allclose(metrics["image_class_loss"], image_class / 3, rtol=1e-5)
  np.testing.assert_allclose(metrics["image_object_loss"], image_object / 3, rtol=1e-5)


@pytest.mark.parametrize("noobject, image_iou", [(False, 0.3), (True, 0.3), (True, 0.0)])
def test_gradient_is_darknets_region_layer_delta(detector, noobject, image_iou):
  """jax.grad of every term, detection and classification images together, equals minus the
  float64 port of darknet's region layer with the tree, per image: the paper's rule for
  classification images (no no-object term), darknet's of 2017-01-04 (no-object at every other
  slot, the 0.3 pull) and darknet's since July 2017 (the pull zeroed)."""
  config = detector.config.copy_and_resolve_references()
  config.loss.update(classification_noobject=noobject, classification_iou=image_iou)
  det = type(detector)(config)
  size = (96, 64)
  rng = np.random.default_rng(6)
  boxes = np.zeros((4, 4, 4), np.float32)
  boxes[0, :3] = [[4, 4, 20, 24], [30, 40, 60, 90], [34, 70, 50, 86]]
  boxes[3, :2] = [[2, 50, 40, 94], [36, 2, 62, 30]]
  mask = np.any(boxes > 0, axis=-1)
  labels = np.zeros((4, 4), np.int32)
  labels[0, :3] = [DIGIT[3], ODD, DIGIT[8]]
  labels[3, :2] = [EVEN, DIGIT[5]]
  batch = {"image": np.zeros((4, *size, 3), np.float32), "boxes": boxes, "labels": labels,
           "mask": mask, "image_label": np.array([-1, DIGIT[7], ODD, -1], np.int32)}
  n, k = det.grid(size).num_anchors, len(det.tree.names)
  outputs = {"box_logits": rng.normal(0, 0.5, (4, n, 4)).astype(np.float32),
             "objectness_logits": rng.normal(-1, 1, (4, n)).astype(np.float32),
             "class_logits": rng.normal(0, 1, (4, n, k)).astype(np.float32)}
  outputs["objectness_logits"][1] -= 3           # image 1's best box below 0.3: pulled up
  truths = darknet_reference.normalised_truths(boxes, labels, mask, size)
  delta = darknet_reference.region_layer_delta(
      {key: v.astype(np.float64) for key, v in outputs.items()}, (3, 2),
      det.grid(size).priors.astype(np.float64) / 32, truths,
      image_labels=batch["image_label"], tree=darknet_reference.Tree(experiment.DIGIT_PARITY_TREE),
      area_weighted=config.loss.coord_area_weight, image_noobject=noobject, image_iou=image_iou)
  terms = ["coord_loss", "object_loss", "noobject_loss", "class_loss", "image_class_loss"]
  terms += ["image_noobject_loss"] if noobject else []
  terms += ["image_object_loss"] if image_iou else []
  grads = darknet_reference.term_gradients(det.loss, outputs, batch, tuple(terms))
  darknet_reference.assert_gradients_are_deltas(grads, delta.of_terms(terms))
  if not image_iou:                                          # the pull is 0: no gradient
    grad = jax.grad(lambda o: det.loss(o, batch)[1]["image_object_loss"])(outputs)
    assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(grad))


def test_a_coarse_label_puts_no_gradient_below_it(detector):
  size = (64, 64)
  batch = {"image": np.zeros((1, *size, 3), np.float32),
           "boxes": np.array([[[8, 8, 30, 40]]], np.float32),
           "labels": np.array([[ODD]], np.int32), "mask": np.array([[True]])}
  outputs = random_outputs(detector, 1, size, seed=5)
  grad = jax.jit(jax.grad(lambda o: detector.loss(o, batch)[1]["class_loss"]))(outputs)
  grad = grad["class_logits"]
  slot = int(np.flatnonzero(np.abs(np.asarray(grad[0])).sum(-1))[0])
  probs = np.exp(ref_conditional(outputs["class_logits"][0, slot].astype(np.float64),
                                 parents(detector)))
  want = np.zeros(12)
  want[[EVEN, ODD]] = probs[[EVEN, ODD]] - [0, 1]            # softmax - onehot on the top split
  np.testing.assert_allclose(grad[0, slot], want, atol=1e-6)  # digits: exactly 0
  assert np.count_nonzero(np.abs(np.asarray(grad)).sum(-1)) == 1


def test_decode_scores_objectness_times_class_path(detector):
  size = (64, 64)
  outputs = random_outputs(detector, 1, size, seed=6)
  scores = np.asarray(jax.jit(detector.class_scores)(outputs))
  cond = ref_conditional(outputs["class_logits"][0].astype(np.float64), parents(detector))
  want = sigmoid(outputs["objectness_logits"][0].astype(np.float64))[:, None] * np.exp(
      ref_path(cond, parents(detector))[:, [DIGIT[d] for d in range(10)]])
  np.testing.assert_allclose(scores[0], want, rtol=1e-5)


def test_display_decode_names_the_deepest_confident_node(detector):
  """One confident slot: odd at 0.99; below it 7 at 0.7 (path 0.69 >= 0.5) in the first case,
  five digits at 0.2 each in the second (path 0.2 < 0.5: stop at "odd")."""
  size = (64, 64)
  n = detector.grid(size).num_anchors
  outputs = {"box_logits": np.zeros((2, n, 4), np.float32),
             "objectness_logits": np.full((2, n), -8.0, np.float32),
             "class_logits": np.zeros((2, n, 12), np.float32)}
  outputs["objectness_logits"][:, 5] = 3.0
  outputs["class_logits"][:, 5, ODD] = math.log(99.0)              # Pr(odd) = 0.99
  outputs["class_logits"][0, 5, DIGIT[7]] = math.log(0.7 / 0.075)  # 0.7, others 0.075
  dets = jax.jit(lambda o: detector.display_decode(o, size))(outputs)
  names = detector.display_names(detector.config.class_names)
  assert names[DIGIT[7]] == "odd > 7" and names[EVEN] == "even"
  assert [names[int(dets.classes[b, 0])] for b in (0, 1)] == ["odd > 7", "odd"]
  np.testing.assert_allclose(dets.scores[:, 0], sigmoid(3.0) * np.array([0.99 * 0.7, 0.99]),
                             rtol=1e-5)


def test_config_errors_name_what_is_missing():
  paper = experiment.get_config("yolo9000_coco_imagenet")
  assert paper.data.classification_ratio == (4, 1) and len(paper.model.priors) == 3
  with pytest.raises(ValueError, match="coco9k.map"):          # the tree files come by flag
    detectors.build(paper.model)
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.tree.pairs = ()
  with pytest.raises(ValueError, match="9k.tree"):
    detectors.build(config)
  config = experiment.get_config("tiny_test").model
  config.unlock()
  config.class_names = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "ten")
  with pytest.raises(ValueError, match="ten"):
    detectors.build(config)


COLOUR_TREE = (("warm", ""), ("cool", ""), ("red", "warm"), ("green", "cool"), ("blue", "cool"))


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
  """Classification images of two of the fake scenes' classes (tests/fake_data.py)."""
  root = tmp_path_factory.mktemp("colours")
  for name, colour in (("green", (30, 230, 30)), ("red", (230, 30, 30))):
    (root / name).mkdir()
    for i in range(3):
      image = np.random.default_rng(i).integers(0, 60, (40, 40, 3)).astype(np.uint8)
      image[8:32, 6:30] = colour
      Image.fromarray(image).save(root / name / f"{i}.png")
  return root


def colour_config(scenes_dir, classification, tmp_path, **train):
  config = tiny_config(scenes_dir, experiment, **train)
  config.unlock()
  config.model.tree.pairs = COLOUR_TREE
  config.model.class_names = ("red", "green", "blue")
  config.model.detection_label_nodes = ("red", "cool", "blue")   # green boxes: only "cool"
  config.data.classification = classification
  config.data.classification_ratio = (1, 1)
  config.eval.metrics = ("voc12",)
  config.eval.class_groups.seen = ("red", "blue")
  config.eval.class_groups.unseen = ("green",)
  config.lock()
  return config


def test_training_sources_meet_the_tree(scenes_dir, colour_folder, tmp_path):
  config = colour_config(scenes_dir, f"folder:{colour_folder}", tmp_path)
  detector = detectors.build(config.model)
  detection, classification = loop.load_sources(config)
  detection, classification = loop.relabelled_sources(detector, detection, classification)
  assert detection.class_names == classification.class_names == tuple(n for n, _ in COLOUR_TREE)
  raw = sources.CocoJsonSource(str(scenes_dir), "train")
  index = next(i for i in range(len(raw)) if len(raw.annotations(i)["labels"]))
  np.testing.assert_array_equal(detection.annotations(index)["labels"],
                                np.array([2, 1, 4])[raw.annotations(index)["labels"]])
  assert [classification[i]["image_label"] for i in (0, 3)] == [3, 2]     # green, red
  config.unlock()
  config.model.tree.pairs = COLOUR_TREE[:-1] + (("purple", "warm"),)
  config.model.class_names = ("red", "green", "purple")
  config.model.detection_label_nodes = ()
  with pytest.raises(ValueError, match="'blue' but model.class_names.2. is 'purple'"):
    loop.relabelled_sources(detectors.build(config.model), *loop.load_sources(config))


def test_joint_training_evaluates_groups_and_shows_tree_paths(scenes_dir, colour_folder,
                                                              tmp_path):
  config = colour_config(scenes_dir, f"folder:{colour_folder}", tmp_path, total_steps=2,
                         checkpoint_every=2, log_every=2)
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert {"voc12/mAP", "voc12/mAP/seen", "voc12/mAP/unseen"} <= set(results)
  config, class_names, detector, state, mesh = runtime.load_trained(str(tmp_path))
  assert class_names == ("red", "green", "blue")            # the dataset's, not the tree's
  source = sources.build_source("coco_json:val", coco_json_dir=str(scenes_dir))
  issues = sanitize.DataIssues()
  gts = evaluator.ground_truths(source, issues)
  predict = state_lib.predict_fn(detector, state.eval_variables(),
                                 tuple(config.data.image_size), mesh, display=True)
  shown = evaluator.detect(predict, source, gts, config, issues)
  labels = np.concatenate([d["labels"] for d in shown.values()])
  assert len(labels) and set(labels) <= set(range(5))                  # tree nodes
  assert detector.display_names(class_names) == (
      "warm", "cool", "warm > red", "cool > green", "cool > blue")
